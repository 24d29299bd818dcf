"""graphnet: a computational-graph engine with explicit gates.

Build a circuit, run it forward and backward, and look at every node's value and
gradient; the same engine trains a CNN on CIFAR-10.
"""

import importlib

from ._version import __version__
from .kernels import _C  # noqa: F401  (fail early, and clearly, if the C++ extension was not built)
from .errors import AnomalyError, GraphError, UnknownNodeError
from .gates import Gate, GateError, ShapeError, gate_names, register_gate
from . import passes  # noqa: F401  (registers the fusion passes)
from .core.anomaly import detect_anomaly
from .core.gradcheck import gradcheck
from .core.graph import Graph, ParamDict
from .core.node import Node
from .core.profile import profile
from .training.checkpoint import CheckpointError, load, save
from .training.solver import Solver

#: Submodules that `import graphnet` leaves unloaded until first use (matplotlib,
#: graphviz and the data loaders cost time to import); `gn.viz` loads on first access.
_LAZY_SUBMODULES = (
    "data",
    "viz",
    "optim",
    "models",
    "layers",
    "fast_layers",
    "layer_utils",
    "gradient_check",
    "interop",
    "cs231n",
)
#: The converters of graphnet.interop; onnx and torch load only when one is called.
_INTEROP = ("to_onnx", "from_onnx", "to_torch", "from_torch")


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _INTEROP:
        return getattr(importlib.import_module(".interop", __name__), name)
    raise AttributeError(f"module 'graphnet' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY_SUBMODULES) | set(_INTEROP))


__all__ = [
    "Graph",
    "Node",
    "ParamDict",
    "Gate",
    "register_gate",
    "gate_names",
    "GateError",
    "ShapeError",
    "GraphError",
    "UnknownNodeError",
    "AnomalyError",
    "detect_anomaly",
    "gradcheck",
    "profile",
    "Solver",
    "save",
    "load",
    "CheckpointError",
    "models",
    "__version__",
]
