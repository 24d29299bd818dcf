"""conv -> relu / leaky relu (no max pool after it) as one step each way.

Gate by gate, the activation reads the conv's whole output and writes its own (and the
relu a mask) forward; backward it reads the upstream gradient and the mask (the leaky
relu: the conv's output) and writes the conv's gradient, which the conv's backward then
reads. Where a conv feeds only such an activation (a VGG without batchnorm, a network in
network's 3x3 -> 1x1 units, the modern net's stride-2 conv -> leaky relu):

- forward: the conv kernel applies the activation to each image's output while it is in
  cache (`conv_forward(..., activation=)`), the relu as the relu gate (a NaN passes), the
  leaky relu with its own pointwise kernel: its value bit for bit the gates'. The conv's
  value is deferred to its gate (on the inputs as they were); its cache is the gate's (x,
  w, b and the geometry); the relu's (its mask, input > 0) is deferred to its output (> 0
  where its input is), the leaky relu's (its input) to the conv's value.
- backward: the conv kernel takes the gradient through the activation, dout * (output > 0
  ? 1 : alpha) as the gates take it, a chunk of images at a time into a buffer that the
  chunk's weight gradient and GEMM input gradient read while it is in cache; the input
  gradient of the whole-batch kernels (Winograd, direct, tap) reads it whole, taken once
  (`conv_backward(..., activation=, act_out=)`). The conv's gradient is deferred to the
  activation's gate. Every value and gradient reads as gate by gate, bit for bit.

A leaky relu passes the gradient where its output is positive exactly where its input is
only for a slope alpha >= 0: one of a negative slope runs as its gate. So do the smooth
activations (GELU, softplus, ...), whose gradient needs their input, the conv's output,
that the fused step would have to write as well.
"""

from ..kernels import fast
from .base import PairPass, kept, register_pass


@register_pass
class ConvActivation(PairPass):
    def takes(self, steps):
        return lambda act, conv: conv.op == "conv" and kernel_activation(act) is not None

    def forward_run(self, conv, act):
        return _forward(conv, act)

    def backward_run(self, conv, act):
        return _backward(conv, act)


def kernel_activation(node):
    """(name, alpha) of the conv kernel's activation that computes `node`'s gate, or None."""
    if node.op == "relu":
        return "relu", 0.0
    if node.op == "leaky_relu" and node.gate.alpha >= 0:
        return "leaky_relu", node.gate.alpha
    return None


def _forward(conv, act):
    """The fused forward step's run(store)."""
    activation = kernel_activation(act)

    def run(store):
        values = [store.values[i.index] for i in conv.inputs]
        out, store.caches[conv.index] = fast.conv_forward_fast(
            *values, conv.gate.attrs(), *activation
        )
        store.values[act.index] = out
        inputs = [kept(node, value) for node, value in zip(conv.inputs, values)]
        store.defer("value", conv.index, lambda: conv.gate.forward(*inputs)[0], out.shape)
        if act.op == "relu":
            store.defer("cache", act.index, lambda: out > 0, lazy=True)
        else:
            store.defer("cache", act.index, lambda: store.value(conv.index), lazy=True)

    return run


def _backward(conv, act):
    name, alpha = kernel_activation(act)

    def run(store, needs):
        dout, out = store.grads[act.index], store.value(act.index)
        # The activation's gate on its output: where that is positive, so is its input.
        mask = (lambda: out > 0) if act.op == "relu" else (lambda: out)
        store.defer("grad", conv.index, lambda: act.gate.backward(dout, mask(), (True,))[0])
        return fast.conv_backward_fast(
            dout,
            store.cache(conv.index),
            need_dx=needs[0],
            activation=name,
            alpha=alpha,
            act_out=out,
        )

    return run
