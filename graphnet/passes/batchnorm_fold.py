"""conv -> spatial batchnorm and affine -> batchnorm as one forward step, folded in eval mode.

In eval mode a batchnorm is a fixed scale and shift per channel, gamma / sqrt(running_var
+ eps) and beta - running_mean * scale: a conv or affine feeding only a batchnorm computes
the batchnorm's output at once, the conv with its filters and bias scaled and shifted
(w * scale, (b - running_mean) * scale + beta: the activation is never read again), the
affine with its output scaled and shifted in place. The batchnorm's output matches the
gates' to rounding (the gates subtract the mean from the conv's output; the fold
subtracts it from the bias). The conv's or affine's value and cache and the batchnorm's
cache are deferred to their own gates, on copies of the inputs and the running
averages, so a backward after an eval forward reads the gates' exact caches.

In train mode the step runs the two gates as they are (the batch's statistics are only
known once the conv's output is): the batchnorm updates its running averages once, and
nothing is deferred. The backward runs gate by gate either way.
"""
import functools

import numpy as np

from ..core.plan import Step
from .base import FusionPass, kept, readers, register_pass

#: The batchnorm gates, and the gate whose output each folds into.
FOLDS_INTO = {"spatial_batchnorm": "conv", "batchnorm": "affine"}


@register_pass
class BatchnormFold(FusionPass):

    def fuse_forward(self, steps):
        planned = {step.node for step in steps}
        reads = readers(steps)
        norms = {norm for norm in planned if FOLDS_INTO.get(norm.op) == norm.inputs[0].op
                 and norm.inputs[0] in planned and reads[norm.inputs[0]] == 1}
        producers = {norm.inputs[0] for norm in norms}
        return [_fused_step(step.node) if step.node in norms else step
                for step in steps if step.node not in producers]


def _fused_step(norm):
    producer = norm.inputs[0]
    return Step(norm, producer.inputs + norm.inputs[1:], _forward(producer, norm), (),
                (producer, norm))


def _forward(producer, norm):
    graph = norm.graph

    def run(store):
        inputs = [store.values[i.index] for i in producer.inputs]
        gamma, beta = (store.values[i.index] for i in norm.inputs[1:])
        state = store.states[norm.index]
        fold = None if graph.training else _fold(producer, norm, inputs, gamma, beta, state)
        if fold is None:  # gate by gate
            out, store.caches[producer.index] = producer.gate.forward(*inputs)
            store.values[producer.index] = out
            store.values[norm.index], store.caches[norm.index] = norm.gate.forward(
                state, graph.training, out, gamma, beta)
            return
        scale, shift = fold
        gamma, beta = np.array(gamma), np.array(beta)
        frozen = {key: np.array(value) for key, value in state.items()}
        if producer.op == "conv":  # the filters and the bias scaled and shifted
            x, w, b = inputs
            store.values[norm.index], _ = producer.gate.forward(
                x, w * scale[:, None, None, None], b * scale + shift)
            inputs = [kept(node, value) for node, value in zip(producer.inputs, inputs)]
            produced = functools.cache(lambda: producer.gate.forward(*inputs))
            store.defer("value", producer.index, lambda: produced()[0],
                        store.values[norm.index].shape)
            store.defer("cache", producer.index, lambda: produced()[1])
        else:  # the affine's output scaled and shifted (a copy of w would cost more)
            out, store.caches[producer.index] = producer.gate.forward(*inputs)
            store.values[producer.index] = out
            normalized = out * scale
            normalized += shift
            store.values[norm.index] = normalized
            produced = functools.cache(lambda: (out, None))
        store.defer("cache", norm.index, lambda: norm.gate.forward(
            dict(frozen), False, produced()[0], gamma, beta)[1])
    return run


def _fold(producer, norm, inputs, gamma, beta, state):
    """The batchnorm's eval-mode scale and shift per channel, or None where the shapes are
    not the usual ones (the gates then run, and name any mistake)."""
    x, w, b = inputs
    dtype = x.dtype
    features = w.shape[0] if producer.op == "conv" else w.shape[-1]
    mean = state.get("running_mean", np.zeros(features, dtype))
    var = state.get("running_var", np.zeros(features, dtype))
    if not (w.dtype == b.dtype == gamma.dtype == beta.dtype == dtype and w.ndim in (2, 4)
            and b.shape == gamma.shape == beta.shape == np.shape(mean) == np.shape(var)
            == (features,)):
        return None
    # As the gate normalizes: statistics in x's dtype, 1 / sqrt(var + eps).
    scale = gamma / np.sqrt(var.astype(dtype, copy=False) + norm.gate.eps)
    return scale, beta - mean.astype(dtype, copy=False) * scale
