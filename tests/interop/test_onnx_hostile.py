"""Crafted ONNX files for graphnet.from_onnx: truncated or foreign bytes, initializers whose
dims declare more values than they hold, external data outside the model's folder, and
absurd attributes (strides, pads, windows, groups, axes, casts near 2**62, zero or
negative). Each is refused with a GraphError (UnsupportedOpError is one) naming the
file, the tensor or the node, before any array sized by the file is made."""

import copy
import pickle

import numpy as np
import pytest

import graphnet as gn
from graphnet.errors import GraphError
from isolation import assert_survived, run_in_child

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

HUGE = 2**62


def model(nodes, initializers=(), shape=(1, 3, 8, 8), opset=17):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def const(name, values, dtype=np.int64):
    return numpy_helper.from_array(np.array(values, dtype), name)


def one(op, inputs=("x",), initializers=(), shape=(1, 3, 8, 8), opset=17, **attrs):
    return model([helper.make_node(op, list(inputs), ["y"], **attrs)], initializers, shape, opset)


def groupnorm(groups, opset):
    scale, bias = const("s", np.ones(4), np.float32), const("b", np.zeros(4), np.float32)
    return one(
        "GroupNormalization",
        ("x", "s", "b"),
        [scale, bias],
        (1, 4, 3, 3),
        opset,
        num_groups=groups,
    )


def declared(dims, **data):
    tensor = TensorProto(name="big", data_type=TensorProto.FLOAT, dims=dims, **data)
    return one("Add", ("x", "big"), [tensor], (1,))


def outside_folder():
    tensor = TensorProto(name="ext", data_type=TensorProto.FLOAT, dims=[4])
    tensor.data_location = TensorProto.EXTERNAL
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", "../../../../etc/passwd"
    return one("Add", ("x", "ext"), [tensor], (4,))


def float_and_double(nodes, initializers=()):
    """A model of inputs x, float (2, 80), and z, double (2, 80)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 80])
    z = helper.make_tensor_value_info("z", TensorProto.DOUBLE, [2, 80])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "g", [x, z], [y], initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def inputs_without_gradient(entry):
    """A Relu model whose graphnet metadata lists the inputs without gradient as `entry`."""
    proto = one("Relu", shape=(2,))
    helper.set_model_props(proto, {"graphnet.inputs_without_gradient": entry})
    return proto


WEIGHT = const("w", np.ones((2, 3, 3, 3)), np.float32)
MODELS = {
    "conv stride 0": (one("Conv", ("x", "w"), [WEIGHT], strides=[0, 0]), "stride must be >= 1"),
    "conv stride 2**62": (one("Conv", ("x", "w"), [WEIGHT], strides=[HUGE] * 2), "absurdly"),
    "conv pad -5": (one("Conv", ("x", "w"), [WEIGHT], pads=[-5] * 4), "pad must be >= 0"),
    "conv pad 2**62": (one("Conv", ("x", "w"), [WEIGHT], pads=[HUGE] * 4), "absurdly"),
    "max pool window 0": (one("MaxPool", kernel_shape=[0, 0]), "pool_height must be >= 1"),
    "max pool window 2**62": (one("MaxPool", kernel_shape=[HUGE] * 2), "absurdly"),
    "groupnorm opset 18, 0 groups": (groupnorm(0, 18), "must be >= 1"),
    "groupnorm opset 18, -1 groups": (groupnorm(-1, 18), "must be >= 1"),
    "groupnorm opset 18, 2**62 groups": (groupnorm(HUGE, 18), "absurdly"),
    "groupnorm opset 21, 0 groups": (groupnorm(0, 21), "must be >= 1"),
    "reshape to 2**62": (one("Reshape", ("x", "s"), [const("s", [HUGE, HUGE])]), "absurdly"),
    "slice bounds of int64": (
        one(
            "Slice",
            ("x", "a", "b", "c", "d"),
            [const(name, [v]) for name, v in zip("abcd", (-(2**63), 2**63 - 1, 0, -(2**63)))],
            (5,),
        ),
        "absurdly",
    ),
    "transpose perm 2**40": (one("Transpose", perm=[5, 2**40], shape=(2, 3)), "absurdly"),
    "concat axis -2**40": (one("Concat", ("x", "x"), axis=-(2**40), shape=(2, 3)), "absurdly"),
    "flatten axis 2**40": (one("Flatten", axis=2**40, shape=(2, 3)), "axis 1099511627776"),
    "cast to type 9999": (one("Cast", to=9999, shape=(2,)), "no ONNX type"),
    "input of 2**62 x 2**62": (one("Relu", shape=(HUGE, HUGE)), "64 bits"),
    **{
        f"inputs without gradient {entry}": (
            inputs_without_gradient(entry),
            "'graphnet.inputs_without_gradient' must list some of the model's inputs",
        )
        for entry in ('"x"', '["z"]', "[1]", '[["x"]]', "{}", "[", "")
    },
    "node without outputs": (
        model([helper.make_node("Relu", ["x"], [])], shape=(2,)),
        "has no output",
    ),
    "initializer of 2**40 values holding none": (declared([2**40]), "initializer 'big'"),
    "initializer of 2**40 values holding 4": (
        declared([2**20, 2**20], raw_data=b"\0" * 16),
        "initializer 'big'",
    ),
    "external data outside the folder": (outside_folder(), "outside the directory"),
    "double weight on a float image": (
        one("Conv", ("x", "w"), [const("w", np.ones((2, 3, 3, 3)), np.float64)]),
        r"node 'y' \(Conv\): its constant 'w' is double but the input 'x' it meets is float",
    ),
    "double bias of a float Gemm": (
        one(
            "Gemm",
            ("x", "w", "b"),
            [const("w", np.ones((3, 2)), np.float32), const("b", np.ones(2), np.float64)],
            (4, 3),
        ),
        r"node 'y' \(Gemm\): its constant 'b' is double but the input 'x' it meets is float",
    ),
    "half addend of a computed float": (
        model(
            [
                helper.make_node("Relu", ["x"], ["r"]),
                helper.make_node("Add", ["r", "b"], ["y"]),
            ],
            [const("b", np.ones(3), np.float16)],
            (2, 3),
        ),
        r"node 'y' \(Add\): its constant 'b' is float16 but the input 'r' it meets is float",
    ),
    # two computed inputs (before, Add promoted to double and ran; a Conv failed at its run)
    "a float input added to a double input": (
        float_and_double([helper.make_node("Add", ["x", "z"], ["y"])]),
        r"node 'y' \(Add\): its input 'z' is double but the input 'x' it meets is float",
    ),
    "computed float and double by type inference": (
        float_and_double(
            [
                helper.make_node("Relu", ["x"], ["r"]),
                helper.make_node("Relu", ["z"], ["s"]),
                helper.make_node("Mul", ["s", "r"], ["y"]),
            ]
        ),
        r"node 'y' \(Mul\): its input 'r' is float but the input 's' it meets is double",
    ),
    # inference sees the 6400-value weight by its type and shape alone
    "a float product of a large weight meets a double": (
        float_and_double(
            [
                helper.make_node("MatMul", ["x", "w"], ["h"]),
                helper.make_node("Sub", ["h", "z"], ["y"]),
            ],
            [const("w", np.ones((80, 80)), np.float32)],
        ),
        r"node 'y' \(Sub\): its input 'z' is double but the input 'h' it meets is float",
    ),
}


@pytest.mark.parametrize("case", sorted(MODELS))
def test_crafted_models_are_refused_naming_what_is_wrong(case, tmp_path):
    proto, words = MODELS[case]
    path = tmp_path / "model.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(GraphError, match=words):
        gn.from_onnx(path)


def valid_bytes():
    return one("Conv", ("x", "w"), [WEIGHT]).SerializeToString()


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(lambda: valid_bytes()[:1], id="first byte"),
        pytest.param(lambda: valid_bytes()[: len(valid_bytes()) // 2], id="half"),
        pytest.param(lambda: valid_bytes()[:-1], id="all but the last byte"),
        pytest.param(lambda: pickle.dumps({"graph": 1}), id="a pickle"),
        pytest.param(lambda: b"\xff" * 64, id="noise"),
    ],
)
def test_files_that_are_not_onnx_models_name_the_file(content, tmp_path):
    path = tmp_path / "damaged.onnx"
    path.write_bytes(content())
    with pytest.raises(GraphError, match="damaged.onnx: not a readable ONNX model"):
        gn.from_onnx(path)


def test_the_valid_model_loads_and_runs(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(valid_bytes())
    g = gn.from_onnx(path)
    out = g.forward({"x": np.ones((1, 3, 8, 8), np.float32)})
    assert np.asarray(out).shape == (1, 2, 6, 6)


def negative_size(where):
    """A Slice of x (2, 5) along axis 1, whose input, output or value_info declares a size of -1."""
    bounds = [const(name, [v]) for name, v in zip("abcd", (0, 1, 1, 1))]
    proto = one("Slice", ("x", "a", "b", "c", "d"), bounds, (2, 5))
    if where == "value_info":
        proto.graph.value_info.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 1]))
    info = {"input": proto.graph.input, "output": proto.graph.output}.get(
        where, proto.graph.value_info
    )[0]
    del info.type.tensor_type.shape.dim[:]
    for size in (2, -1):
        info.type.tensor_type.shape.dim.add().dim_value = size
    return proto


@pytest.mark.parametrize("where", ["input", "output", "value_info"])
def test_a_negative_declared_size_is_refused_naming_the_tensor(where, tmp_path):
    """ONNX's shape inference, which the type check runs, aborted the interpreter (an
    assertion in std::clamp) on a Slice of an input declared (2, -1); in a child."""
    path = tmp_path / "negative.onnx"
    path.write_bytes(negative_size(where).SerializeToString())
    result = run_in_child(f"""
        import graphnet as gn
        try:
            gn.from_onnx({str(path)!r})
        except gn.GraphError as err:
            print(err)
    """)
    assert_survived(result)
    name = "x" if where == "input" else "y"
    assert f"ONNX {where} {name!r} declares the size -1 on axis 1" in result.stdout, result


def with_input_type(elem_type):
    proto = one("Relu", shape=(2,))
    proto.graph.input[0].type.tensor_type.elem_type = elem_type
    return proto


# Nodes that break their op's schema: each failed inside the importer with Python's
# IndexError, TypeError, ValueError or KeyError instead of a GraphError naming the node.
MALFORMED = {
    "MaxPool without kernel_shape": one("MaxPool"),
    "MaxPool with a window of four sizes": one("MaxPool", kernel_shape=[2, 2, 2, 2]),
    "Conv without its weight": one("Conv", ("x",)),
    "Reshape without its shape": one("Reshape", ("x",), shape=(2, 3)),
    "Gather without its indices": one("Gather", ("x",), shape=(2, 3)),
    "Slice of opset 1 without starts": one("Slice", shape=(2, 3), opset=1, ends=[1]),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_node_that_breaks_its_ops_schema_is_refused_naming_it(case):
    op = case.split()[0]
    with pytest.raises(GraphError, match=rf"ONNX node 'y' \({op}\) does not fit its op's schema"):
        gn.from_onnx(MALFORMED[case])


def test_damaged_names_and_types_of_a_file_are_refused_naming_the_node(tmp_path):
    """Each escaped from_onnx as Python's error: a Constant whose tensor is not under
    'value' (AttributeError), an op type that is not UTF-8, which protobuf gives as bytes,
    listed with another (TypeError: bytes < str), and an element type 32 that meets
    another type (KeyError naming no type)."""
    constant = model(
        [
            helper.make_node("Constant", [], ["c"], value_float=2.0),
            helper.make_node("Add", ["x", "c"], ["y"]),
        ],
        shape=(2,),
    )
    with pytest.raises(GraphError, match="Constant node 'c': graphnet reads only a 'value'"):
        gn.from_onnx(constant)

    two_ops = model(
        [helper.make_node("Frob", ["x"], ["f"]), helper.make_node("Nitz", ["f"], ["y"])]
    )
    path = tmp_path / "bytes.onnx"
    path.write_bytes(two_ops.SerializeToString().replace(b"Nitz", b"N\xd8tz"))
    with pytest.raises(GraphError, match=r"2 ops with no counterpart: Frob .*b'N\\xd8tz'"):
        gn.from_onnx(path)

    unknown = float_and_double([helper.make_node("Add", ["x", "z"], ["y"])])
    unknown.graph.input[1].type.tensor_type.elem_type = 32
    with pytest.raises(GraphError, match=r"its input 'z' is of element type 32 but the input"):
        gn.from_onnx(unknown)


@pytest.mark.parametrize("elem_type", [0, 999])
def test_an_input_of_an_element_type_onnx_lacks_is_refused_naming_it(elem_type):
    with pytest.raises(GraphError, match=rf"ONNX input 'x' has element type {elem_type}, which"):
        gn.from_onnx(with_input_type(elem_type))


def small_cnn():
    """A conv, batchnorm, relu, max pool and affine model as graphnet exports it."""
    g = gn.Graph(dtype=np.float32)
    rng = np.random.default_rng(0)
    x = g.input("x", shape=(None, 2, 6, 6))
    h = g.conv(x, g.param("w", rng.normal(size=(3, 2, 3, 3))), g.param("b", np.zeros(3)), 1, 1)
    h = g.spatial_batchnorm(h, g.param("gamma", np.ones(3)), g.param("beta", np.zeros(3)))
    h = g.max_pool(g.relu(h), 2, 2, 2)
    g.affine(h, g.param("W", rng.normal(size=(27, 4))), g.param("c", np.zeros(4)), name="s")
    return gn.to_onnx(g)


def mutated(proto, rng):
    """`proto` with one node's attribute set to an odd integer list, an input dropped or
    added, or its op swapped for another the importer reads."""
    proto = copy.deepcopy(proto)
    node = proto.graph.node[int(rng.integers(len(proto.graph.node)))]
    roll = rng.random()
    if roll < 0.4 and node.attribute:
        attribute = node.attribute[int(rng.integers(len(node.attribute)))]
        value = [int(v) for v in rng.choice([-1, 0, 1, 2, 3, 2**40], int(rng.integers(1, 5)))]
        attribute.CopyFrom(helper.make_attribute(attribute.name, value))
    elif roll < 0.6 and node.input:
        del node.input[int(rng.integers(len(node.input)))]
    elif roll < 0.7:
        node.input.append(node.input[0] if node.input else "x")
    else:
        ops = ["Relu", "Conv", "MaxPool", "Gemm", "Reshape", "Gather", "Slice", "Flatten"]
        node.op_type = ops[int(rng.integers(len(ops)))]
    return proto


def small_sequence_model():
    """Word embedding, masked attention and the masked temporal softmax loss as graphnet
    exports them: the last two as runs of ONNX ops that the importer matches."""
    g = gn.Graph(dtype=np.float32)
    rng = np.random.default_rng(0)
    words = g.input("words", shape=(None, 4), dtype=np.int64)
    y = g.input("y", shape=(None, 4), dtype=np.int64)
    x = g.word_embedding(words, g.param("W", rng.normal(size=(7, 5))))
    a = g.attention(x, x, x, mask=np.tril(np.ones((4, 4), bool)))
    scores = g.temporal_affine(a, g.param("w", rng.normal(size=(5, 7))), g.param("b", np.zeros(7)))
    g.temporal_softmax_loss(scores, y, np.array([[1, 1, 1, 0]] * 2), name="loss")
    return gn.to_onnx(g)


@pytest.mark.parametrize(
    "make, feed, seed",
    [
        (small_cnn, {"x": np.ones((2, 2, 6, 6), np.float32)}, 32),
        (
            small_sequence_model,
            {"words": np.eye(2, 4, dtype=np.int64), "y": np.ones((2, 4), np.int64)},
            34,
        ),
    ],
    ids=["cnn", "sequence"],
)
def test_seeded_mutations_of_an_exported_model_build_or_are_refused(make, feed, seed):
    """300 models, each one node of an exported model mutated: from_onnx builds a graph
    that runs or refuses it with a GraphError, whatever the node became. (In the sequence
    model, a node of the attention's or the loss's run with an input dropped failed in
    the pattern matcher with IndexError or ValueError.)"""
    rng = np.random.default_rng(seed)
    base = make()
    for _ in range(300):
        try:
            graph = gn.from_onnx(mutated(base, rng))
        except GraphError:
            continue
        try:
            graph.forward(**{k: v for k, v in feed.items() if k in graph})
        except GraphError:
            pass


def test_constants_of_other_types_where_onnx_allows_them_are_read():
    """Pow's exponent and Reshape's shape may have other types than x (ONNX's T1, int64):
    the type check refuses only inputs that the op's schema gives one type."""
    proto = model(
        [
            helper.make_node("Pow", ["x", "e"], ["p"]),
            helper.make_node("Reshape", ["p", "s"], ["y"]),
        ],
        [const("e", 2.0, np.float64), const("s", [3, 2])],
        (2, 3),
    )
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    got = gn.from_onnx(proto).forward(x=x)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, (x**2).reshape(3, 2))
