"""One small graph per gate (and per setting where a converter branches), shared by the
ONNX and PyTorch tests. Each case builds its graph in a given dtype and returns
(graph, feeds); the graph's single sink is the output to compare."""

import math

import numpy as np

import graphnet as gn


def _binary(op, b=None):
    """a (N, 3) and a broadcast b (3,): b stays away from 0 (divide); max gets b = (-5, 5,
    0.37), so a wins one column, b another, and each the third in some rows, with no ties
    (where torch splits the gradient and graphnet gives it to a)."""

    def build(dtype, rng):
        g = gn.Graph(dtype=dtype)
        getattr(g, op)(g.input("a", shape=(None, 3)), g.input("b", shape=(3,)), name="out")
        return g, {
            "a": rng.uniform(-2, 2, (4, 3)),
            "b": rng.uniform(3, 7, 3) if b is None else np.array(b),
        }

    return build


def _unary(op, low=-2.0):
    def build(dtype, rng):
        g = gn.Graph(dtype=dtype)
        getattr(g, op)(g.input("x", shape=(None, 5)), name="out")
        return g, {"x": rng.uniform(low, 2, (3, 5))}

    return build


def _reduce(op, axis, keepdims):
    def build(dtype, rng):
        g = gn.Graph(dtype=dtype)
        getattr(g, op)(g.input("x", shape=(None, 3, 4)), axis=axis, keepdims=keepdims, name="out")
        return g, {"x": rng.normal(size=(2, 3, 4))}

    return build


def _gate(make, low=-2.0, high=2.0, **shapes):
    """make(g, rng, *inputs) builds the gate 'out' on float inputs of `shapes` (name ->
    shape; a None size is open and fed as 3), fed uniform values in [low, high)."""

    def build(dtype, rng):
        g = gn.Graph(dtype=dtype)
        make(g, rng, *[g.input(name, shape=shape) for name, shape in shapes.items()])
        return g, {
            name: rng.uniform(low, high, [3 if size is None else size for size in shape])
            for name, shape in shapes.items()
        }

    return build


def _affine(x_shape):
    def build(dtype, rng):
        g = gn.Graph(dtype=dtype)
        x = g.input("x", shape=(None, *x_shape))
        features = int(np.prod(x_shape))
        g.affine(
            x,
            g.param("W", rng.normal(size=(features, 4))),
            g.param("b", rng.normal(size=4)),
            name="out",
        )
        return g, {"x": rng.normal(size=(3, *x_shape))}

    return build


def _conv(stride, pad):
    def build(dtype, rng):
        g = gn.Graph(dtype=dtype)
        g.conv(
            g.input("x", shape=(None, 2, 7, 7)),
            g.param("w", rng.normal(size=(3, 2, 3, 3))),
            g.param("b", rng.normal(size=3)),
            stride=stride,
            pad=pad,
            name="out",
        )
        return g, {"x": rng.normal(size=(2, 2, 7, 7))}

    return build


def _pool(op, size, stride):
    def build(dtype, rng):
        g = gn.Graph(dtype=dtype)
        getattr(g, op)(g.input("x", shape=(None, 2, 6, 6)), size, size, stride, name="out")
        return g, {"x": rng.normal(size=(2, 2, 6, 6))}

    return build


def _batchnorm(op, shape):
    def build(dtype, rng):
        g = gn.Graph(dtype=dtype)
        channels = shape[0]
        out = getattr(g, op)(
            g.input("x", shape=(None, *shape)),
            g.param("gamma", rng.uniform(0.5, 1.5, channels)),
            g.param("beta", rng.normal(size=channels)),
            eps=2.0**-10,
            momentum=0.75,
            name="out",
        )  # ONNX keeps both as float32
        out.state["running_mean"] = rng.normal(size=channels).astype(dtype)
        out.state["running_var"] = rng.uniform(0.5, 2, channels).astype(dtype)
        return g, {"x": rng.normal(size=(5, *shape))}

    return build


def _layernorm(shape):
    def build(dtype, rng):
        g = gn.Graph(dtype=dtype)
        g.layernorm(
            g.input("x", shape=(None, *shape)),
            g.param("gamma", rng.uniform(0.5, 1.5, shape[-1])),
            g.param("beta", rng.normal(size=shape[-1])),
            eps=2.0**-10,
            name="out",
        )
        return g, {"x": rng.normal(size=(3, *shape)) * 2 + 1}

    return build


def _groupnorm(dtype, rng):
    g = gn.Graph(dtype=dtype)
    g.spatial_groupnorm(
        g.input("x", shape=(None, 6, 3, 4)),
        g.param("gamma", rng.uniform(0.5, 1.5, 6)),
        g.param("beta", rng.normal(size=6)),
        3,
        eps=2.0**-10,
        name="out",
    )
    return g, {"x": rng.normal(size=(2, 6, 3, 4)) * 2 + 1}


def _dropout(dtype, rng):
    g = gn.Graph(dtype=dtype)
    g.dropout(g.input("x", shape=(None, 6)), 0.3, name="out")
    return g, {"x": rng.normal(size=(4, 6))}


def _softmax(dtype, rng):
    g = gn.Graph(dtype=dtype)
    g.softmax(g.input("x", shape=(None, 5)), name="out")
    return g, {"x": rng.normal(size=(3, 5))}


def _loss(op):
    def build(dtype, rng):
        g = gn.Graph(dtype=dtype)
        getattr(g, op)(
            g.input("scores", shape=(None, 5)),
            g.input("y", shape=(None,), dtype=np.int64),
            name="out",
        )
        return g, {"scores": rng.normal(size=(6, 5)), "y": rng.integers(0, 5, 6)}

    return build


def _take_rows(dtype, rng):
    """An embedding: rows of a param picked by fed integer ids (repeats add up)."""
    g = gn.Graph(dtype=dtype)
    g.take(
        g.param("W", rng.normal(size=(6, 3))),
        g.input("ids", shape=(None,), dtype=np.int64),
        name="out",
    )
    return g, {"ids": np.array([4, 0, 4, 5])}


def _take_axis(dtype, rng):
    """Columns picked by a constant (2, 2) array of indices, one repeated."""
    g = gn.Graph(dtype=dtype)
    g.take(g.input("x", shape=(None, 5)), np.array([[0, 4], [2, 2]]), axis=1, name="out")
    return g, {"x": rng.normal(size=(3, 5))}


def _where(constant_mask):
    def build(dtype, rng):
        g = gn.Graph(dtype=dtype)
        a = g.input("a", shape=(None, 3))
        if constant_mask:
            g.where(np.array([1, 0, 2]), a, 0.5, name="out")
            return g, {"a": rng.normal(size=(4, 3))}
        g.where(
            g.input("mask", shape=(None, 3), dtype=np.int64),
            a,
            g.input("b", shape=(3,)),
            name="out",
        )
        return g, {
            "mask": rng.integers(0, 3, (4, 3)),
            "a": rng.normal(size=(4, 3)),
            "b": rng.normal(size=3),
        }

    return build


def _cross_entropy(shape, ignore_index):
    """Scores `shape` (batch open) with the classes last; labels with some ignored."""

    def build(dtype, rng):
        g = gn.Graph(dtype=dtype)
        g.cross_entropy(
            g.input("scores", shape=(None, *shape[1:])),
            g.input("y", shape=(None, *shape[1:-1]), dtype=np.int64),
            ignore_index=ignore_index,
            name="out",
        )
        labels = rng.integers(0, shape[-1], shape[:-1])
        if ignore_index is not None:
            labels.flat[::3] = ignore_index
        return g, {"scores": rng.normal(size=shape), "y": labels}

    return build


def _fan_out(dtype, rng):
    """One node read by three gates, and a Python number folded into a const."""
    g = gn.Graph(dtype=dtype)
    x = g.input("x", shape=(None, 4))
    h = g.tanh(x, name="h")
    g.add(g.multiply(h, h, name="square"), g.multiply(h, 3.0, name="scaled"), name="out")
    return g, {"x": rng.normal(size=(2, 4))}


#: case name -> builder; every gate graphnet has, and the settings the converters branch on.
CASES = {
    "add": _binary("add"),
    "subtract": _binary("subtract"),
    "multiply": _binary("multiply"),
    "divide": _binary("divide"),
    "max": _binary("max", b=(-5.0, 5.0, 0.37)),
    "relu": _unary("relu"),
    "exp": _unary("exp"),
    "log": _unary("log", low=0.1),
    "sigmoid": _unary("sigmoid"),
    "tanh": _unary("tanh"),
    "sum_all": _reduce("sum", None, False),
    "sum_all_keepdims": _reduce("sum", None, True),
    "sum_axis": _reduce("sum", 1, False),
    "sum_axes_keepdims": _reduce("sum", (0, 2), True),
    "affine": _affine((6,)),
    "affine_flattening": _affine((2, 3, 2)),
    "conv": _conv(1, 1),
    "conv_stride2": _conv(2, 0),
    "max_pool": _pool("max_pool", 2, 2),
    "max_pool_overlapping": _pool("max_pool", 3, 1),
    "batchnorm": _batchnorm("batchnorm", (4,)),
    "spatial_batchnorm": _batchnorm("spatial_batchnorm", (3, 4, 4)),
    "layernorm": _layernorm((6,)),
    "layernorm_sequence": _layernorm((4, 6)),
    "spatial_groupnorm": _groupnorm,
    "dropout": _dropout,
    "softmax": _softmax,
    "softmax_loss": _loss("softmax_loss"),
    "svm_loss": _loss("svm_loss"),
    "fan_out": _fan_out,
    # the general tensor gates
    "matmul": _gate(
        lambda g, rng, x: g.matmul(x, g.param("W", rng.normal(size=(4, 5))), name="out"),
        x=(None, 4),
    ),
    "matmul_batched": _gate(
        lambda g, rng, a, b: g.matmul(a, b, name="out"), a=(None, 2, 4), b=(None, 4, 5)
    ),
    "matmul_vector": _gate(lambda g, rng, a, b: g.matmul(a, b, name="out"), a=(None, 2, 4), b=(4,)),
    "reshape": _gate(lambda g, rng, x: g.reshape(x, (-1, 3, 4), name="out"), x=(None, 2, 6)),
    "flatten": _gate(lambda g, rng, x: g.flatten(x, name="out"), x=(None, 2, 3)),
    "flatten_axis2": _gate(lambda g, rng, x: g.flatten(x, axis=2, name="out"), x=(None, 2, 3, 2)),
    "transpose": _gate(lambda g, rng, x: g.transpose(x, (0, -1, 1), name="out"), x=(None, 3, 4)),
    "transpose_reversed": _gate(lambda g, rng, x: g.transpose(x, name="out"), x=(None, 3, 4)),
    "concat": _gate(
        lambda g, rng, a, b: g.concat([a, b, a], axis=-1, name="out"), a=(None, 2), b=(None, 3)
    ),
    "mean_all": _reduce("mean", None, False),
    "mean_all_keepdims": _reduce("mean", None, True),
    "mean_axis": _reduce("mean", 1, False),
    "mean_axes_keepdims": _reduce("mean", (0, 2), True),
    "slice": _gate(
        lambda g, rng, x: g.index(x, (slice(None), slice(2, 5)), name="out"), x=(None, 6)
    ),
    "slice_int_none_step": _gate(
        lambda g, rng, x: g.index(x, (Ellipsis, 1, None, slice(-4, None, 2)), name="out"),
        x=(None, 3, 4, 5),
    ),
    "take_rows": _take_rows,
    "take_axis": _take_axis,
    "negate": _unary("negate"),
    "sqrt": _unary("sqrt", low=0.1),
    "abs": _unary("abs"),
    "softplus": _unary("softplus"),
    "pow": _gate(lambda g, rng, x: g.pow(x, 3, name="out"), x=(None, 4)),
    "pow_root": _gate(lambda g, rng, x: g.pow(x, 0.5, name="out"), low=0.1, x=(None, 4)),
    "min": _binary("min", b=(-5.0, 5.0, 0.37)),
    "clip": _gate(lambda g, rng, x: g.clip(x, -0.5, 1.0, name="out"), x=(None, 6)),
    "clip_low": _gate(lambda g, rng, x: g.clip(x, low=-0.5, name="out"), x=(None, 6)),
    "clip_high": _gate(lambda g, rng, x: g.clip(x, high=1.0, name="out"), x=(None, 6)),
    "compare": _gate(
        lambda g, rng, x: g.where(
            g.compare(x, ">", 0.3), x, g.where(g.compare(x, "!=", 0.5), 2.0 * x, x), name="out"
        ),
        x=(None, 6),
    ),
    "where": _where(constant_mask=False),
    "where_constant_mask": _where(constant_mask=True),
    "leaky_relu": _gate(lambda g, rng, x: g.leaky_relu(x, 0.25, name="out"), x=(None, 6)),
    "gelu": _gate(lambda g, rng, x: g.gelu(x, name="out"), low=-4.0, high=4.0, x=(None, 6)),
    "gelu_tanh": _gate(
        lambda g, rng, x: g.gelu(x, "tanh", name="out"), low=-4.0, high=4.0, x=(None, 6)
    ),
    "log_softmax": _gate(lambda g, rng, x: g.log_softmax(x, name="out"), x=(None, 5)),
    "log_softmax_axis1": _gate(
        lambda g, rng, x: g.log_softmax(x, axis=1, name="out"), x=(None, 3, 4)
    ),
    "cross_entropy": _cross_entropy((6, 5), ignore_index=2),
    "cross_entropy_sequence": _cross_entropy((3, 4, 5), ignore_index=-1),
    "cross_entropy_sequence_all_counted": _cross_entropy((3, 4, 5), ignore_index=None),
    "avg_pool": _pool("avg_pool", 2, 2),
    "avg_pool_overlapping": _pool("avg_pool", 3, 1),
}


def build(case, dtype, seed=0):
    """(graph, feeds) of `case`, the feeds in the graph's dtype (labels stay integers)."""
    graph, feeds = CASES[case](dtype, np.random.default_rng(seed))
    return graph, {k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in feeds.items()}


def gate_ops(graph):
    return [n.op for n in graph.nodes if n.kind == "gate"]


def course_models():
    from graphnet.models import FullyConnectedNet, ThreeLayerConvNet, TwoLayerNet

    np.random.seed(0)
    fc = FullyConnectedNet(
        [8, 6],
        input_dim=12,
        num_classes=5,
        dropout=0.3,
        normalization="batchnorm",
        weight_scale=0.3,
        reg=0.1,
    )
    rng = np.random.default_rng(0)
    for _ in range(3):  # train-mode steps, so the running averages are not the initial ones
        fc.loss(rng.normal(size=(10, 12)).astype(np.float32), rng.integers(0, 5, 10))
    return {
        "TwoLayerNet": (
            TwoLayerNet(input_dim=12, hidden_dim=8, num_classes=5, weight_scale=0.3, reg=0.1),
            (12,),
        ),
        "FullyConnectedNet": (fc, (12,)),
        "ThreeLayerConvNet": (
            ThreeLayerConvNet(
                input_dim=(3, 8, 8),
                num_filters=4,
                filter_size=3,
                hidden_dim=10,
                num_classes=5,
                weight_scale=0.3,
                reg=0.1,
            ),
            (3, 8, 8),
        ),
    }


TOKENS, WIDTH = 4, 6


def attention_graph(dtype):
    """One head of self-attention from gates: softmax(q kᵀ / √d) v for x (N, T, d), with
    q = x Wq, k = x Wk, v = x Wv."""
    rng = np.random.default_rng(0)
    g = gn.Graph(dtype=dtype)
    x = g.input("x", shape=(None, TOKENS, WIDTH))
    q, k, v = (
        g.matmul(x, g.param(f"W{name}", rng.normal(size=(WIDTH, WIDTH)) / 2), name=name)
        for name in "qkv"
    )
    scores = g.multiply(
        g.matmul(q, g.transpose(k, (0, 2, 1), name="kT"), name="qk"),
        1 / math.sqrt(WIDTH),
        name="scores",
    )
    g.matmul(g.softmax(scores, name="weights"), v, name="attended")
    return g, {"x": rng.normal(size=(3, TOKENS, WIDTH)).astype(dtype)}


def graph_with_a_custom_gate():
    """A graph using a gate registered in the test (as in a notebook): `cube`, twice."""

    @gn.register_gate
    class Cube(gn.Gate):
        op, inputs = "interop_test_cube", ("x",)

        def shape(self, x):
            return x

        def forward(self, x):
            return x**3, x

        def backward(self, dout, x, needs):
            return (3 * x * x * dout,)

    g = gn.Graph()
    x = g.input("x", shape=(None, 2))
    g.add(g.apply("interop_test_cube", x, name="c1"), g.apply("interop_test_cube", x, name="c2"))
    return g


def builtin_gates():
    from graphnet.gates import gate_class

    return {op for op in gn.gate_names() if gate_class(op).__module__.startswith("graphnet.")}
