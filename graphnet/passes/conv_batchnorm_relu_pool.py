"""conv -> spatial batchnorm -> relu -> max_pool (a VGG block's end) as one forward step.

In eval mode the batchnorm folds into the conv's filters and bias (batchnorm_fold.py), and
the folded conv, the relu and the pool then run as the one C++ kernel of conv_relu_pool.py:
the conv's output is pooled while it is in cache and never written. The pooled values equal
the gates' to rounding; everything else (the conv's, the batchnorm's and the relu's values
and caches, and the pool's cache) is deferred to the gates themselves, so a backward after
an eval forward reads the gates' exact caches. Where the conv's filters outnumber its
output, the step runs conv_chain.py's call instead (batchnorm_fold.fold_pays). In train
mode the step is the conv gate, then norm_relu.py's pooled batchnorm -> relu -> max_pool
(NormAddReluPool without an add): the norm kernel takes the relu and pools each plane in
cache, and the norm's whole output is never written. The backward is norm_relu.py's.

A leaky relu in the relu's place likewise in train mode (the norm kernel takes it before
pooling); in eval mode the fold with the leaky relu in the conv kernel
(batchnorm_fold.forward_run, norm_activation.py's ConvBatchnormActivation), then the pool's
gate.
"""

from ..core.plan import Step
from ..kernels import fast
from . import batchnorm_fold, conv_chain, relu_pool
from .base import FusionPass, once, readers, register_pass


@register_pass
class ConvBatchnormReluPool(FusionPass):
    length = 4

    def fuse_forward(self, steps):
        from .norm_relu import POOLED_ACTIVATIONS  # here: see _forward

        planned = {step.node for step in steps if not step.fused}
        reads = readers(steps)

        def chain(pool):
            relu = pool.inputs[0]
            return (
                relu.op in POOLED_ACTIVATIONS
                and relu.inputs[0].op == "spatial_batchnorm"
                and relu.inputs[0].inputs[0].op == "conv"
            )

        pools = {
            pool
            for pool in planned
            if pool.op == "max_pool"
            and chain(pool)
            and all(n in planned and reads[n] == 1 for n in _inner(pool))
        }
        inner = {n for pool in pools for n in _inner(pool)}
        return [
            _fused_step(step.node) if step.node in pools else step
            for step in steps
            if step.node not in inner
        ]


def _inner(pool):
    """relu, batchnorm and conv of the chain ending at `pool`."""
    relu = pool.inputs[0]
    return relu, relu.inputs[0], relu.inputs[0].inputs[0]


def _fused_step(pool):
    relu, norm, conv = _inner(pool)
    return Step(
        pool,
        conv.inputs + norm.inputs[1:],
        _forward(conv, norm, relu, pool),
        (),
        (conv, norm, relu, pool),
    )


def _forward(conv, norm, relu, pool):
    # Imported here: norm_relu's passes, registered as it is imported, must come after
    # this one among the passes of its length, which takes the conv of the chain too.
    from .norm_relu import forward_run as norm_relu_pool_run, run_conv

    norm_relu_pool = norm_relu_pool_run(norm, relu, pool=pool, keep=False)
    if relu.op != "relu":
        return _leaky_forward(conv, norm, relu, pool, norm_relu_pool, run_conv)
    relu_then_pool = relu_pool.forward_run(relu, pool)
    chained = conv_chain.native_run([conv, norm, relu, pool])

    def run(store):
        if norm.graph.training:
            run_conv(conv, store)
            return norm_relu_pool(store)
        if not batchnorm_fold.fold_pays(conv, store) and chained(store):
            return
        fold = batchnorm_fold.scale_and_shift(conv, norm, store)
        if fold is None:
            batchnorm_fold.run_gates(conv, norm, store)
            relu_then_pool(store)
            return
        pooled, _ = fast.conv_relu_pool_forward_fast(
            *batchnorm_fold.folded_inputs(conv, store, fold), conv.gate.attrs(), pool.gate.attrs()
        )
        store.values[pool.index] = pooled
        shape = conv.gate.shape(*(store.values[i.index].shape for i in conv.inputs))
        produced = batchnorm_fold.defer_conv(conv, store, shape)
        normalized = batchnorm_fold.defer_norm_cache(norm, store, lambda: produced()[0])
        relu_outputs = once(lambda: relu.gate.forward(normalized()[0]))
        store.defer("value", norm.index, lambda: normalized()[0], shape)
        store.defer("value", relu.index, lambda: relu_outputs()[0], shape)
        store.defer("cache", relu.index, lambda: relu_outputs()[1])
        store.defer("cache", pool.index, lambda: pool.gate.forward(relu_outputs()[0])[1])

    return run


def _leaky_forward(conv, norm, act, pool, norm_act_pool, run_conv):
    """The step's run with a leaky relu: in train mode the conv gate, then the pooled
    norm -> leaky relu; in eval mode the fold, then the pool's gate."""
    folded = batchnorm_fold.forward_run(conv, norm, act)

    def run(store):
        if norm.graph.training:
            run_conv(conv, store)
            return norm_act_pool(store)
        folded(store)
        store.values[pool.index], store.caches[pool.index] = pool.gate.forward(
            store.values[act.index]
        )

    return run
