"""The course's `layer_utils` module (2018+ editions): the sandwich layers
(graphnet.kernels.layer_utils), and, as the course's star import brings them, everything of
graphnet.cs231n.layers and graphnet.cs231n.fast_layers."""

from ..kernels import layer_utils as _sandwiches
from ..kernels.layer_utils import *  # noqa: F401,F403
from . import fast_layers as _fast_layers
from . import layers as _layers
from ._exports import star_names
from .fast_layers import *  # noqa: F401,F403
from .layers import *  # noqa: F401,F403

__all__ = star_names(_layers, _fast_layers, _sandwiches)
