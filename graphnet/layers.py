"""CS231n's `layers` module (2017 edition's conventions), at the course's import path.

The functions live in graphnet.kernels.layers; this module is what a notebook imports.
"""

from .kernels.layers import *  # noqa: F401,F403
from .kernels.layers import __all__  # noqa: F401
