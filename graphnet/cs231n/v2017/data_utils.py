"""The course's `data_utils` module, 2017 edition: graphnet.cs231n.data_utils, the same in all
editions."""

from ..data_utils import *  # noqa: F401,F403
from ..data_utils import __all__  # noqa: F401
