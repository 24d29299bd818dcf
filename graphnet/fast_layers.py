"""CS231n's `fast_layers` module at the course's import path, backed by graphnet's C++
kernels (graphnet.kernels.fast), with the course's variant names (`*_im2col`,
`*_strides`, `*_reshape`) for the same kernels; the same in every edition."""

from .cs231n.fast_layers import *  # noqa: F401,F403
from .cs231n.fast_layers import __all__  # noqa: F401
