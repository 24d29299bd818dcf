"""Fused steps: gates that the scheduler runs together when their plan allows it.

A CNN spends a third of its step in conv -> relu -> max_pool. Run gate by gate, the relu
writes a whole activation forward and backward, the pool writes a mostly-zero gradient
of that size, and the conv's weight gradient multiplies every zero of it. Such a chain,
where the conv and the relu feed nothing else, runs as one step each way:

- forward: each image's convolution is pooled, with the relu applied on the fly, while
  it is still in cache (`conv_relu_pool_forward_fast`). The conv's and the relu's values
  are computed only if someone reads them.
- backward: the conv's weight and bias gradients come straight from the pooled gradient,
  summing input patches only at each window's winner that passed the relu
  (`_C.conv_pooled_backward`). The relu's and the conv's gradients are computed only if
  someone reads them, from the pooled gradient and the winners alone. Where the conv's
  input needs a gradient too, they are computed in the step, for the conv's dx.

The graph keeps its separate nodes, and every value and gradient reads the same as
without fusion, bit for bit, but for the conv's weight and bias gradients: they are summed
in another order (equal to rounding), and a window the relu blocks adds nothing to them
even if its upstream gradient is NaN or infinite (gate by gate, 0 * inf makes a NaN).
`Graph.fuse = False` and `detect_anomaly()` run every gate on its own.
"""
import functools

import numpy as np

from ..kernels import _C
from ..kernels import fast as fast_layers


class Deferred:
    """What a fused step left uncomputed in a node's value, gradient or cache: the
    function that computes it, called on the first read (see scheduler.Node)."""

    __slots__ = ("make",)

    def __init__(self, make):
        self.make = make


def fuse_forward(steps):
    """Forward steps (node, function, inputs), each fusable chain's three replaced by one
    at its pool's place."""
    chains = _chains(steps)
    fused = []
    for node, forward, inputs in _without_inner_steps(steps, chains):
        if node in chains:
            relu, conv = node.inputs[0], node.inputs[0].inputs[0]
            fused.append((node, _conv_relu_pool_forward(conv, relu, node), conv.inputs))
        else:
            fused.append((node, forward, inputs))
    return fused


def fuse_backward(steps):
    """Backward steps (node, function, inputs, needs), each fusable chain's three replaced
    by one at its pool's place, which gives the conv's inputs their gradients."""
    chains = _chains(steps)
    fused = []
    for node, backward, inputs, needs in _without_inner_steps(steps, chains):
        if node in chains:
            relu, conv = node.inputs[0], node.inputs[0].inputs[0]
            fused.append((node, _conv_relu_pool_backward(conv, relu, node), conv.inputs,
                          tuple(i.requires_grad for i in conv.inputs)))
        else:
            fused.append((node, backward, inputs, needs))
    return fused


def deferrable(nodes):
    """The nodes among `nodes` whose value and cache a fused forward step may leave for
    later: the conv and the relu of each conv -> relu -> max_pool."""
    found = []
    for pool in nodes:
        relu = pool.inputs[0] if pool.op == "max_pool" else None
        if relu is not None and relu.op == "relu" and relu.inputs[0].op == "conv":
            found += [relu, relu.inputs[0]]
    return found


def _chains(steps):
    """The pools of the conv -> relu -> max_pool chains in `steps` (forward or backward)
    whose conv and relu are steps there and feed nothing else there."""
    planned = {node for node, *_ in steps}
    uses = {}
    for _, _, inputs, *_ in steps:
        for node in inputs:
            uses[node] = uses.get(node, 0) + 1
    return {pool for pool in planned
            if pool.op == "max_pool" and (relu := pool.inputs[0]).op == "relu"
            and (conv := relu.inputs[0]).op == "conv" and relu in planned and conv in planned
            and uses[relu] == 1 and uses[conv] == 1}


def _without_inner_steps(steps, chains):
    inner = {n for pool in chains for n in (pool.inputs[0], pool.inputs[0].inputs[0])}
    return [step for step in steps if step[0] not in inner]


def _conv_relu_pool_forward(conv, relu, pool):
    def forward(x, w, b):
        pooled = fast_layers.conv_relu_pool_forward_fast(x, w, b, conv.gate.attrs(),
                                                         pool.gate.attrs())
        # What is computed when read comes from copies of the inputs as they are now: the
        # optimizer updates w and b in place after the step, and a training loop may refill
        # its input batch in place. (Cheap: the conv does ~800 flops per byte of input.)
        inputs = tuple(np.array(a) for a in (x, w, b))
        conv_outputs = functools.cache(lambda: conv.gate.forward(*inputs))
        conv._value, conv._cache = Deferred(lambda: conv_outputs()[0]), (x, w, b, conv.gate.attrs())
        relu_outputs = functools.cache(lambda: relu.gate.forward(conv_outputs()[0]))
        relu._value = Deferred(lambda: relu_outputs()[0])
        relu._cache = Deferred(lambda: relu_outputs()[1])
        return pooled
    forward.label, forward.chain = "conv+relu+max_pool", (conv, relu, pool)
    return forward


def _conv_relu_pool_backward(conv, relu, pool):
    def backward(dpool, pool_cache, needs):
        pooled = pool._value

        def unpool(grad):
            return pool.gate.backward(grad, pool_cache, (True,))[0]

        def relu_grad():
            return unpool(dpool)

        def conv_grad(relu_grad):
            # The relu passes the gradient where the conv's output is positive; where the
            # gradient is not zero, that is at a winner whose window's pooled value is
            # positive: no need for the conv's output. A product, as in the relu gate, for
            # the same signed zeros and the same 0 * inf.
            return relu_grad * (unpool((pooled > 0).astype(dpool.dtype)) > 0)

        if needs[0]:  # dx is a dense convolution of the conv's whole gradient anyway
            relu._grad = relu_grad()
            conv._grad = conv_grad(relu._grad)
            return conv.gate.backward(conv._grad, conv._cache, needs)
        x, w, _, conv_param = conv._cache
        _, winners, _ = pool_cache
        dw, db = _C.conv_pooled_backward(dpool, pooled, winners, x, w, conv_param["stride"],
                                         conv_param["pad"])
        relu._grad = Deferred(relu_grad)
        conv._grad = Deferred(lambda: conv_grad(relu_grad()))
        return None, dw if needs[1] else None, db if needs[2] else None
    backward.label, backward.chain = "conv+relu+max_pool", (conv, relu, pool)
    return backward
