"""conv -> spatial batchnorm as one forward step, folded into the conv in eval mode.

In eval mode a batchnorm is a fixed scale and shift per channel, gamma / sqrt(running_var
+ eps) and beta - running_mean * scale. Where a conv feeds only a spatial batchnorm, the
conv runs once with its filters and bias scaled and shifted (w * scale, b * scale +
shift): the batchnorm never reads the activation. Its output equals the gates' to
rounding (the gates subtract the mean from the conv's output; the fold subtracts it from
the bias). The conv's value and cache and the batchnorm's cache are deferred to their own
gates, on copies of the inputs and the running averages, so a backward after an eval
forward reads the gates' exact caches.

Where the conv's filters are many against its output (a wide layer on small images, a
small batch), the two copies of the filters a call makes (scaled, and kept for the
deferred conv) cost more than the passes over the activation the fold saves: there the
step runs the chain of conv_chain.py instead (every gate's value and cache, bit for bit
the gates', no copy), as a small batch's plan does (fold_pays).

In train mode the step runs the two gates as they are (the batch's statistics are only
known once the conv's output is): the batchnorm updates its running averages once, and
nothing is deferred. The backward runs gate by gate either way.

affine -> batchnorm is not fused: scaling and shifting the affine's output in one pass
instead of the batchnorm gate's saved nothing measurable (benchmarks/bench_fusion.py,
fc_bn), and folding into the affine's weights needs a copy of them for the deferred
affine, which costs more than the batchnorm.
"""

import numpy as np

from ..core.plan import Step
from ..kernels import fast
from . import conv_chain
from .conv_activation import kernel_activation
from .base import FusionPass, kept, once, readers, register_pass


@register_pass
class BatchnormFold(FusionPass):
    length = 2

    def fuse_forward(self, steps):
        planned = {step.node for step in steps if not step.fused}
        reads = readers(steps)
        norms = {
            norm
            for norm in planned
            if norm.op == "spatial_batchnorm"
            and norm.inputs[0].op == "conv"
            and norm.inputs[0] in planned
            and reads[norm.inputs[0]] == 1
        }
        convs = {norm.inputs[0] for norm in norms}
        return [
            _fused_step(step.node) if step.node in norms else step
            for step in steps
            if step.node not in convs
        ]


def _fused_step(norm):
    conv = norm.inputs[0]
    return Step(norm, conv.inputs + norm.inputs[1:], forward_run(conv, norm), (), (conv, norm))


def forward_run(conv, norm, act=None):
    """The fused step's run(store). With `act` (the relu or leaky relu gate reading the
    batchnorm, as in norm_relu.py's ConvBatchnormRelu and norm_activation.py's
    ConvBatchnormActivation), the step ends with its value: in eval mode the conv kernel
    takes the activation of each image while it is in cache (no pass of its own over the
    activation; a leaky relu of a negative slope, which the kernel does not take, runs as
    its gate), the batchnorm's value is deferred to its gate and the activation's cache to
    its output (a relu's mask, > 0 where its input is) or to the batchnorm's value (a leaky
    relu's saved input)."""

    relu = act if act is not None and act.op == "relu" else None
    in_kernel = None if act is None else kernel_activation(act)
    chained = conv_chain.native_run([conv, norm] + ([] if relu is None else [relu]))

    def run_act(store):
        """The activation's gate on the batchnorm's value (where it is not in a kernel)."""
        value = store.values[norm.index]
        store.values[act.index], store.caches[act.index] = act.gate.forward(value)

    def run(store):
        if not (norm.graph.training or fold_pays(conv, store)) and chained(store):
            if act is not None and relu is None:
                run_act(store)
            return
        fold = None if norm.graph.training else scale_and_shift(conv, norm, store)
        if fold is None:
            run_gates(conv, norm, store)
            if act is not None:
                run_act(store)
            return
        x, w, b = folded_inputs(conv, store, fold)
        if in_kernel is None:
            out, _ = conv.gate.forward(x, w, b)
            store.values[norm.index] = out
        else:
            out, _ = fast.conv_forward_fast(x, w, b, conv.gate.attrs(), *in_kernel)
            store.values[act.index] = out
        produced = defer_conv(conv, store, out.shape)
        normalized = defer_norm_cache(norm, store, lambda: produced()[0])
        if in_kernel is not None:
            store.defer("value", norm.index, lambda: normalized()[0], out.shape)
            # After the value it reads: a backward computes deferred entries in this order.
            saved = (lambda: out > 0) if relu is not None else (lambda: store.value(norm.index))
            store.defer("cache", act.index, saved)
        elif act is not None:
            run_act(store)

    return run


def fold_pays(conv, store):
    """Whether folding costs less than running the chain: whether the conv's output has as
    many entries as its filters or more (its output's planes taken as large as its input's,
    as at stride 1 with a "same" pad). Per step of the vgg_wide zoo net's eval forward
    (one thread, CPU time, ms, fold / chain): 3x3 512 -> 512 @4 (2.4M filter entries)
    at batch 4 4.7-5.0 / 3.2, at 64 (0.5M outputs) 39.4-39.9 / 38.0-38.4; 256 -> 256
    @8 at 4 2.4-2.5 / 2.3; 128 -> 256 @8 (0.3M filter entries) at 16 3.6 / 3.5-3.6,
    at 64 12.6-12.7 / 13.1-13.4; 64 -> 128 @16 at 16 (0.5M outputs, 74K filter entries)
    3.4-3.5 / 3.9-4.0; 3 -> 64 @32 at 16 1.1 / 2.1."""
    x, w = store.values[conv.inputs[0].index], store.values[conv.inputs[1].index]
    x_shape, w_shape = np.shape(x), np.shape(w)
    if len(x_shape) != 4 or len(w_shape) != 4:
        return True
    return x_shape[0] * w_shape[0] * x_shape[2] * x_shape[3] >= np.size(w)


def run_gates(conv, norm, store):
    """The two gates one after the other (train mode: the batch's statistics)."""
    out, store.caches[conv.index] = conv.gate.forward(*(store.values[i.index] for i in conv.inputs))
    store.values[conv.index] = out
    store.values[norm.index], store.caches[norm.index] = norm.gate.forward(
        store.states[norm.index],
        norm.graph.training,
        out,
        *(store.values[i.index] for i in norm.inputs[1:]),
    )


def folded_inputs(conv, store, fold):
    """x, and the conv's filters and bias with the batchnorm's scale and shift applied."""
    scale, shift = fold
    x, w, b = (store.values[i.index] for i in conv.inputs)
    return x, w * scale[:, None, None, None], b * scale + shift


def defer_conv(conv, store, shape):
    """Leave the conv's value (of `shape`) and cache to its gate, on copies of what it reads
    now; returns the function giving the gate's (out, cache)."""
    inputs = [kept(node, store.values[node.index]) for node in conv.inputs]
    produced = once(lambda: conv.gate.forward(*inputs))
    store.defer("value", conv.index, lambda: produced()[0], shape)
    store.defer("cache", conv.index, lambda: produced()[1])
    return produced


def defer_norm_cache(norm, store, normalizes):
    """Leave the batchnorm's cache to its gate in eval mode, on `normalizes()` and copies of
    gamma, beta and the running averages as they are now; returns the function giving the
    gate's (out, cache)."""
    gamma, beta = (np.array(store.values[i.index]) for i in norm.inputs[1:])
    frozen = {key: np.array(value) for key, value in store.states[norm.index].items()}
    normalized = once(lambda: norm.gate.forward(dict(frozen), False, normalizes(), gamma, beta))
    store.defer("cache", norm.index, lambda: normalized()[1])
    return normalized


def scale_and_shift(conv, norm, store):
    """The batchnorm's eval-mode scale and shift per channel, or None where the shapes are
    not the usual ones (the gates then run, and name any mistake)."""
    x, w, b = (store.values[i.index] for i in conv.inputs)
    gamma, beta = (store.values[i.index] for i in norm.inputs[1:])
    state = store.states[norm.index]
    dtype, filters = x.dtype, w.shape[0]
    mean = state.get("running_mean", np.zeros(filters, dtype))
    var = state.get("running_var", np.zeros(filters, dtype))
    if not (
        w.dtype == b.dtype == gamma.dtype == beta.dtype == dtype
        and w.ndim == 4
        and b.shape == gamma.shape == beta.shape == np.shape(mean) == np.shape(var) == (filters,)
    ):
        return None
    # A batchnorm that never ran keeps the zero averages its gate would have stored.
    state.setdefault("running_mean", mean)
    state.setdefault("running_var", var)
    # As the gate normalizes: statistics in x's dtype, 1 / sqrt(var + eps).
    scale = gamma / np.sqrt(var.astype(dtype, copy=False) + norm.gate.eps)
    return scale, beta - mean.astype(dtype, copy=False) * scale
