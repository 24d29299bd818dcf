"""The course's classifiers, each built as a graph (see classifiers.py)."""
from .classifiers import (FullyConnectedNet, GraphModel, ThreeLayerConvNet,  # noqa: F401
                          TwoLayerNet)

#: The classes a checkpoint may name; graphnet.load rebuilds only these.
MODELS = {cls.__name__: cls for cls in (TwoLayerNet, FullyConnectedNet, ThreeLayerConvNet)}

__all__ = ["GraphModel", "TwoLayerNet", "FullyConnectedNet", "ThreeLayerConvNet", "MODELS"]
