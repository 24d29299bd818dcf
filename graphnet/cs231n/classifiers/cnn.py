"""The course's `classifiers.cnn` module: ThreeLayerConvNet (graphnet.models), and, as the
course's star import brings them, everything of this edition's layer_utils."""

from ...models import ThreeLayerConvNet
from .. import layer_utils as _layer_utils
from ..layer_utils import *  # noqa: F401,F403

__all__ = ["ThreeLayerConvNet", *_layer_utils.__all__]
