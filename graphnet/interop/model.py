"""A graph made elsewhere (from_onnx, from_torch, by hand), as a model the Solver trains."""
from __future__ import annotations

import numpy as np

from ..core.graph import Graph
from ..errors import GraphError


class GraphClassifier:
    """The Solver's model contract around a graph with a scores node and a loss node:
    `params` (the graph's) and `loss(X, y=None)`: the scores in eval mode for y=None, else
    (loss, grads) after a forward and backward in train mode.

        g = gn.from_onnx("cnn.onnx")
        y = g.input("y", shape=(None,), dtype=np.int64)
        g.softmax_loss(g["scores"], y, name="loss")
        gn.Solver(GraphClassifier(g, x="x", scores="scores"), data).train()
    """

    def __init__(self, graph: Graph, *, x: str, scores: str, y: str = "y",
                 loss: str = "loss"):
        for role, name in (("x", x), ("scores", scores), ("y", y), ("loss", loss)):
            if name not in graph:
                raise GraphError(f"GraphClassifier: {role}={name!r} is not a node of the graph")
        self.graph, self.params = graph, graph.params
        self.names = {"x": x, "scores": scores, "y": y, "loss": loss}

    def loss(self, X, y=None):
        g, names = self.graph, self.names
        was_training = g.training
        try:
            if y is None:
                return g.eval().run(names["scores"], {names["x"]: X})
            loss = g.train().run(names["loss"], {names["x"]: X, names["y"]: np.asarray(y)})
            g.backward(names["loss"])
            return loss, g.grads
        finally:
            g.train(was_training)
