"""spatial groupnorm -> gelu / leaky relu / relu / softplus (-> average or max pool), and
batchnorm / spatial batchnorm -> leaky relu, as one step each way.

Gate by gate, the activation reads the groupnorm's whole output and writes its own
forward, then reads that output again (its saved input) and the gradient and writes
another gradient backward. Where a groupnorm feeds only such an activation (the zoo's
modern net: conv -> groupnorm -> gelu), the fused forward has the groupnorm kernel apply
the activation to each group while it is in cache, and the fused backward has it take the
activation's gradient at the normalized entries it recomputes from x, the statistics,
gamma and beta (cpp/group_norm.h): no pass over the normalized tensor either way (a relu or
leaky relu is taken inside the normalizing loop itself). Values, caches and gradients read
the same as gate by gate, bit for bit (the kernel recomputes the normalized entries with the
very operations of its forward, and runs the activation's own kernel, or for relu and leaky
relu its expressions, on them).

Where the activation feeds only an average pool (groupnorm -> gelu -> avg_pool, a modern
net's downsampling), the kernel pools each group too while it is in cache: forward it reads
x and writes the pooled planes, a quarter of x for 2x2 windows, and backward it reads x and
the pool's gradient, spreads that over the group in cache and writes dx: neither the
activation's output nor its gradient goes through memory. The pooled values are the pool
gate's of the activation's, bit for bit (the same plane loops, cpp/avg_pool_plane.h).

A max pool in that average pool's place (a student's conv -> groupnorm -> leaky relu ->
max pool) is the same step: forward, the kernel runs the pool gate's kernel (cpp/pool.h: its
windows, tie rule and winners) on each group in cache, reading x and writing the pooled
values and their winners; backward, it scatters the pooled gradient to the winners over
each group in cache, as the pool gate's kernel does each plane (cpp/max_unpool_plane.h),
and goes on through the activation. The pool's cache is its gate's (the winners). A relu
is taken so too, in the normalizing loop, rather than by relu_pool.py on the pooled values
with the groupnorm's output written and read between.

A (spatial) batchnorm and a leaky relu after it (a student's conv -> spatial batchnorm ->
leaky relu; affine -> batchnorm -> leaky relu), in train and eval mode: the batchnorm
kernel takes the leaky relu inside its normalizing loop, and its gradient inside its two
backward loops at the normalized entries it recomputes there (cpp/norm.h, NormTail::act),
with the leaky relu gate's expressions: no pass of the activation's either way, the same
bits. conv -> spatial batchnorm -> leaky relu is one forward step too
(ConvBatchnormActivation), so that batchnorm_fold.py does not take its first two alone: in
train mode the conv gate, then the fused batchnorm -> leaky relu; in eval mode the fold
(the batchnorm in the conv's filters) with the leaky relu taken by the conv kernel, as a
relu is (a negative slope, which the kernel does not take: the fold, then the gate). A
batchnorm -> relu is norm_relu.py's. GELU, sigmoid and softplus are not fused after a
batchnorm: their arithmetic, not memory, bounds the pass a fusion would save (with the
activation's kernel run on each plane in cache, the kernels took the two kernels' time);
tanh's gate is numpy's, which no kernel reproduces.

The norm's value is deferred to its own gate, on the inputs as they were (a batchnorm's on
the running averages as they were, in eval mode); the activation's cache is its gate's on
that value (its saved input, or relu's mask), and where pooled the activation's
value is its gate on it. A backward after a forward that did not
run fused runs the gates: only a cache of the fused forward (kernels.norm.ActivationNormCache,
PooledNormCache) says which activation it applied and whether it pooled.

Layernorm -> gelu (a transformer-style MLP block) is not fused: with a layernorm kernel
that applied the activation to each group of rows in cache, the fused kernels took the two
kernels' time (gelu's arithmetic, not memory, bounds both) and whole steps 0.99-1.06x the
gates' (docs/performance/kernels.md, the modern network).
"""

import numpy as np

from ..core.plan import Step
from ..kernels import norm as norm_kernels
from . import batchnorm_fold, norm_relu
from .base import FusionPass, PairPass, kept, mode_forward, once, readers, register_pass

#: The activations each norm's kernel applies (norm.op: activation ops).
ACTIVATIONS = {
    "spatial_groupnorm": ("gelu", "leaky_relu", "relu", "softplus"),
    "batchnorm": ("leaky_relu",),
    "spatial_batchnorm": ("leaky_relu",),
}
# Below this many entries the step runs the gates: what the fusion saves is memory traffic
# and a large array's allocation (its page faults), and on arrays that stay in cache the
# deferring bookkeeping costs more. Measured, the zoo's modern net's step fused against gate
# by gate: batch 1 and 4 (32768 and 131072 entries) 0.93-1.03, batch 8: 0.78, 16: 0.75-0.79,
# 64: 0.82-0.85; a conv -> groupnorm -> gelu of 512 to 32768 entries: 1.05-1.12. A batchnorm
# -> leaky relu just above it (random-0-20 at batch 16: 141,120 entries): steps 1.00x. The
# pooled chains of random networks, medians of 4-6 blocks in turns: random-0-17 at batch 64
# (163,840 entries, leaky relu -> max 3x3 s2) 1.04x (best 1.02x), random-0-28 at 16
# (185k) 1.00x, random-0-30 at 64 (305k) 0.98x, random-0-9 at 16 (298k) 0.93x, modern at
# 16 0.91x: no size where the gates pay by more than the noise.
SMALLEST = 1 << 17
#: The pools a groupnorm's kernel takes after its activation (GroupnormActivationPool).
POOLS = ("avg_pool", "max_pool")


@register_pass
class NormActivation(PairPass):
    def takes(self, steps):
        """A (spatial) batchnorm's leaky relu that a max pool alone reads is left to
        norm_relu.py's NormAddReluPool, whose kernel pools it too."""
        pooled = norm_relu.pooled_alone(steps)
        return lambda act, norm: (
            act.op in ACTIVATIONS.get(norm.op, ())
            and not (act in pooled and norm.op in norm_relu.CHANNEL_NORMS)
        )

    def forward_run(self, norm, act):
        return _forward(norm, act)

    def backward_run(self, norm, act):
        return norm_relu.activation_backward_run(norm, act)


def _kernel_takes(values):
    """Whether the fused kernel runs on the groupnorm's inputs: not when small, nor on
    integers, float16 or mixed dtypes (not for the kernels)."""
    return np.size(values[0]) >= SMALLEST and norm_kernels.native(*values)


def _norm_forward(norm, state, values, **activation):
    """The norm gate's forward of `values` (x, gamma, beta), a batchnorm's with `state` (its
    running averages) in the graph's mode."""
    if norm.gate.stateful:
        return norm.gate.forward(state, norm.graph.training, *values, **activation)
    return norm.gate.forward(*values, **activation)


def _gates_forward(store, norm, act, values):
    """The norm and the activation gate by gate."""
    state = store.state(norm.index) if norm.gate.stateful else None
    out, store.caches[norm.index] = _norm_forward(norm, state, values)
    store.values[norm.index] = out
    store.values[act.index], store.caches[act.index] = mode_forward(act)(out)


def _forward(norm, act):
    """The fused forward step's run(store)."""

    def run(store):
        values = [store.values[i.index] for i in norm.inputs]
        if not _kernel_takes(values):
            return _gates_forward(store, norm, act, values)
        state = store.state(norm.index) if norm.gate.stateful else None
        # The norm's own forward, if its value is read: on the inputs as they are now and,
        # in eval mode, the running averages (train mode normalizes with the batch's).
        frozen = {} if norm.graph.training or state is None else _copied(state)
        out, store.caches[norm.index] = _norm_forward(
            norm, state, values, activation=act.gate.kernel
        )
        store.values[act.index] = out
        inputs = [kept(node, value) for node, value in zip(norm.inputs, values)]
        normalized = lambda: _norm_forward(norm, dict(frozen), inputs)[0]  # noqa: E731
        store.defer("value", norm.index, normalized, out.shape)
        _defer_activation(store, norm, act)

    return run


def _copied(state):
    """A batchnorm's running averages as they are now."""
    return {key: np.array(value) for key, value in state.items()}


def _defer_activation(store, norm, act, shape=None):
    """The activation's cache, its gate's on the deferred groupnorm value, read when asked
    (a fused backward never reads it); with `shape` its value too, from the same call."""
    forward = mode_forward(act)
    gate_forward = once(lambda: forward(store.value(norm.index)))
    store.defer("cache", act.index, lambda: gate_forward()[1], lazy=True)
    if shape is not None:
        store.defer("value", act.index, lambda: gate_forward()[0], shape)


@register_pass
class ConvBatchnormActivation(FusionPass):
    """conv -> spatial batchnorm -> activation, each read by the next alone: one forward
    step (the backward is NormActivation's and the conv's)."""

    length = 3

    def fuse_forward(self, steps):
        return norm_relu.conv_batchnorm_steps(
            steps, lambda act: act.op in ACTIVATIONS["spatial_batchnorm"], _conv_run
        )


def _conv_run(conv, norm, act):
    """The ConvBatchnormActivation step's run(store): in train mode the fused batchnorm ->
    activation after the conv gate, in eval mode the fold with the activation in the conv
    kernel (batchnorm_fold.forward_run)."""
    fused, folded = _forward(norm, act), batchnorm_fold.forward_run(conv, norm, act)

    def run(store):
        if norm.graph.training:
            norm_relu.run_conv(conv, store)
            return fused(store)
        return folded(store)

    return run


@register_pass
class GroupnormActivationPool(FusionPass):
    """groupnorm -> activation -> avg_pool or max_pool, each read by the next alone: one
    step each way."""

    length = 3

    def fuse_forward(self, steps):
        def fused(chain, _):
            return Step(chain[2], chain[0].inputs, _pooled_forward(*chain), (), chain)

        return _fuse_chains(steps, fused)

    def fuse_backward(self, steps):
        def fused(chain, norm_step):
            norm = chain[0]
            edges = tuple((norm, position) for position in range(len(norm.inputs)))
            run = _pooled_backward(*chain)
            return Step(chain[2], norm.inputs, run, norm_step.needs, chain, edges=edges)

        return _fuse_chains(steps, fused)


def _fuse_chains(steps, make_step):
    """`steps` with each groupnorm -> activation -> avg_pool or max_pool run replaced by
    make_step((norm, act, pool), the groupnorm's step)."""
    plain = {step.node: step for step in steps if not step.fused}
    reads = readers(steps)

    def chain(pool):
        act = pool.inputs[0]
        norm = act.inputs[0] if act.inputs else None
        if (
            pool.op in POOLS
            and act in plain
            and act.op in ACTIVATIONS["spatial_groupnorm"]
            and reads[act] == 1
            and norm in plain
            and norm.op == "spatial_groupnorm"
            and reads[norm] == 1
        ):
            return norm, act, pool
        return None

    chains = {pool: found for pool in plain if (found := chain(pool))}
    inner = {node for found in chains.values() for node in found[:2]}
    return [
        make_step(chains[step.node], plain[chains[step.node][0]]) if step.node in chains else step
        for step in steps
        if step.node not in inner
    ]


def _windows(pool):
    """(pool_height, pool_width, stride) of a pool node."""
    return pool.gate.pool_height, pool.gate.pool_width, pool.gate.stride


def _pooled_forward(norm, act, pool):
    """The fused forward step's run(store)."""
    windows, max_pool = _windows(pool), pool.op == "max_pool"

    def run(store):
        values = [store.values[i.index] for i in norm.inputs]
        if not _kernel_takes(values):
            _gates_forward(store, norm, act, values)
            pooled = pool.gate.forward(store.values[act.index])
            store.values[pool.index], store.caches[pool.index] = pooled
            return
        pooled, store.caches[norm.index] = norm.gate.forward(
            *values, activation=act.gate.kernel, pool=windows, max_pool=max_pool
        )
        # The pool gate's cache: its input's shape (and a max pool's winners, attributes).
        if max_pool:
            pooled, winners = pooled
            store.caches[pool.index] = (values[0].shape, winners, pool.gate.attrs())
        else:
            store.caches[pool.index] = values[0].shape
        store.values[pool.index] = pooled
        inputs = [kept(node, value) for node, value in zip(norm.inputs, values)]
        shape = values[0].shape
        store.defer("value", norm.index, lambda: norm.gate.forward(*inputs)[0], shape)
        _defer_activation(store, norm, act, shape)

    return run


def _pooled_backward(norm, act, pool):
    windows, max_pool = _windows(pool), pool.op == "max_pool"

    def run(store, needs):
        dpool, cache = store.grads[pool.index], store.caches[norm.index]

        def through_pool():
            return pool.gate.backward(dpool, store.cache(pool.index), (True,))[0]

        if not isinstance(cache, norm_kernels.PooledNormCache):
            store.grads[act.index] = through_pool()
            (through,) = act.gate.backward(store.grads[act.index], store.cache(act.index), (True,))
            store.grads[norm.index] = through
            return norm.gate.backward(through, store.cache(norm.index), needs)
        store.defer("grad", act.index, through_pool)
        store.defer(
            "grad",
            norm.index,
            lambda: act.gate.backward(store.grad(act.index), store.cache(act.index), (True,))[0],
        )
        # A max pool's winners: its gate's cache (its input's shape, winners, attributes).
        winners = {"winners": store.caches[pool.index][1]} if max_pool else {}
        return norm.gate.backward(
            dpool, cache, needs, activation=act.gate.kernel, pool=windows, **winners
        )

    return run
