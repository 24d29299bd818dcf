"""The errors graphnet raises for a user's mistakes."""


class GraphError(ValueError):
    """A mistake in building or feeding a graph. The message names the node and the shapes."""


class UnknownNodeError(GraphError, KeyError):
    """`graph[name]` for a name the graph does not hold (a KeyError too, as mappings raise)."""

    def __str__(self):  # KeyError would print the message with quotes around it
        return str(self.args[0]) if self.args else ""


class AnomalyError(GraphError, FloatingPointError):
    """Raised under `graphnet.detect_anomaly()` at the first NaN or Inf value or gradient;
    `node` is the name of the node whose value or gradient it is."""

    def __init__(self, message: str, node: "str | None" = None):
        super().__init__(message)
        self.node = node
