"""batchnorm / spatial batchnorm / layernorm -> relu as one step each way, in train mode too.

Gate by gate, the relu reads the norm's whole output and writes its own and a mask
forward, then reads the mask and the gradient and writes another gradient backward. Where
a norm feeds only a relu (a VGG unit's conv -> spatial batchnorm -> relu -> conv, an FC
net's affine -> batchnorm -> relu), the fused forward has the norm kernel write the relu of
its output (cpp/norm.h, relu=true), and the fused backward has the norm kernel take the
relu's gradient and mask it itself, where the normalized entry it recomputes from x, the
statistics, gamma and beta is positive: no pass over the activation for the relu either
way. Values, caches and gradients read the same as gate by gate, bit for bit (the kernel
recomputes the normalized entries with the very operations of its forward).

The norm's value is deferred to its own gate, on the inputs and the running averages as
they were; the relu's cache (its mask, x > 0) is deferred to the relu's output (> 0 where
the relu's input is), lazily: the fused backward takes the relu from the norm's cache, so
a training step never computes the mask (2% of the strided zoo net's step at batch 64,
in `perf`, went to it). A backward after a forward that did not run fused (gate by gate, or
the eval-mode fold of batchnorm_fold.py) runs the two gates: only a cache of the fused
forward (kernels.norm.ReluNormCache) says where its relu passed.

conv -> spatial batchnorm -> relu is one forward step too (ConvBatchnormRelu), so that
batchnorm_fold.py does not take its first two: in eval mode it is that fold with the relu
taken by the conv kernel (batchnorm_fold.forward_run), in train mode the conv gate
followed by the fused norm -> relu. A relu that
a max pool reads is left to the pool's passes (conv_batchnorm_relu_pool.py, relu_pool.py),
which run it on the pooled values only. Groupnorm -> relu is not fused (no network of the
zoo has it).
"""

import numpy as np

from ..core.plan import Step
from ..kernels import norm as norm_kernels
from . import batchnorm_fold
from .base import FusionPass, PairPass, kept, readers, register_pass

NORMS = ("batchnorm", "spatial_batchnorm", "layernorm")
# Below this many entries the relu gate's passes cost less than the fused step's
# bookkeeping (deferring the norm's value and the relu's mask): the step runs the gates.
# FC nets of the zoo, batch 16 to 256 (1600 to 25600 entries): fused 0.5% to 4% slower.
SMALLEST = 1 << 15


@register_pass
class NormRelu(PairPass):
    def takes(self, steps):
        """A relu that a max pool reads is left to relu_pool.py, which runs it on the pooled
        values only."""
        pooled = {step.node.inputs[0] for step in steps if step.node.op == "max_pool"}
        return lambda relu, norm: relu.op == "relu" and relu not in pooled and norm.op in NORMS

    def forward_run(self, norm, relu):
        return forward_run(norm, relu)

    def backward_run(self, norm, relu):
        return _backward(norm, relu)


def _norm_forward(norm, state, training, values, relu):
    """The norm gate's forward of `values` (x, gamma, beta), with its relu or without."""
    if norm.gate.stateful:
        return norm.gate.forward(state, training, *values, relu=relu)
    return norm.gate.forward(*values, relu=relu)


def forward_run(norm, relu):
    """The fused forward step's run(store)."""

    def run(store):
        values = [store.values[i.index] for i in norm.inputs]
        state = store.state(norm.index) if norm.gate.stateful else {}
        training = norm.graph.training
        # Small, or integers, float16, mixed dtypes (not for the kernels): the two gates.
        if np.size(values[0]) < SMALLEST or not norm_kernels.native(*values):
            out, store.caches[norm.index] = _norm_forward(norm, state, training, values, False)
            store.values[norm.index] = out
            store.values[relu.index], store.caches[relu.index] = relu.gate.forward(out)
            return
        # The norm's own forward, if its value is read, on the inputs as they are now and,
        # in eval mode, the running averages (train mode normalizes with the batch's).
        frozen = {} if training else {k: np.array(v) for k, v in state.items()}
        out, store.caches[norm.index] = _norm_forward(norm, state, training, values, True)
        store.values[relu.index] = out
        inputs = [kept(node, value) for node, value in zip(norm.inputs, values)]
        store.defer(
            "value",
            norm.index,
            lambda: _norm_forward(norm, frozen, training, inputs, False)[0],
            out.shape,
        )
        store.defer("cache", relu.index, lambda: out > 0, lazy=True)

    return run


def _backward(norm, relu):
    def run(store, needs):
        dout, cache = store.grads[relu.index], store.caches[norm.index]
        kernel_cache = cache[0] if norm.op == "layernorm" else cache
        if not isinstance(kernel_cache, norm_kernels.ReluNormCache):
            (masked,) = relu.gate.backward(dout, store.cache(relu.index), (True,))
            store.grads[norm.index] = masked
            return norm.gate.backward(masked, store.cache(norm.index), needs)
        # The relu's mask is its output > 0 (its deferred cache): left to whoever reads
        # the norm's gradient, not a pass over the activation at every step.
        out = store.value(relu.index)
        store.defer("grad", norm.index, lambda: relu.gate.backward(dout, out > 0, (True,))[0])
        return norm.gate.backward(dout, cache, needs, relu=True)

    return run


@register_pass
class ConvBatchnormRelu(FusionPass):
    length = 3

    def fuse_forward(self, steps):
        plain = {step.node for step in steps if not step.fused}
        reads = readers(steps)
        pooled = {step.node.inputs[0] for step in steps if step.node.op == "max_pool"}
        relus = {
            relu
            for relu in plain
            if relu.op == "relu"
            and relu not in pooled
            and (norm := relu.inputs[0]).op == "spatial_batchnorm"
            and (conv := norm.inputs[0]).op == "conv"
            and {norm, conv} <= plain
            and reads[norm] == reads[conv] == 1
        }
        inner = {n for relu in relus for n in (relu.inputs[0], relu.inputs[0].inputs[0])}
        return [
            _conv_step(step.node) if step.node in relus else step
            for step in steps
            if step.node not in inner
        ]


def _conv_step(relu):
    norm = relu.inputs[0]
    conv = norm.inputs[0]
    folded, norm_relu = batchnorm_fold.forward_run(conv, norm, relu), forward_run(norm, relu)

    def run(store):
        if norm.graph.training:
            values = [store.values[i.index] for i in conv.inputs]
            store.values[conv.index], store.caches[conv.index] = conv.gate.forward(*values)
            norm_relu(store)
            return
        folded(store)

    return Step(relu, conv.inputs + norm.inputs[1:], run, (), (conv, norm, relu))
