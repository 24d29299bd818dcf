"""ONNX out (`to_onnx`) and in (`from_onnx`).

One table per direction, keyed by op name: EXPORTERS by graphnet gate ('conv'), IMPORTERS
by ONNX op type ('Conv'). Adding an op is one entry in each. The `onnx` package is
imported when a function here is called, never when graphnet is.

An exported file computes what the graph computes in eval mode: batchnorm normalizes with
its running averages (ONNX BatchNormalization in inference mode) and dropout is the
identity (ONNX Dropout without training_mode). Params become initializers with their
names, inputs keep their names, and every size the graph leaves open (None) is a symbolic
dimension ('N' for the batch), so the file takes any batch size.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np

from .._version import __version__
from ..core.graph import Graph
from ..errors import GraphError
from ._common import (
    ONE_TO_ONE,
    SELU_ALPHA,
    SELU_SCALE,
    Parts,
    Deferred,
    Sliced,
    affine_input,
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
from ._recurrent import RecurrentLayer, Weight, Zeros, block_order

#: ReduceSum takes its axes as an input and Softmax works on one axis from opset 13 on.
MIN_OPSET = 13
#: Read by onnxruntime, Netron and every current converter.
DEFAULT_OPSET = 21
#: The model's metadata entry that lists (as a JSON array) the inputs built with
#: requires_grad=False: ONNX has no such notion, and without it an import would
#: differentiate the images a model only reads (and take other fused paths for them).
INPUTS_WITHOUT_GRADIENT = "graphnet.inputs_without_gradient"


def to_onnx(
    graph: Graph,
    path: str | os.PathLike | None = None,
    *,
    outputs: Any = None,
    opset: int | None = None,
    dtype: Any = None,
    input_shapes: dict | None = None,
) -> Any:
    """Write `graph` (the part that `outputs` depend on: node names or nodes, the graph's
    sinks by default) as an ONNX model, checked with onnx.checker, to `path` (if given);
    returns the onnx.ModelProto. `dtype` (say np.float32) converts every float tensor of
    the file; by default they keep the graph's types (onnxruntime runs Conv in float32
    only). ONNX needs each input's rank: an input built without a shape takes
    `input_shapes[name]` (None for sizes left open), or (N, D) when it feeds only affine
    gates whose w is (D, M). Raises UnsupportedOpError listing every gate with no ONNX
    form.

    Examples:
        >>> gn.to_onnx(model.graph, "convnet.onnx", outputs="scores")   # the scores, not the loss
        >>> session = onnxruntime.InferenceSession("convnet.onnx")
        >>> scores, = session.run(None, {"X": X.astype(np.float32)})    # == model.loss(X)
    """
    onnx = require("onnx", "graphnet.to_onnx")
    opset = DEFAULT_OPSET if opset is None else int(opset)
    if opset < MIN_OPSET:
        raise ValueError(
            f"to_onnx: opset {opset} is too old; graphnet writes opset "
            f"{MIN_OPSET} or newer (default {DEFAULT_OPSET})"
        )
    targets, nodes = selected_nodes(graph, outputs)
    check_supported(
        ((n.op, n.name) for n in nodes if n.kind == "gate"),
        EXPORTERS,
        "to_onnx",
        " Pass outputs= the nodes before them to export that part (the scores, say).",
    )
    if dtype is not None and np.dtype(dtype).kind != "f":
        raise ValueError(f"to_onnx: dtype must be a float type (np.float32, say), got {dtype!r}")
    writer = _Writer(onnx, None if dtype is None else np.dtype(dtype), opset)
    for node in nodes:
        if node.kind == "input":
            users = [n for n in nodes if node in n.inputs]
            writer.inputs.append(
                writer.value_info(
                    node, _input_shape(node, users, input_shapes or {}), _input_dtype(node, users)
                )
            )
        elif node.kind == "param":
            writer.initializer(node.name, node.value)
        elif node.kind == "const":  # a Constant node, so that an import makes it a const
            writer.op(
                "Constant",
                [],
                node.name,
                value=onnx.numpy_helper.from_array(writer.array(node.value, node.dtype), node.name),
            )
        else:
            EXPORTERS[node.op](writer, node, _promoted_inputs(writer, node))
    model = onnx.helper.make_model(
        onnx.helper.make_graph(
            writer.nodes, "graphnet", writer.inputs, [writer.value_info(t) for t in targets]
        ),
        producer_name="graphnet",
        producer_version=__version__,
        opset_imports=[onnx.helper.make_opsetid("", opset)],
    )
    # The weights go into the model's graph here, not through make_graph and make_model:
    # each copies every message it is given (a 118 MB MLP's export peaked 483 MB above
    # the graph's); each appended tensor's first copy is dropped as it is appended.
    writer.initializers.reverse()
    while writer.initializers:
        model.graph.initializer.append(writer.initializers.pop())
    without_gradient = [n.name for n in nodes if n.kind == "input" and not n.requires_grad]
    onnx.helper.set_model_props(model, {INPUTS_WITHOUT_GRADIENT: json.dumps(without_gradient)})
    model = _checked(onnx, model)
    if path is not None:
        onnx.save(model, os.fspath(path))
    return model


def _checked(onnx, model):
    """`model` with the value_info of ONNX's strict shape inference, once the checker's full
    check passed. Both run on its _typed_skeleton, each of whose large initializers is
    checked on its own by check_tensor, so that nothing is checked less: on the model
    itself, inference and the checker each serialize it, weights and all (a 118 MB MLP's
    export spent 1.1 s of 1.8 s there)."""
    skeleton = _typed_skeleton(onnx, model)
    inferred = onnx.shape_inference.infer_shapes(skeleton, check_type=True, strict_mode=True)
    onnx.checker.check_model(inferred, full_check=True)
    for tensor in model.graph.initializer:
        if math.prod(tensor.dims) > _INFERENCE_VALUES:
            onnx.checker.check_tensor(tensor)
    model.graph.value_info.extend(inferred.graph.value_info)
    return model


class _Writer:
    """Collects the ONNX nodes, initializers and inputs; the exporters call `op`."""

    def __init__(self, onnx, float_dtype, opset):
        self.onnx, self.float_dtype, self.opset = onnx, float_dtype, opset
        self.nodes, self.initializers, self.inputs = [], [], []

    def dtype(self, dtype):
        dtype = np.dtype(dtype)
        return self.float_dtype if dtype.kind == "f" and self.float_dtype else dtype

    def array(self, value, dtype):
        return np.asarray(value, dtype=self.dtype(dtype))

    def op(self, op_type, inputs, output, **attrs):
        self.nodes.append(
            self.onnx.helper.make_node(op_type, list(inputs), [output], name=output, **attrs)
        )
        return output

    def initializer(self, name, value):
        self.initializers.append(
            self.onnx.numpy_helper.from_array(self.array(value, np.asarray(value).dtype), name)
        )
        return name

    def ints(self, name, values):
        return self.initializer(name, np.asarray(values, dtype=np.int64))

    def scalar(self, name, value, node):
        """A constant in the float dtype the file holds `node` in."""
        return self.initializer(name, np.asarray(value, dtype=node.dtype))

    def value_info(self, node, shape=None, dtype=None):
        shape = node.static_shape if shape is None else shape
        if shape is not None:
            shape = [
                "N"
                if i == 0 and size is None
                else (f"{node.name}_dim{i}" if size is None else size)
                for i, size in enumerate(shape)
            ]
        elem_type = self.onnx.helper.np_dtype_to_tensor_dtype(self.dtype(dtype or node.dtype))
        return self.onnx.helper.make_tensor_value_info(node.name, elem_type, shape)


def _input_shape(node, users, input_shapes):
    if node.name in input_shapes:
        return tuple(input_shapes[node.name])
    if node.static_shape is not None:
        return node.static_shape
    widths = {
        u.inputs[1].static_shape[0]
        for u in users
        if u.op == "affine" and u.inputs[0] is node and u.inputs[1].static_shape
    }
    if len(widths) == 1 and all(u.op == "affine" for u in users):
        return (None, widths.pop())
    raise GraphError(
        f"to_onnx: input {node.name!r} was built without a shape, and ONNX needs "
        f"its rank: pass input_shapes={{{node.name!r}: (None, ...)}} (None for "
        "sizes left open)"
    )


def _input_dtype(node, users):
    """The input's dtype, or for one built without a dtype what a feed takes: int64 where
    every gate reading it takes integers (class labels), else the graph's float dtype."""
    if node.dtype is not None:
        return node.dtype
    labels = all(
        position in user.gate.integer_inputs
        for user in users
        for position, source in enumerate(user.inputs)
        if source is node
    )
    return np.dtype(np.int64) if labels else node.graph.dtype


def _promoted_inputs(writer, node):
    """The names of the node's inputs, an integer one (a mask) that a float gate reads as a
    number cast to the gate's float type first: numpy promotes it, ONNX's ops take one
    type."""
    names = []
    for position, source in enumerate(node.inputs):
        name = source.name
        promoted = (
            node.dtype is not None
            and node.dtype.kind == "f"
            and source.dtype is not None
            and source.dtype.kind in "biu"
            and position not in node.gate.integer_inputs
        )
        if promoted:
            to = writer.onnx.helper.np_dtype_to_tensor_dtype(node.dtype)
            name = writer.op("Cast", [name], f"{node.name}/{source.name}/cast", to=to)
        names.append(name)
    return names


def _same(onnx_op, **attrs):
    """A gate that is one ONNX op on the same inputs; `attrs` maps each ONNX attribute to
    a constant, or to the gate hyperparameter it takes when given as _attr('name')."""

    def export(writer, node, inputs):
        gate_attrs = node.gate.attrs()
        writer.op(
            onnx_op,
            inputs,
            node.name,
            **{
                key: gate_attrs[value.name] if isinstance(value, _attr) else value
                for key, value in attrs.items()
            },
        )

    return export


class _attr:
    """In `_same`: the gate's hyperparameter of this name."""

    def __init__(self, name):
        self.name = name


def _rank(node, gate_node, why):
    """The rank of `node`, the input of `gate_node`; an error saying `why` ONNX needs it."""
    if node.static_shape is None:
        raise unsupported(
            gate_node.op,
            gate_node.name,
            f"its input {node.name!r} has no known rank, and {why}: build the inputs with a shape",
        )
    return len(node.static_shape)


def _reduce(onnx_op, axes_input_since):
    """sum, mean: the axes are an attribute before opset `axes_input_since`, then an input."""

    def export(writer, node, inputs):
        axis, keepdims = node.gate.attrs()["axis"], int(node.gate.attrs()["keepdims"])
        attrs = {}
        if axis is not None and writer.opset >= axes_input_since:
            inputs.append(writer.ints(f"{node.name}/axes", np.atleast_1d(axis)))
        elif axis is not None:
            attrs["axes"] = np.atleast_1d(axis).tolist()
        writer.op(onnx_op, inputs, node.name, keepdims=keepdims, **attrs)

    return export


def _export_affine(writer, node, inputs):
    x_shape = node.inputs[0].static_shape
    if x_shape is None or len(x_shape) != 2:
        inputs[0] = writer.op("Flatten", inputs[:1], f"{node.name}/flatten", axis=1)
    writer.op("Gemm", inputs, node.name)


def _export_conv(writer, node, inputs):
    attrs = node.gate.attrs()
    writer.op("Conv", inputs, node.name, strides=[attrs["stride"]] * 2, pads=[attrs["pad"]] * 4)


def _pool(onnx_op):
    def export(writer, node, inputs):
        attrs = node.gate.attrs()
        writer.op(
            onnx_op,
            inputs,
            node.name,
            strides=[attrs["stride"]] * 2,
            kernel_shape=[attrs["pool_height"], attrs["pool_width"]],
        )

    return export


def _export_batchnorm(writer, node, inputs):
    """Inference-mode BatchNormalization with the node's running averages (zeros, as
    graphnet starts them, if the node never ran in train mode)."""
    gamma = node.inputs[1]
    features = np.shape(gamma.value) if gamma.value is not None else gamma.static_shape
    for stat in ("running_mean", "running_var"):
        value = node.state.get(stat, np.zeros(features))
        inputs.append(
            writer.initializer(f"{node.name}/{stat}", np.asarray(value, dtype=node.dtype))
        )
    attrs = node.gate.attrs()
    writer.op(
        "BatchNormalization", inputs, node.name, epsilon=attrs["eps"], momentum=attrs["momentum"]
    )


def _export_dropout(writer, node, inputs):
    """ONNX Dropout without training_mode is the identity; the ratio is kept so that the
    drawing, Netron and an import back show p."""
    ratio = np.asarray(node.gate.attrs()["p"], dtype=node.dtype)
    writer.op("Dropout", [inputs[0], writer.initializer(f"{node.name}/ratio", ratio)], node.name)


def _needs_opset(writer, node, onnx_op, opset):
    if writer.opset < opset:
        raise unsupported(
            node.op,
            node.name,
            f"ONNX has {onnx_op} from opset {opset}; "
            f"export with opset={opset} or newer (this export: {writer.opset})",
        )


def _export_layernorm(writer, node, inputs):
    _needs_opset(writer, node, "LayerNormalization", 17)
    writer.op("LayerNormalization", inputs, node.name, axis=-1, epsilon=node.gate.attrs()["eps"])


def _export_groupnorm(writer, node, inputs):
    """GroupNormalization with one scale and bias per channel (opset 21's form); graphnet's
    gamma of shape (1, C, 1, 1) is flattened first."""
    _needs_opset(writer, node, "GroupNormalization with per-channel scales", 21)
    flat = None
    for i, what in ((1, "scale"), (2, "bias")):
        if len(np.shape(node.inputs[i].value)) != 1:
            flat = flat or writer.initializer(f"{node.name}/flat", np.asarray([-1], np.int64))
            inputs[i] = writer.op("Reshape", [inputs[i], flat], f"{node.name}/{what}")
    attrs = node.gate.attrs()
    writer.op("GroupNormalization", inputs, node.name, num_groups=attrs["G"], epsilon=attrs["eps"])


def _export_reshape(writer, node, inputs):
    shape = node.gate.attrs()["shape"]
    if 0 in shape and writer.opset < 14:  # ONNX reads a 0 as "keep that size" unless allowzero
        raise unsupported(
            "reshape",
            node.name,
            f"shape {shape}: a size 0 needs opset 14 or newer (Reshape's allowzero)",
        )
    writer.op(
        "Reshape",
        [inputs[0], writer.ints(f"{node.name}/shape", shape)],
        node.name,
        **({"allowzero": 1} if 0 in shape else {}),
    )


def _export_flatten(writer, node, inputs):
    """ONNX's Flatten makes a matrix (the axes before `axis` merged too), graphnet's keeps
    the axes before `axis`: the same from axis 1, else a Reshape keeping them (a 0 keeps
    that size)."""
    axis = node.gate.attrs()["axis"]
    if axis == 1:
        writer.op("Flatten", inputs, node.name, axis=1)
    else:
        writer.op(
            "Reshape", [inputs[0], writer.ints(f"{node.name}/shape", [0] * axis + [-1])], node.name
        )


def _export_transpose(writer, node, inputs):
    axes = node.gate.attrs()["axes"]
    if axes is None:  # ONNX's default reverses the axes too
        writer.op("Transpose", inputs, node.name)
    else:
        rank = _rank(node.inputs[0], node, "ONNX takes the axes counted from 0")
        writer.op("Transpose", inputs, node.name, perm=[a % rank for a in axes])


#: ONNX's Slice reads an int64 past the end as "to the end".
_INT64_MAX, _INT64_MIN = np.iinfo(np.int64).max, np.iinfo(np.int64).min


def _export_slice(writer, node, inputs):
    """x[key] as a Slice (an int i as i:i+1), then a Squeeze of the ints' axes and an
    Unsqueeze where the key has None, each only where needed; from_onnx reads the run back
    as one slice gate."""
    key, rank = node.gate.key, _rank(node.inputs[0], node, "ONNX slices name their axes")
    indexed = sum(part is not None and part is not Ellipsis for part in key)
    if Ellipsis not in key:
        key = key + (Ellipsis,)
    at = key.index(Ellipsis)
    key = key[:at] + (slice(None),) * (rank - indexed) + key[at + 1 :]
    bounds, squeezed, unsqueezed, axis, out_axis = [], [], [], 0, 0
    for part in key:
        if part is None:
            unsqueezed.append(out_axis)
            out_axis += 1
            continue
        if isinstance(part, slice):
            step = part.step or 1
            if part != slice(None):
                start = part.start if part.start is not None else _INT64_MAX if step < 0 else 0
                stop = (
                    part.stop if part.stop is not None else _INT64_MIN if step < 0 else _INT64_MAX
                )
                bounds.append((start, stop, axis, step))
            out_axis += 1
        else:
            bounds.append((part, _INT64_MAX if part == -1 else part + 1, axis, 1))
            squeezed.append(axis)
        axis += 1
    steps = []
    if bounds:
        starts, ends, axes, strides = zip(*bounds)
        steps.append(("Slice", {"starts": starts, "ends": ends, "axes": axes, "steps": strides}))
    if squeezed:
        steps.append(("Squeeze", {"axes": squeezed}))
    if unsqueezed:
        steps.append(("Unsqueeze", {"axes": unsqueezed}))
    steps = steps or [("Identity", {})]  # x[...]
    value = inputs[0]
    for i, (op_type, arrays) in enumerate(steps):
        out = node.name if i == len(steps) - 1 else f"{node.name}/{op_type.lower()}"
        value = writer.op(
            op_type,
            [value, *(writer.ints(f"{out}/{what}", values) for what, values in arrays.items())],
            out,
        )


def _export_pow(writer, node, inputs):
    exponent = writer.scalar(f"{node.name}/exponent", node.gate.attrs()["exponent"], node)
    writer.op("Pow", [inputs[0], exponent], node.name)


def _export_clip(writer, node, inputs):
    attrs = node.gate.attrs()
    bounds = [
        "" if attrs[side] is None else writer.scalar(f"{node.name}/{side}", attrs[side], node)
        for side in ("low", "high")
    ]
    writer.op("Clip", [inputs[0], *bounds], node.name)


#: graphnet's compare relations as ONNX ops; != is Not(Equal).
_ONNX_COMPARISONS = {
    ">": "Greater",
    ">=": "GreaterOrEqual",
    "<": "Less",
    "<=": "LessOrEqual",
    "==": "Equal",
}


def _export_compare(writer, node, inputs):
    """ONNX's comparisons give bool tensors; graphnet's mask is int8."""
    relation = node.gate.attrs()["relation"]
    mask = writer.op(_ONNX_COMPARISONS[relation.replace("!=", "==")], inputs, f"{node.name}/bool")
    if relation == "!=":
        mask = writer.op("Not", [mask], f"{node.name}/not")
    writer.op("Cast", [mask], node.name, to=writer.onnx.TensorProto.INT8)


def _export_where(writer, node, inputs):
    """ONNX's Where takes a bool condition; graphnet's mask holds integers, nonzero true."""
    mask = writer.op("Cast", inputs[:1], f"{node.name}/mask", to=writer.onnx.TensorProto.BOOL)
    writer.op("Where", [mask, *inputs[1:]], node.name)


_SQRT_2 = math.sqrt(2)
_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_TANH_CUBIC = 0.044715


def _export_gelu(writer, node, inputs):
    """Gelu from opset 20; before, the ops torch.onnx.export writes for it (which from_onnx
    reads back as one gelu gate): x·½(1 + erf(x/√2)), or with approximate='tanh'
    x·½(1 + tanh(√(2/π)(x + 0.044715x³)))."""
    approximate, name, x = node.gate.attrs()["approximate"], node.name, inputs[0]
    if writer.opset >= 20:
        writer.op("Gelu", inputs, name, approximate=approximate)
        return

    def op(op_type, *args):  # a float argument is a constant
        out = f"{name}/{op_type.lower()}{len(writer.nodes)}"
        return writer.op(
            op_type,
            [
                writer.scalar(f"{out}/constant", a, node) if isinstance(a, float) else a
                for a in args
            ],
            out,
        )

    if approximate == "tanh":
        inner = op("Add", x, op("Mul", _TANH_CUBIC, op("Pow", x, 3.0)))
        phi = op("Tanh", op("Mul", _SQRT_2_OVER_PI, inner))
    else:
        phi = op("Erf", op("Div", x, _SQRT_2))
    writer.op("Mul", [x, op("Mul", 0.5, op("Add", phi, 1.0))], name)


def _export_cross_entropy(writer, node, inputs):
    """SoftmaxCrossEntropyLoss reads the classes from axis 1: scores (N, d1, ..., C) are
    transposed to (N, C, d1, ...) first. With every label ignored it gives NaN where
    graphnet gives 0."""
    rank = _rank(node.inputs[0], node, "ONNX's loss reads the classes from axis 1")
    if rank < 2:
        raise unsupported(
            "cross_entropy",
            node.name,
            "ONNX's SoftmaxCrossEntropyLoss needs a batch axis: scores (N, C, ...)",
        )
    if rank > 2:
        inputs[0] = writer.op(
            "Transpose",
            inputs[:1],
            f"{node.name}/classes_first",
            perm=[0, rank - 1, *range(1, rank - 1)],
        )
    ignore = node.gate.attrs()["ignore_index"]
    writer.op(
        "SoftmaxCrossEntropyLoss",
        inputs,
        node.name,
        reduction="mean",
        **({} if ignore is None else {"ignore_index": ignore}),
    )


# ----- the sequence gates ---------------------------------------------------------------
# The course's conventions: weights (in, out), one bias, the LSTM's gate blocks in the
# order i, f, o, g. ONNX's RNN and LSTM take them transposed, with a second (recurrent)
# bias, and the LSTM's blocks in the order i, o, f, c.


class _Ops:
    """Writes the ONNX nodes of one gate, each named after the gate's node."""

    def __init__(self, writer, node):
        self.writer, self.node = writer, node

    def __call__(self, op_type, inputs, suffix=None, **attrs):
        name = self.node.name if suffix is None else f"{self.node.name}/{suffix}"
        return self.writer.op(op_type, inputs, name, **attrs)

    def ints(self, suffix, values):
        return self.writer.ints(f"{self.node.name}/{suffix}", values)

    def scalar(self, suffix, value):
        return self.writer.scalar(f"{self.node.name}/{suffix}", value, self.node)

    def block(self, tensor, k, size, axis, suffix):
        """The k-th block of `size` entries of `tensor` along `axis`."""
        return self(
            "Slice",
            [
                tensor,
                self.ints(f"{suffix}_start", [k * size]),
                self.ints(f"{suffix}_end", [(k + 1) * size]),
                self.ints(f"{suffix}_axis", [axis]),
            ],
            suffix,
        )


def _hidden_size(node):
    H = node.static_shape[-1] if node.static_shape else None
    if H is None:
        raise unsupported(
            node.op, node.name, "ONNX needs the hidden size: build Wh with a known shape"
        )
    return H


def _onnx_recurrent_weights(ops, inputs, H, lstm):
    """W (1, kH, D), R (1, kH, H), B (1, 2kH) of ONNX's RNN or LSTM from Wx, Wh, b."""
    axis0 = ops.ints("axis0", [0])

    def onnx_order(tensor, what):  # the course's i, f, o, g -> ONNX's i, o, f, c
        if not lstm:
            return tensor
        blocks = [
            ops.block(tensor, k, H, 0, f"{what}_{gate}")
            for k, gate in zip(block_order("course", "onnx"), "iofc")
        ]
        return ops("Concat", blocks, f"{what}_iofc", axis=0)

    W, R = (
        ops(
            "Unsqueeze",
            [onnx_order(ops("Transpose", [w], f"{what}_T", perm=[1, 0]), what), axis0],
            what,
        )
        for w, what in ((inputs[2], "W"), (inputs[3], "R"))
    )
    b = onnx_order(inputs[4], "b")
    B = ops(
        "Unsqueeze",
        [ops("Concat", [b, ops("Sub", [b, b], "no_recurrent_bias")], "biases", axis=0), axis0],
        "B",
    )
    return W, R, B


def _recurrent(onnx_op):
    """rnn, lstm: ONNX's RNN or LSTM, time first (onnxruntime runs no other layout, and
    only in float32)."""

    def export(writer, node, inputs):
        ops, H = _Ops(writer, node), _hidden_size(node)
        W, R, B = _onnx_recurrent_weights(ops, inputs, H, onnx_op == "LSTM")
        x = ops("Transpose", [inputs[0]], "time_first", perm=[1, 0, 2])
        h0 = ops("Unsqueeze", [inputs[1], ops.ints("direction", [0])], "initial_h")
        Y = ops(onnx_op, [x, W, R, B, "", h0], "Y", hidden_size=H)  # (T, 1, N, H)
        Y = ops("Squeeze", [Y, ops.ints("direction_axis", [1])], "Y_squeezed")
        ops("Transpose", [Y], perm=[1, 0, 2])

    return export


def _step_preactivation(ops, x, h, Wx, Wh, b):
    return ops(
        "Add",
        [ops("Add", [ops("MatMul", [x, Wx], "xWx"), ops("MatMul", [h, Wh], "hWh")], "sum"), b],
        "a",
    )


def _export_rnn_step(writer, node, inputs):
    ops = _Ops(writer, node)
    ops("Tanh", [_step_preactivation(ops, *inputs)])


def _export_lstm_step(writer, node, inputs):
    ops, H = _Ops(writer, node), _hidden_size(node)
    x, prev_h, prev_c, Wx, Wh, b = inputs
    a = _step_preactivation(ops, x, prev_h, Wx, Wh, b)
    i, f, o = (ops("Sigmoid", [ops.block(a, k, H, 1, f"a_{g}")], g) for k, g in enumerate("ifo"))
    g = ops("Tanh", [ops.block(a, 3, H, 1, "a_g")], "g")
    c = ops("Add", [ops("Mul", [f, prev_c], "f_c"), ops("Mul", [i, g], "i_g")], "next_c")
    h = ops("Mul", [o, ops("Tanh", [c], "tanh_c")], "next_h")
    axis0 = ops.ints("axis0", [0])
    ops(
        "Concat",
        [ops("Unsqueeze", [h, axis0], "h_stacked"), ops("Unsqueeze", [c, axis0], "c_stacked")],
        axis=0,
    )


def _export_word_embedding(writer, node, inputs):
    writer.op("Gather", [inputs[1], inputs[0]], node.name, axis=0)


def _export_temporal_affine(writer, node, inputs):
    ops = _Ops(writer, node)
    ops("Add", [ops("MatMul", inputs[:2], "xw"), inputs[2]])


def _export_temporal_softmax_loss(writer, node, inputs):
    """Per-step SoftmaxCrossEntropyLoss (classes moved to axis 1), masked, summed, / N."""
    ops = _Ops(writer, node)
    x, y, mask = inputs
    per_step = ops(
        "SoftmaxCrossEntropyLoss",
        [ops("Transpose", [x], "classes_first", perm=[0, 2, 1]), y],
        "per_step",
        reduction="none",
    )
    counted = ops(
        "Cast",
        [ops("Cast", [mask], "mask_bool", to=_BOOL)],
        "counted",
        to=_tensor_type(writer, node),
    )
    total = ops("ReduceSum", [ops("Mul", [per_step, counted], "masked")], "total", keepdims=0)
    batch = ops(
        "Cast",
        [ops("Gather", [ops("Shape", [x], "shape"), ops.ints("batch_axis", 0)], "N_int", axis=0)],
        "N",
        to=_tensor_type(writer, node),
    )
    ops("Div", [total, ops("Max", [batch, ops.scalar("one", 1.0)], "at_least_1")])


def _export_attention(writer, node, inputs):
    """MatMul, Softmax, MatMul; with a mask, -inf where it is 0 and a zero row for a query
    that may attend to no key (Softmax gives NaN there)."""
    ops = _Ops(writer, node)
    q, k, v = inputs[:3]
    rank = _rank(node.inputs[1], node, "ONNX's Transpose needs the rank of the keys")
    features = node.inputs[0].static_shape[-1] if node.inputs[0].static_shape else None
    if features is None:
        raise unsupported(
            node.op,
            node.name,
            "ONNX needs the feature size d of the queries "
            "for the scale 1/√d: build q with a known last axis",
        )
    k_t = ops("Transpose", [k], "k_T", perm=[*range(rank - 2), rank - 1, rank - 2])
    scores = ops(
        "Mul",
        [
            ops("MatMul", [q, k_t], "q_kT"),
            ops.scalar("scale", 1 / math.sqrt(features) if features else 1.0),
        ],
        "scores",
    )
    if len(inputs) == 3:
        ops("MatMul", [ops("Softmax", [scores], "weights", axis=-1), v])
        return
    keep = ops("Cast", [inputs[3]], "keep", to=_BOOL)
    masked = ops("Where", [keep, scores, ops.scalar("minus_inf", -math.inf)], "masked")
    weights = ops("Softmax", [masked], "softmax", axis=-1)
    weights = ops(
        "Where", [ops("IsNaN", [weights], "no_key"), ops.scalar("zero", 0.0), weights], "weights"
    )
    ops("MatMul", [weights, v])


_BOOL = 9  # onnx.TensorProto.BOOL


def _tensor_type(writer, node):
    return writer.onnx.helper.np_dtype_to_tensor_dtype(writer.dtype(node.dtype))


#: graphnet gate -> the function that writes it as ONNX nodes.
EXPORTERS = {
    **{gate: _same(onnx_op) for gate, (onnx_op, _) in ONE_TO_ONE.items()},
    "softmax": _same("Softmax", axis=-1),
    "log_softmax": _same("LogSoftmax", axis=_attr("axis")),
    "sum": _reduce("ReduceSum", 13),
    "mean": _reduce("ReduceMean", 18),
    "affine": _export_affine,
    "conv": _export_conv,
    "max_pool": _pool("MaxPool"),
    "avg_pool": _pool("AveragePool"),
    "batchnorm": _export_batchnorm,
    "spatial_batchnorm": _export_batchnorm,
    "layernorm": _export_layernorm,
    "spatial_groupnorm": _export_groupnorm,
    "dropout": _export_dropout,
    "softmax_loss": _same("SoftmaxCrossEntropyLoss", reduction="mean"),
    "cross_entropy": _export_cross_entropy,
    "reshape": _export_reshape,
    "flatten": _export_flatten,
    "transpose": _export_transpose,
    "concat": _same("Concat", axis=_attr("axis")),
    "slice": _export_slice,
    "take": _same("Gather", axis=_attr("axis")),
    "pow": _export_pow,
    "clip": _export_clip,
    "where": _export_where,
    "compare": _export_compare,
    "leaky_relu": _same("LeakyRelu", alpha=_attr("alpha")),
    "gelu": _export_gelu,
    "softplus": _same("Softplus"),
    "rnn": _recurrent("RNN"),
    "lstm": _recurrent("LSTM"),
    "rnn_step": _export_rnn_step,
    "lstm_step": _export_lstm_step,
    "word_embedding": _export_word_embedding,
    "temporal_affine": _export_temporal_affine,
    "temporal_softmax_loss": _export_temporal_softmax_loss,
    "attention": _export_attention,
    "masked_attention": _export_attention,
}


# ----- import --------------------------------------------------------------------------


def from_onnx(path_or_model: Any) -> Graph:
    """A Graph of gates built from an ONNX model (a path or an onnx.ModelProto).

    Inputs keep their names; initializers that are float arrays become params, scalars,
    integer initializers and Constant nodes consts, all with their names; each gate node
    is named after the tensor it computes; batchnorm's running averages go to the node's
    state. The graph comes back in eval mode, as the model computes; `graph.train()`
    switches batchnorm and dropout to training. Raises UnsupportedOpError listing every
    op graphnet has no gate for.

    Examples:
        >>> g = gn.from_onnx("cnn.onnx")                 # gates, params named as in the file
        >>> y = g.input("y", shape=(None,), dtype=np.int64)
        >>> g.softmax_loss(g["scores"], y, name="loss")  # add a loss, then draw and train it
    """
    onnx = require("onnx", "graphnet.from_onnx")
    model = (
        path_or_model
        if isinstance(path_or_model, onnx.ModelProto)
        else _load_model(onnx, os.fspath(path_or_model))
    )
    for node in model.graph.node:
        if not node.output:
            raise GraphError(f"ONNX node {node.name!r} ({node.op_type}) has no output")
    # the weights as arrays, made once: the patterns' finder and the reader share them
    initializers = _arrays(onnx, ((t.name, t) for t in model.graph.initializer), "initializer")
    patterns, inside = _find_patterns(onnx, model, initializers)
    uses = [
        (n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}", _output(n))
        for n in model.graph.node
        if _output(n) not in inside and _output(n) not in patterns
    ]
    instance_norms = any(op == "InstanceNormalization" for op, _ in uses)
    check_supported(
        uses,
        IMPORTERS,
        "from_onnx",
        f" InstanceNormalization: {_TORCH_GROUP_NORM}." * instance_norms,
    )
    _check_declared_shapes(model)
    _check_input_types(onnx, model)
    return _Reader(onnx, model, initializers, patterns, inside).build()


def _check_declared_shapes(model):
    """A GraphError naming the tensor and the axis when the model declares a negative size
    for an input, an output or a value_info: no array has one, and ONNX's shape inference
    (run by _check_input_types) aborts the interpreter on some (onnx 1.23: a Slice along
    an input's axis declared -1 fails an assertion in std::clamp)."""
    graph = model.graph
    for what, infos in (
        ("input", graph.input),
        ("output", graph.output),
        ("value_info", graph.value_info),
    ):
        for info in infos:
            for axis, dim in enumerate(info.type.tensor_type.shape.dim):
                if dim.HasField("dim_value") and dim.dim_value < 0:
                    raise GraphError(
                        f"ONNX {what} {info.name!r} declares the size {dim.dim_value} on axis "
                        f"{axis}; a size is 0 or more"
                    )


def _check_input_types(onnx, model):
    """A GraphError naming the node, both inputs and both types when two inputs of one type
    variable of the op's schema have different element types: a constant (initializer or
    Constant) meeting a computed input (say a double weight on a float image), or two
    computed inputs (a float image added to a double one). ONNX refuses such a file;
    graphnet would promote or fail on the first run. An input's type is the model's
    input's, a constant's, or what ONNX's type inference gives it (run on the model
    without its large initializers' values: see _typed_skeleton); inputs whose type
    nothing fixes, heterogeneous variadic inputs and ops of other domains are not
    checked."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), MIN_OPSET)
    types = {t.name: t.data_type for t in model.graph.initializer}
    constants = set(types)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    types[_output(node)] = a.t.data_type
                    constants.add(_output(node))
    try:
        inferred = onnx.shape_inference.infer_shapes(_typed_skeleton(onnx, model)).graph.value_info
    except (onnx.shape_inference.InferenceError, RuntimeError, ValueError):
        inferred = []  # a model inference cannot follow: the reader names what is wrong
    for info in [*model.graph.input, *inferred]:
        types.setdefault(info.name, info.type.tensor_type.elem_type)
    for node in model.graph.node:
        try:
            formal = onnx.defs.get_schema(node.op_type, opset, "").inputs
        except onnx.defs.SchemaError:
            continue
        if node.domain not in ("", "ai.onnx") or not formal:
            continue
        alike = {}  # the inputs of one type variable whose type is known, by variable
        for i, name in enumerate(node.input):
            parameter = formal[min(i, len(formal) - 1)]
            if types.get(name, 0) and parameter.is_homogeneous:
                alike.setdefault(parameter.type_str, []).append(name)
        for names in alike.values():
            # a computed input is what the file means; a constant meets it
            other = next((name for name in names if name not in constants), names[0])
            for name in names:
                if types[name] != types[other]:
                    kind, fix = (
                        ("constant", "cast the constant")
                        if name in constants
                        else ("input", "add a Cast")
                    )
                    raise GraphError(
                        f"ONNX node {_output(node)!r} ({node.op_type}): its {kind} {name!r} "
                        f"is {_type_name(onnx, types[name])} but the input {other!r} it meets "
                        f"is {_type_name(onnx, types[other])}; {node.op_type} takes one type "
                        f"for both ({fix} in the file)"
                    )


#: Initializers of more values than this are declared to _check_input_types's type
#: inference by their type and shape alone (a shape's or an index's few values stay).
_INFERENCE_VALUES = 64


def _typed_skeleton(onnx, model):
    """`model` for type inference without copying its weights: a new ModelProto whose
    graph has the nodes, inputs, outputs and value_info, and declares each initializer of
    more than _INFERENCE_VALUES values as an input of its type and shape (inference
    serializes the whole model, so a 500 MB file's weights would be copied twice)."""
    graph = model.graph
    inputs = {i.name for i in graph.input}  # before IR version 4, initializers are listed
    small, declared = [], []
    for tensor in graph.initializer:
        if math.prod(tensor.dims) <= _INFERENCE_VALUES:
            small.append(tensor)
        elif tensor.name not in inputs:
            declared.append(
                onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims)
            )
    skeleton = onnx.helper.make_graph(
        graph.node,
        graph.name,
        [*graph.input, *declared],
        graph.output,
        small,
        value_info=graph.value_info,
    )
    return onnx.helper.make_model(
        skeleton,
        opset_imports=model.opset_import,
        ir_version=model.ir_version,
        functions=model.functions,
    )


def _type_name(onnx, elem_type):
    try:
        name = onnx.helper.tensor_dtype_to_string(elem_type)
    except KeyError:  # a number that names no ONNX type
        return f"of element type {elem_type}"
    return name.removeprefix("TensorProto.").lower()


def _load_model(onnx, path):
    """The ModelProto in the file at `path`; a GraphError naming the file if it is not one
    (truncated, another format) or its external data lies outside the file's folder."""
    from google.protobuf.message import DecodeError

    try:
        return onnx.load(path)
    except (DecodeError, onnx.checker.ValidationError) as err:
        raise GraphError(f"{path}: not a readable ONNX model: {err}") from err


def _arrays(onnx, tensors, what):
    """{name: array} of ONNX tensors; a GraphError naming the tensor if one does not hold
    the values its dims and data type declare."""
    arrays = {}
    for name, tensor in tensors:
        try:
            arrays[name] = onnx.numpy_helper.to_array(tensor)
        except (ValueError, TypeError, KeyError) as err:
            raise GraphError(
                f"ONNX {what} {name!r} (dims {list(tensor.dims)}, data type {tensor.data_type}) "
                f"does not hold the values it declares: {err}"
            ) from err
    return arrays


def _output(node):
    return node.output[0] if node.output else node.name


class _Reader:
    """Builds the graph: `values` maps each ONNX tensor name to the node (or Pending) that
    holds it; initializers and Constant outputs become nodes when a gate takes them."""

    def __init__(self, onnx, model, initializers, patterns, inside):
        self.onnx = onnx
        self.opset = next(
            (o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), MIN_OPSET
        )
        self.model, self.patterns, self.inside = model, patterns, inside
        # {name: array}, Constant nodes' added as read. The caller's dict itself: each
        # weight made a param then reads the param's array (see param), so that the
        # file's copy is freed as the import goes, not held to its end.
        self.constants = initializers
        self.initializer_names = set(self.constants)
        floats = [_elem_dtype(onnx, i) for i in model.graph.input if i.name not in self.constants]
        floats = [d for d in floats if d.kind == "f"]
        self.graph = Graph(dtype=floats[0] if floats else np.float32)
        self.values, self.transposed = {}, {}

    def build(self):
        g = self.graph
        inputs = [i for i in self.model.graph.input if i.name not in self.constants]
        without_gradient = _inputs_without_gradient(self.model, {i.name for i in inputs})
        for info in inputs:
            self.values[info.name] = g.input(
                info.name,
                shape=_shape(info),
                dtype=_elem_dtype(self.onnx, info),
                requires_grad=info.name not in without_gradient,
            )
        for node in self.model.graph.node:
            if _output(node) in self.inside:
                continue
            if node.op_type not in _SEVERAL_OUTPUTS:
                extra = [o for o in node.output[1:] if o and self.used(o)]
                if extra:
                    raise unsupported(
                        node.op_type,
                        node.output[0],
                        f"graphnet computes only its first output, but {', '.join(extra)} is used",
                    )
            try:
                value = self.read(node)
            except GraphError:
                raise
            except (IndexError, KeyError, TypeError, ValueError) as err:
                # A node that breaks its op's schema (an input or attribute missing, a
                # window of four sizes) fails inside the importer's arithmetic.
                raise GraphError(
                    f"ONNX node {node.output[0]!r} ({node.op_type}) does not fit its op's "
                    f"schema: {type(err).__name__}: {err}"
                ) from err
            if isinstance(value, tuple):  # one value for each of the node's outputs
                self.values.update((out, v) for out, v in zip(node.output, value) if out)
            elif value is not None:
                self.values[node.output[0]] = value
        for out in self.model.graph.output:
            gate_input(self.input_value(out.name), "the model's output")
        g.eval()
        return g

    def read(self, node):
        """The node's value: a pattern's gate, or its op's importer's."""
        if node.output[0] in self.patterns:
            build, inputs = self.patterns[node.output[0]]
            return build(
                self, node, [gate_input(self.input_value(x), node.op_type) for x in inputs]
            )
        return IMPORTERS[node.op_type](self, node)

    def used(self, tensor):
        return self.readers(tensor) > 0

    def readers(self, tensor):
        """How many nodes read `tensor` (each input that names it), the model's outputs
        counted."""
        return sum(list(n.input).count(tensor) for n in self.model.graph.node) + sum(
            tensor == o.name for o in self.model.graph.output
        )

    # what the importers call

    def attr(self, node, name, default=None):
        for a in node.attribute:
            if a.name == name:
                value = self.onnx.helper.get_attribute_value(a)
                if a.type == a.FLOAT:
                    # ONNX holds it in float32: take the shortest decimal that rounds to it
                    # (0.1, not 0.10000000149), what a float64 graph written out had
                    return float(str(np.float32(value)))
                return value.decode() if isinstance(value, bytes) else value
        return default

    def has(self, node, i):
        return len(node.input) > i and node.input[i] != ""

    def input_value(self, name):
        """The node (or Pending) holding tensor `name`, made from a constant if need be."""
        if name not in self.values:
            if name not in self.constants:
                raise unsupported("tensor", name, "no node of the model computes it")
            value = self.constants[name]
            if value.dtype.kind == "b":  # graphnet's masks are integers, nonzero true
                value = value.astype(np.int64)
            make_param = (
                name in self.initializer_names and value.dtype.kind == "f" and value.ndim > 0
            )
            self.values[name] = (
                self.param(name, value)
                if make_param
                else self.graph.const(value, name=name, dtype=value.dtype)
            )
        return self.values[name]

    def param(self, name, value, transposed=False):
        """A param of initializer `name`'s array `value` (or of its transpose); from then on
        the initializer reads the param's own array, so the array made from the file is
        freed: an import held each weight twice to its end (a 118 MB MLP's peaked 235 MB
        above the loaded model)."""
        node = self.graph.param(name, value.T if transposed else value, dtype=value.dtype)
        self.constants[name] = node.value.T if transposed else node.value
        return node

    def zeros(self, name) -> bool:
        """True when tensor `name` is all zeros: a constant, or zeros of a computed shape."""
        if isinstance(self.values.get(name), Zeros):
            return True
        return name in self.constants and name not in self.values and not self.constants[name].any()

    def input(self, node, i):
        return gate_input(self.input_value(node.input[i]), f"{node.op_type} {node.output[0]!r}")

    def constant(self, node, i, what):
        name = node.input[i]
        if name not in self.constants:
            raise unsupported(
                node.op_type, node.output[0], f"its {what} (input {i}, {name!r}) must be a constant"
            )
        return self.constants[name]

    def ints(self, node, i, attr):
        """The ints of constant input i, or (older opsets) of attribute `attr`; None if the
        node has neither."""
        if self.has(node, i):
            return [int(v) for v in np.ravel(self.constant(node, i, attr))]
        value = self.attr(node, attr)
        return None if value is None else [int(v) for v in value]

    def gate(self, op, node, inputs, **attrs):
        return build_gate(self.graph, op, inputs, node.output[0], **attrs)

    def sliced(self, node):
        """A run of indexing ops so far on the node's first input (see Sliced)."""
        return Sliced.of(self.graph, self.input_value(node.input[0]), node.op_type, node.output[0])


def _inputs_without_gradient(model, input_names):
    """The inputs graphnet's export marked as needing no gradient (see
    INPUTS_WITHOUT_GRADIENT); none in a file from elsewhere. A GraphError if the entry is
    not a list of the model's input names."""
    entry = next((p.value for p in model.metadata_props if p.key == INPUTS_WITHOUT_GRADIENT), "[]")
    try:
        names = json.loads(entry)
    except ValueError:
        names = None
    if not (
        isinstance(names, list)
        and all(isinstance(name, str) and name in input_names for name in names)
    ):
        raise GraphError(
            f"ONNX metadata {INPUTS_WITHOUT_GRADIENT!r} must list some of the model's inputs "
            f"{sorted(input_names)} as a JSON array, got {entry[:200]!r}"
        )
    return set(names)


def _shape(info):
    tensor = info.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)


def _elem_dtype(onnx, info):
    """The dtype of a model input; a bool one (a mask) is fed as integers."""
    elem_type = info.type.tensor_type.elem_type
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError) as err:
        raise GraphError(
            f"ONNX input {info.name!r} has element type {elem_type}, which names no ONNX data type"
        ) from err
    return np.dtype(np.int64) if dtype.kind == "b" else dtype


def _find_patterns(onnx, model, initializers):
    """Runs of ONNX ops that are one gate: the GELUs written in ops before opset 20 had
    Gelu (as torch.onnx.export and to_onnx write them), nn.GroupNorm as torch.onnx.export
    writes it (through InstanceNormalization), the temporal softmax loss, the
    masked attention and compare's != (Not of Equal) as to_onnx writes them. Returns
    ({output of the run's last node: (build(reader, node, input nodes), input tensor
    names)}, the outputs of the nodes inside the runs), leaving alone a run whose inner
    values something else reads, and a run with a node that breaks its op's schema (the
    reader then names that node)."""
    finder = _PatternFinder(onnx, model, initializers)
    patterns, inside = {}, set()
    for tail in model.graph.node:
        try:
            found = (
                finder.gelu(tail)
                or finder.temporal_loss(tail)
                or finder.masked_attention(tail)
                or finder.zeros(tail)
                or finder.not_equal(tail)
                or finder.group_norm(tail)
            )
        except (IndexError, KeyError, TypeError, ValueError):
            # an input or attribute missing, or of another kind, as _Reader.build catches
            found = None
        if found is None:
            continue
        interior = finder.interior(tail, set(found[1]))
        if all(finder.read_only_by(name, interior | {_output(tail)}) for name in interior):
            patterns[_output(tail)] = found
            inside |= interior
    return patterns, inside


#: The ops that compute a shape from a tensor's sizes.
_SHAPE_OPS = {"Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Slice", "Cast", "Constant"}


class _PatternFinder:
    """Matches the runs of ops of _find_patterns in a model's nodes: GELU as
    x·½(1 + erf(x/√2)) and x·½(1 + tanh(√(2/π)(x + 0.044715x³))), the product taken in
    either order; the others as to_onnx writes them."""

    def __init__(self, onnx, model, initializers):
        self.onnx = onnx
        nodes = model.graph.node
        self.producer = {_output(n): n for n in nodes}
        self.constants = dict(initializers)
        values = (
            (_output(n), a.t)
            for n in nodes
            if n.op_type == "Constant"
            for a in n.attribute
            if a.name == "value"
        )
        self.constants.update(_arrays(onnx, values, "constant"))
        self.readers = {}
        for n in nodes:
            for name in n.input:
                self.readers.setdefault(name, set()).add(_output(n))
        self.outputs = {o.name for o in model.graph.output}

    def operand(self, name, op_type, value, commutes=True):
        """The other input of the `op_type` node computing `name` whose one input is the
        scalar `value`."""
        node = self.producer.get(name)
        if node is None or node.op_type != op_type or len(node.input) != 2:
            return None
        for this, other in (node.input, reversed(node.input))[: 1 + commutes]:
            constant = self.constants.get(other)
            if (
                constant is not None
                and constant.size == 1
                and math.isclose(float(np.ravel(constant)[0]), value, rel_tol=1e-6)
            ):
                return this
        return None

    def phi_input(self, name):
        """(x, approximate) when `name` is erf(x/√2) or tanh(√(2/π)(x + 0.044715x³))."""
        node = self.producer.get(name)
        if node is not None and node.op_type == "Erf":
            x = self.operand(node.input[0], "Div", _SQRT_2, commutes=False) or self.operand(
                node.input[0], "Mul", 1 / _SQRT_2
            )
            return x, "none"
        if node is None or node.op_type != "Tanh":
            return None, None
        inner = self.producer.get(self.operand(node.input[0], "Mul", _SQRT_2_OVER_PI))
        if inner is not None and inner.op_type == "Add":
            for x, term in (inner.input, reversed(inner.input)):
                cube = self.operand(term, "Mul", _TANH_CUBIC)
                if cube and self.operand(cube, "Pow", 3.0, commutes=False) == x:
                    return x, "tanh"
        return None, None

    def product(self, a, b):
        """(x, approximate) when a·b is x·(1 + phi(x)), in either order."""
        for x, rest in ((a, b), (b, a)):
            found, approximate = self.phi_input(self.operand(rest, "Add", 1.0))
            if found is not None and found == x:
                return x, approximate
        return None, None

    def match(self, tail):
        """(x, approximate) when the node `tail` is x · (½·(1 + phi)) or (x·(1 + phi)) · ½."""
        if tail.op_type != "Mul" or len(tail.input) != 2:
            return None, None
        for i in (0, 1):
            half_of = self.operand(tail.input[i], "Mul", 0.5)
            if half_of is not None:
                x, approximate = self.product(tail.input[1 - i], half_of)
                if x is not None:
                    return x, approximate
        inner = self.producer.get(self.operand(_output(tail), "Mul", 0.5))
        if inner is not None and inner.op_type == "Mul":
            return self.product(*inner.input)
        return None, None

    def interior(self, tail, inputs):
        """The outputs of the nodes between the tensors `inputs` and `tail` (Constant
        nodes left out)."""
        interior, stack = set(), [tail]
        while stack:
            for name in stack.pop().input:
                source = self.producer.get(name)
                if (
                    name not in inputs
                    and name not in interior
                    and source is not None
                    and source.op_type != "Constant"
                ):
                    interior.add(name)
                    stack.append(source)
        return interior

    def gelu(self, tail):
        x, approximate = self.match(tail)
        if x is None:
            return None
        return (lambda r, node, inputs: r.gate("gelu", node, inputs, approximate=approximate)), [x]

    def not_equal(self, tail):
        """Not(Equal(a, b)), as to_onnx writes compare's !=."""
        equal = self.node(tail.input[0], "Equal") if tail.op_type == "Not" else None
        if equal is None:
            return None
        return (lambda r, node, inputs: r.gate("compare", node, inputs, relation="!=")), list(
            equal.input
        )

    def node(self, name, op_type, **attrs):
        """The node computing `name` if it is an `op_type` with these attributes."""
        node = self.producer.get(name)
        if node is None or node.op_type != op_type:
            return None
        values = {
            a.name: self.onnx.helper.get_attribute_value(a)
            for a in node.attribute
            if a.name in attrs
        }
        return node if all(values.get(k) == v for k, v in attrs.items()) else None

    def scalar(self, name):
        constant = self.constants.get(name)
        return None if constant is None or constant.size != 1 else float(np.ravel(constant)[0])

    def temporal_loss(self, tail):
        """Div(ReduceSum(Mul(SoftmaxCrossEntropyLoss(Transpose(x, (0, 2, 1)), y, 'none'),
        Cast(Cast(mask, bool), float))), Max(Cast(Gather(Shape(x), 0)), 1)): graphnet's
        temporal_softmax_loss(x, y, mask)."""
        if tail.op_type != "Div":
            return None
        total, denominator = tail.input
        batch = self.node(self.operand(denominator, "Max", 1.0), "Cast")
        gather = batch and self.node(batch.input[0], "Gather", axis=0)
        shape = gather and self.scalar(gather.input[1]) == 0 and self.node(gather.input[0], "Shape")
        summed = self.node(total, "ReduceSum", keepdims=0)
        product = shape and summed and len(summed.input) == 1 and self.node(summed.input[0], "Mul")
        if not product:
            return None
        for per_step_name, counted_name in (product.input, reversed(product.input)):
            per_step = self.node(per_step_name, "SoftmaxCrossEntropyLoss", reduction=b"none")
            counted = self.node(counted_name, "Cast")
            flag = counted and self.node(counted.input[0], "Cast", to=_BOOL)
            scores = (
                per_step
                and len(per_step.input) == 2
                and self.node(per_step.input[0], "Transpose", perm=[0, 2, 1])
            )
            if flag and scores and scores.input[0] == shape.input[0]:
                build = lambda r, node, inputs: r.gate("temporal_softmax_loss", node, inputs)  # noqa: E731
                return build, [scores.input[0], per_step.input[1], flag.input[0]]
        return None

    def zeros(self, tail):
        """Expand(zeros, shape) with the shape computed from the sizes of a tensor x (as
        torch.onnx.export's TorchScript exporter writes an RNN's initial state): zeros
        (read by a recurrent layer as no initial state), the ops on x's shape skipped."""
        if tail.op_type != "Expand" or len(tail.input) != 2:
            return None
        value = self.constants.get(tail.input[0])
        if value is None or value.any():
            return None
        sources, stack = set(), [tail.input[1]]
        while stack:
            node = self.producer.get(stack.pop())
            if node is None or node.op_type not in _SHAPE_OPS:
                return None
            if node.op_type == "Shape":
                sources.add(node.input[0])
            else:
                stack.extend(name for name in node.input if name not in self.constants)
        build = lambda r, node, inputs: Zeros(node.op_type, node.output[0])  # noqa: E731
        return build, sorted(sources)

    def masked_attention(self, tail):
        """MatMul(Where(IsNaN(w), 0, w), v) with w = Softmax(Where(Cast(mask, bool),
        MatMul(q, Transpose(k)) · scale, -inf)): graphnet's masked_attention(q, k, v,
        mask)."""
        if tail.op_type != "MatMul":
            return None
        cleaned = self.node(tail.input[0], "Where")
        no_key = cleaned and self.node(cleaned.input[0], "IsNaN")
        if (
            not no_key
            or self.scalar(cleaned.input[1]) != 0.0
            or cleaned.input[2] != no_key.input[0]
        ):
            return None
        softmax = self.node(no_key.input[0], "Softmax", axis=-1)
        masked = softmax and self.node(softmax.input[0], "Where")
        keep = masked and self.node(masked.input[0], "Cast", to=_BOOL)
        if not keep or self.scalar(masked.input[2]) != -math.inf:
            return None
        scores = self.node(masked.input[1], "Mul")
        for product_name, scale_name in (scores.input, reversed(scores.input)) if scores else ():
            product, scale = self.node(product_name, "MatMul"), self.scalar(scale_name)
            k_t = product and self.node(product.input[1], "Transpose")
            if scale is not None and k_t:
                perm = self.onnx.helper.get_attribute_value(k_t.attribute[0])
                if len(perm) >= 2 and list(perm[-2:]) == [len(perm) - 1, len(perm) - 2]:

                    def build(r, node, inputs, scale=scale):
                        return masked_attention(r.graph, "MatMul", node.output[0], inputs, scale)

                    return build, [product.input[0], k_t.input[0], tail.input[1], keep.input[0]]
        return None

    def group_norm(self, tail):
        """Reshape(InstanceNormalization(Reshape(x, (0, G, -1)), ones(G), zeros(G)), Shape(x)),
        then · gamma + beta (constants of shape (C, 1, 1) or (1, C, 1, 1), or one value), as
        torch.onnx.export writes nn.GroupNorm (the dynamo exporter until opset 21): graphnet's
        spatial_groupnorm. The sizes the reshapes take from x are checked on building."""
        core, affine = tail, (None, None)
        if tail.op_type == "Add" and len(tail.input) == 2:
            for product_name, beta in (tail.input, reversed(tail.input)):
                product = self.node(product_name, "Mul")
                for normed, gamma in (product.input, reversed(product.input)) if product else ():
                    if self.channel_scale(gamma) and self.channel_scale(beta):
                        core, affine = self.producer.get(normed), (gamma, beta)
        if core is None or core.op_type != "Reshape" or len(core.input) != 2:
            return None
        norm = self.node(core.input[0], "InstanceNormalization")
        grouped = norm and len(norm.input) == 3 and self.node(norm.input[0], "Reshape")
        if not grouped or len(grouped.input) != 2:
            return None
        target = self.constants.get(grouped.input[1])
        scale, bias = (self.constants.get(name) for name in norm.input[1:])
        if (
            target is None
            or target.shape != (3,)
            or target[1] < 1
            or target[2] != -1
            or self.attrs(grouped).get("allowzero", 0)
            or scale is None
            or bias is None
            or scale.shape != (target[1],)
            or bias.shape != scale.shape
            or (scale != 1).any()
            or bias.any()
        ):
            return None
        x, back = grouped.input[0], core.input[1]
        shape_of_x = self.node(back, "Shape")
        whole_shape = (
            shape_of_x and shape_of_x.input[0] == x and self.attrs(shape_of_x) in ({}, {"start": 0})
        )
        if not whole_shape and back not in self.constants:
            return None
        sizes = None if whole_shape else self.constants[back]

        def build(r, node, inputs):
            return _group_norm(r, node, inputs[0], norm, target, sizes, affine)

        return build, [x]

    def attrs(self, node):
        return {a.name: self.onnx.helper.get_attribute_value(a) for a in node.attribute}

    def channel_scale(self, name):
        """True when `name` is a constant that scales or shifts (N, C, H, W) per channel."""
        value = self.constants.get(name)
        return value is not None and (
            (value.size == 1 and value.ndim <= 4)
            or (
                value.ndim in (3, 4)
                and value.shape[-2:] == (1, 1)
                and value.shape[:-3] in ((), (1,))
            )
        )

    def read_only_by(self, name, outputs):
        return name not in self.outputs and self.readers.get(name, set()) <= outputs


def _gate(op):
    """An ONNX op that is one graphnet gate on the same inputs."""

    def read(r, node):
        inputs = [r.input(node, i) for i in range(len(node.input))]
        while len(inputs) > 2:  # Max, Min and Sum take any number: a chain of two-input gates
            inputs[:2] = [build_gate(r.graph, op, inputs[:2], f"{node.output[0]}/{len(inputs)}")]
        return r.gate(op, node, inputs)

    return read


def _read_softmax(gate):
    """Softmax, LogSoftmax: along `axis` from opset 13 on; before, over all the axes from
    `axis` on (the same when it is the last). graphnet's softmax works along the last
    axis, its log_softmax along any."""

    def read(r, node):
        x = r.input(node, 0)
        axis = r.attr(node, "axis", -1 if r.opset >= 13 else 1)
        if axis in (-1, -1 if x.static_shape is None else len(x.static_shape) - 1):
            return r.gate(gate, node, [x])
        if gate == "log_softmax" and r.opset >= 13:
            return r.gate(gate, node, [x], axis=axis)
        raise unsupported(
            node.op_type,
            node.output[0],
            f"axis {axis}: graphnet's {gate} "
            f"works along one axis, here the last (input shape {x.static_shape})",
        )

    return read


def _read_reduce(gate):
    """ReduceSum, ReduceMean: axes an input (ReduceSum from opset 13, ReduceMean from 18)
    or an attribute."""

    def read(r, node):
        x = r.input(node, 0)
        axes = r.ints(node, 1, "axes")
        if not axes and r.attr(node, "noop_with_empty_axes", 0):
            return x
        axis = None if not axes else axes[0] if len(axes) == 1 else tuple(axes)
        return r.gate(gate, node, [x], axis=axis, keepdims=bool(r.attr(node, "keepdims", 1)))

    return read


def _read_global_average_pool(r, node):
    x = r.input(node, 0)
    if x.static_shape is None:
        raise unsupported(
            "GlobalAveragePool", node.output[0], "graphnet reads it on an input of known rank"
        )
    return r.gate("mean", node, [x], axis=tuple(range(2, len(x.static_shape))), keepdims=True)


def _read_gemm(r, node):
    """Gemm (alpha = beta = 1, A not transposed) is an affine gate; a transposed constant
    B (PyTorch's Linear weight, (out, in)) becomes a param holding B.T, (in, out)."""
    name = node.output[0]
    if (
        r.attr(node, "alpha", 1.0) != 1.0
        or r.attr(node, "beta", 1.0) != 1.0
        or r.attr(node, "transA", 0)
    ):
        raise unsupported(
            "Gemm",
            name,
            "graphnet's affine gate is x @ w + b: alpha and beta must be 1 and transA 0",
        )
    if r.attr(node, "transB", 0):
        w = _transposed_param(r, node, 1, "B")
    else:
        w = r.input(node, 1)
    x = affine_input(r.input_value(node.input[0]))
    b = (
        r.input(node, 2)
        if r.has(node, 2)
        else r.graph.const(  # graphnet's affine adds a bias
            np.zeros(w.static_shape[1], w.dtype), name=f"{name}/bias"
        )
    )
    return r.gate("affine", node, [x, w, b])


def _transposed_param(r, node, i, what):
    source = node.input[i]
    if source not in r.transposed:  # a weight that two Gemms share stays one param
        value = r.constant(node, i, what + " (transposed)")
        r.transposed[source] = r.param(source, value, transposed=True)
    return r.transposed[source]


def _equal_pair(r, node, attr, default, what):
    values = r.attr(node, attr, default)
    if len(set(values)) != 1:
        raise unsupported(
            node.op_type,
            node.output[0],
            f"{attr} {values}: graphnet's {what} takes the same {attr} along every axis",
        )
    return values[0]


def _check_plain_window(r, node, what):
    """Settings graphnet's conv and pooling do not have: dilation, groups, auto_pad."""
    if (
        any(d != 1 for d in r.attr(node, "dilations", [1]))
        or r.attr(node, "group", 1) != 1
        or r.attr(node, "auto_pad", "NOTSET") != "NOTSET"
        or r.attr(node, "ceil_mode", 0)
    ):
        raise unsupported(
            node.op_type,
            node.output[0],
            f"graphnet's {what} has no dilation, groups, auto_pad or ceil_mode",
        )


def _read_conv(r, node):
    _check_plain_window(r, node, "conv")
    x, w = r.input(node, 0), r.input(node, 1)
    b = (
        r.input(node, 2)
        if r.has(node, 2)
        else r.graph.const(np.zeros(w.static_shape[0], w.dtype), name=f"{node.output[0]}/bias")
    )
    return r.gate(
        "conv",
        node,
        [x, w, b],
        stride=_equal_pair(r, node, "strides", [1], "conv"),
        pad=_equal_pair(r, node, "pads", [0], "conv"),
    )


def _read_pool(gate):
    """MaxPool, AveragePool (without padding, so count_include_pad changes nothing)."""

    def read(r, node):
        _check_plain_window(r, node, gate)
        if any(r.attr(node, "pads", [0])):
            raise unsupported(node.op_type, node.output[0], f"graphnet's {gate} has no padding")
        height, width = r.attr(node, "kernel_shape")
        return r.gate(
            gate,
            node,
            [r.input(node, 0)],
            pool_height=height,
            pool_width=width,
            stride=_equal_pair(r, node, "strides", [1], gate),
        )

    return read


def _read_batchnorm(r, node):
    if r.attr(node, "training_mode", 0):
        raise unsupported(
            "BatchNormalization",
            node.output[0],
            "training_mode=1: graphnet "
            "reads inference batchnorm and switches mode with graph.train()",
        )
    x = r.input(node, 0)
    rank = None if x.static_shape is None else len(x.static_shape)
    if rank not in (2, 4):
        raise unsupported(
            "BatchNormalization",
            node.output[0],
            f"input of shape "
            f"{x.static_shape}: graphnet has batchnorm for (N, D) and "
            "spatial_batchnorm for (N, C, H, W)",
        )
    out = r.gate(
        "batchnorm" if rank == 2 else "spatial_batchnorm",
        node,
        [x, r.input(node, 1), r.input(node, 2)],
        eps=r.attr(node, "epsilon", 1e-5),
        momentum=r.attr(node, "momentum", 0.9),
    )
    out.state["running_mean"] = r.constant(node, 3, "mean").copy()
    out.state["running_var"] = r.constant(node, 4, "var").copy()
    return out


def _read_layernorm(r, node):
    x = r.input(node, 0)
    last = -1 if x.static_shape is None else len(x.static_shape) - 1
    if r.attr(node, "axis", -1) not in (-1, last) or not r.has(node, 2):
        raise unsupported(
            "LayerNormalization",
            node.output[0],
            "graphnet's layernorm normalizes over the last axis, with a scale and a bias",
        )
    return r.gate(
        "layernorm",
        node,
        [x, r.input(node, 1), r.input(node, 2)],
        eps=r.attr(node, "epsilon", 1e-5),
    )


def _read_groupnorm(r, node):
    """Opset 21's per-channel scale and bias; opset 18-20's per-group constants are
    repeated over each group's channels."""
    x, groups = r.input(node, 0), r.attr(node, "num_groups")
    channels = None if x.static_shape is None else x.static_shape[1]
    scales = [r.input(node, i) for i in (1, 2)]
    if r.opset < 21:
        if channels is None:
            raise unsupported(
                "GroupNormalization",
                node.output[0],
                "opset < 21 scales per group: graphnet needs the channel count to repeat them",
            )
        # Groups that do not divide the channels leave the scales empty: the gate refuses G.
        per_group = channels // groups if groups >= 1 and channels % groups == 0 else 0
        scales = [
            r.graph.const(
                np.repeat(r.constant(node, i, what), per_group),
                name=f"{node.output[0]}/{what}",
            )
            for i, what in ((1, "scale"), (2, "bias"))
        ]
    return r.gate(
        "spatial_groupnorm", node, [x, *scales], G=groups, eps=r.attr(node, "epsilon", 1e-5)
    )


#: What InstanceNormalization is read as, and only as.
_TORCH_GROUP_NORM = (
    "graphnet reads it only inside nn.GroupNorm as torch.onnx.export writes it: "
    "Reshape(x, (0, G, -1)) -> InstanceNormalization(scale ones, bias zeros) -> Reshape to "
    "Shape(x), then optionally Mul by gamma and Add beta of shape (C, 1, 1)"
)


def _group_norm(r, node, x, norm, target, sizes, affine):
    """spatial_groupnorm for the run _PatternFinder.group_norm found: x (N, C, H, W) of
    known channels, grouped to (N, G, -1) (a 0 or N first), reshaped back to its own shape
    (`sizes`, when not Shape(x)), scaled and shifted per channel or by one value
    (`affine`: the gamma and beta tensors, or Nones)."""
    shape = x.static_shape
    if shape is None or len(shape) != 4 or shape[1] is None:
        raise unsupported(
            "InstanceNormalization",
            norm.output[0],
            f"{_TORCH_GROUP_NORM}; x must be (N, C, H, W) of known channels, got {shape}",
        )
    scales = [None if t is None else r.constants[t] for t in affine]
    if (
        int(target[0]) not in (0, shape[0])
        or (sizes is not None and [int(v) for v in sizes] != list(shape))
        or not all(v is None or v.size == 1 or v.shape[-3] == shape[1] for v in scales)
    ):
        raise unsupported(
            "InstanceNormalization",
            norm.output[0],
            f"{_TORCH_GROUP_NORM}; here x {shape} is grouped to {[int(v) for v in target]}, "
            f"reshaped back to {'its shape' if sizes is None else [int(v) for v in sizes]}, "
            f"scaled and shifted by {[None if v is None else v.shape for v in scales]}",
        )
    gamma, beta = (
        _per_channel(r, tensor, fill, shape[1], f"{node.output[0]}/{what}", x.dtype)
        for tensor, fill, what in zip(affine, (1.0, 0.0), ("gamma", "beta"))
    )
    return r.gate(
        "spatial_groupnorm",
        node,
        [x, gamma, beta],
        G=int(target[1]),
        eps=r.attr(norm, "epsilon", 1e-5),
    )


def _per_channel(r, tensor, fill, channels, name, dtype):
    """spatial_groupnorm's gamma or beta, (C,) or (1, C, 1, 1): the constant `tensor` (a
    (C, 1, 1) one reshaped, one value repeated), or `fill`s when there is none."""
    if tensor is None:
        return r.graph.const(np.full(channels, fill, dtype), name=name)
    value = r.constants[tensor]
    if value.ndim in (3, 4) and value.shape[-3] == channels:  # torch's (C, 1, 1), the course's
        if value.ndim == 4:
            return r.input_value(tensor)
        if r.readers(tensor) == 1:
            # nn.GroupNorm's own (C,) weight, which the exporter wrote unsqueezed: read by
            # this node alone, it is that param, not a reshape of the file's
            r.constants[tensor] = value.reshape(channels)
            return r.input_value(tensor)
        return build_gate(r.graph, "reshape", [r.input_value(tensor)], name, shape=(-1,))
    return r.graph.const(np.full(channels, value.item(), value.dtype), name=name)


def _read_dropout(r, node):
    if r.has(node, 2) and r.constant(node, 2, "training_mode"):
        raise unsupported(
            "Dropout",
            node.output[0],
            "training_mode=True: graphnet switches dropout on with graph.train()",
        )
    ratio = (
        float(r.constant(node, 1, "ratio")) if r.has(node, 1) else float(r.attr(node, "ratio", 0.5))
    )
    return r.gate("dropout", node, [r.input(node, 0)], p=ratio)


def _read_softmax_cross_entropy(r, node):
    """softmax_loss where it is the course's loss ((N, C) scores, every label counted),
    else cross_entropy (classes moved to the last axis)."""
    if r.has(node, 2) or r.attr(node, "reduction", "mean") != "mean":
        raise unsupported(
            "SoftmaxCrossEntropyLoss", node.output[0], "graphnet's losses are the unweighted mean"
        )
    ignore = r.attr(node, "ignore_index")
    scores, rank = classes_last(
        r.graph, r.input_value(node.input[0]), node.output[0], "SoftmaxCrossEntropyLoss"
    )
    labels = r.input(node, 1)
    if rank == 2 and ignore is None:
        return r.gate("softmax_loss", node, [scores, labels])
    return r.gate("cross_entropy", node, [scores, labels], ignore_index=ignore)


def _read_flatten(r, node):
    """ONNX's Flatten makes a matrix: from axis 1 graphnet's flatten, else a reshape."""
    x, axis = r.input(node, 0), r.attr(node, "axis", 1)
    if axis == 1:
        return Deferred(r.graph, "flatten", x, node.output[0], axis=1)
    if x.static_shape is None:
        raise unsupported("Flatten", node.output[0], f"axis {axis} of an input of unknown rank")
    rank = len(x.static_shape)
    if not -rank <= axis <= rank:
        raise unsupported("Flatten", node.output[0], f"axis {axis} of an input of rank {rank}")
    axis %= rank + 1
    return _reshape(r, node, x, [_product(x.static_shape[:axis]), _product(x.static_shape[axis:])])


def _product(sizes):
    return None if None in sizes else math.prod(sizes)


def _reshape(r, node, x, sizes):
    """A reshape gate to `sizes`, one of which may be None (left open: -1)."""
    if sizes.count(None) + sizes.count(-1) > 1:
        raise unsupported(
            node.op_type,
            node.output[0],
            f"to {sizes}: graphnet's reshape leaves at most one size open (-1)",
        )
    return Deferred(
        r.graph,
        "reshape",
        x,
        node.output[0],
        shape=tuple(-1 if size is None else size for size in sizes),
    )


def _read_reshape(r, node):
    """A constant shape; its zeros keep the input's size there (unless allowzero), and
    zeros then -1 flatten from that axis on."""
    x = r.input(node, 0)
    shape = [int(d) for d in r.constant(node, 1, "shape")]
    if 0 in shape and not r.attr(node, "allowzero", 0):
        if len(shape) > 1 and shape == [0] * (len(shape) - 1) + [-1]:
            return Deferred(r.graph, "flatten", x, node.output[0], axis=len(shape) - 1)
        if x.static_shape is None:
            raise unsupported(
                "Reshape",
                node.output[0],
                f"to {shape}: a 0 keeps a size of the input, whose shape is not known",
            )
        shape = [x.static_shape[i] if size == 0 else size for i, size in enumerate(shape)]
    return _reshape(r, node, x, shape)


def _read_slice(r, node):
    starts, ends = r.ints(node, 1, "starts"), r.ints(node, 2, "ends")
    axes = r.ints(node, 3, "axes") or list(range(len(starts)))
    steps = r.ints(node, 4, "steps") or [1] * len(starts)
    value = r.sliced(node)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        value = value.sliced("Slice", node.output[0], axis, slice_bounds(start, end, step))
    return value


def _read_squeeze(r, node):
    """Squeeze, Unsqueeze: a slice gate's None and ints (Squeeze with its axes given)."""
    value, axes, name = r.sliced(node), r.ints(node, 1, "axes"), node.output[0]
    if axes is None:
        raise unsupported(node.op_type, name, "graphnet reads it with its axes given")
    if node.op_type == "Unsqueeze":
        for axis in sorted(a % (value.rank + len(axes)) for a in axes):
            value = value.unsqueezed("Unsqueeze", name, axis)
    else:
        for axis in sorted((a % value.rank for a in axes), reverse=True):
            value = value.squeezed("Squeeze", name, axis)
    return value


def _read_gather(r, node):
    """One constant index: x[..., i] (a slice gate, folding with its neighbours); rows of
    a matrix picked by word ids (N, T): graphnet's word_embedding; else its take."""
    axis = r.attr(node, "axis", 0)
    index = r.constants.get(node.input[1])
    if index is not None and index.ndim == 0:
        return r.sliced(node).selected("Gather", node.output[0], axis, int(index))
    data, ids = r.input(node, 0), r.input(node, 1)
    if axis == 0 and _has_rank(data, 2) and _has_rank(ids, 2) and ids.dtype.kind in "iu":
        return r.gate("word_embedding", node, [ids, data])
    return r.gate("take", node, [data, ids], axis=axis)


def _has_rank(node, rank):
    return node.static_shape is not None and len(node.static_shape) == rank


def _read_pow(r, node):
    exponent = r.constant(node, 1, "exponent")
    if exponent.size != 1:
        raise unsupported("Pow", node.output[0], "graphnet's pow takes one exponent")
    return r.gate("pow", node, [r.input(node, 0)], exponent=float(np.ravel(exponent)[0]))


def _read_clip(r, node):
    """Clip's bounds: constant inputs from opset 11 on, attributes before."""

    def bound(i, attr):
        if r.has(node, i):
            return float(r.constant(node, i, attr))
        return None if r.opset >= 11 else r.attr(node, attr)

    low, high = bound(1, "min"), bound(2, "max")
    if low is None and high is None:
        return r.input_value(node.input[0])
    return r.gate("clip", node, [r.input(node, 0)], low=low, high=high)


def _read_compare(relation):
    """Greater, Less, Equal, ...: a compare gate (its int8 mask stands for ONNX's bool)."""
    return lambda r, node: r.gate(
        "compare", node, [r.input(node, 0), r.input(node, 1)], relation=relation
    )


def _read_cast(r, node):
    """A cast of integers to bool or to other integers is the same node (graphnet reads a
    mask's nonzero entries as true), and so is a cast to the node's own type; a mask to a
    float type is x · 1 in that type (a multiply promotes); graphnet has no other cast."""
    x = r.input(node, 0)
    try:
        to = np.dtype(r.onnx.helper.tensor_dtype_to_np_dtype(r.attr(node, "to")))
    except KeyError as err:
        to = r.attr(node, "to")
        raise unsupported("Cast", node.output[0], f"to = {to} is no ONNX type") from err
    if to == x.dtype or (x.dtype.kind in "iu" and to.kind in "biu"):
        return x
    if x.dtype.kind in "iu" and to.kind == "f":
        return mask_to_float(r.graph, x, to, node.output[0])
    raise unsupported("Cast", node.output[0], f"from {x.dtype} to {to}: graphnet has no cast gate")


def _read_constant(r, node):
    value = r.attr(node, "value")
    if value is None:  # value_float, value_ints, sparse_value, ... or nothing
        raise unsupported("Constant", node.output[0], "graphnet reads only a 'value' tensor")
    r.constants.update(_arrays(r.onnx, [(node.output[0], value)], "constant"))


#: ONNX ops whose importers return a value for each output (a tuple).
_SEVERAL_OUTPUTS = {"RNN", "LSTM"}
#: What graphnet's rnn and lstm gates compute: ONNX's default activations.
_ACTIVATIONS = {"RNN": ["tanh"], "LSTM": ["sigmoid", "tanh", "tanh"]}


def _read_recurrent(gate):
    """RNN, LSTM: forward, one direction, the default activations, no clip, peepholes or
    sequence_lens; layout 0 (time first) or 1 (batch first). Outputs Y, Y_h, Y_c. An
    LSTM with an initial_c other than zeros, or whose Y_c is read, becomes lstm_step
    gates over its (known) steps; any other layer one rnn or lstm gate."""

    def read(r, node):
        op, name = node.op_type, node.output[0]
        layer = RecurrentLayer(r.graph, op, name, gate, "onnx")
        direction = r.attr(node, "direction", "forward")
        if direction != "forward":
            raise layer.refuse(f"direction={direction!r}: graphnet's {gate} gate runs forward")
        activations = r.attr(node, "activations")
        if activations is not None:
            activations = [a.decode() for a in activations]
        if activations is not None and [a.lower() for a in activations] != _ACTIVATIONS[op]:
            raise layer.refuse(
                f"activations={activations}: graphnet's {gate} gate uses "
                f"{', '.join(_ACTIVATIONS[op])}"
            )
        for attr in ("clip", "activation_alpha", "activation_beta", "input_forget"):
            if r.attr(node, attr):
                raise layer.refuse(f"{attr}={r.attr(node, attr)}: graphnet's {gate} gate has none")
        for i, what in ((4, "sequence_lens"), (7, "P (peepholes)")):
            if r.has(node, i):
                raise layer.refuse(
                    f"input {what} {node.input[i]!r}: graphnet's {gate} gate has none"
                )
        layout, H = r.attr(node, "layout", 0), r.attr(node, "hidden_size")
        if layout not in (0, 1) or H is None:
            raise layer.refuse(
                f"layout={layout}, hidden_size={H}: graphnet reads layout 0 or 1 "
                "with hidden_size given"
            )

        def first(i, what):  # input i without its axis of directions (of size 1)
            axis = 1 if layout and what.startswith("initial") else 0
            if node.input[i] in r.constants and node.input[i] not in r.values:
                return Weight(np.take(r.constants[node.input[i]], 0, axis=axis), node.input[i])
            value = Sliced.of(r.graph, r.input_value(node.input[i]), op, f"{name}/{what}")
            return Weight(value.selected(op, f"{name}/{what}", axis, 0).materialize(), what)

        Wx = layer.matrix(first(1, "W"), H, "Wx")
        Wh = layer.matrix(first(2, "R"), H, "Wh")
        biases = []
        if r.has(node, 3):
            B, kH = first(3, "B"), layer.blocks * H
            biases = [
                Weight(B.value[half], B.name)
                if B.constant
                else Weight(
                    build_gate(r.graph, "slice", [B.value], f"{name}/{what}", key=(half,)), what
                )
                for half, what in ((slice(0, kH), "Wb"), (slice(kH, 2 * kH), "Rb"))
            ]
        b = layer.bias(biases, H, r.graph.dtype)

        def state(i, what):  # initial_h, initial_c: None when absent or zeros
            if not r.has(node, i) or r.zeros(node.input[i]):
                return None
            weight = first(i, what)
            return r.graph.param(weight.name, weight.value) if weight.constant else weight.value

        h0, cell = state(5, "initial_h"), state(6, "initial_c")
        if cell is None and len(node.output) > 2 and node.output[2] and r.used(node.output[2]):
            cell = True  # Y_c is read
        out = layer.build(
            r.input(node, 0),
            h0,
            Wx,
            Wh,
            b,
            time_first=layout == 0,
            out_name=f"{name}/hidden",
            cell=cell,
        )
        # Y (T, 1, N, H) and Y_h (1, N, H), or with layout 1 (N, T, 1, H) and (N, 1, H)
        Y = layer.with_new_axis(out, 2 if layout else 1, name)
        Y_h = layer.last_state(out, layout, layout, node.output[1] if len(node.output) > 1 else "")
        Y_c = None  # read only when layer.last_cell is not None
        if layer.last_cell is not None:
            Y_c = layer.with_new_axis(layer.last_cell, layout, node.output[2])
        return (Y, Y_h, Y_c)[: len(node.output)]

    return read


def _activation(form, **attributes):
    """An activation graphnet builds from several gates (Parts.form), given the op's
    attributes: {Parts' argument: (ONNX attribute, ONNX's default)}."""

    def read(r, node):
        values = {key: r.attr(node, attr, default) for key, (attr, default) in attributes.items()}
        return getattr(Parts(r.graph, node.output[0]), form)(r.input(node, 0), **values)

    return read


def _with_attrs(gate, **defaults):
    """An ONNX op that is one gate whose hyperparameters are the op's attributes, of the
    same names (with ONNX's defaults)."""

    def read(r, node):
        return r.gate(
            gate,
            node,
            [r.input(node, i) for i in range(len(node.input))],
            **{name: r.attr(node, name, default) for name, default in defaults.items()},
        )

    return read


#: ONNX op type -> the function that builds its gates (or returns what it aliases).
IMPORTERS = {
    **{onnx_op: _gate(gate) for gate, (onnx_op, _) in ONE_TO_ONE.items()},
    "Sum": _gate("add"),
    "Softmax": _read_softmax("softmax"),
    "LogSoftmax": _read_softmax("log_softmax"),
    "ReduceSum": _read_reduce("sum"),
    "ReduceMean": _read_reduce("mean"),
    "GlobalAveragePool": _read_global_average_pool,
    "Gemm": _read_gemm,
    "Conv": _read_conv,
    "MaxPool": _read_pool("max_pool"),
    "AveragePool": _read_pool("avg_pool"),
    "BatchNormalization": _read_batchnorm,
    "LayerNormalization": _read_layernorm,
    "GroupNormalization": _read_groupnorm,
    "Dropout": _read_dropout,
    "SoftmaxCrossEntropyLoss": _read_softmax_cross_entropy,
    "Flatten": _read_flatten,
    "Reshape": _read_reshape,
    "Transpose": lambda r, node: Deferred(
        r.graph, "transpose", r.input(node, 0), node.output[0], axes=r.attr(node, "perm")
    ),
    "Concat": _with_attrs("concat", axis=None),
    "Slice": _read_slice,
    "Squeeze": _read_squeeze,
    "Unsqueeze": _read_squeeze,
    "Gather": _read_gather,
    "Pow": _read_pow,
    "Clip": _read_clip,
    "Where": _with_attrs("where"),
    **{op: _read_compare(relation) for relation, op in _ONNX_COMPARISONS.items()},
    "Not": lambda r, node: Parts(r.graph, node.output[0])(
        "compare", [r.input(node, 0), 0], relation="=="
    ),
    "Cast": _read_cast,
    "LeakyRelu": _with_attrs("leaky_relu", alpha=0.01),
    "Gelu": _with_attrs("gelu", approximate="none"),
    "Softplus": _gate("softplus"),
    "Elu": _activation("elu", alpha=("alpha", 1.0)),
    "Selu": _activation("elu", alpha=("alpha", SELU_ALPHA), scale=("gamma", SELU_SCALE)),
    "HardSigmoid": _activation("hard_sigmoid", alpha=("alpha", 0.2), beta=("beta", 0.5)),
    "HardSwish": _activation("hardswish"),
    "Mish": _activation("mish"),
    "PRelu": lambda r, node: Parts(r.graph, node.output[0]).prelu(
        r.input(node, 0), r.input(node, 1)
    ),
    "RNN": _read_recurrent("rnn"),
    "LSTM": _read_recurrent("lstm"),
    "Identity": lambda r, node: r.input_value(node.input[0]),
    "Constant": _read_constant,
}
