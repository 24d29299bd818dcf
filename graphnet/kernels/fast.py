"""Fast convolution and max pooling with CS231n's calling conventions, backed by C++.

The kernels live in ``cpp/`` and are bound as ``graphnet._C``; they run with the GIL
released on ``graphnet._C.get_num_threads()`` threads (``OMP_NUM_THREADS`` or
``graphnet._C.set_num_threads(n)``).

Dtypes: float32 and float64 are computed natively and the outputs keep the input dtype.
All float arrays of one call (x, w, b, dout) must share one dtype; mixing them raises
ValueError instead of converting silently. Inputs may have any strides (views,
transposes); they are copied to C-contiguous order inside only when needed.

Bad parameters or shapes raise ValueError naming the shapes; an x or w that stands for
more than the machine's memory (a broadcast view) a ValueError naming it, before any work.
"""

import numpy as np

from . import _C
from .geometry import (
    INT64_MAX,
    INT64_MIN,
    MEMORY_BYTES,
    int64,
    refuse_beyond_memory,
    window_count,
)

__all__ = [
    "conv_forward_fast",
    "conv_backward_fast",
    "conv_relu_pool_forward_fast",
    "max_pool_forward_fast",
    "relu_max_pool_forward_fast",
    "max_pool_backward_fast",
]


def _int_param(params, key, what):
    """params[key] as an int64 (the kernels check its range), or ValueError saying what is
    missing or wrong."""
    if type(params) is dict:  # the gates' own conv_param and pool_param: checked in 0.1 us
        value = params.get(key)
        if type(value) is int and INT64_MIN <= value <= INT64_MAX:
            return value
    if key not in params:
        raise ValueError(f"{what} needs {key!r}, got keys {sorted(params)}")
    return int64(params[key], f"{what}[{key!r}]", INT64_MIN)


def conv_forward_fast(x, w, b, conv_param, activation="", alpha=0.0):
    """Convolution forward pass.

    x: (N, C, H, W), w: (F, C, HH, WW), b: (F,), conv_param: {'stride': s, 'pad': p}.
    Returns (out, cache) with out of shape (N, F, H', W'),
    H' = 1 + (H + 2 * pad - HH) // stride and W' likewise (floor division: rows or
    columns that a window cannot reach with a full step are simply not visited).
    activation: "relu" or "leaky_relu" (of slope alpha >= 0) makes out that activation of
    the convolution, bit for bit as its gate takes it (a NaN passes), each image's taken
    while it is still in cache rather than in a pass of its own over the batch.
    """
    stride = _int_param(conv_param, "stride", "conv_param")
    pad = _int_param(conv_param, "pad", "conv_param")
    x, w, b = np.asarray(x), np.asarray(w), np.asarray(b)
    if x.nbytes > MEMORY_BYTES or w.nbytes > MEMORY_BYTES:
        refuse_beyond_memory("conv_forward_fast", x=x, w=w)
    out = _C.conv_forward(x, w, b, stride, pad, activation, alpha)  # by position: see matmul
    return out, (x, w, b, conv_param)


def conv_relu_pool_forward_fast(x, w, b, conv_param, pool_param):
    """max_pool_forward_fast(relu(conv_forward_fast(x, w, b, conv_param)), pool_param),
    bit for bit, in one pass that never writes the convolution's output: each image is
    pooled while its convolution is still in cache. Returns (out, pool cache)."""
    stride = _int_param(conv_param, "stride", "conv_param")
    pad = _int_param(conv_param, "pad", "conv_param")
    ph = _int_param(pool_param, "pool_height", "pool_param")
    pw = _int_param(pool_param, "pool_width", "pool_param")
    pool_stride = _int_param(pool_param, "stride", "pool_param")
    x, w, b = np.asarray(x), np.asarray(w), np.asarray(b)
    if x.nbytes > MEMORY_BYTES or w.nbytes > MEMORY_BYTES:
        refuse_beyond_memory("conv_relu_pool_forward_fast", x=x, w=w)
    out, winners = _C.conv_relu_pool_forward(x, w, b, stride, pad, ph, pw, pool_stride)
    conv_shape = (
        x.shape[0],
        w.shape[0],
        window_count(x.shape[2], w.shape[2], stride, pad),
        window_count(x.shape[3], w.shape[3], stride, pad, "width"),
    )
    return out, (conv_shape, winners, pool_param)


def conv_backward_fast(dout, cache, *, need_dx=True, activation="", alpha=0.0, act_out=None):
    """Convolution backward pass: returns (dx, dw, db) for the cache of conv_forward_fast.

    need_dx=False skips the input gradient entirely (for data that needs none) and
    returns None in its place. With an activation (as conv_forward_fast's) and act_out,
    that function's output with it: dout is act_out's gradient, and the convolution's own,
    dout * (act_out > 0 ? 1 : alpha) as the gates take it, is computed a few images at a
    time where the passes read it, not for the whole batch first.
    """
    x, w, _, conv_param = cache
    stride = _int_param(conv_param, "stride", "conv_param")
    pad = _int_param(conv_param, "pad", "conv_param")
    # by position: a keyword takes pybind11's slow path (about 1 us a call)
    return _C.conv_backward(
        np.asarray(dout), x, w, stride, pad, need_dx, True, activation, alpha, act_out
    )


def max_pool_forward_fast(x, pool_param):
    """Max pooling forward pass, no padding.

    x: (N, C, H, W), pool_param: {'pool_height', 'pool_width', 'stride'}.
    Returns (out, cache) with out of shape (N, C, H', W'),
    H' = 1 + (H - pool_height) // stride and W' likewise. Windows may overlap.

    Ties: when several entries of a window share the maximum, the FIRST of them in
    row-major window order is the winner (and gets the whole gradient in backward).
    A NaN counts as the maximum, so NaNs propagate (the first NaN wins).
    The cache keeps each window's winner (int32), not x.
    """
    return _max_pool("max_pool_forward_fast", x, pool_param, relu_first=False)


def relu_max_pool_forward_fast(x, pool_param):
    """max_pool_forward_fast(relu(x), pool_param), bit for bit, in one pass that never
    writes relu(x) (float32 or float64 x). A window whose entries are all <= 0 has zeros
    only after the relu: its first entry wins."""
    return _max_pool("relu_max_pool_forward_fast", x, pool_param, relu_first=True)


def _max_pool(fn, x, pool_param, relu_first):
    ph = _int_param(pool_param, "pool_height", "pool_param")
    pw = _int_param(pool_param, "pool_width", "pool_param")
    stride = _int_param(pool_param, "stride", "pool_param")
    x = np.asarray(x)
    if x.nbytes > MEMORY_BYTES:
        refuse_beyond_memory(fn, x=x)
    out, winners = _C.max_pool_forward(x, ph, pw, stride, relu_first)  # by position
    return out, (x.shape, winners, pool_param)


def max_pool_backward_fast(dout, cache):
    """Max pooling backward pass: returns dx for the cache of max_pool_forward_fast.

    Each window's upstream gradient goes wholly to its winner (the first maximum in
    row-major window order, see max_pool_forward_fast); overlapping windows add up.
    """
    x_shape, winners, _ = cache
    return _C.max_pool_backward(np.asarray(dout), winners, x_shape[2], x_shape[3])
