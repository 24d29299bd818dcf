"""The course's models, each built as a graph (classifiers.py, captioning.py, transformer.py,
vision_transformer.py)."""

from .captioning import CaptioningRNN
from .classifiers import (
    FullyConnectedNet,
    GraphClassifier,
    GraphModel,  # noqa: F401
    ThreeLayerConvNet,
    TwoLayerNet,
    classifier_loss,
)
from .transformer import CaptioningTransformer
from .vision_transformer import VisionTransformer

#: The classes a checkpoint may name; graphnet.load rebuilds only these.
MODELS = {
    cls.__name__: cls
    for cls in (
        TwoLayerNet,
        FullyConnectedNet,
        ThreeLayerConvNet,
        CaptioningRNN,
        CaptioningTransformer,
        VisionTransformer,
    )
}

__all__ = [
    "GraphModel",
    "GraphClassifier",
    "TwoLayerNet",
    "FullyConnectedNet",
    "ThreeLayerConvNet",
    "CaptioningRNN",
    "CaptioningTransformer",
    "VisionTransformer",
    "MODELS",
]
