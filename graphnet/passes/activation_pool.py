"""sigmoid / tanh -> max_pool whose windows do not overlap, as one step each way: the
activation's backward taken at the pool's winners only.

Gate by gate, the max pool's backward writes an array of the activation's size, the pooled
gradient at each window's winner and zeros elsewhere, and the activation's backward reads
it back with its saved output and writes the activation's input gradient: a pass over the
whole activation for a gradient that is zero but at the winners. The fused backward step
takes the activation's gradient at the winners only, on the pooled gradient and the pooled
values (a window's winner's output is the value the pool wrote for it), with the gate's
own backward, then has the pool's kernel scatter that to the winners: a quarter of the
activation's arithmetic and traffic with 2x2 windows. The pool's gradient (the
activation's output's) is deferred to the pool's gate.

The same numbers, bit for bit: each input entry is in one window at most, so the
activation's input gradient at a winner is the gate's dout * s * (1 - s) (sigmoid) or
dout * (1 - s * s) (tanh) of the same dout and s, and elsewhere a zero times a derivative
that is >= 0: +0, as the scatter writes it. Not where an output is NaN (0 * NaN is NaN):
the forward runs the two gates and looks for a NaN among the activation's outputs while
they are in cache (read back cold in the backward, the entries no window covers, a column
of every row of an odd width, took as long as the step saved); a NaN, or a forward that
did not look (run gate by gate, in eval mode, where a backward is rare, or on fewer than
SMALLEST outputs, where the checks cost what the pass saves), and the backward runs the
gates. Where windows overlap, a winner of two gets (a + b) * s' gate by gate and a * s' +
b * s' here: not fused.

Why not the forward too, the pool taken first and the activation on the pooled values? A
monotone activation commutes with max in exact arithmetic, but in float32 a sigmoid or tanh
maps neighbouring inputs to one output: a window's entries that tie after the activation
but not before would give the pool another winner than gate by gate.
"""

import numpy as np

from ..kernels.norm import native
from .base import PairPass, register_pass

#: The activations whose cache is their output, with a derivative of it >= 0 (so that a
#: zero gradient times it is +0).
ACTIVATIONS = ("sigmoid", "tanh")


# Below this many outputs the backward runs the gates: the pass saved there costs what the
# fused step's checks do (random-0-11 at batch 16, 66,560 outputs: train steps 1.02-1.08x
# the gates' without it).
SMALLEST = 1 << 17


class NanFreePoolCache(tuple):
    """The max pool gate's cache (its input's shape, its winners, its attributes), of a fused
    forward that found no NaN among the activation's outputs it pooled."""

    __slots__ = ()


@register_pass
class ActivationPool(PairPass):
    def takes(self, steps):
        return lambda pool, act: (
            pool.op == "max_pool"
            and act.op in ACTIVATIONS
            and pool.gate.stride >= max(pool.gate.pool_height, pool.gate.pool_width)
        )

    def forward_run(self, act, pool):
        source = act.inputs[0]

        def run(store):
            out, store.caches[act.index] = act.gate.forward(store.values[source.index])
            store.values[act.index] = out
            pooled, cache = pool.gate.forward(out)
            store.values[pool.index] = pooled
            if (
                pool.graph.training
                and np.size(out) >= SMALLEST
                and native(out)
                and _nan_free(pool, out, pooled)
            ):
                cache = NanFreePoolCache(cache)
            store.caches[pool.index] = cache

        return run

    def backward_run(self, act, pool):
        def run(store, needs):
            dpool, pool_cache = store.grads[pool.index], store.cache(pool.index)

            def through_pool():
                return pool.gate.backward(dpool, pool_cache, (True,))[0]

            pooled = store.values[pool.index]
            if not _kernel_takes(pool_cache, pooled, dpool):
                store.grads[act.index] = through_pool()
                return act.gate.backward(store.grads[act.index], store.cache(act.index), needs)
            store.defer("grad", act.index, through_pool)
            (at_winners,) = act.gate.backward(dpool, pooled, needs)
            return pool.gate.backward(at_winners, pool_cache, (True,))

        return run


def _nan_free(pool, out, pooled):
    """Whether no entry of `out` is NaN: none of `pooled` (a window holding a NaN pools to
    NaN) and none of those no window covers (numpy's max is NaN if one is)."""
    rows, columns = _outside(*out.shape[2:], *pooled.shape[2:], *_windows(pool))
    views = [pooled] + [out[:, :, r] for r in rows] + [out[:, :, :, c] for c in columns]
    return not any(np.isnan(np.max(view, initial=-np.inf)) for view in views)


def _windows(pool):
    return pool.gate.pool_height, pool.gate.pool_width, pool.gate.stride


def _outside(H, W, rows, columns, pool_height, pool_width, stride):
    """The rows and the columns of an (H, W) plane that no window of the pool covers (its
    windows `stride` >= their sides apart), as slices: the gaps between windows, then what
    is past the last one."""

    def uncovered(size, count, extent):
        gaps = [slice(k, count * stride, stride) for k in range(extent, stride)]
        return [s for s in gaps + [slice(count * stride, size)] if len(range(size)[s])]

    return uncovered(H, rows, pool_height), uncovered(W, columns, pool_width)


def _kernel_takes(pool_cache, pooled, dpool):
    """Whether the activation's gradient at the winners, scattered, is its gate's: after a
    fused forward that found no NaN, on arrays of one float dtype and shape."""
    return (
        type(pool_cache) is NanFreePoolCache
        and native(pooled, dpool)
        and dpool.shape == pooled.shape
    )
