"""The course's `vis_utils` module, 2017 edition: graphnet.cs231n.vis_utils, the same in all
editions."""

from ..vis_utils import *  # noqa: F401,F403
from ..vis_utils import __all__  # noqa: F401
