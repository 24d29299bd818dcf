"""The course's classifiers, each built as a graph (see classifiers.py)."""
from .classifiers import (FullyConnectedNet, GraphClassifier, GraphModel,  # noqa: F401
                          ThreeLayerConvNet, TwoLayerNet, classifier_loss)

#: The classes a checkpoint may name; graphnet.load rebuilds only these.
MODELS = {cls.__name__: cls for cls in (TwoLayerNet, FullyConnectedNet, ThreeLayerConvNet)}

__all__ = ["GraphModel", "GraphClassifier", "TwoLayerNet", "FullyConnectedNet",
           "ThreeLayerConvNet", "MODELS"]
