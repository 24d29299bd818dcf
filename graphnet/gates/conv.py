"""Convolution and max pooling: thin gates over the C++ kernels in graphnet.fast_layers."""
from ..kernels import fast as fast_layers
from .base import Gate, ShapeError, dims_match


def window_count(size, kernel, stride, pad, what):
    """Positions of a window along one axis (the course's formula), None if unknown."""
    if size is None or kernel is None:
        return None
    if kernel > size + 2 * pad:
        raise ShapeError(f"the {what} window {kernel} is larger than the padded input {size + 2 * pad}")
    return 1 + (size + 2 * pad - kernel) // stride


def check_rank(shape, rank, layout, what):
    if shape is not None and len(shape) != rank:
        raise ShapeError(f"{what} must be {layout}, got {shape}")


class Conv(Gate):
    """out[n, f] = sum over c of x[n, c] cross-correlated with w[f, c], plus b[f]."""
    op = "conv"

    def __init__(self, stride=1, pad=0):
        if int(stride) < 1 or int(pad) < 0:
            raise ShapeError(f"stride must be >= 1 and pad >= 0, got stride={stride}, pad={pad}")
        self.stride, self.pad = int(stride), int(pad)

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
        return (x[0], w[0],
                window_count(x[2], w[2], self.stride, self.pad, "filter height"),
                window_count(x[3], w[3], self.stride, self.pad, "filter width"))

    def forward(self, x, w, b):
        return fast_layers.conv_forward_fast(x, w, b, self.attrs())

    def backward(self, dout, cache, needs):
        return fast_layers.conv_backward_fast(dout, cache, need_dx=needs[0])


class MaxPool(Gate):
    """The maximum of each window. Backward routes each window's gradient to its maximum
    (the first one in row-major order on a tie), like a max gate."""
    op = "max_pool"

    def __init__(self, pool_height=2, pool_width=2, stride=2):
        if min(int(pool_height), int(pool_width), int(stride)) < 1:
            raise ShapeError(f"pool sizes and stride must be >= 1, got {pool_height}x"
                             f"{pool_width} stride {stride}")
        self.pool_height, self.pool_width, self.stride = int(pool_height), int(pool_width), int(stride)

    def attrs(self):
        return {"pool_height": self.pool_height, "pool_width": self.pool_width,
                "stride": self.stride}

    def shape(self, x):
        check_rank(x, 4, "(N, C, H, W)", "x")
        if x is None:
            return None
        return (x[0], x[1], window_count(x[2], self.pool_height, self.stride, 0, "pool height"),
                window_count(x[3], self.pool_width, self.stride, 0, "pool width"))

    def forward(self, x):
        return fast_layers.max_pool_forward_fast(x, self.attrs())

    def backward(self, dout, cache, needs):
        return (fast_layers.max_pool_backward_fast(dout, cache),)
