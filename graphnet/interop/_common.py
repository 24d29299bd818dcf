"""What the converters share: the optional imports, the part of a graph to convert, the
error for ops with no counterpart, and what the importers build only in context (a flatten
an affine gate does itself, a run of indexing ops that is one slice gate)."""

import importlib
import math

import numpy as np

from ..core.node import Node
from ..errors import GraphError

#: Gates that are one op on the same inputs in ONNX and in PyTorch: gate -> (ONNX op type,
#: torch function, which is also the ATen op torch.export writes). Every direction's table
#: starts from this one, so such a gate is one entry here.
ONE_TO_ONE = {
    "add": ("Add", "add"),
    "subtract": ("Sub", "sub"),
    "multiply": ("Mul", "mul"),
    "divide": ("Div", "div"),
    "max": ("Max", "maximum"),
    "relu": ("Relu", "relu"),
    "exp": ("Exp", "exp"),
    "log": ("Log", "log"),
    "sigmoid": ("Sigmoid", "sigmoid"),
    "tanh": ("Tanh", "tanh"),
    "negate": ("Neg", "neg"),
    "sqrt": ("Sqrt", "sqrt"),
    "abs": ("Abs", "abs"),
    "min": ("Min", "minimum"),
    "matmul": ("MatMul", "matmul"),
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
            f'pip install "graphnet[{extra}]"'
        ) from err


def check_supported(uses, table, what: str, hint: str = ""):
    """Raise one UnsupportedOpError listing every op in `uses` ((op, node name) pairs)
    that `table` has no entry for."""
    missing: dict = {}
    for op, name in uses:
        if op not in table:
            missing.setdefault(op, []).append(name)
    if missing:
        listing = "; ".join(
            f"{op} (node{'s' if len(names) > 1 else ''} {_names(names)})"
            # by the text: an op type that is not UTF-8 comes from protobuf as bytes
            for op, names in sorted(missing.items(), key=lambda item: str(item[0]))
        )
        raise UnsupportedOpError(
            f"{what}: {len(missing)} op{'s' if len(missing) > 1 else ''} with no counterpart: "
            f"{listing}. Supported: {', '.join(sorted(table))}.{hint}",
            missing,
        )


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


class Pending:
    """What an importer returns for a source op that becomes gates only in context: a
    consumer may fold it into its own gate; `materialize` makes it a node for any other."""

    def materialize(self, consumer: str):
        raise NotImplementedError


def gate_input(value, consumer: str):
    """A node that a gate can take."""
    return value.materialize(consumer) if isinstance(value, Pending) else value


class Deferred(Pending):
    """A gate on one node that the importer builds only when a consumer needs it, so that
    a consumer doing the same work itself takes the node as it is: an affine gate flattens
    its input to rows (the Flatten before a Gemm), graphnet's cross_entropy reads the
    classes from the last axis (the transpose before ONNX's and torch's loss, which read
    them from axis 1)."""

    def __init__(self, graph, op: str, source, name: str, **attrs):
        self.graph, self.op, self.source, self.name, self.attrs = graph, op, source, name, attrs
        self.node = None

    def materialize(self, consumer: str):
        if self.node is None:
            self.node = build_gate(self.graph, self.op, [self.source], self.name, **self.attrs)
        return self.node

    def flattens_rows(self) -> bool:
        if self.op == "flatten":
            return self.attrs["axis"] == 1
        return self.op == "reshape" and flattens_to_rows(
            self.source.static_shape, self.attrs["shape"]
        )

    def permutation(self, rank: int):
        """A transpose's axes, each in 0..rank-1 (None for any other gate)."""
        if self.op != "transpose":
            return None
        axes = self.attrs["axes"]
        return tuple(reversed(range(rank))) if axes is None else tuple(a % rank for a in axes)


def affine_input(value):
    """The node an affine gate takes: it flattens (N, d1, ..., dk) itself, so a flatten
    to rows before it is not built."""
    if isinstance(value, Deferred) and value.flattens_rows():
        return value.source
    return gate_input(value, "an affine gate")


def flattens_to_rows(in_shape, out_shape) -> bool:
    """True when reshaping `in_shape` (may hold None) to `out_shape` (ints, -1 for the
    rest) keeps axis 0 and flattens the rest."""
    if in_shape is None or len(in_shape) < 1 or len(out_shape) != 2 or None in in_shape[1:]:
        return False
    features = math.prod(in_shape[1:])
    rows, cols = (int(d) for d in out_shape)
    keeps_rows = (rows == -1 and cols != -1) or rows == in_shape[0]
    return keeps_rows and cols in (-1, features)


def classes_last(graph, value, name: str, consumer: str):
    """(scores, rank): scores (N, C, d1, ..., dk) with the classes on axis 1, as ONNX's
    and torch's losses take them, made (N, d1, ..., dk, C) for graphnet's cross_entropy:
    the source of a transpose that moved the last axis to 1, else a transpose gate."""
    if isinstance(value, Deferred) and value.source.static_shape is not None:
        rank = len(value.source.static_shape)
        if rank > 2 and value.permutation(rank) == (0, rank - 1, *range(1, rank - 1)):
            return value.source, rank
    scores = gate_input(value, consumer)
    if scores.static_shape is None:
        raise unsupported(
            consumer,
            name,
            f"scores {scores.name!r} of unknown rank: graphnet "
            "reads the classes from axis 1 of known rank",
        )
    rank = len(scores.static_shape)
    if rank <= 2:
        return scores, rank
    return build_gate(
        graph, "transpose", [scores], f"{name}/classes_last", axes=(0, *range(2, rank), 1)
    ), rank


#: ONNX and torch write "to the end" of a slice as the largest int64 (backwards: the least).
_TO_THE_END = 2**31


def slice_bounds(start, stop, step) -> slice:
    """A Python slice from an ONNX or ATen slice's bounds, None where they mean the end."""
    step = 1 if step is None else int(step)
    ahead = step > 0
    if start is not None and (
        start == 0 and ahead or (start <= -_TO_THE_END if ahead else start >= _TO_THE_END)
    ):
        start = None
    if stop is not None and (stop >= _TO_THE_END if ahead else stop <= -_TO_THE_END):
        stop = None
    return slice(
        None if start is None else int(start),
        None if stop is None else int(stop),
        None if step == 1 else step,
    )


class Sliced(Pending):
    """x[key] read from a run of ops that each index one axis (ONNX Slice, Gather of one
    index, Squeeze, Unsqueeze; ATen slice, select, squeeze, unsqueeze): the run folds into
    one slice gate, built when a consumer needs it. `parts` index the source's axes in
    order (slices and ints), with None where a new axis of size 1 goes; each step names
    an axis of the result so far."""

    def __init__(self, graph, source, parts, name: str):
        self.graph, self.source, self.parts, self.name = graph, source, parts, name
        self.node = None

    @classmethod
    def of(cls, graph, value, op: str, name: str) -> "Sliced":
        if isinstance(value, Sliced):
            return value
        node = gate_input(value, f"{op} {name!r}")
        if node.static_shape is None:
            raise unsupported(
                op, name, f"graphnet indexes an input of known rank, and {node.name!r} has none"
            )
        return cls(graph, node, [slice(None)] * len(node.static_shape), name)

    def materialize(self, consumer: str = ""):
        if self.node is None:
            key = list(self.parts)
            while key and key[-1] == slice(None):
                key.pop()
            self.node = (
                self.source
                if not key
                else build_gate(self.graph, "slice", [self.source], self.name, key=tuple(key))
            )
        return self.node

    @property
    def rank(self) -> int:
        return sum(not isinstance(p, int) for p in self.parts)

    def _part(self, axis: int, op: str, name: str) -> int:
        outputs = [i for i, p in enumerate(self.parts) if not isinstance(p, int)]
        if not -len(outputs) <= axis < len(outputs):
            raise unsupported(op, name, f"axis {axis} is out of range for rank {len(outputs)}")
        return outputs[axis]

    def open_size(self, axis: int, op: str, name: str) -> bool:
        """Whether the result's axis is a whole source axis of open size (the batch's)."""
        i = self._part(axis, op, name)
        source_axis = sum(p is not None for p in self.parts[:i])
        return self.parts[i] == slice(None) and self.source.static_shape[source_axis] is None

    def _with(self, name, position, part=None, insert=False, remove=False) -> "Sliced":
        parts = list(self.parts)
        if insert:
            parts.insert(position, part)
        elif remove:
            del parts[position]
        else:
            parts[position] = part
        return Sliced(self.graph, self.source, parts, name)

    def _again(self, op, name) -> "Sliced":
        """Indexing what is already indexed along that axis: a new slice gate on this one."""
        return Sliced.of(self.graph, self.materialize(), op, name)

    def sliced(self, op: str, name: str, axis: int, bounds: slice) -> "Sliced":
        if bounds == slice(None):  # x[:] (torch.export writes one for a leading ':')
            return self
        i = self._part(axis, op, name)
        if self.parts[i] != slice(None):
            return self._again(op, name).sliced(op, name, axis, bounds)
        return self._with(name, i, bounds)

    def selected(self, op: str, name: str, axis: int, index: int) -> "Sliced":
        i = self._part(axis, op, name)
        if self.parts[i] is None and index in (0, -1):  # the one entry of a new axis
            return self._with(name, i, remove=True)
        if self.parts[i] != slice(None):
            return self._again(op, name).selected(op, name, axis, index)
        return self._with(name, i, int(index))

    def unsqueezed(self, op: str, name: str, axis: int) -> "Sliced":
        outputs = [i for i, p in enumerate(self.parts) if not isinstance(p, int)]
        if not -len(outputs) - 1 <= axis <= len(outputs):
            raise unsupported(op, name, f"axis {axis} is out of range for rank {len(outputs) + 1}")
        axis %= len(outputs) + 1
        return self._with(
            name, outputs[axis] if axis < len(outputs) else len(self.parts), None, insert=True
        )

    def squeezed(self, op: str, name: str, axis: int) -> "Sliced":
        """Drops an axis of size 1: a new axis, a slice of one entry, or a source axis."""
        i = self._part(axis, op, name)
        part = self.parts[i]
        if part is None:
            return self._with(name, i, remove=True)
        if (
            part.step is None
            and part.start is not None
            and (part.stop == part.start + 1 != 0 or (part.start == -1 and part.stop is None))
        ):
            return self._with(name, i, part.start)
        if part != slice(None):
            return self._again(op, name).squeezed(op, name, axis)
        size = self.source.static_shape[sum(p is not None for p in self.parts[:i])]
        if size not in (1, None):
            raise unsupported(op, name, f"axis {axis} has size {size}, not 1")
        return self._with(name, i, 0)


def build_gate(graph, op: str, inputs, name: str, **attrs):
    """The one place the importers build a gate: the registry's, by op name."""
    return graph.apply(op, *inputs, name=name, **attrs)


# SELU's constants (Klambauer et al.), as PyTorch has them; ONNX's Selu defaults are these
# rounded to float32.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


class Parts:
    """An op graphnet has no one gate for, built from several: part(op, inputs, what) names
    its node "<name>/what"; the last part, the op's value, takes the op's own name
    (what=None). The activations below are the importers' shared forms."""

    def __init__(self, graph, name: str):
        self.graph, self.name = graph, name

    def __call__(self, op: str, inputs, what=None, **attrs):
        name = self.name if what is None else f"{self.name}/{what}"
        # Numbers become consts of the nodes' dtype named after the part: an automatic
        # name (const_4) might be one that a later node of the file has.
        like = next(i for i in inputs if type(i) is Node)
        inputs = [
            i if type(i) is Node else self.graph.const(i, name=f"{name}/{k}", dtype=like.dtype)
            for k, i in enumerate(inputs)
        ]
        return build_gate(self.graph, op, inputs, name, **attrs)

    def silu(self, x):
        """x sigmoid(x)."""
        return self("multiply", [x, self("sigmoid", [x], "sigmoid")])

    def mish(self, x):
        """x tanh(softplus(x))."""
        return self("multiply", [x, self("tanh", [self("softplus", [x], "softplus")], "tanh")])

    def elu(self, x, alpha: float, scale: float = 1.0):
        """scale (relu(x) + alpha (e^min(x, 0) - 1)); the gradient at 0 is alpha (times the
        scale), as PyTorch's: the clip passes it at its limit, the relu blocks it."""
        negative = self("clip", [x], "negative", high=0.0)
        below = self("subtract", [self("exp", [negative], "exp"), 1.0], "expm1")
        curve = self("multiply", [below, alpha], "alpha")
        if scale == 1:
            return self("add", [self("relu", [x], "relu"), curve])
        return self("multiply", [self("add", [self("relu", [x], "relu"), curve], "elu"), scale])

    def prelu(self, x, slope):
        """relu(x) + slope min(x, 0), slope broadcast against x."""
        negative = self("clip", [x], "negative", high=0.0)
        return self("add", [self("relu", [x], "relu"), self("multiply", [negative, slope], "leak")])

    def hard_sigmoid(self, x, alpha: float, beta: float, what=None):
        """clip(alpha x + beta, 0, 1), its gradient blocked at the limits (PyTorch's)."""
        line = self("add", [self("multiply", [x, alpha], "scaled"), beta], "shifted")
        return self("clip", [line], what, low=0.0, high=1.0, limits_pass=False)

    def hardswish(self, x):
        """x clip(x + 3, 0, 6) / 6; at -3 and 3 its gradient is PyTorch's."""
        ramp = self("clip", [self("add", [x, 3.0], "shifted")], "ramp", low=0.0, high=6.0)
        return self("multiply", [x, self("multiply", [ramp, 1 / 6], "gate")])

    def log_sigmoid(self, x):
        """-softplus(-x)."""
        flipped = self("negate", [x], "flipped")
        return self("negate", [self("softplus", [flipped], "softplus")])


def mask_to_float(graph, mask, dtype, name: str):
    """A cast of an integer mask to a float type: mask · 1 in that type (graphnet has no
    cast gate; a multiply promotes)."""
    one = graph.const(np.ones((), dtype), name=f"{name}/one")
    return build_gate(graph, "multiply", [mask, one], name)


def masked_attention(graph, op: str, name: str, inputs, scale: float):
    """graphnet's masked_attention gate on q, k, v, mask from a source op `op` named
    `name` that scales the scores by `scale`: the gate's own 1/√d, or q multiplied by
    scale·√d first."""
    q = inputs[0]
    d = None if q.static_shape is None else q.static_shape[-1]
    if d is None:
        raise unsupported(
            op,
            name,
            "masked attention on queries of unknown size d: graphnet's gate scales by 1/√d",
        )
    if not math.isclose(scale * math.sqrt(d), 1.0, rel_tol=1e-6):
        q = build_gate(graph, "multiply", [q, scale * math.sqrt(d)], f"{name}/scale")
    return build_gate(graph, "masked_attention", [q, *inputs[1:]], name)
