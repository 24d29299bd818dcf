"""What the converters share: the optional imports, the part of a graph to convert, the
error for ops with no counterpart, and the flatten that only an affine gate can take."""
import importlib

from ..errors import GraphError

#: Gates that are one op on the same inputs in ONNX and in PyTorch: gate -> (ONNX op type,
#: torch function, which is also the ATen op torch.export writes). Every direction's table
#: starts from this one, so such a gate is one entry here.
ONE_TO_ONE = {
    "add": ("Add", "add"), "subtract": ("Sub", "sub"), "multiply": ("Mul", "mul"),
    "divide": ("Div", "div"), "max": ("Max", "maximum"),
    "relu": ("Relu", "relu"), "exp": ("Exp", "exp"), "log": ("Log", "log"),
    "sigmoid": ("Sigmoid", "sigmoid"), "tanh": ("Tanh", "tanh"),
}

#: Which `pip install "graphnet[extra]"` brings each optional package.
_EXTRA_OF = {"onnx": "onnx", "onnxruntime": "onnx", "torch": "torch"}


class MissingDependencyError(ImportError):
    """An optional package that a converter needs is not installed."""


class UnsupportedOpError(GraphError):
    """Ops with no counterpart on the other side. `ops` maps each op to the names of the
    nodes that use it, so the message lists them all at once."""

    def __init__(self, message: str, ops: dict):
        super().__init__(message)
        self.ops = ops


def require(module: str, feature: str):
    """Import an optional package, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        extra = _EXTRA_OF[module.split(".")[0]]
        raise MissingDependencyError(
            f"{feature} needs the {module.split('.')[0]!r} package, which is not installed: "
            f'pip install "graphnet[{extra}]"') from err


def check_supported(uses, table, what: str, hint: str = ""):
    """Raise one UnsupportedOpError listing every op in `uses` ((op, node name) pairs)
    that `table` has no entry for."""
    missing: dict = {}
    for op, name in uses:
        if op not in table:
            missing.setdefault(op, []).append(name)
    if missing:
        listing = "; ".join(f"{op} (node{'s' if len(names) > 1 else ''} {_names(names)})"
                            for op, names in sorted(missing.items()))
        raise UnsupportedOpError(
            f"{what}: {len(missing)} op{'s' if len(missing) > 1 else ''} with no counterpart: "
            f"{listing}. Supported: {', '.join(sorted(table))}.{hint}", missing)


def unsupported(op: str, name: str, why: str) -> UnsupportedOpError:
    """An op the tables know, used with settings that have no counterpart."""
    return UnsupportedOpError(f"{op} node {name!r}: {why}", {op: [name]})


def _names(names, limit=5):
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def selected_nodes(graph, outputs):
    """(output nodes, every node they depend on in topological order). `outputs`: None
    for the graph's sinks, or a node, a name, or a list of them."""
    if outputs is None:
        targets = graph.sinks
    elif isinstance(outputs, (list, tuple)):
        targets = [graph[o] if isinstance(o, str) else o for o in outputs]
    else:
        targets = [graph[outputs] if isinstance(outputs, str) else outputs]
    if not targets:
        raise GraphError("the graph has no gate to convert: pass outputs= the nodes to convert")
    needed = {id(t) for t in targets}
    for node in reversed(graph.nodes):  # topological: every consumer before its inputs
        if id(node) in needed:
            needed.update(id(i) for i in node.inputs)
    return targets, [n for n in graph.nodes if id(n) in needed]


def build_gate(graph, op: str, inputs, name: str, **attrs):
    """The one place the importers build a gate: the registry's, by op name."""
    return graph.apply(op, *inputs, name=name, **attrs)


class Pending:
    """What an importer returns for a source op that becomes gates only in context: a
    consumer may fold it into its own gate; `materialize` makes it a node for any other."""

    def materialize(self, consumer: str):
        raise NotImplementedError


class Flattened(Pending):
    """`node` flattened to (N, features). graphnet has no reshape gate yet, but the affine
    gate flattens its own input, so an affine consumer takes `node` as it is; any other
    consumer is an error naming `op` and `name`, the flatten in the source model."""

    def __init__(self, node, op: str, name: str):
        self.node, self.op, self.name = node, op, name

    def materialize(self, consumer: str):
        raise unsupported(self.op, self.name, f"a flatten to (N, features) feeds {consumer}; "
                          "graphnet takes a flatten only where an affine gate (Gemm, MatMul, "
                          "linear, addmm) reads it")


def flatten_rows(node, op: str, name: str):
    """`node` flattened from axis 1: itself when it is (N, D) already."""
    shape = node.static_shape
    return node if shape is not None and len(shape) == 2 else Flattened(node, op, name)


def gate_input(value, consumer: str):
    """A node that a gate can take."""
    return value.materialize(consumer) if isinstance(value, Pending) else value


def affine_input(value):
    """The node an affine gate takes: it flattens (N, d1, ..., dk) itself."""
    return value.node if isinstance(value, Flattened) else gate_input(value, "an affine gate")


def flattens_to_rows(in_shape, out_shape) -> bool:
    """True when reshaping `in_shape` (may hold None) to `out_shape` (ints, -1 and 0 as
    in ONNX Reshape and torch.view) keeps axis 0 and flattens the rest."""
    if in_shape is None or len(out_shape) != 2 or None in in_shape[1:]:
        return False
    features = 1
    for size in in_shape[1:]:
        features *= size
    rows, cols = (int(d) for d in out_shape)
    keeps_rows = rows == 0 or (rows == -1 and cols != -1) or rows == in_shape[0]
    return keeps_rows and cols in (-1, features)
