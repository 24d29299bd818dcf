"""spatial groupnorm -> gelu / leaky relu / softplus as one step each way.

Gate by gate, the activation reads the groupnorm's whole output and writes its own
forward, then reads that output again (its saved input) and the gradient and writes
another gradient backward. Where a groupnorm feeds only such an activation (the zoo's
modern net: conv -> groupnorm -> gelu), the fused forward has the groupnorm kernel apply
the activation to each group while it is in cache, and the fused backward has it take the
activation's gradient at the normalized entries it recomputes from x, the statistics,
gamma and beta (cpp/group_norm.h): no pass over the normalized tensor either way. Values,
caches and gradients read the same as gate by gate, bit for bit (the kernel recomputes the
normalized entries with the very operations of its forward, and runs the activation's own
kernel on them).

The groupnorm's value is deferred to its own gate, on the inputs as they were; the
activation's cache (its saved input) is that value. A backward after a forward that did
not run fused runs the two gates: only a cache of the fused forward
(kernels.norm.ActivationNormCache) says which activation it applied.
"""

import numpy as np

from ..kernels import norm as norm_kernels
from .base import PairPass, kept, register_pass

ACTIVATIONS = ("gelu", "leaky_relu", "softplus")
# Below this many entries the step runs the gates: what the fusion saves is memory traffic
# and a large array's allocation (its page faults), and on arrays that stay in cache the
# deferring bookkeeping costs more. Measured, the zoo's modern net's step fused against gate
# by gate: batch 1 and 4 (32768 and 131072 entries) 0.93-1.03, batch 8: 0.78, 16: 0.75-0.79,
# 64: 0.82-0.85; a conv -> groupnorm -> gelu of 512 to 32768 entries: 1.05-1.12.
SMALLEST = 1 << 17


@register_pass
class GroupnormActivation(PairPass):
    def takes(self, steps):
        return lambda act, norm: act.op in ACTIVATIONS and norm.op == "spatial_groupnorm"

    def forward_run(self, norm, act):
        return _forward(norm, act)

    def backward_run(self, norm, act):
        return _backward(norm, act)


def _forward(norm, act):
    """The fused forward step's run(store)."""

    def run(store):
        values = [store.values[i.index] for i in norm.inputs]
        # Small, or integers, float16, mixed dtypes (not for the kernels): the two gates.
        if np.size(values[0]) < SMALLEST or not norm_kernels.native(*values):
            out, store.caches[norm.index] = norm.gate.forward(*values)
            store.values[norm.index] = out
            store.values[act.index], store.caches[act.index] = act.gate.forward(out)
            return
        out, store.caches[norm.index] = norm.gate.forward(*values, activation=act.gate.kernel)
        store.values[act.index] = out
        inputs = [kept(node, value) for node, value in zip(norm.inputs, values)]
        store.defer("value", norm.index, lambda: norm.gate.forward(*inputs)[0], out.shape)
        store.defer("cache", act.index, lambda: store.value(norm.index), lazy=True)

    return run


def _backward(norm, act):
    def run(store, needs):
        dout, cache = store.grads[act.index], store.caches[norm.index]
        if not isinstance(cache, norm_kernels.ActivationNormCache):
            (through,) = act.gate.backward(dout, store.cache(act.index), (True,))
            store.grads[norm.index] = through
            return norm.gate.backward(through, store.cache(norm.index), needs)
        # Read when asked for: the activation's saved input is the deferred norm value.
        store.defer(
            "grad", norm.index, lambda: act.gate.backward(dout, store.cache(act.index), (True,))[0]
        )
        return norm.gate.backward(dout, cache, needs, activation=act.gate.kernel)

    return run
