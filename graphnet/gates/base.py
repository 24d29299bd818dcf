"""What every gate is, and the shape rules that several gates share.

A gate is the recipe for one kind of node: its name, how its output shape follows from
its inputs' shapes, how to compute the output (`forward`) and how to turn the gradient
of the output into gradients of the inputs (`backward`). It keeps no arrays: what the
forward pass saves for the backward pass (the cache) lives on the node.
"""
import numpy as np


class ShapeError(ValueError):
    """A gate's shape rule failed; the graph adds the gate and node names to the message."""


class Gate:
    op = "gate"
    #: Stateful gates (batchnorm's running averages, dropout's random stream) get the
    #: node's `state` dict and the graph's training flag as their first two arguments.
    stateful = False

    def shape(self, *shapes):
        """Output shape from input shapes (tuples that may hold None for unknown sizes,
        or None for an unknown shape). Raise ShapeError on a mismatch."""
        return None

    def forward(self, *values):
        """Return (output, cache)."""
        raise NotImplementedError

    def backward(self, dout, cache, needs):
        """Return one gradient per input; `needs[i]` is False when nobody wants input i's
        gradient, and the gate may then return None for it instead of computing it."""
        raise NotImplementedError

    def attrs(self):
        """The gate's hyperparameters (stride, eps, ...), as keyword arguments of its builder."""
        return {}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.attrs().items())
        return f"{type(self).__name__}({args})"


def dims_match(a, b):
    return a is None or b is None or a == b


def broadcast_shape(*shapes):
    """numpy's broadcasting rule on shapes that may hold None (unknown) sizes."""
    if any(s is None for s in shapes):
        return None
    ndim = max(len(s) for s in shapes)
    padded = [(1,) * (ndim - len(s)) + tuple(s) for s in shapes]
    out = []
    for dims in zip(*padded):
        sizes = {d for d in dims if d != 1}
        known = {d for d in sizes if d is not None}
        if len(known) > 1:
            raise ShapeError("shapes " + " and ".join(map(str, shapes)) + " do not broadcast")
        out.append(known.pop() if known else (None if None in sizes else 1))
    return tuple(out)


def unbroadcast(grad, shape):
    """Sum a gradient back down to the shape of an input that numpy broadcast up."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    grad = grad.sum(axis=tuple(range(extra))) if extra else grad
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad
