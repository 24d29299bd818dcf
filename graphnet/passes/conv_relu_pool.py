"""conv -> relu -> max_pool as one step each way.

A CNN spends a third of its step in conv -> relu -> max_pool. Run gate by gate, the relu
writes a whole activation forward and backward, the pool writes a mostly-zero gradient
of that size, and the conv's weight gradient multiplies every zero of it. Such a chain,
where the conv and the relu feed nothing else, runs as one step each way:

- forward: each image's convolution is pooled, with the relu applied on the fly, while
  it is still in cache (`conv_relu_pool_forward_fast`). The conv's and the relu's values
  and caches are deferred: computed by their own gates if someone reads them.
- backward: the conv's weight and bias gradients come straight from the pooled gradient,
  summing input patches only at each window's winner that passed the relu
  (`_C.conv_pooled_backward`). The relu's and the conv's gradients are deferred, computed
  from the pooled gradient and the winners alone. Where the conv's input needs a gradient
  too, the conv's is computed in the step, for its dx, in one scatter of the masked
  pooled gradient.

Every value and gradient reads the same as without fusion, bit for bit, but for the
conv's weight and bias gradients: they are summed in another order (equal to rounding),
and a window the relu blocks adds nothing to them even if its upstream gradient is NaN or
infinite (gate by gate, 0 * inf makes a NaN).
"""

from ..core.plan import Step
from ..kernels import _C, fast
from .base import FusionPass, kept, once, readers, register_pass


@register_pass
class ConvReluPool(FusionPass):
    length = 3

    def fuse_forward(self, steps):
        chains = _chains(steps)
        return [
            _fused_step(step.node, _forward) if step.node in chains else step
            for step in _without_inner_steps(steps, chains)
        ]

    def fuse_backward(self, steps):
        chains = _chains(steps)
        return [
            _fused_step(step.node, _backward) if step.node in chains else step
            for step in _without_inner_steps(steps, chains)
        ]


def _chains(steps):
    """The pools of the conv -> relu -> max_pool chains among `steps` whose conv and relu
    are steps there and are read by nothing else there."""
    planned = {step.node for step in steps if not step.fused}
    reads = readers(steps)
    return {
        pool
        for pool in planned
        if pool.op == "max_pool"
        and (relu := pool.inputs[0]).op == "relu"
        and (conv := relu.inputs[0]).op == "conv"
        and relu in planned
        and conv in planned
        and reads[relu] == 1
        and reads[conv] == 1
    }


def _without_inner_steps(steps, chains):
    inner = {n for pool in chains for n in (pool.inputs[0], pool.inputs[0].inputs[0])}
    return [step for step in steps if step.node not in inner]


def _fused_step(pool, make_run):
    relu = pool.inputs[0]
    conv = relu.inputs[0]
    needs = tuple(i.requires_grad for i in conv.inputs)
    return Step(
        pool,
        conv.inputs,
        make_run(conv, relu, pool),
        needs,
        (conv, relu, pool),
        edges=tuple((conv, position) for position in range(len(conv.inputs))),
    )


def _forward(conv, relu, pool):
    def run(store):
        x, w, b = (store.values[i.index] for i in conv.inputs)
        pooled, pool_cache = fast.conv_relu_pool_forward_fast(
            x, w, b, conv.gate.attrs(), pool.gate.attrs()
        )
        store.values[pool.index], store.caches[pool.index] = pooled, pool_cache
        # What is computed when read sees the inputs as they are now (kept: copies of the
        # sources, which the optimizer or a training loop may update in place).
        inputs = tuple(kept(node, a) for node, a in zip(conv.inputs, (x, w, b)))
        conv_outputs = once(lambda: conv.gate.forward(*inputs))
        relu_outputs = once(lambda: relu.gate.forward(conv_outputs()[0]))
        shape = conv.gate.shape(*(a.shape for a in inputs))
        store.defer("value", conv.index, lambda: conv_outputs()[0], shape)
        store.defer("cache", conv.index, lambda: conv_outputs()[1])
        store.defer("value", relu.index, lambda: relu_outputs()[0], shape)
        store.defer("cache", relu.index, lambda: relu_outputs()[1])

    return run


def _backward(conv, relu, pool):
    stride, pad = conv.gate.stride, conv.gate.pad

    def run(store, needs):
        dpool, pooled = store.grads[pool.index], store.values[pool.index]
        pool_cache = store.caches[pool.index]
        x, w, _ = (store.values[i.index] for i in conv.inputs)

        def unpool(grad):
            return pool.gate.backward(grad, pool_cache, (True,))[0]

        relu_grad = once(lambda: unpool(dpool))

        @once
        def conv_grad():
            # The relu passes the gradient where the conv's output is positive; where the
            # gradient is not zero, that is at a winner whose window's pooled value is
            # positive: no need for the conv's output. Products, as in the relu gate, for
            # the same signed zeros and the same 0 * inf. A winner of one window only: the
            # pooled gradient masked, then scattered, one pass over the conv's size. Where
            # windows overlap, a winner's gradient is a sum, masked after it is summed.
            if pool.gate.stride >= max(pool.gate.pool_height, pool.gate.pool_width):
                return unpool(relu.gate.backward(dpool, pooled > 0, (True,))[0])
            return relu_grad() * (unpool((pooled > 0).astype(dpool.dtype)) > 0)

        store.defer("grad", relu.index, relu_grad)
        if needs[0]:  # dx is a dense convolution of the conv's whole gradient anyway
            store.grads[conv.index] = conv_grad()
            return _C.conv_backward(conv_grad(), x, w, stride, pad)
        _, winners, _ = pool_cache
        dw, db = _C.conv_pooled_backward(dpool, pooled, winners, x, w, stride, pad)
        store.defer("grad", conv.index, conv_grad)
        return None, dw if needs[1] else None, db if needs[2] else None

    return run
