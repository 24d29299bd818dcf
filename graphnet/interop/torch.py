"""PyTorch out (`to_torch`) and in (`from_torch`).

One table per direction, keyed by op name: TORCH_OPS by graphnet gate ('conv'), ATEN_OPS
by ATen op ('aten.conv2d', as torch.export writes it). Adding an op is one entry in each.
torch is imported when a function here is called, never when graphnet is.

`to_torch` builds a torch.fx.GraphModule: `print(module.code)` shows the graph as
PyTorch code, its parameters carry the graph's param names (a dotted name such as
'conv1.weight' becomes a submodule path, so `state_dict()` keys are the names), and
`torch.export` and `torch.onnx.export` take it as they take any module.

`from_torch` runs `torch.export.export(module, example_args)` and builds a gate for each
ATen op of the exported program. torch's Linear keeps its weight as (out, in) and
graphnet's affine as (in, out): the param keeps the name and holds the transpose.
"""

from __future__ import annotations

import keyword
import math
import operator
import re
import warnings
from typing import Any, Optional

import numpy as np

from ..core.graph import Graph
from ._common import (
    ONE_TO_ONE,
    Deferred,
    Pending,
    Sliced,
    affine_input,
    SELU_ALPHA,
    SELU_SCALE,
    Parts,
    build_gate,
    check_supported,
    classes_last,
    gate_input,
    mask_to_float,
    masked_attention,
    require,
    selected_nodes,
    slice_bounds,
    unsupported,
)
from ._recurrent import RecurrentLayer, Weight, Zeros


# ----- export --------------------------------------------------------------------------


def to_torch(graph: Graph, *, outputs: Any = None) -> Any:
    """A torch.fx.GraphModule computing `outputs` (node names or nodes; the graph's sinks
    by default: one tensor, or a tuple in that order) from the graph's inputs, passed
    positionally in the order the graph holds them (`module.input_names`). Params are
    copied into nn.Parameters with the graph's names and dtype; batchnorm's running
    averages into buffers; the module starts in the graph's train/eval mode.

    Examples:
        >>> module = gn.to_torch(model.graph, outputs="loss")
        >>> print(module.code)                      # the graph as PyTorch code
        >>> loss = module(torch.tensor(X), torch.tensor(y)); loss.backward()
    """
    torch = require("torch", "graphnet.to_torch")
    targets, nodes = selected_nodes(graph, outputs)
    check_supported(((n.op, n.name) for n in nodes if n.kind == "gate"), TORCH_OPS, "to_torch")
    builder = _FxBuilder(torch)
    values, input_names = {}, []
    for node in nodes:
        if node.kind == "input":
            values[node] = builder.graph.placeholder(builder.argument_name(node.name))
            input_names.append(node.name)
        elif node.kind == "param":
            values[node] = builder.attach(node.name, torch.nn.Parameter(_tensor(torch, node)))
        elif node.kind == "const":
            values[node] = (
                node.value.item()
                if np.ndim(node.value) == 0 and node.dtype.kind == "f"
                else builder.attach(node.name, _tensor(torch, node))
            )
        else:
            values[node] = TORCH_OPS[node.op](builder, node, [values[i] for i in node.inputs])
    result = [values[t] for t in targets]
    builder.graph.output(result[0] if len(result) == 1 else tuple(result))
    module = torch.fx.GraphModule(builder.root, builder.graph, class_name="GraphnetModule")
    module.input_names = input_names
    return module.train(graph.training)


def _tensor(torch, node):
    return torch.tensor(np.array(node.value, dtype=node.dtype))


class _FxBuilder:
    """The fx graph under construction and the module that owns its tensors."""

    def __init__(self, torch):
        self.torch, self.F = torch, torch.nn.functional
        self.root, self.graph = torch.nn.Module(), torch.fx.Graph()
        self.arguments = set()

    def argument_name(self, name):
        """A Python identifier for an input name ('x:0' -> 'x_0'), unique among forward's
        arguments."""
        ident = re.sub(r"\W", "_", name)
        if not ident[:1].isalpha():
            ident = "input_" + ident
        while keyword.iskeyword(ident) or ident in self.arguments:
            ident += "_"
        self.arguments.add(ident)
        return ident

    def attach(self, path, item):
        """Put a Parameter, buffer tensor or submodule at `path` ('conv1.weight' makes
        the submodule conv1) and return the fx node that reads it."""
        *parents, leaf = path.split(".")
        owner = self.root
        for part in parents:
            if not hasattr(owner, part):
                owner.add_module(part, self.torch.nn.Module())
            owner = getattr(owner, part)
        if isinstance(item, self.torch.nn.Module):
            owner.add_module(leaf, item)
            return None
        if isinstance(item, self.torch.nn.Parameter):
            owner.register_parameter(leaf, item)
        else:
            owner.register_buffer(leaf, item, persistent=False)
        return self.graph.get_attr(path)

    def call(self, function, args, name, **kwargs):
        return self.graph.call_function(function, tuple(args), kwargs, name=name)

    def call_module(self, path, module, args, name):
        self.attach(path, module)
        return self.graph.create_node("call_module", path, tuple(args), {}, name=name)


def _function(path, attrs=(), **constants):
    """A gate that is one torch function on the same inputs ('softmax' is torch.softmax,
    'F.gelu' torch.nn.functional.gelu), with the keyword arguments `constants` and, for
    each (keyword, hyperparameter) pair of `attrs`, the gate's hyperparameter."""

    def export(b, node, args):
        owner, _, name = path.rpartition(".")
        function = getattr(b.F if owner == "F" else b.torch, name)
        gate_attrs = node.gate.attrs()
        return b.call(
            function, args, node.name, **constants, **{key: gate_attrs[attr] for key, attr in attrs}
        )

    return export


def _reduce(name):
    """torch.sum, torch.mean (over every axis when the gate's axis is None)."""

    def export(b, node, args):
        attrs = node.gate.attrs()
        function = getattr(b.torch, name)
        if attrs["axis"] is None and not attrs["keepdims"]:
            return b.call(function, args, node.name)
        return b.call(function, args, node.name, dim=attrs["axis"], keepdim=attrs["keepdims"])

    return export


def _rank(node):
    """The rank of the node's first input, which torch's form of its gate needs."""
    shape = node.inputs[0].static_shape
    if shape is None:
        raise unsupported(
            node.op,
            node.name,
            f"its input {node.inputs[0].name!r} has no "
            "known rank, which torch's form of the gate needs: build the inputs "
            "with a shape",
        )
    return len(shape)


def _export_affine(b, node, args):
    x, w, bias = args
    x_shape = node.inputs[0].static_shape
    if x_shape is None or len(x_shape) != 2:
        x = b.call(b.torch.flatten, [x, 1], f"{node.name}_rows")
    return b.call(b.torch.addmm, [bias, x, w], node.name)


def _export_conv(b, node, args):
    attrs = node.gate.attrs()
    return b.call(b.F.conv2d, args, node.name, stride=attrs["stride"], padding=attrs["pad"])


def _pool(name):
    def export(b, node, args):
        attrs = node.gate.attrs()
        return b.call(
            getattr(b.F, name),
            args,
            node.name,
            stride=attrs["stride"],
            kernel_size=(attrs["pool_height"], attrs["pool_width"]),
        )

    return export


def _export_batchnorm(b, node, args):
    from ._torch_modules import BatchNorm

    gamma = node.inputs[1]
    features = np.shape(gamma.value) if gamma.value is not None else gamma.static_shape
    stats = [
        b.torch.tensor(np.asarray(node.state.get(key, np.zeros(features)), node.dtype))
        for key in ("running_mean", "running_var")
    ]
    attrs = node.gate.attrs()
    module = BatchNorm(*stats, eps=attrs["eps"], momentum=attrs["momentum"])
    return b.call_module(node.name, module, args, node.name)


def _export_layernorm(b, node, args):
    x, gamma, beta = args
    features = (
        node.inputs[1].value.shape
        if node.inputs[1].value is not None
        else node.inputs[1].static_shape
    )
    return b.call(
        b.F.layer_norm, [x, tuple(features), gamma, beta], node.name, eps=node.gate.attrs()["eps"]
    )


def _export_groupnorm(b, node, args):
    x, *scales = args
    for i, what in ((0, "weight"), (1, "bias")):  # (1, C, 1, 1), the course's shape -> (C,)
        if len(np.shape(node.inputs[i + 1].value)) != 1:
            scales[i] = b.call(b.torch.flatten, [scales[i]], f"{node.name}_{what}")
    attrs = node.gate.attrs()
    return b.call(b.F.group_norm, [x, attrs["G"], *scales], node.name, eps=attrs["eps"])


def _export_dropout(b, node, args):
    module = b.torch.nn.Dropout(node.gate.attrs()["p"])
    return b.call_module(node.name, module, args, node.name)


def _export_svm_loss(b, node, args):
    """torch's multi_margin_loss divides each sample's hinge sum by the number of classes;
    graphnet's svm_loss (the course's) does not."""
    loss = b.call(b.F.multi_margin_loss, args, f"{node.name}_per_class")
    classes = b.graph.call_method("size", (args[0], 1))
    return b.call(b.torch.mul, [loss, classes], node.name)


def _export_cross_entropy(b, node, args):
    """F.cross_entropy reads the classes from axis 1: scores (N, d1, ..., C) are moved to
    (N, C, d1, ...) first. With every label ignored torch gives NaN where graphnet gives 0."""
    scores, labels = args
    if _rank(node) > 2:
        scores = b.call(b.torch.movedim, [scores, -1, 1], f"{node.name}_classes_first")
    ignore = node.gate.attrs()["ignore_index"]
    return b.call(
        b.F.cross_entropy,
        [scores, labels],
        node.name,
        **({} if ignore is None else {"ignore_index": ignore}),
    )


def _export_transpose(b, node, args):
    axes = node.gate.attrs()["axes"]
    if axes is None:  # numpy's x.T reverses the axes; torch.permute names them
        axes = tuple(reversed(range(_rank(node))))
    return b.call(b.torch.permute, [args[0], axes], node.name)


def _export_concat(b, node, args):
    return b.call(b.torch.cat, [list(args)], node.name, dim=node.gate.attrs()["axis"])


def _export_slice(b, node, args):
    if any(isinstance(part, slice) and (part.step or 1) < 0 for part in node.gate.key):
        raise unsupported(
            "slice",
            node.name,
            f"[{node.gate.attrs()['key']}]: torch slices "
            "with positive steps only (torch.flip reverses an axis)",
        )
    return b.call(operator.getitem, [args[0], node.gate.key], node.name)


def _export_take(b, node, args):
    """np.take(x, indices, axis) is torch's x[:, ..., indices] (one index tensor, at axis)."""
    x, indices = args
    axis = node.gate.attrs()["axis"]
    key = (
        (slice(None),) * axis + (indices,)
        if axis >= 0
        else (Ellipsis, indices) + (slice(None),) * (-axis - 1)
    )
    return b.call(operator.getitem, [x, key], node.name)


def _export_clip(b, node, args):
    """clamp passes the gradient at the limits, hardtanh (with infinite limits for the
    missing ones) does not."""
    attrs = node.gate.attrs()
    if attrs["limits_pass"]:
        return b.call(b.torch.clamp, args, node.name, min=attrs["low"], max=attrs["high"])
    low = -math.inf if attrs["low"] is None else attrs["low"]
    high = math.inf if attrs["high"] is None else attrs["high"]
    return b.call(b.F.hardtanh, args, node.name, min_val=low, max_val=high)


def _export_compare(b, node, args):
    """torch's comparisons give bool tensors; graphnet's mask is int8."""
    relation = node.gate.attrs()["relation"]
    mask = b.graph.call_function(getattr(b.torch, _TORCH_COMPARISONS[relation]), tuple(args))
    return b.graph.create_node("call_method", "to", (mask, b.torch.int8), {}, name=node.name)


def _export_where(b, node, args):
    """torch.where takes a bool condition; graphnet's mask holds integers, nonzero true."""
    mask = b.graph.call_method("bool", (args[0],))
    return b.call(b.torch.where, [mask, *args[1:]], node.name)


def _sequence_function(name):
    """A sequence gate as one call of graphnet.interop._torch_modules' function `name`."""

    def export(b, node, args):
        from . import _torch_modules

        return b.call(getattr(_torch_modules, name), args, node.name)

    return export


#: graphnet gate -> the function that writes it as fx nodes.
TORCH_OPS = {
    **{gate: _function(function) for gate, (_, function) in ONE_TO_ONE.items()},
    "softmax": _function("softmax", dim=-1),
    "log_softmax": _function("log_softmax", [("dim", "axis")]),
    "sum": _reduce("sum"),
    "mean": _reduce("mean"),
    "affine": _export_affine,
    "conv": _export_conv,
    "max_pool": _pool("max_pool2d"),
    "avg_pool": _pool("avg_pool2d"),
    "batchnorm": _export_batchnorm,
    "spatial_batchnorm": _export_batchnorm,
    "layernorm": _export_layernorm,
    "spatial_groupnorm": _export_groupnorm,
    "dropout": _export_dropout,
    "softmax_loss": _function("F.cross_entropy"),
    "cross_entropy": _export_cross_entropy,
    "svm_loss": _export_svm_loss,
    "reshape": _function("reshape", [("shape", "shape")]),
    "flatten": _function("flatten", [("start_dim", "axis")]),
    "transpose": _export_transpose,
    "concat": _export_concat,
    "slice": _export_slice,
    "take": _export_take,
    "pow": _function("pow", [("exponent", "exponent")]),
    "clip": _export_clip,
    "compare": _export_compare,
    "where": _export_where,
    "leaky_relu": _function("F.leaky_relu", [("negative_slope", "alpha")]),
    "gelu": _function("F.gelu", [("approximate", "approximate")]),
    "softplus": _function("F.softplus"),
    **{
        gate: _sequence_function(gate)
        for gate in (
            "word_embedding",
            "rnn",
            "lstm",
            "rnn_step",
            "lstm_step",
            "temporal_affine",
            "temporal_softmax_loss",
            "attention",
        )
    },
    "masked_attention": _sequence_function("attention"),
}


# ----- import --------------------------------------------------------------------------


def from_torch(module: Any, example_args: Any, example_kwargs: Optional[dict] = None) -> Graph:
    """A Graph of gates built from `torch.export.export(module, example_args,
    kwargs=example_kwargs)` (example_args: a tuple of tensors, or one tensor). Inputs
    keep their argument names with the batch size left open; parameters become params
    named by their state_dict keys; batchnorm buffers go to the node's state; each gate
    node is named after the fx node it comes from. The graph takes the module's
    train/eval mode. Raises UnsupportedOpError listing every ATen op with no gate.

    Examples:
        >>> cnn = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU())
        >>> g = gn.from_torch(cnn, (torch.randn(2, 3, 8, 8),))
        >>> gn.viz.draw(g)
    """
    torch = require("torch", "graphnet.from_torch")
    if isinstance(example_args, torch.Tensor):
        example_args = (example_args,)
    with warnings.catch_warnings():  # torch's note on nn.RNN/LSTM's own weight list
        warnings.filterwarnings("ignore", "The tensor attributes .*_flat_weights", UserWarning)
        exported = torch.export.export(module, tuple(example_args), kwargs=example_kwargs)
    reader = _AtenReader(torch, exported)
    calls = [
        n
        for n in exported.graph.nodes
        if n.op == "call_function" and not reader.bookkeeping(n) and n not in reader.inside
    ]
    check_supported(((_op_name(n.target), n.name) for n in calls), ATEN_OPS, "from_torch")
    # A module made by to_torch knows the graph's own input names ('X', 'x:0'), which fx
    # turned into Python identifiers.
    return reader.build(module.training, getattr(module, "input_names", None))


def _op_name(target):
    packet = getattr(target, "overloadpacket", None)
    return str(packet) if packet is not None else getattr(target, "__name__", str(target))


class _AtenReader:
    """Builds the graph: `values` maps each fx node to the graph node (or Pending) holding
    it; parameters become params when a gate first takes them."""

    def __init__(self, torch, exported):
        self.torch, self.exported = torch, exported
        kinds = torch.export.graph_signature.InputKind
        self.sources = {}  # placeholder name -> (kind, state_dict key)
        for spec in exported.graph_signature.input_specs:
            self.sources[spec.arg.name] = (spec.kind, spec.target)
        self.user_input, self.parameter = kinds.USER_INPUT, kinds.PARAMETER
        float_inputs = [
            n.meta["val"].dtype
            for n in exported.graph.nodes
            if n.op == "placeholder"
            and self.sources[n.name][0] == self.user_input
            and n.meta["val"].dtype.is_floating_point
        ]
        dtype = _numpy_dtype(torch, float_inputs[0]) if float_inputs else np.float32
        self.graph, self.values = Graph(dtype=dtype), {}
        self.patterns, self.inside = _find_patterns(torch, exported.graph)

    def bookkeeping(self, node):
        """BatchNorm's counter of batches (`num_batches_tracked += 1`) and the checks
        torch.export adds before a cast: nothing reads them."""
        op = _op_name(node.target)
        return (
            op == "aten._assert_tensor_metadata"
            or op == "aten.add_"
            and self.sources.get(node.args[0].name, (None, ""))[1].endswith("num_batches_tracked")
        )

    def build(self, training, input_names=None):
        user_inputs = [
            n
            for n in self.exported.graph.nodes
            if n.op == "placeholder" and self.sources[n.name][0] == self.user_input
        ]
        for node, name in zip(user_inputs, input_names or [n.name for n in user_inputs]):
            val = node.meta["val"]
            shape = (None, *val.shape[1:]) if val.dim() else ()
            dtype = _numpy_dtype(self.torch, val.dtype)  # a bool mask is fed as integers
            self.values[node] = self.graph.input(
                name, shape=tuple(shape), dtype=np.int64 if dtype.kind == "b" else dtype
            )
        for node in self.exported.graph.nodes:
            if node in self.patterns:
                build, inputs = self.patterns[node]
                op = f"{_op_name(node.target)} {node.name!r}"
                self.values[node] = build(
                    self, node, [gate_input(self.value(i), op) for i in inputs]
                )
            elif (
                node.op == "call_function"
                and not self.bookkeeping(node)
                and node not in self.inside
            ):
                self.values[node] = ATEN_OPS[_op_name(node.target)](self, node)
            elif node.op == "output":
                for out in node.args[0]:
                    gate_input(self.value(out), "the module's output")
        return self.graph.train(training)

    # what the importers call

    def value(self, arg):
        """The graph node (or Pending) for an fx node; a Python number passes through."""
        if not isinstance(arg, self.torch.fx.Node):
            return arg
        if arg not in self.values:
            kind, key = self.sources.get(arg.name, (None, arg.name))
            array = self.constant(arg)
            if array.dtype.kind == "b":  # graphnet's masks are integers, nonzero true
                array = array.astype(np.int64)
            self.values[arg] = (
                self.graph.param(key, array, dtype=array.dtype)
                if kind == self.parameter
                else self.graph.const(array, name=key, dtype=array.dtype)
            )
        return self.values[arg]

    def input(self, node, i):
        return gate_input(self.value(node.args[i]), f"{_op_name(node.target)} {node.name!r}")

    def arg(self, node, i, name, default=None):
        """A non-tensor argument, positional or keyword."""
        return node.args[i] if i < len(node.args) else node.kwargs.get(name, default)

    def constant(self, arg):
        """The array of a parameter, buffer or lifted constant."""
        kind, key = self.sources.get(arg.name, (None, None))
        tensor = (
            self.exported.state_dict.get(key)
            if key in self.exported.state_dict
            else self.exported.constants.get(key)
        )
        if tensor is None:
            raise unsupported(
                "tensor",
                arg.name,
                "graphnet reads this argument as a constant, but the module computes it",
            )
        return tensor.detach().cpu().numpy().copy()

    def shape(self, arg):
        return tuple(arg.meta["val"].shape)

    def sliced(self, node):
        """A run of indexing ops so far on the node's first argument (see Sliced)."""
        return Sliced.of(self.graph, self.value(node.args[0]), _op_name(node.target), node.name)

    def gate(self, op, node, inputs, **attrs):
        return build_gate(self.graph, op, inputs, node.name, **attrs)


def _find_patterns(torch, graph):
    """Runs of ATen ops that are one gate, as to_torch writes the temporal softmax loss
    and masked attention: ({the run's last fx node: (build(reader, node, input nodes),
    input fx nodes)}, the fx nodes inside the runs), leaving alone a run whose inner
    values something else reads."""
    patterns, inside = {}, set()
    for tail in graph.nodes:
        found = _temporal_loss(torch, tail) or _masked_attention(torch, tail)
        if found is None:
            continue
        interior, stack = set(), [tail]
        while stack:
            for arg in stack.pop().all_input_nodes:
                if arg not in found[1] and arg not in interior and arg.op == "call_function":
                    interior.add(arg)
                    stack.append(arg)
        if all(set(n.users) <= interior | {tail} for n in interior):
            patterns[tail] = found
            inside |= interior
    return patterns, inside


def _call(torch, arg, op, *args):
    """`arg` if it is an fx call of ATen `op` whose first arguments after the tensor are
    `args` (None: any), else None."""
    if not isinstance(arg, torch.fx.Node) or arg.op != "call_function":
        return None
    if _op_name(arg.target) != op or arg.kwargs or len(arg.args) < len(args) + 1:
        return None
    return arg if all(a is None or a == b for a, b in zip(args, arg.args[1:])) else None


def _temporal_loss(torch, tail):
    """div(sum(mul(cross_entropy_loss(flatten(x, 0, 1), flatten(y), None, 0),
    ne(flatten(mask), 0))), N): graphnet's temporal_softmax_loss(x, y, mask)."""
    total = _call(torch, tail, "aten.div") and _call(torch, tail.args[0], "aten.sum")
    product = total and len(total.args) == 1 and _call(torch, total.args[0], "aten.mul")
    for loss, counted in (product.args, reversed(product.args)) if product else ():
        loss = _call(torch, loss, "aten.cross_entropy_loss", None, None, 0)
        counted = _call(torch, counted, "aten.ne", 0)
        if not loss or not counted or len(loss.args) != 4:
            continue
        flat = [
            _call(torch, loss.args[0], "aten.flatten", 0, 1),
            _call(torch, loss.args[1], "aten.flatten"),
            _call(torch, counted.args[0], "aten.flatten"),
        ]
        if not all(f and len(f.args) <= 3 for f in flat):
            continue
        x, y, mask = (f.args[0] for f in flat)
        shape = tuple(x.meta["val"].shape)
        if len(shape) == 3 and tail.args[1] == max(shape[0], 1):
            build = lambda r, node, inputs: r.gate("temporal_softmax_loss", node, inputs)  # noqa: E731
            return build, [x, y, mask]
    return None


def _masked_attention(torch, tail):
    """matmul(nan_to_num(softmax(masked_fill(mul(matmul(q, transpose(k, -2, -1)), scale),
    eq(mask, 0), -inf), -1), 0.0), v): graphnet's masked_attention(q, k, v, mask)."""
    weights = _call(torch, tail, "aten.matmul") and _call(
        torch, tail.args[0], "aten.nan_to_num", 0.0
    )
    softmax = weights and _call(torch, weights.args[0], "aten.softmax", -1)
    masked = softmax and _call(torch, softmax.args[0], "aten.masked_fill", None, -math.inf)
    unmasked = masked and _call(torch, masked.args[1], "aten.eq", 0)
    scores = unmasked and _call(torch, masked.args[0], "aten.mul")
    product = scores and _call(torch, scores.args[0], "aten.matmul")
    k_t = product and _call(torch, product.args[1], "aten.transpose", -2, -1)
    if not k_t or not isinstance(scores.args[1], float):
        return None
    scale = scores.args[1]

    def build(r, node, inputs):
        return masked_attention(r.graph, "aten.matmul", node.name, inputs, scale)

    return build, [product.args[0], k_t.args[0], tail.args[1], unmasked.args[0]]


def _numpy_dtype(torch, dtype):
    return np.dtype(torch.empty(0, dtype=dtype).numpy().dtype)


def _aten(op):
    """An ATen op that is one gate on the same (positional) arguments."""

    def read(r, node):
        return r.gate(op, node, [r.input(node, i) for i in range(len(node.args))])

    return read


def _require(condition, node, why):
    if not condition:
        raise unsupported(_op_name(node.target), node.name, why)


def _read_add_sub(op):
    def read(r, node):
        _require(r.arg(node, 2, "alpha", 1) == 1, node, "alpha must be 1")
        return r.gate(op, node, [r.input(node, 0), r.input(node, 1)])

    return read


def _read_mul(r, node):
    a, b = r.value(node.args[0]), r.value(node.args[1])
    if isinstance(a, _SvmOverClasses) and b == a.classes:
        return r.gate("svm_loss", node, [a.scores, a.labels])
    return r.gate("multiply", node, [r.input(node, 0), r.input(node, 1)])


def _read_div(r, node):
    _require(r.arg(node, 2, "rounding_mode") is None, node, "graphnet divides exactly")
    return r.gate("divide", node, [r.input(node, 0), r.input(node, 1)])


def _read_softmax(gate):
    """softmax along the last axis (graphnet's softmax); log_softmax along any."""

    def read(r, node):
        dim, rank = r.arg(node, 1, "dim"), len(r.shape(node.args[0]))
        if dim in (-1, rank - 1):
            return r.gate(gate, node, [r.input(node, 0)])
        _require(
            gate == "log_softmax", node, f"dim {dim}: graphnet's softmax works along the last axis"
        )
        return r.gate(gate, node, [r.input(node, 0)], axis=dim)

    return read


def _read_reduce(gate):
    """sum, mean: over `dim` (every axis when None or absent)."""

    def read(r, node):
        dims = r.arg(node, 1, "dim")
        axis = None if not dims else dims[0] if len(dims) == 1 else tuple(dims)
        return r.gate(
            gate,
            node,
            [r.input(node, 0)],
            axis=axis,
            keepdims=bool(r.arg(node, 2, "keepdim", False)),
        )

    return read


def _read_linear(r, node):
    """linear(x, W, b) = x @ W.T + b: an affine gate whose w is the param W.T (same name)
    on rows (N, D) or a flatten of them; on any other x, a matmul by W.T and an add."""
    weight = node.args[1]
    _require(
        weight not in r.values and r.sources.get(weight.name, (None,))[0] == r.parameter,
        node,
        "graphnet reads a linear whose weight is a parameter used once",
    )
    key = r.sources[weight.name][1]
    array = r.constant(weight)
    w = r.values[weight] = r.graph.param(key, array.T, dtype=array.dtype)
    has_bias = r.arg(node, 2, "bias") is not None
    if len(r.shape(node.args[0])) != 2:  # torch's linear works on the last axis
        product = build_gate(
            r.graph,
            "matmul",
            [r.input(node, 0), w],
            f"{node.name}_matmul" if has_bias else node.name,
        )
        return r.gate("add", node, [product, r.input(node, 2)]) if has_bias else product
    bias = (
        r.input(node, 2)
        if has_bias
        else r.graph.const(np.zeros(array.shape[0], array.dtype), name=f"{node.name}_bias")
    )
    return r.gate("affine", node, [affine_input(r.value(node.args[0])), w, bias])


def _read_addmm(r, node):
    _require(
        r.arg(node, 3, "beta", 1) == 1 and r.arg(node, 4, "alpha", 1) == 1,
        node,
        "alpha and beta must be 1",
    )
    _require(len(r.shape(node.args[1])) == 2, node, "graphnet's affine takes rows")
    return r.gate(
        "affine", node, [affine_input(r.value(node.args[1])), r.input(node, 2), r.input(node, 0)]
    )


def _pair(r, node, i, name, default, what):
    """An int or list argument that graphnet's gate takes as one int for both axes."""
    value = r.arg(node, i, name, default)
    values = [value] if isinstance(value, int) else list(value)
    _require(
        len(set(values)) == 1,
        node,
        f"{name} {value}: graphnet's {what} takes the same {name} along both axes",
    )
    return values[0]


def _read_conv2d(r, node):
    _require(
        _pair(r, node, 5, "dilation", 1, "conv") == 1 and r.arg(node, 6, "groups", 1) == 1,
        node,
        "graphnet's conv has no dilation or groups",
    )
    padding = r.arg(node, 4, "padding", 0)
    _require(not isinstance(padding, str), node, f"padding={padding!r}: give the sizes")
    w = r.input(node, 1)
    bias = (
        r.input(node, 2)
        if r.arg(node, 2, "bias") is not None
        else r.graph.const(np.zeros(w.static_shape[0], w.dtype), name=f"{node.name}_bias")
    )
    return r.gate(
        "conv",
        node,
        [r.input(node, 0), w, bias],
        stride=_pair(r, node, 3, "stride", 1, "conv"),
        pad=_pair(r, node, 4, "padding", 0, "conv"),
    )


def _read_pool(gate, plain):
    """max_pool2d(x, kernel, stride, padding, dilation, ceil_mode) and avg_pool2d(x, kernel,
    stride, padding, ceil_mode, count_include_pad, divisor_override): `plain` maps the
    settings graphnet's gate lacks (position, name) to the value they must have."""

    def read(r, node):
        kernel = r.arg(node, 1, "kernel_size")
        height, width = (kernel, kernel) if isinstance(kernel, int) else (kernel[0], kernel[-1])
        _require(
            _pair(r, node, 3, "padding", 0, gate) == 0
            and all(
                r.arg(node, i, name, value) in (value, [value] * 2)
                for (i, name), value in plain.items()
            ),
            node,
            f"graphnet's {gate} has no padding, {', '.join(name for _, name in plain)}",
        )
        if r.arg(node, 2, "stride", []):
            stride = _pair(r, node, 2, "stride", None, gate)
        else:  # torch's default stride is the window
            _require(
                height == width,
                node,
                f"a {height}x{width} window with the default "
                f"stride: graphnet's {gate} takes one stride",
            )
            stride = height
        return r.gate(
            gate, node, [r.input(node, 0)], pool_height=height, pool_width=width, stride=stride
        )

    return read


def _read_adaptive_avg_pool2d(r, node):
    size = r.arg(node, 1, "output_size")
    _require(
        size in (1, [1, 1], (1, 1)),
        node,
        f"output size {size}: graphnet reads the global average (output size 1) as a mean gate",
    )
    return r.gate("mean", node, [r.input(node, 0)], axis=(2, 3), keepdims=True)


def _read_batch_norm(r, node):
    x, mean, var = node.args[0], node.args[3], node.args[4]
    momentum, eps = r.arg(node, 6, "momentum"), r.arg(node, 7, "eps")
    _require(
        mean is not None and var is not None and momentum is not None,
        node,
        "graphnet's batchnorm keeps running averages with a fixed momentum",
    )
    rank = len(r.shape(x))
    _require(
        rank in (2, 4),
        node,
        f"input of shape {r.shape(x)}: graphnet has batchnorm "
        "for (N, D) and spatial_batchnorm for (N, C, H, W)",
    )
    x_node = r.input(node, 0)
    out = r.gate(
        "batchnorm" if rank == 2 else "spatial_batchnorm",
        node,
        [x_node, *_norm_scale_and_shift(r, node, 1, r.shape(x)[1])],
        eps=eps,
        momentum=1.0 - momentum,
    )
    out.state["running_mean"], out.state["running_var"] = r.constant(mean), r.constant(var)
    return out


def _norm_scale_and_shift(r, node, index, features):
    """A norm's weight and bias, args index and index + 1: the module's, or for one it
    lacks (affine=False, elementwise_affine=False, bias=False) constant ones or zeros."""
    dtype = r.input(node, 0).dtype
    return [
        r.input(node, i)
        if r.arg(node, i, arg) is not None
        else r.graph.const(np.full(features, fill, dtype), name=f"{node.name}_{what}")
        for i, arg, fill, what in (
            (index, "weight", 1.0, "gamma"),
            (index + 1, "bias", 0.0, "beta"),
        )
    ]


def _read_layer_norm(r, node):
    x, shape = node.args[0], list(node.args[1])
    _require(
        shape == list(r.shape(x)[-1:]),
        node,
        "graphnet's layernorm normalizes over the last axis",
    )
    return r.gate(
        "layernorm",
        node,
        [r.input(node, 0), *_norm_scale_and_shift(r, node, 2, shape[0])],
        eps=r.arg(node, 4, "eps"),
    )


def _read_group_norm(r, node):
    x = node.args[0]
    _require(
        len(r.shape(x)) == 4,
        node,
        "graphnet's spatial_groupnorm takes images (N, C, H, W)",
    )
    return r.gate(
        "spatial_groupnorm",
        node,
        [r.input(node, 0), *_norm_scale_and_shift(r, node, 2, r.shape(x)[1])],
        G=int(r.arg(node, 1, "num_groups")),
        eps=r.arg(node, 4, "eps"),
    )


def _read_dropout(r, node):
    return r.gate("dropout", node, [r.input(node, 0)], p=float(r.arg(node, 1, "p")))


def _reshape(r, node, x):
    """A reshape of `x` to the shape torch.export found for `node` (a view, a reshape, a
    flatten of some axes), its first size left open (-1) when x's batch size is open and
    it is a multiple of the example's: x.view(x.size(0), -1) keeps any batch size."""
    shape, batch = list(r.shape(node)), (r.shape(node.args[0]) or (0,))[0]
    if x.static_shape and x.static_shape[0] is None and shape and batch and shape[0] % batch == 0:
        shape[0] = -1
    return Deferred(r.graph, "reshape", x, node.name, shape=tuple(shape))


def _read_flatten(r, node):
    """flatten(x, start, end): graphnet's flatten when it runs to the last axis."""
    rank = max(len(r.shape(node.args[0])), 1)
    start, end = r.arg(node, 1, "start_dim", 0) % rank, r.arg(node, 2, "end_dim", -1) % rank
    if end == rank - 1:
        return Deferred(r.graph, "flatten", r.input(node, 0), node.name, axis=start)
    return _reshape(r, node, r.input(node, 0))


def _transpose(r, node, axes):
    return Deferred(r.graph, "transpose", r.input(node, 0), node.name, axes=tuple(axes))


def _read_swap(r, node):
    """transpose(x, d0, d1), movedim(x, source, destination), t(x): graphnet's transpose."""
    rank = len(r.shape(node.args[0]))
    axes = list(range(rank))
    op = _op_name(node.target)
    if op == "aten.t":
        return r.value(node.args[0]) if rank < 2 else _transpose(r, node, [1, 0])
    a, b = node.args[1:3]  # dim0 and dim1, or source and destination
    _require(isinstance(a, int) and isinstance(b, int), node, "graphnet reads one axis moved")
    a, b = a % rank, b % rank
    if op == "aten.transpose":
        axes[a], axes[b] = b, a
    else:
        axes.insert(b, axes.pop(a))
    return _transpose(r, node, axes)


def _read_cat(r, node):
    return r.gate(
        "concat",
        node,
        [gate_input(r.value(t), f"aten.cat {node.name!r}") for t in node.args[0]],
        axis=r.arg(node, 1, "dim", 0),
    )


def _read_slice(r, node):
    bounds = slice_bounds(r.arg(node, 2, "start"), r.arg(node, 3, "end"), r.arg(node, 4, "step", 1))
    return r.sliced(node).sliced("aten.slice", node.name, r.arg(node, 1, "dim", 0), bounds)


def _read_select(r, node):
    return r.sliced(node).selected(
        "aten.select", node.name, r.arg(node, 1, "dim"), r.arg(node, 2, "index")
    )


def _read_unsqueeze(r, node):
    return r.sliced(node).unsqueezed("aten.unsqueeze", node.name, r.arg(node, 1, "dim"))


def _read_squeeze(r, node):
    """torch's squeeze drops the axes of size 1 among `dim` (all when absent) and leaves
    the others."""
    example = r.shape(node.args[0])
    dims = r.arg(node, 1, "dim")
    dims = range(len(example)) if dims is None else [dims] if isinstance(dims, int) else dims
    value = r.sliced(node)
    for axis in sorted({d % len(example) for d in dims if example[d] == 1}, reverse=True):
        value = value.squeezed("aten.squeeze", node.name, axis)
    return value


def _read_index(r, node):
    """x[:, ..., ids] with one index tensor: graphnet's take along that axis."""
    indices = r.arg(node, 1, "indices")
    picks = [i for i, index in enumerate(indices) if index is not None]
    _require(
        len(picks) == 1 and picks[0] == len(indices) - 1,
        node,
        "graphnet's take picks along one axis: one index tensor, with ':' before it",
    )
    return r.gate(
        "take", node, [r.input(node, 0), gate_input(r.value(indices[-1]), node.name)], axis=picks[0]
    )


def _read_index_select(r, node):
    return r.gate("take", node, [r.input(node, 0), r.input(node, 2)], axis=r.arg(node, 1, "dim"))


def _read_embedding(r, node):
    """graphnet's word_embedding for ids (N, T), its take along axis 0 for any others."""
    _require(
        r.arg(node, 2, "padding_idx", -1) == -1 and not r.arg(node, 3, "scale_grad_by_freq", False),
        node,
        "graphnet's take has no padding_idx or scale_grad_by_freq",
    )
    W, ids = r.input(node, 0), r.input(node, 1)
    if len(r.shape(node.args[1])) == 2 and len(r.shape(node.args[0])) == 2:
        return r.gate("word_embedding", node, [ids, W])
    return r.gate("take", node, [W, ids], axis=0)


def _read_pow(r, node):
    exponent = r.arg(node, 1, "exponent")
    _require(
        isinstance(exponent, (int, float)), node, "graphnet's pow takes a number as the exponent"
    )
    return r.gate("pow", node, [r.input(node, 0)], exponent=float(exponent))


def _read_clamp(r, node):
    low, high = r.arg(node, 1, "min"), r.arg(node, 2, "max")
    _require(
        all(b is None or isinstance(b, (int, float)) for b in (low, high)),
        node,
        "graphnet's clip takes numbers as bounds",
    )
    if low is None and high is None:
        return r.value(node.args[0])
    return r.gate("clip", node, [r.input(node, 0)], low=low, high=high)


def _read_mask(r, node):
    """x.bool(), x.to(an integer type): the same node (graphnet reads a mask's nonzero
    entries as true); a cast to the node's own type too; a mask to a float type, x · 1 in
    that type (graphnet has no cast gate, and a multiply promotes)."""
    x = r.input(node, 0)
    to = r.arg(node, 1, "dtype")
    _require(isinstance(to, r.torch.dtype), node, "graphnet reads a cast to a dtype")
    to = _numpy_dtype(r.torch, to)
    if x.dtype.kind in "iu" and to.kind == "f":
        return mask_to_float(r.graph, x, to, node.name)
    _require(
        to == x.dtype or (x.dtype.kind in "iu" and to.kind in "biu"),
        node,
        f"from {x.dtype} to {to}: graphnet has no cast gate",
    )
    return x


#: graphnet's compare relations and the torch functions of the same name.
_TORCH_COMPARISONS = {">": "gt", ">=": "ge", "<": "lt", "<=": "le", "==": "eq", "!=": "ne"}


def _read_compare(r, node):
    """A comparison is a compare gate (an int8 mask), but x != 0 on integers, which is the
    mask x itself (graphnet reads a mask's nonzero entries as true)."""
    relation = {f"aten.{name}": mark for mark, name in _TORCH_COMPARISONS.items()}[
        _op_name(node.target)
    ]
    x = r.input(node, 0)
    if relation == "!=" and r.arg(node, 1, "other") == 0 and x.dtype.kind in "iu":
        return x
    return r.gate("compare", node, [x, r.input(node, 1)], relation=relation)


def _read_masked_fill(r, node):
    """masked_fill(x, mask, value) = where(mask, value, x)."""
    return r.gate("where", node, [r.input(node, 1), r.input(node, 2), r.input(node, 0)])


def _read_softplus(r, node):
    """torch's softplus is x itself above `threshold`: from the default 20 on, less than
    2.1e-9 from graphnet's log(1 + e^x); below it, a different function."""
    _require(r.arg(node, 1, "beta", 1) == 1, node, "graphnet's softplus has beta 1")
    threshold = r.arg(node, 2, "threshold", 20)
    _require(
        threshold >= 20,
        node,
        f"threshold {threshold}: torch's softplus is x itself above it, within 2.1e-9 of "
        "graphnet's log(1 + e^x) only for a threshold of 20 or more",
    )
    return r.gate("softplus", node, [r.input(node, 0)])


def _read_hardtanh(r, node):
    """hardtanh (and relu6, hardtanh(0, 6)) is clip, its gradient blocked at the limits."""
    low = float(r.arg(node, 1, "min_val", -1.0))
    high = float(r.arg(node, 2, "max_val", 1.0))
    if low == -math.inf and high == math.inf:
        return r.value(node.args[0])
    low_or_none = None if low == -math.inf else low
    high_or_none = None if high == math.inf else high
    return r.gate(
        "clip", node, [r.input(node, 0)], low=low_or_none, high=high_or_none, limits_pass=False
    )


def _read_elu(r, node):
    alpha = float(r.arg(node, 1, "alpha", 1.0))
    scale = float(r.arg(node, 2, "scale", 1.0))
    _require(r.arg(node, 3, "input_scale", 1.0) == 1, node, "graphnet reads elu's input_scale 1")
    return Parts(r.graph, node.name).elu(r.input(node, 0), alpha, scale)


def _read_prelu(r, node):
    """prelu's weight runs along x's second axis (the channels)."""
    parts, weight = Parts(r.graph, node.name), r.input(node, 1)
    rank = len(r.shape(node.args[0]))
    _require(rank >= 2, node, "graphnet reads prelu on (N, C, ...) inputs")
    if rank > 2:
        channels = r.shape(node.args[1])[0]
        weight = parts("reshape", [weight], "weight", shape=(channels,) + (1,) * (rank - 2))
    return parts.prelu(r.input(node, 0), weight)


def _activation(form, **constants):
    """An activation built from several gates by Parts.form(x, **constants)."""
    return lambda r, node: getattr(Parts(r.graph, node.name), form)(r.input(node, 0), **constants)


def _read_cross_entropy(r, node):
    """softmax_loss where it is the course's loss ((N, C) scores, torch's default
    ignore_index -100), else cross_entropy (classes moved to the last axis)."""
    _require(
        r.arg(node, 2, "weight") is None
        and r.arg(node, 3, "reduction", 1) == 1
        and r.arg(node, 5, "label_smoothing", 0.0) == 0.0,
        node,
        "graphnet's losses are the unweighted mean, without label smoothing",
    )
    ignore = r.arg(node, 4, "ignore_index", -100)
    scores, rank = classes_last(
        r.graph, r.value(node.args[0]), node.name, "aten.cross_entropy_loss"
    )
    if rank == 2 and ignore == -100:
        return r.gate("softmax_loss", node, [scores, r.input(node, 1)])
    return r.gate("cross_entropy", node, [scores, r.input(node, 1)], ignore_index=ignore)


class _SvmOverClasses(Pending):
    """multi_margin_loss = graphnet's svm_loss / C; times C (as to_torch writes it) it is
    the svm_loss gate itself, and anything else reads it as svm_loss * (1 / C)."""

    def __init__(self, reader, node):
        self.reader, self.node = reader, node
        self.scores, self.labels = reader.input(node, 0), reader.input(node, 1)
        self.classes = reader.shape(node.args[0])[1]
        self.result = None

    def materialize(self, consumer):
        if self.result is None:
            g, name = self.reader.graph, self.node.name
            loss = build_gate(g, "svm_loss", [self.scores, self.labels], f"{name}_svm_loss")
            self.result = build_gate(g, "multiply", [loss, 1.0 / self.classes], name)
        return self.result


def _read_multi_margin(r, node):
    _require(
        r.arg(node, 2, "p", 1) == 1
        and r.arg(node, 3, "margin", 1) == 1
        and r.arg(node, 4, "weight") is None
        and r.arg(node, 5, "reduction", 1) == 1,
        node,
        "graphnet's svm_loss has p=1, margin 1, no weights, the mean over the batch",
    )
    return _SvmOverClasses(r, node)


def _read_recurrent(gate):
    """aten.lstm, aten.rnn_tanh (nn.LSTM, nn.RNN): one layer, one direction; hx tensors
    of zeros (nn.LSTM's default) or of shape (1, N, H). Outputs: every hidden state, h_n,
    c_n. An LSTM with a cell state other than zeros, or whose c_n is read, becomes
    lstm_step gates over the example's steps; any other layer one rnn or lstm gate."""

    def read(r, node):
        op, name = _op_name(node.target), node.name
        layer = RecurrentLayer(r.graph, op, name, gate, "torch")
        x, hx, params, has_biases, layers, _, _, bidirectional, batch_first = node.args
        if node.target._overloadname != "input":
            raise layer.refuse("graphnet reads it on a tensor, not a packed sequence")
        if layers != 1 or bidirectional:
            raise layer.refuse(
                f"num_layers={layers}, bidirectional={bidirectional}: graphnet's {gate} gate "
                "is one layer in one direction (stack the gates for more)"
            )
        hx = list(hx) if isinstance(hx, (list, tuple)) else [hx]
        cell = None
        if len(hx) > 1 and not isinstance(r.values.get(hx[1]), Zeros):
            cell = Sliced.of(r.graph, r.value(hx[1]), op, f"{name}_c0")
            cell = cell.selected(op, f"{name}_c0", 0, 0).materialize()
        elif any(user.args[1:] == (2,) and user.users for user in node.users):
            cell = True  # c_n is read
        H = r.shape(params[1])[1]

        def weight(arg):  # a parameter only this op uses: its array, made a param
            if arg not in r.values and r.sources.get(arg.name, (None,))[0] == r.parameter:
                return Weight(r.constant(arg), r.sources[arg.name][1])
            return Weight(gate_input(r.value(arg), f"{op} {name!r}"), arg.name)

        biases = [
            weight(arg)
            for arg in params[2:4]
            if has_biases and not isinstance(r.values.get(arg), Zeros)
        ]
        b = layer.bias(biases, H, r.graph.dtype)
        h0 = None
        if not isinstance(r.values.get(hx[0]), Zeros):
            h0 = Sliced.of(r.graph, r.value(hx[0]), op, f"{name}_h0")
            h0 = h0.selected(op, f"{name}_h0", 0, 0).materialize()
        out = layer.build(
            r.input(node, 0),
            h0,
            layer.matrix(weight(params[0]), H, "Wx"),
            layer.matrix(weight(params[1]), H, "Wh"),
            b,
            time_first=not batch_first,
            out_name=name,
            cell=cell,
            steps=r.shape(node.args[0])[1 if batch_first else 0],
        )
        h_n = layer.last_state(out, 1 if batch_first else 0, 0, f"{name}_h_n")
        c_n = None  # read only when layer.last_cell is not None
        if layer.last_cell is not None:
            c_n = layer.with_new_axis(layer.last_cell, 0, f"{name}_c_n")
        return (out, h_n, c_n)[: len(hx) + 1]

    return read


def _read_getitem(r, node):
    """One output of an op with several (a recurrent layer's, a chunk's)."""
    outputs, i = r.value(node.args[0]), node.args[1]
    _require(isinstance(outputs, tuple), node, "graphnet reads getitem of an op's outputs only")
    return outputs[i]


def _read_chunk(r, node):
    """chunk(x, n, dim): n slices of equal size (the last one smaller) along dim."""
    dim, source = r.arg(node, 2, "dim", 0), r.sliced(node)
    _require(
        not source.open_size(dim, "aten.chunk", node.name),
        node,
        f"graphnet splits an axis of fixed size, and axis {dim} is the batch's, left open: "
        "its pieces would keep the example's sizes",
    )
    size = r.shape(node.args[0])[dim]
    step = -(-size // r.arg(node, 1, "chunks"))
    return tuple(
        source.sliced("aten.chunk", f"{node.name}_{k}", dim, slice(start, start + step))
        for k, start in enumerate(range(0, size, step))
    )


def _read_stack(r, node):
    """stack(tensors, dim): each with a new axis, concatenated along it."""
    dim = r.arg(node, 1, "dim", 0)
    parts = [
        Sliced.of(r.graph, r.value(t), "aten.stack", f"{node.name}_{k}")
        for k, t in enumerate(node.args[0])
    ]
    dim %= parts[0].rank + 1
    return r.gate(
        "concat",
        node,
        [
            p.unsqueezed("aten.stack", f"{node.name}_{k}", dim).materialize()
            for k, p in enumerate(parts)
        ],
        axis=dim,
    )


def _read_attention(r, node):
    """scaled_dot_product_attention with the default scale 1/√d, no dropout, a boolean
    mask (true where a query may attend) or is_causal. Where no key is allowed both give
    a zero output."""
    q = r.input(node, 0)
    mask, dropout, causal = (
        r.arg(node, i, n, d)
        for i, n, d in ((3, "attn_mask", None), (4, "dropout_p", 0.0), (5, "is_causal", False))
    )
    features = r.shape(node.args[0])[-1]
    scale = node.kwargs.get("scale")
    _require(
        dropout == 0.0
        and not node.kwargs.get("enable_gqa", False)
        and (scale is None or np.isclose(scale, 1 / np.sqrt(features), rtol=1e-12)),
        node,
        f"dropout_p={dropout}, scale={scale}: graphnet's attention gate scales by 1/√d "
        "and has no dropout or grouped queries",
    )
    inputs = [q, r.input(node, 1), r.input(node, 2)]
    if mask is not None:
        _require(
            mask.meta["val"].dtype == r.torch.bool,
            node,
            f"a {mask.meta['val'].dtype} attn_mask: graphnet's masked_attention takes a "
            "boolean mask (true where a query may attend), not one added to the scores",
        )
        _require(not causal, node, "both attn_mask and is_causal")
        inputs.append(r.input(node, 3))
    elif causal:
        queries, keys = r.shape(node.args[0])[-2], r.shape(node.args[1])[-2]
        inputs.append(
            r.graph.const(np.tril(np.ones((queries, keys), np.int64)), name=f"{node.name}_causal")
        )
    return r.gate("masked_attention" if len(inputs) == 4 else "attention", node, inputs)


def _read_zeros(r, node):
    return Zeros(_op_name(node.target), node.name)


def _with_args(gate, *names):
    """An ATen op that is one gate on its first argument, whose hyperparameters are the
    op's further arguments: (position, ATen name, default, gate hyperparameter) each."""

    def read(r, node):
        return r.gate(
            gate,
            node,
            [r.input(node, 0)],
            **{attr: r.arg(node, i, name, default) for i, name, default, attr in names},
        )

    return read


def _same_node(r, node):
    return r.value(node.args[0])


#: ATen op (as torch.export writes it) -> the function that builds its gates.
ATEN_OPS = {
    **{f"aten.{function}": _aten(gate) for gate, (_, function) in ONE_TO_ONE.items()},
    # the ones whose ATen form has settings the gate lacks, or that fold a pending op
    "aten.add": _read_add_sub("add"),
    "aten.sub": _read_add_sub("subtract"),
    "aten.mul": _read_mul,
    "aten.div": _read_div,
    "aten.mm": _aten("matmul"),
    "aten.bmm": _aten("matmul"),
    "aten.softmax": _read_softmax("softmax"),
    "aten.log_softmax": _read_softmax("log_softmax"),
    "aten.sum": _read_reduce("sum"),
    "aten.mean": _read_reduce("mean"),
    "aten.linear": _read_linear,
    "aten.addmm": _read_addmm,
    "aten.conv2d": _read_conv2d,
    "aten.max_pool2d": _read_pool("max_pool", {(4, "dilation"): 1, (5, "ceil_mode"): False}),
    "aten.avg_pool2d": _read_pool(
        "avg_pool", {(4, "ceil_mode"): False, (6, "divisor_override"): None}
    ),
    "aten.adaptive_avg_pool2d": _read_adaptive_avg_pool2d,
    "aten.batch_norm": _read_batch_norm,
    "aten.layer_norm": _read_layer_norm,
    "aten.group_norm": _read_group_norm,
    "aten.dropout": _read_dropout,
    "aten.flatten": _read_flatten,
    "aten.view": lambda r, node: _reshape(r, node, r.input(node, 0)),
    "aten.reshape": lambda r, node: _reshape(r, node, r.input(node, 0)),
    "aten.permute": lambda r, node: _transpose(r, node, r.arg(node, 1, "dims")),
    "aten.transpose": _read_swap,
    "aten.movedim": _read_swap,
    "aten.t": _read_swap,
    "aten.contiguous": _same_node,
    "aten.cat": _read_cat,
    "aten.slice": _read_slice,
    "aten.select": _read_select,
    "aten.unsqueeze": _read_unsqueeze,
    "aten.squeeze": _read_squeeze,
    "aten.index": _read_index,
    "aten.index_select": _read_index_select,
    "aten.embedding": _read_embedding,
    "aten.lstm": _read_recurrent("lstm"),
    "aten.rnn_tanh": _read_recurrent("rnn"),
    "getitem": _read_getitem,
    "aten.chunk": _read_chunk,
    "aten.stack": _read_stack,
    "aten.zeros": _read_zeros,
    "aten.zeros_like": _read_zeros,
    "aten.new_zeros": _read_zeros,
    "aten.scaled_dot_product_attention": _read_attention,
    "aten.pow": _read_pow,
    "aten.square": lambda r, node: r.gate("pow", node, [r.input(node, 0)], exponent=2.0),
    "aten.clamp": _read_clamp,
    "aten.where": lambda r, node: r.gate("where", node, [r.input(node, i) for i in range(3)]),
    "aten.masked_fill": _read_masked_fill,
    "aten.to": _read_mask,
    **{f"aten.{name}": _read_compare for name in _TORCH_COMPARISONS.values()},
    "aten.leaky_relu": _with_args("leaky_relu", (1, "negative_slope", 0.01, "alpha")),
    "aten.gelu": _with_args("gelu", (1, "approximate", "none", "approximate")),
    "aten.softplus": _read_softplus,
    "aten.hardtanh": _read_hardtanh,
    "aten.silu": _activation("silu"),
    "aten.elu": _read_elu,
    "aten.selu": _activation("elu", alpha=SELU_ALPHA, scale=SELU_SCALE),
    "aten.prelu": _read_prelu,
    "aten.mish": _activation("mish"),
    "aten.hardswish": _activation("hardswish"),
    "aten.hardsigmoid": _activation("hard_sigmoid", alpha=1 / 6, beta=0.5),
    "aten.log_sigmoid": _activation("log_sigmoid"),
    "aten.cross_entropy_loss": _read_cross_entropy,
    "aten.multi_margin_loss": _read_multi_margin,
}
