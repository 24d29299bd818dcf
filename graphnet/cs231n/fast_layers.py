"""The course's `fast_layers` module, on graphnet's C++ kernels (graphnet.kernels.fast).

The course's variants, `conv_*_strides` and `conv_*_im2col` for the convolution and
`max_pool_*_reshape` and `max_pool_*_im2col` for pooling, are all the C++ kernels here:
one cache format, so any backward takes any forward's cache, and no shape restrictions
(the course's reshape pooling needs square, tiling windows). Nothing to compile.
"""

from ..kernels.fast import *  # noqa: F401,F403
from ..kernels.fast import __all__ as _kernels
from ..kernels.fast import (
    conv_backward_fast,
    conv_forward_fast,
    max_pool_backward_fast,
    max_pool_forward_fast,
)

conv_forward_strides = conv_forward_im2col = conv_forward_fast
conv_backward_strides = conv_backward_im2col = conv_backward_fast
max_pool_forward_reshape = max_pool_forward_im2col = max_pool_forward_fast
max_pool_backward_reshape = max_pool_backward_im2col = max_pool_backward_fast

__all__ = _kernels + [
    "conv_forward_strides",
    "conv_forward_im2col",
    "conv_backward_strides",
    "conv_backward_im2col",
    "max_pool_forward_reshape",
    "max_pool_forward_im2col",
    "max_pool_backward_reshape",
    "max_pool_backward_im2col",
]
