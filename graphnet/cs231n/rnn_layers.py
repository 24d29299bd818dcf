"""The course's `rnn_layers` module (assignment 3, every edition that has it), from
graphnet.rnn_layers."""

from ..rnn_layers import *  # noqa: F401,F403
from ..rnn_layers import __all__  # noqa: F401
