"""CS231n's `layer_utils` module (2017 edition's conventions), at the course's import path.

The functions live in graphnet.kernels.layer_utils; this module is what a notebook imports.
"""

from .kernels.layer_utils import *  # noqa: F401,F403
from .kernels.layer_utils import __all__  # noqa: F401
