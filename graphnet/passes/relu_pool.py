"""relu -> max_pool as one step each way, the relu taken after the pool.

A max pool and a relu commute: the largest of a window's relus is the relu of its largest
entry. So where a relu feeds only a max pool (an add -> relu -> pool, a conv's with other
readers; a VGG block's spatial batchnorm -> relu -> pool and a residual block's norm -> add
-> relu -> pool are norm_relu.py's, which calls this step's runs where its kernel does not
apply, and a groupnorm -> relu -> pool norm_activation.py's), the fused step pools the
relu's input and takes the relu of the pooled values, a quarter of the activation with 2x2
windows (a float32 or float64 input: in the pool kernel itself, as it reads each entry,
fast.relu_max_pool_forward_fast); backward masks the pooled gradient and lets the pool
scatter it. The relu never runs on the whole
activation, either way.

Every value, cache and gradient reads as gate by gate, bit for bit: a window the relu
blocks (its largest entry <= 0) has zeros only after the relu, whose first entry wins the
pool; the fused step gives such windows that winner too. The relu's value, cache and
gradient are deferred: computed by its own gate, and the pool's, when read. (The one
difference: where overlapping windows the relu blocks share a winner, the zero they send
it may carry the other sign.)
"""

import functools

import numpy as np

from ..core.plan import Step
from ..kernels import fast
from ..kernels.norm import native
from .base import FusionPass, kept, once, readers, register_pass


@register_pass
class ReluPool(FusionPass):
    length = 2

    def fuse_forward(self, steps):
        return _fuse(steps, forward_run)

    def fuse_backward(self, steps):
        return _fuse(steps, backward_run)


def _fuse(steps, make_run):
    """`steps` with each relu -> max_pool run (the relu a single-gate step there, read by
    nothing else there) replaced by one fused step."""
    planned = {step.node for step in steps if not step.fused}
    reads = readers(steps)
    pools = {
        pool
        for pool in planned
        if pool.op == "max_pool"
        and (relu := pool.inputs[0]).op == "relu"
        and relu in planned
        and reads[relu] == 1
    }
    relus = {pool.inputs[0] for pool in pools}
    return [
        _fused_step(step, make_run) if step.node in pools else step
        for step in steps
        if step.node not in relus
    ]


def _fused_step(pool_step, make_run):
    pool = pool_step.node
    relu = pool.inputs[0]
    needs = pool_step.needs and (relu.inputs[0].requires_grad,)
    return Step(pool, relu.inputs, make_run(relu, pool), needs, (relu, pool), edges=((relu, 0),))


def forward_run(relu, pool):
    """The fused forward step's run(store)."""
    source = relu.inputs[0]

    def run(store):
        x = store.values[source.index]
        if native(x):  # one C++ pass, the relu taken as each entry is read
            pooled, store.caches[pool.index] = fast.relu_max_pool_forward_fast(x, pool.gate.attrs())
            store.values[pool.index] = pooled
        else:
            pooled, pool_cache = pool.gate.forward(x)
            store.values[pool.index], _ = relu.gate.forward(pooled)
            store.caches[pool.index] = _first_winners_where_blocked(pool, pooled, pool_cache)
        x_kept = kept(source, x)
        relu_outputs = once(lambda: relu.gate.forward(x_kept))
        store.defer("value", relu.index, lambda: relu_outputs()[0], np.shape(x))
        store.defer("cache", relu.index, lambda: relu_outputs()[1])

    return run


def _first_winners_where_blocked(pool, pooled, cache):
    """The pool's cache as if it had pooled the relu: in a window whose largest entry is
    <= 0 the relu leaves zeros only, and the first of them wins (pool.h's tie rule)."""
    blocked = pooled <= 0
    if not blocked.any():
        return cache
    x_shape, winners, pool_param = cache
    first = _first_entries(pooled.shape[2], pooled.shape[3], pool.gate.stride, x_shape[3])
    return x_shape, np.where(blocked, first, winners), pool_param


@functools.lru_cache(maxsize=64)
def _first_entries(rows, columns, stride, width):
    """Each window's top-left entry in its (H, W) plane, (rows, columns) int32 (read-only:
    shared by every call with these sizes)."""
    first = np.arange(rows, dtype=np.int32)[:, None] * np.int32(stride * width) + np.arange(
        columns, dtype=np.int32
    ) * np.int32(stride)
    first.flags.writeable = False
    return first


def backward_run(relu, pool):
    """The fused backward step's run(store, needs)."""

    def run(store, needs):
        dpool, pool_cache = store.grads[pool.index], store.caches[pool.index]
        # The relu of the pooled values lets through where they are positive: the relu's
        # own backward on the pooled gradient, with that mask as its cache.
        (masked,) = relu.gate.backward(dpool, store.values[pool.index] > 0, (True,))
        store.defer("grad", relu.index, lambda: pool.gate.backward(dpool, pool_cache, (True,))[0])
        return pool.gate.backward(masked, pool_cache, (True,))

    return run
