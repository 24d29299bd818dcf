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

import os

import numpy as np

from .._version import __version__
from ..core.graph import Graph
from ..errors import GraphError
from ._common import (ONE_TO_ONE, affine_input, build_gate, check_supported, flatten_rows,
                      flattens_to_rows, gate_input, require, selected_nodes, unsupported)

#: ReduceSum takes its axes as an input and Softmax works on one axis from opset 13 on.
MIN_OPSET = 13
#: Read by onnxruntime, Netron and every current converter.
DEFAULT_OPSET = 21


def to_onnx(graph: Graph, path: str | os.PathLike | None = None, *, outputs=None,
            opset: int | None = None, dtype=None, input_shapes: dict | None = None):
    """Write `graph` (the part that `outputs` depend on: node names or nodes, the graph's
    sinks by default) as an ONNX model, checked with onnx.checker, to `path` (if given);
    returns the onnx.ModelProto. `dtype` (say np.float32) converts every float tensor of
    the file; by default they keep the graph's types (onnxruntime runs Conv in float32
    only). ONNX needs each input's rank: an input built without a shape takes
    `input_shapes[name]` (None for sizes left open), or (N, D) when it feeds only affine
    gates whose w is (D, M). Raises UnsupportedOpError listing every gate with no ONNX
    form."""
    onnx = require("onnx", "graphnet.to_onnx")
    opset = DEFAULT_OPSET if opset is None else int(opset)
    if opset < MIN_OPSET:
        raise ValueError(f"to_onnx: opset {opset} is too old; graphnet writes opset "
                         f"{MIN_OPSET} or newer (default {DEFAULT_OPSET})")
    targets, nodes = selected_nodes(graph, outputs)
    check_supported(((n.op, n.name) for n in nodes if n.kind == "gate"), EXPORTERS,
                    "to_onnx", " Pass outputs= the nodes before them to export that part "
                    "(the scores, say).")
    if dtype is not None and np.dtype(dtype).kind != "f":
        raise ValueError(f"to_onnx: dtype must be a float type (np.float32, say), got {dtype!r}")
    writer = _Writer(onnx, None if dtype is None else np.dtype(dtype), opset)
    for node in nodes:
        if node.kind == "input":
            users = [n for n in nodes if node in n.inputs]
            writer.inputs.append(writer.value_info(
                node, _input_shape(node, users, input_shapes or {}), _input_dtype(node, users)))
        elif node.kind == "param":
            writer.initializer(node.name, node.value)
        elif node.kind == "const":  # a Constant node, so that an import makes it a const
            writer.op("Constant", [], node.name, value=onnx.numpy_helper.from_array(
                writer.array(node.value, node.dtype), node.name))
        else:
            EXPORTERS[node.op](writer, node, [i.name for i in node.inputs])
    graph_proto = onnx.helper.make_graph(writer.nodes, "graphnet", writer.inputs,
                                         [writer.value_info(t) for t in targets],
                                         writer.initializers)
    model = onnx.helper.make_model(graph_proto, producer_name="graphnet",
                                   producer_version=__version__,
                                   opset_imports=[onnx.helper.make_opsetid("", opset)])
    model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    if path is not None:
        onnx.save(model, os.fspath(path))
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
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [output],
                                                     name=output, **attrs))
        return output

    def initializer(self, name, value):
        self.initializers.append(self.onnx.numpy_helper.from_array(
            self.array(value, np.asarray(value).dtype), name))
        return name

    def value_info(self, node, shape=None, dtype=None):
        shape = node.static_shape if shape is None else shape
        if shape is not None:
            shape = ["N" if i == 0 and size is None else
                     (f"{node.name}_dim{i}" if size is None else size)
                     for i, size in enumerate(shape)]
        elem_type = self.onnx.helper.np_dtype_to_tensor_dtype(self.dtype(dtype or node.dtype))
        return self.onnx.helper.make_tensor_value_info(node.name, elem_type, shape)


def _input_shape(node, users, input_shapes):
    if node.name in input_shapes:
        return tuple(input_shapes[node.name])
    if node.static_shape is not None:
        return node.static_shape
    widths = {u.inputs[1].static_shape[0] for u in users
              if u.op == "affine" and u.inputs[0] is node and u.inputs[1].static_shape}
    if len(widths) == 1 and all(u.op == "affine" for u in users):
        return (None, widths.pop())
    raise GraphError(f"to_onnx: input {node.name!r} was built without a shape, and ONNX needs "
                     f"its rank: pass input_shapes={{{node.name!r}: (None, ...)}} (None for "
                     "sizes left open)")


def _input_dtype(node, users):
    """The input's dtype, or for one built without a dtype what a feed takes: int64 where
    every gate reading it takes integers (class labels), else the graph's float dtype."""
    if node.dtype is not None:
        return node.dtype
    labels = all(position in user.gate.integer_inputs for user in users
                 for position, source in enumerate(user.inputs) if source is node)
    return np.dtype(np.int64) if labels else node.graph.dtype


def _same(onnx_op, **attrs):
    """A gate that is one ONNX op on the same inputs."""
    def export(writer, node, inputs):
        writer.op(onnx_op, inputs, node.name, **attrs)
    return export


def _export_sum(writer, node, inputs):
    axis, keepdims = node.gate.attrs()["axis"], int(node.gate.attrs()["keepdims"])
    if axis is not None:
        inputs.append(writer.initializer(f"{node.name}/axes",
                                         np.atleast_1d(np.asarray(axis, dtype=np.int64))))
    writer.op("ReduceSum", inputs, node.name, keepdims=keepdims)


def _export_affine(writer, node, inputs):
    x_shape = node.inputs[0].static_shape
    if x_shape is None or len(x_shape) != 2:
        inputs[0] = writer.op("Flatten", inputs[:1], f"{node.name}/flatten", axis=1)
    writer.op("Gemm", inputs, node.name)


def _export_conv(writer, node, inputs):
    attrs = node.gate.attrs()
    writer.op("Conv", inputs, node.name, strides=[attrs["stride"]] * 2, pads=[attrs["pad"]] * 4)


def _export_max_pool(writer, node, inputs):
    attrs = node.gate.attrs()
    writer.op("MaxPool", inputs, node.name, strides=[attrs["stride"]] * 2,
              kernel_shape=[attrs["pool_height"], attrs["pool_width"]])


def _export_batchnorm(writer, node, inputs):
    """Inference-mode BatchNormalization with the node's running averages (zeros, as
    graphnet starts them, if the node never ran in train mode)."""
    gamma = node.inputs[1]
    features = np.shape(gamma.value) if gamma.value is not None else gamma.static_shape
    for stat in ("running_mean", "running_var"):
        value = node.state.get(stat, np.zeros(features))
        inputs.append(writer.initializer(f"{node.name}/{stat}",
                                         np.asarray(value, dtype=node.dtype)))
    attrs = node.gate.attrs()
    writer.op("BatchNormalization", inputs, node.name, epsilon=attrs["eps"],
              momentum=attrs["momentum"])


def _export_dropout(writer, node, inputs):
    """ONNX Dropout without training_mode is the identity; the ratio is kept so that the
    drawing, Netron and an import back show p."""
    ratio = np.asarray(node.gate.attrs()["p"], dtype=node.dtype)
    writer.op("Dropout", [inputs[0], writer.initializer(f"{node.name}/ratio", ratio)],
              node.name)


def _needs_opset(writer, node, onnx_op, opset):
    if writer.opset < opset:
        raise unsupported(node.op, node.name, f"ONNX has {onnx_op} from opset {opset}; "
                          f"export with opset={opset} or newer (this export: {writer.opset})")


def _export_layernorm(writer, node, inputs):
    _needs_opset(writer, node, "LayerNormalization", 17)
    writer.op("LayerNormalization", inputs, node.name, axis=-1,
              epsilon=node.gate.attrs()["eps"])


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
    writer.op("GroupNormalization", inputs, node.name, num_groups=attrs["G"],
              epsilon=attrs["eps"])


#: graphnet gate -> the function that writes it as ONNX nodes.
EXPORTERS = {
    **{gate: _same(onnx_op) for gate, (onnx_op, _) in ONE_TO_ONE.items()},
    "softmax": _same("Softmax", axis=-1),
    "sum": _export_sum,
    "affine": _export_affine,
    "conv": _export_conv,
    "max_pool": _export_max_pool,
    "batchnorm": _export_batchnorm, "spatial_batchnorm": _export_batchnorm,
    "layernorm": _export_layernorm, "spatial_groupnorm": _export_groupnorm,
    "dropout": _export_dropout,
    "softmax_loss": _same("SoftmaxCrossEntropyLoss", reduction="mean"),
}


# ----- import --------------------------------------------------------------------------

def from_onnx(path_or_model) -> Graph:
    """A Graph of gates built from an ONNX model (a path or an onnx.ModelProto).

    Inputs keep their names; initializers that are float arrays become params, scalars,
    integer initializers and Constant nodes consts, all with their names; each gate node
    is named after the tensor it computes; batchnorm's running averages go to the node's
    state. The graph comes back in eval mode, as the model computes; `graph.train()`
    switches batchnorm and dropout to training. Raises UnsupportedOpError listing every
    op graphnet has no gate for."""
    onnx = require("onnx", "graphnet.from_onnx")
    model = (path_or_model if isinstance(path_or_model, onnx.ModelProto)
             else onnx.load(os.fspath(path_or_model)))
    check_supported(((n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}",
                      n.output[0] if n.output else n.name) for n in model.graph.node),
                    IMPORTERS, "from_onnx")
    return _Reader(onnx, model).build()


class _Reader:
    """Builds the graph: `values` maps each ONNX tensor name to the node (or Flattened)
    that holds it; initializers and Constant outputs become nodes when a gate takes them."""

    def __init__(self, onnx, model):
        self.onnx = onnx
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                          MIN_OPSET)
        self.model = model
        self.constants = {t.name: onnx.numpy_helper.to_array(t)
                          for t in model.graph.initializer}
        self.initializer_names = set(self.constants)
        floats = [_elem_dtype(onnx, i) for i in model.graph.input
                  if i.name not in self.constants]
        floats = [d for d in floats if d.kind == "f"]
        self.graph = Graph(dtype=floats[0] if floats else np.float32)
        self.values, self.transposed = {}, {}

    def build(self):
        g = self.graph
        for info in self.model.graph.input:
            if info.name not in self.constants:
                self.values[info.name] = g.input(info.name, shape=_shape(info),
                                                 dtype=_elem_dtype(self.onnx, info))
        for node in self.model.graph.node:
            extra = [o for o in node.output[1:] if o and self._used(o)]
            if extra:
                raise unsupported(node.op_type, node.output[0], f"graphnet computes only its "
                                  f"first output, but {', '.join(extra)} is used")
            value = IMPORTERS[node.op_type](self, node)
            if value is not None:
                self.values[node.output[0]] = value
        for out in self.model.graph.output:
            gate_input(self.input_value(out.name), "the model's output")
        g.eval()
        return g

    def _used(self, tensor):
        return any(tensor in n.input for n in self.model.graph.node) or any(
            tensor == o.name for o in self.model.graph.output)

    # what the importers call

    def attr(self, node, name, default=None):
        for a in node.attribute:
            if a.name == name:
                value = self.onnx.helper.get_attribute_value(a)
                return value.decode() if isinstance(value, bytes) else value
        return default

    def has(self, node, i):
        return len(node.input) > i and node.input[i] != ""

    def input_value(self, name):
        """The node (or Flattened) holding tensor `name`, made from a constant if need be."""
        if name not in self.values:
            if name not in self.constants:
                raise unsupported("tensor", name, "no node of the model computes it")
            value = self.constants[name]
            make_param = (name in self.initializer_names and value.dtype.kind == "f"
                          and value.ndim > 0)
            self.values[name] = (self.graph.param(name, value, dtype=value.dtype) if make_param
                                 else self.graph.const(value, name=name, dtype=value.dtype))
        return self.values[name]

    def input(self, node, i):
        return gate_input(self.input_value(node.input[i]), f"{node.op_type} {node.output[0]!r}")

    def constant(self, node, i, what):
        name = node.input[i]
        if name not in self.constants:
            raise unsupported(node.op_type, node.output[0],
                              f"its {what} (input {i}, {name!r}) must be a constant")
        return self.constants[name]

    def gate(self, op, node, inputs, **attrs):
        return build_gate(self.graph, op, inputs, node.output[0], **attrs)


def _shape(info):
    tensor = info.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)


def _elem_dtype(onnx, info):
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(info.type.tensor_type.elem_type))


def _gate(op):
    """An ONNX op that is one graphnet gate on the same inputs."""
    def read(r, node):
        inputs = [r.input(node, i) for i in range(len(node.input))]
        while len(inputs) > 2:  # Max and Sum take any number: a chain of two-input gates
            inputs[:2] = [build_gate(r.graph, op, inputs[:2], f"{node.output[0]}/{len(inputs)}")]
        return r.gate(op, node, inputs)
    return read


def _read_softmax(r, node):
    x = r.input(node, 0)
    axis = r.attr(node, "axis", -1 if r.opset >= 13 else 1)
    last = -1 if x.static_shape is None else len(x.static_shape) - 1
    if axis not in (-1, last):
        raise unsupported("Softmax", node.output[0], f"axis {axis}: graphnet's softmax "
                          f"works along the last axis (input shape {x.static_shape})")
    return r.gate("softmax", node, [x])


def _read_reduce_sum(r, node):
    x = r.input(node, 0)
    if r.has(node, 1):
        axes = r.constant(node, 1, "axes").tolist()
    else:
        axes = r.attr(node, "axes")
    if not axes and r.attr(node, "noop_with_empty_axes", 0):
        return x
    axis = None if not axes else axes[0] if len(axes) == 1 else tuple(axes)
    return r.gate("sum", node, [x], axis=axis, keepdims=bool(r.attr(node, "keepdims", 1)))


def _read_gemm(r, node):
    """Gemm (alpha = beta = 1, A not transposed) is an affine gate; a transposed constant
    B (PyTorch's Linear weight, (out, in)) becomes a param holding B.T, (in, out)."""
    name = node.output[0]
    if r.attr(node, "alpha", 1.0) != 1.0 or r.attr(node, "beta", 1.0) != 1.0 or \
            r.attr(node, "transA", 0):
        raise unsupported("Gemm", name, "graphnet's affine gate is x @ w + b: alpha and beta "
                          "must be 1 and transA 0")
    if r.attr(node, "transB", 0):
        w = _transposed_param(r, node, 1, "B")
    else:
        w = r.input(node, 1)
    return _affine(r, node, w, r.input(node, 2) if r.has(node, 2) else None)


def _transposed_param(r, node, i, what):
    source = node.input[i]
    if source not in r.transposed:  # a weight that two Gemms share stays one param
        value = r.constant(node, i, what + " (transposed)")
        r.transposed[source] = r.graph.param(source, value.T, dtype=value.dtype)
    return r.transposed[source]


def _read_matmul(r, node):
    if r.constant(node, 1, "B (the weight)").ndim != 2:
        raise unsupported("MatMul", node.output[0], "graphnet's affine gate needs a 2-D B")
    return _affine(r, node, r.input(node, 1), None)


def _affine(r, node, w, b):
    x = affine_input(r.input_value(node.input[0]))
    if b is None:  # graphnet's affine always adds a bias
        b = r.graph.const(np.zeros(w.static_shape[1], w.dtype), name=f"{node.output[0]}/bias")
    return r.gate("affine", node, [x, w, b])


def _equal_pair(r, node, attr, default, what):
    values = r.attr(node, attr, default)
    if len(set(values)) != 1:
        raise unsupported(node.op_type, node.output[0], f"{attr} {values}: graphnet's "
                          f"{what} takes the same {attr} along every axis")
    return values[0]


def _check_plain_window(r, node, what):
    """Settings graphnet's conv and pooling do not have: dilation, groups, auto_pad."""
    if any(d != 1 for d in r.attr(node, "dilations", [1])) or r.attr(node, "group", 1) != 1 \
            or r.attr(node, "auto_pad", "NOTSET") != "NOTSET" or r.attr(node, "ceil_mode", 0):
        raise unsupported(node.op_type, node.output[0], f"graphnet's {what} has no dilation, "
                          "groups, auto_pad or ceil_mode")


def _read_conv(r, node):
    _check_plain_window(r, node, "conv")
    x, w = r.input(node, 0), r.input(node, 1)
    b = r.input(node, 2) if r.has(node, 2) else r.graph.const(
        np.zeros(w.static_shape[0], w.dtype), name=f"{node.output[0]}/bias")
    return r.gate("conv", node, [x, w, b], stride=_equal_pair(r, node, "strides", [1], "conv"),
                  pad=_equal_pair(r, node, "pads", [0], "conv"))


def _read_max_pool(r, node):
    _check_plain_window(r, node, "max_pool")
    if any(r.attr(node, "pads", [0])):
        raise unsupported("MaxPool", node.output[0], "graphnet's max_pool has no padding")
    height, width = r.attr(node, "kernel_shape")
    return r.gate("max_pool", node, [r.input(node, 0)], pool_height=height, pool_width=width,
                  stride=_equal_pair(r, node, "strides", [1], "max_pool"))


def _read_batchnorm(r, node):
    if r.attr(node, "training_mode", 0):
        raise unsupported("BatchNormalization", node.output[0], "training_mode=1: graphnet "
                          "reads inference batchnorm and switches mode with graph.train()")
    x = r.input(node, 0)
    rank = None if x.static_shape is None else len(x.static_shape)
    if rank not in (2, 4):
        raise unsupported("BatchNormalization", node.output[0], f"input of shape "
                          f"{x.static_shape}: graphnet has batchnorm for (N, D) and "
                          "spatial_batchnorm for (N, C, H, W)")
    out = r.gate("batchnorm" if rank == 2 else "spatial_batchnorm", node,
                 [x, r.input(node, 1), r.input(node, 2)],
                 eps=r.attr(node, "epsilon", 1e-5), momentum=r.attr(node, "momentum", 0.9))
    out.state["running_mean"] = r.constant(node, 3, "mean").copy()
    out.state["running_var"] = r.constant(node, 4, "var").copy()
    return out


def _read_layernorm(r, node):
    x = r.input(node, 0)
    last = -1 if x.static_shape is None else len(x.static_shape) - 1
    if r.attr(node, "axis", -1) not in (-1, last) or not r.has(node, 2):
        raise unsupported("LayerNormalization", node.output[0], "graphnet's layernorm "
                          "normalizes over the last axis, with a scale and a bias")
    return r.gate("layernorm", node, [x, r.input(node, 1), r.input(node, 2)],
                  eps=r.attr(node, "epsilon", 1e-5))


def _read_groupnorm(r, node):
    """Opset 21's per-channel scale and bias; opset 18-20's per-group constants are
    repeated over each group's channels."""
    x, groups = r.input(node, 0), r.attr(node, "num_groups")
    channels = None if x.static_shape is None else x.static_shape[1]
    scales = [r.input(node, i) for i in (1, 2)]
    if r.opset < 21:
        if channels is None:
            raise unsupported("GroupNormalization", node.output[0], "opset < 21 scales per "
                              "group: graphnet needs the channel count to repeat them")
        scales = [r.graph.const(np.repeat(r.constant(node, i, what), channels // groups),
                                name=f"{node.output[0]}/{what}")
                  for i, what in ((1, "scale"), (2, "bias"))]
    return r.gate("spatial_groupnorm", node, [x, *scales], G=groups,
                  eps=r.attr(node, "epsilon", 1e-5))


def _read_dropout(r, node):
    if r.has(node, 2) and r.constant(node, 2, "training_mode"):
        raise unsupported("Dropout", node.output[0], "training_mode=True: graphnet switches "
                          "dropout on with graph.train()")
    ratio = float(r.constant(node, 1, "ratio")) if r.has(node, 1) else \
        float(r.attr(node, "ratio", 0.5))
    return r.gate("dropout", node, [r.input(node, 0)], p=ratio)


def _read_softmax_cross_entropy(r, node):
    if r.has(node, 2) or r.attr(node, "ignore_index") is not None or \
            r.attr(node, "reduction", "mean") != "mean":
        raise unsupported("SoftmaxCrossEntropyLoss", node.output[0], "graphnet's softmax_loss "
                          "is the unweighted mean, without ignore_index")
    return r.gate("softmax_loss", node, [r.input(node, 0), r.input(node, 1)])


def _read_flatten(r, node):
    if r.attr(node, "axis", 1) != 1:
        raise unsupported("Flatten", node.output[0], "graphnet reads a flatten from axis 1")
    return flatten_rows(r.input(node, 0), "Flatten", node.output[0])


def _read_reshape(r, node):
    x = r.input(node, 0)
    shape = r.constant(node, 1, "shape").tolist()
    if not flattens_to_rows(x.static_shape, shape) or (r.attr(node, "allowzero", 0)
                                                       and 0 in shape):
        raise unsupported("Reshape", node.output[0], f"to {shape} from {x.static_shape}: "
                          "graphnet reads a reshape only as a flatten to (N, features)")
    return flatten_rows(x, "Reshape", node.output[0])


def _read_constant(r, node):
    r.constants[node.output[0]] = r.onnx.numpy_helper.to_array(r.attr(node, "value"))


#: ONNX op type -> the function that builds its gates (or returns what it aliases).
IMPORTERS = {
    **{onnx_op: _gate(gate) for gate, (onnx_op, _) in ONE_TO_ONE.items()},
    "Sum": _gate("add"),
    "Softmax": _read_softmax,
    "ReduceSum": _read_reduce_sum,
    "Gemm": _read_gemm, "MatMul": _read_matmul,
    "Conv": _read_conv,
    "MaxPool": _read_max_pool,
    "BatchNormalization": _read_batchnorm,
    "LayerNormalization": _read_layernorm, "GroupNormalization": _read_groupnorm,
    "Dropout": _read_dropout,
    "SoftmaxCrossEntropyLoss": _read_softmax_cross_entropy,
    "Flatten": _read_flatten, "Reshape": _read_reshape,
    "Identity": lambda r, node: r.input_value(node.input[0]),
    "Constant": _read_constant,
}
