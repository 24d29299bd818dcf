"""CS231n's `rnn_layers` module (assignment 3), at the course's import path.

The functions live in graphnet.kernels.rnn_layers; this module is what a notebook imports.
"""

from .kernels.rnn_layers import *  # noqa: F401,F403
from .kernels.rnn_layers import __all__  # noqa: F401
