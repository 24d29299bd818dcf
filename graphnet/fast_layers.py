"""CS231n's `fast_layers` module at the course's import path, backed by graphnet's C++
kernels (graphnet.kernels.fast)."""
from .kernels.fast import *  # noqa: F401,F403
from .kernels.fast import __all__  # noqa: F401
