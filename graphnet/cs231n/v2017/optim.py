"""The course's `optim` module, 2017 edition: graphnet.cs231n.optim, the same in all
editions."""

from ..optim import *  # noqa: F401,F403
from ..optim import __all__  # noqa: F401
