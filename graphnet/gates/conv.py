"""Convolution and max pooling: thin gates over the C++ kernels in graphnet.kernels.fast."""

import numpy as np

from ..kernels import fast, geometry
from .base import Gate, ShapeError, check_rank, dims_match, integer, register_gate


def window_count(size, kernel, stride, pad, axis):
    """Positions of a window along one axis (kernels.geometry's checked rule), None if
    unknown."""
    try:
        return geometry.window_count(size, kernel, stride, pad, axis)
    except ValueError as err:
        raise ShapeError(str(err)) from None


@register_gate
class Conv(Gate):
    """out[n, f] = sum over c of x[n, c] cross-correlated with w[f, c], plus b[f]."""

    op = "conv"
    inputs = ("x", "w", "b")
    formula = "conv({0}, {1}) + {2}"
    rule = (
        "conv: d{0} = dout convolved back with the filters {1}, d{1} = {0} correlated "
        "with dout, d{2} = dout summed per filter"
    )
    derivatives = ("dout ⋆ {1} (transposed conv)", "{0} ⋆ dout", "Σ dout per filter")

    def __init__(self, stride=1, pad=0):
        self.stride, self.pad = integer("stride", stride, 1), integer("pad", pad, 0)

    def attrs(self):
        return {"stride": self.stride, "pad": self.pad}

    def shape(self, x, w, b):
        check_rank(x, 4, "(N, C, H, W)", "x")
        check_rank(w, 4, "(F, C, HH, WW)", "w")
        check_rank(b, 1, "(F,)", "b")
        if w is not None and b is not None and not dims_match(w[0], b[0]):
            raise ShapeError(f"b {b} must hold one bias per filter of w {w}")
        if x is None or w is None:
            return None
        if not dims_match(x[1], w[1]):
            raise ShapeError(f"x {x} has {x[1]} channels but w {w} expects {w[1]}")
        return (
            x[0],
            w[0],
            window_count(x[2], w[2], self.stride, self.pad, "height"),
            window_count(x[3], w[3], self.stride, self.pad, "width"),
        )

    def forward(self, x, w, b):
        return fast.conv_forward_fast(x, w, b, self.attrs())

    def backward(self, dout, cache, needs):
        return fast.conv_backward_fast(dout, cache, need_dx=needs[0])

    def summarize_cache(self, cache, input_names):
        x, w = cache[:2]
        return [f"saved x {np.shape(x)} and w {np.shape(w)} for dw and dx"]


@register_gate
class MaxPool(Gate):
    """The maximum of each window. Backward routes each window's gradient to its maximum
    (the first one in row-major order on a tie), like a max gate."""

    op = "max_pool"
    inputs = ("x",)
    formula = "max over each window of {0}"
    rule = "max pool routes each window's gradient to the position of its maximum, like a max gate"
    derivatives = ("1 at each window's maximum, else 0",)

    def __init__(self, pool_height=2, pool_width=2, stride=2):
        self.pool_height = integer("pool_height", pool_height, 1)
        self.pool_width = integer("pool_width", pool_width, 1)
        self.stride = integer("stride", stride, 1)

    def attrs(self):
        return {
            "pool_height": self.pool_height,
            "pool_width": self.pool_width,
            "stride": self.stride,
        }

    def shape(self, x):
        check_rank(x, 4, "(N, C, H, W)", "x")
        if x is None:
            return None
        return (
            x[0],
            x[1],
            window_count(x[2], self.pool_height, self.stride, 0, "height"),
            window_count(x[3], self.pool_width, self.stride, 0, "width"),
        )

    def forward(self, x):
        return fast.max_pool_forward_fast(x, self.attrs())

    def backward(self, dout, cache, needs):
        return (fast.max_pool_backward_fast(dout, cache),)

    def summarize_cache(self, cache, input_names):
        x_shape, winners = cache[:2]
        return [f"saved each window's winner {np.shape(winners)} of x {tuple(x_shape)}"]
