"""The course's `gradient_check` module, 2025 edition: graphnet.cs231n.gradient_check, the
same in all editions."""

from ..gradient_check import *  # noqa: F401,F403
from ..gradient_check import __all__  # noqa: F401
