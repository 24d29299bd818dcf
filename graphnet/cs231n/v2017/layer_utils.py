"""The course's `layer_utils` module, 2017 edition: the sandwiches and fast layers of
graphnet.cs231n.layer_utils, with the 2017 edition's layers (its star import brings them)."""

from .. import layer_utils as _editions_alike
from .._exports import star_names
from ..layer_utils import *  # noqa: F401,F403
from . import layers as _layers
from .layers import *  # noqa: F401,F403  (after the line above: the 2017 dropout_forward)

__all__ = star_names(_editions_alike, _layers)
