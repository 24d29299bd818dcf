"""The course's `gradient_check` module (every edition), from graphnet.gradient_check."""

from ..gradient_check import *  # noqa: F401,F403
from ..gradient_check import __all__  # noqa: F401
