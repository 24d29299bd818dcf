"""The course's `fast_layers` module, 2017 edition: graphnet.cs231n.fast_layers, the same in all
editions."""

from ..fast_layers import *  # noqa: F401,F403
from ..fast_layers import __all__  # noqa: F401
