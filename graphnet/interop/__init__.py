"""Taking a graph further: ONNX and PyTorch in and out, data-parallel training on torchrun.

    gn.to_onnx(graph, "model.onnx")        # opens in Netron, runs in onnxruntime
    graph = gn.from_onnx("model.onnx")     # a graph of gates: draw it, train it
    module = gn.to_torch(graph)            # a torch.fx.GraphModule with the graph's params
    graph = gn.from_torch(module, (x,))    # through torch.export
    torchrun --nproc-per-node 2 -m graphnet train   # data-parallel (distributed.py)

onnx and torch are optional (pip install "graphnet[onnx]", "graphnet[torch]"): they are
imported when a converter is called, never by `import graphnet`.
"""

from ._common import MissingDependencyError, UnsupportedOpError
from .distributed import DataParallel, DistributedError
from .onnx import from_onnx, to_onnx
from .torch import from_torch, to_torch

__all__ = [
    "to_onnx",
    "from_onnx",
    "to_torch",
    "from_torch",
    "UnsupportedOpError",
    "MissingDependencyError",
    "DataParallel",
    "DistributedError",
]
