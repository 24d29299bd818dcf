"""The course's `layers` module, 2017 edition: dropout's `p` is the probability of DROPPING
a unit. The same module as graphnet.layers."""

from ...layers import *  # noqa: F401,F403
from ...layers import __all__  # noqa: F401
