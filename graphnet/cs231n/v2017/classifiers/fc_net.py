"""The course's `classifiers.fc_net` module, 2017 edition: TwoLayerNet and FullyConnectedNet
of graphnet.models (dropout= the probability of dropping a unit, use_batchnorm=), and, as
the course's star import brings them, everything of the 2017 edition's layer_utils."""

from ....models import FullyConnectedNet, TwoLayerNet
from .. import layer_utils as _layer_utils
from ..layer_utils import *  # noqa: F401,F403

__all__ = ["TwoLayerNet", "FullyConnectedNet", *_layer_utils.__all__]
