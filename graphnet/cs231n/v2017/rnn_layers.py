"""The course's `rnn_layers` module, 2017 edition: the same module as graphnet.rnn_layers."""

from ...rnn_layers import *  # noqa: F401,F403
from ...rnn_layers import __all__  # noqa: F401
