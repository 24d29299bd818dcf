"""graphnet: a computational-graph engine with explicit gates.

Build a circuit, run it forward and backward, and look at every node's value and
gradient; the same engine trains a CNN on CIFAR-10.
"""
from ._native import _C  # noqa: F401  (fail early, and clearly, if the C++ extension was not built)
from .anomaly import detect_anomaly
from .errors import AnomalyError, GraphError, UnknownNodeError
from .gradcheck import gradcheck
from .graph import Graph, ParamDict
from .scheduler import Node
from . import models  # noqa: E402  (TwoLayerNet, FullyConnectedNet, ThreeLayerConvNet)
from .checkpoint import CheckpointError, load, save
from .solver import Solver

__version__ = "0.1.0"

__all__ = ["Graph", "Node", "ParamDict", "GraphError", "UnknownNodeError", "AnomalyError",
           "detect_anomaly", "gradcheck"]
__all__ += ["Solver", "save", "load", "CheckpointError", "models"]
