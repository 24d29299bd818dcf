"""Sum over axes: every summed element receives the upstream gradient (add, many times)."""

import functools
import math

import numpy as np

from .base import Gate, ShapeError, integer, register_gate


@register_gate
class Sum(Gate):
    """Sum over `axis` (None: all axes), keeping the summed axes as size 1 with keepdims."""

    op = "sum"
    inputs = ("x",)
    formula = "Σ {0}"
    rule = "a sum distributes like add: every summed element receives the upstream gradient"
    derivatives = ("1",)

    def __init__(self, axis=None, keepdims=False):
        if isinstance(axis, (tuple, list)):
            axis = tuple(integer(f"axis[{i}]", a) for i, a in enumerate(axis))
        elif axis is not None:
            axis = integer("axis", axis)
        self.axis, self.keepdims = axis, bool(keepdims)

    def attrs(self):
        return {"axis": self.axis, "keepdims": self.keepdims}

    def _axes(self, ndim):
        axes = range(ndim) if self.axis is None else np.atleast_1d(self.axis)
        if any(not -ndim <= a < ndim for a in axes):
            raise ShapeError(f"axis {self.axis} is out of range for an input of rank {ndim}")
        return {int(a) % ndim for a in axes}

    def shape(self, x):
        if x is None:
            return None
        axes = self._axes(len(x))
        if self.keepdims:
            return tuple(1 if i in axes else n for i, n in enumerate(x))
        return tuple(n for i, n in enumerate(x) if i not in axes)

    def forward(self, x):
        return np.sum(x, axis=self.axis, keepdims=self.keepdims), np.shape(x)

    def backward(self, dout, cache, needs):
        dx = np.empty(cache, np.result_type(dout))
        np.copyto(dx, np.reshape(dout, spread(self.axis, tuple(cache))[0]))
        return (dx,)


@functools.lru_cache(maxsize=256)
def spread(axis, x_shape):
    """(x_shape with the axes a sum over `axis` takes as 1, the number of entries each of
    its results sums): how a sum's backward spreads the upstream gradient. Kept per
    (axis, shape), as a walk sums the same shapes call after call: worked out afresh by
    np.expand_dims and np.broadcast_to, it cost a transformer's mean over the steps 3.5%
    of its walk at batch 1."""
    rank = len(x_shape)
    if axis is None:
        summed = set(range(rank))
    else:
        summed = {a % rank for a in (axis if isinstance(axis, tuple) else (axis,))}
    kept = tuple(1 if i in summed else n for i, n in enumerate(x_shape))
    return kept, math.prod(x_shape[a] for a in summed)
