"""Average pooling: each window's mean; backward shares each window's gradient equally
among its entries."""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..kernels import _C
from .base import register_gate
from .conv import MaxPool
from .elementwise import threaded_array


@register_gate
class AvgPool(MaxPool):
    """The mean of each pool_height x pool_width window of x (N, C, H, W), windows `stride`
    apart: max_pool's windows, hyperparameters and shape rule, averaged instead."""

    op = "avg_pool"
    formula = "mean over each window of {0}"
    rule = (
        "average pooling distributes: each entry of a window receives the window's "
        "upstream gradient / (pool_height·pool_width)"
    )
    derivatives = ("1/(pool_height·pool_width) per window holding the entry",)

    def forward(self, x):
        if threaded_array(x) and x.ndim == 4:  # C++: one plane per thread, no window view
            return _C.avg_pool_forward(x, self.pool_height, self.pool_width, self.stride), x.shape
        windows = sliding_window_view(x, (self.pool_height, self.pool_width), axis=(2, 3))
        return windows[:, :, :: self.stride, :: self.stride].mean(axis=(4, 5)), np.shape(x)

    def backward(self, dout, cache, needs):
        if threaded_array(dout) and dout.ndim == 4:
            H, W = cache[2:]
            return (
                _C.avg_pool_backward(dout, H, W, self.pool_height, self.pool_width, self.stride),
            )
        dx = np.zeros(cache, dtype=dout.dtype)
        share = dout / (self.pool_height * self.pool_width)
        rows, columns = self.stride * dout.shape[2], self.stride * dout.shape[3]
        # One strided add per position in the window, each covering every window at once.
        for i in range(self.pool_height):
            for j in range(self.pool_width):
                dx[:, :, i : i + rows : self.stride, j : j + columns : self.stride] += share
        return (dx,)

    def summarize_cache(self, cache, input_names):
        return [f"saved the shape of {input_names[0]}: {tuple(cache)}"]
