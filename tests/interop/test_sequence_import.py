"""The sequence gates coming back in: graphnet -> ONNX -> graphnet and graphnet -> torch ->
graphnet for every case of tests/gates/test_sequence.py; ONNX RNN and LSTM nodes made by
hand (checked against onnxruntime); torch's nn.LSTM, nn.RNN, nn.Embedding and
F.scaled_dot_product_attention through from_torch (checked against torch's autograd);
and the settings graphnet's gates cannot express, refused with the node and the setting."""

import numpy as np
import pytest

import graphnet as gn
from graphnet.interop import UnsupportedOpError

from gates.test_sequence import CASES, build  # tests/ is on sys.path (rootdir packages)
from .reference import assert_runs_equal, graphnet_run

rng = np.random.default_rng(1616)
N, T, D, H, V = 3, 4, 5, 6, 7


def course_blocks(W, order, axis=-1):
    """W's gate blocks (along `axis`, in the convention `order`, e.g. 'iofg') in the
    course's order i, f, o, g; written here apart from the converters' own mapping."""
    blocks = dict(zip(order, np.split(W, 4, axis=axis)))
    return np.concatenate([blocks[g] for g in "ifog"], axis=axis)


# ----- round trips of the gates ---------------------------------------------------------

#: The gates that come back as themselves; the others (the steps, temporal_affine and
#: attention without a mask) come back as the general gates of their formula.
ONE_GATE = {"word_embedding", "rnn", "lstm", "temporal_softmax_loss", "masked_attention"}


def assert_same_sequence_gate(back, graph):
    ops = {n.op for n in graph.nodes} & ONE_GATE
    assert {n.op for n in back.nodes} & ONE_GATE == ops
    for op in ops:
        assert [n.op for n in back.nodes].count(op) == 1, op


@pytest.mark.onnx
@pytest.mark.parametrize("name", CASES)
def test_graph_to_onnx_to_graph_gives_the_same_values_and_gradients(name):
    pytest.importorskip("onnx")
    g, out, feeds = build(name)
    back = gn.from_onnx(gn.to_onnx(g))
    assert_same_sequence_gate(back, g)
    assert_runs_equal(
        graphnet_run(back, feeds, out.name),
        graphnet_run(g, feeds, out.name),
        rtol=1e-12,
        atol=1e-13,
    )


@pytest.mark.torch
@pytest.mark.parametrize("name", CASES)
def test_graph_to_torch_to_graph_gives_the_same_values_and_gradients(name):
    torch = pytest.importorskip("torch")
    g, out, feeds = build(name)
    module = gn.to_torch(g)
    back = gn.from_torch(module, tuple(torch.tensor(feeds[n]) for n in module.input_names))
    assert_same_sequence_gate(back, g)
    assert_runs_equal(
        graphnet_run(back, feeds), graphnet_run(g, feeds, out.name), rtol=1e-12, atol=1e-13
    )


# ----- ONNX files made by hand ----------------------------------------------------------


def _onnx():
    return pytest.importorskip("onnx"), pytest.importorskip("onnxruntime")


def recurrent_model(op_type, inputs, initializers, outputs=("Y",), opset=17, **attrs):
    """One RNN or LSTM node on x (T, N, D) (N, T, D with layout=1), float32."""
    onnx, _ = _onnx()
    helper = onnx.helper
    layout = attrs.get("layout", 0)
    node = helper.make_node(op_type, list(inputs), list(outputs), hidden_size=H, **attrs)
    x_shape = [N, T, D] if layout else [T, N, D]
    k = 2 if attrs.get("direction") == "bidirectional" else 1
    shapes = {
        "Y": [N, T, k, H] if layout else [T, k, N, H],
        "Y_h": [N, k, H] if layout else [k, N, H],
        "Y_c": [N, k, H] if layout else [k, N, H],
    }
    graph = helper.make_graph(
        [node],
        op_type,
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, shapes[o]) for o in outputs if o],
        [
            onnx.numpy_helper.from_array(v.astype(np.int32 if k == "seq" else np.float32), k)
            for k, v in initializers.items()
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    return model


def onnx_weights(blocks, bias=True, initial_h=False):
    arrays = dict(
        W=rng.normal(size=(1, blocks * H, D)) * 0.5,
        R=rng.normal(size=(1, blocks * H, H)) * 0.5,
    )
    if bias:
        arrays["B"] = rng.normal(size=(1, 2 * blocks * H))
    if initial_h:
        arrays["initial_h"] = rng.normal(size=(1, N, H))
    return arrays


def onnxruntime_outputs(model, x):
    _, ort = _onnx()
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x.astype(np.float32)})


@pytest.mark.onnx
def test_hand_made_lstm_with_an_initial_state_matches_onnxruntime_and_the_gate():
    arrays = onnx_weights(4, initial_h=True)
    model = recurrent_model(
        "LSTM", ["x", "W", "R", "B", "", "initial_h"], arrays, outputs=("Y", "Y_h")
    )
    x = rng.normal(size=(T, N, D)).astype(np.float32)
    Y, Y_h = onnxruntime_outputs(model, x)
    g = gn.from_onnx(model)
    np.testing.assert_allclose(g.run("Y", {"x": x}), Y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g.run("Y_h", {"x": x}), Y_h, rtol=1e-5, atol=1e-6)
    assert [n.op for n in g.nodes].count("lstm") == 1

    # the gradients: the imported graph against the lstm gate on weights mapped here
    W, R, B = (arrays[k][0].astype(np.float32) for k in ("W", "R", "B"))
    ref = gn.Graph(dtype=np.float32)
    ref.lstm(
        ref.transpose(ref.input("x", shape=(T, None, D)), axes=(1, 0, 2)),
        ref.param("initial_h", arrays["initial_h"][0]),
        ref.param("W", course_blocks(W.T, "iofg")),
        ref.param("R", course_blocks(R.T, "iofg")),
        ref.param("B", course_blocks(B[: 4 * H] + B[4 * H :], "iofg")),
        name="Y_bf",
    )
    ref.transpose(ref["Y_bf"], axes=(1, 0, 2), name="Y")
    expected_value, expected_grads = graphnet_run(ref, {"x": x}, "Y")
    value, grads = graphnet_run(g, {"x": x}, "Y")
    np.testing.assert_allclose(value[:, 0], expected_value, rtol=1e-5, atol=1e-6)
    for name in ("x", "W", "R", "B", "initial_h"):
        np.testing.assert_allclose(grads[name], expected_grads[name], rtol=1e-4, atol=1e-5)


@pytest.mark.onnx
@pytest.mark.parametrize("layout", [0, 1])
def test_hand_made_rnn_without_a_bias_matches_onnxruntime(layout):
    arrays = onnx_weights(1, bias=False)
    model = recurrent_model("RNN", ["x", "W", "R"], arrays, outputs=("Y", "Y_h"), layout=layout)
    x = rng.normal(size=(N, T, D) if layout else (T, N, D)).astype(np.float32)
    g = gn.from_onnx(model)
    assert [n.op for n in g.nodes].count("rnn") == 1
    if layout == 0:
        Y, Y_h = onnxruntime_outputs(model, x)
    else:  # onnxruntime runs layout 0 only: the same weights on the transposed input
        time_first = recurrent_model("RNN", ["x", "W", "R"], arrays, outputs=("Y", "Y_h"))
        Y, Y_h = onnxruntime_outputs(time_first, x.transpose(1, 0, 2))
        Y, Y_h = Y.transpose(2, 0, 1, 3), Y_h.transpose(1, 0, 2)
    np.testing.assert_allclose(g.run("Y", {"x": x}), Y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g.run("Y_h", {"x": x}), Y_h, rtol=1e-5, atol=1e-6)


@pytest.mark.onnx
@pytest.mark.parametrize(
    "op_type, inputs, attrs, extra, outputs, match",
    [
        (
            "LSTM",
            "x W R B",
            dict(direction="bidirectional"),
            {},
            ("Y",),
            "direction='bidirectional'",
        ),
        ("LSTM", "x W R B", dict(direction="reverse"), {}, ("Y",), "direction='reverse'"),
        ("RNN", "x W R B", dict(clip=3.0), {}, ("Y",), "clip=3.0"),
        ("RNN", "x W R B", dict(activations=["Relu"]), {}, ("Y",), "activations=\\['Relu'\\]"),
        ("LSTM", "x W R B", dict(input_forget=1), {}, ("Y",), "input_forget=1"),
        ("LSTM", "x W R B    P", {}, {"P": (1, 3 * H)}, ("Y",), "P \\(peepholes\\)"),
        ("RNN", "x W R B seq", {}, {"seq": None}, ("Y",), "sequence_lens"),
        ("LSTM", "x W R B  h c", {}, {"h": (1, N, H), "c": (1, N, H)}, ("Y",), "initial_c 'c'"),
        ("LSTM", "x W R B", {}, {}, ("Y", "Y_h", "Y_c"), "Y_c"),
    ],
)
def test_recurrent_settings_the_gates_lack_are_refused_by_name(
    op_type, inputs, attrs, extra, outputs, match
):
    onnx, _ = _onnx()
    blocks = 4 if op_type == "LSTM" else 1
    arrays = onnx_weights(blocks, bias=True)
    if "direction" in attrs and attrs["direction"] == "bidirectional":
        arrays = {k: np.concatenate([v, v]) for k, v in arrays.items()}
    for key, shape in extra.items():
        arrays[key] = np.full(N, T, np.int32) if shape is None else rng.normal(size=shape) + 1.0
    model = recurrent_model(op_type, inputs.split(" "), arrays, outputs, **attrs)
    if outputs[-1] == "Y_c":  # read Y_c: an Identity of it is an output
        model.graph.node.append(onnx.helper.make_node("Identity", ["Y_c"], ["c_out"]))
        model.graph.output.append(
            onnx.helper.make_tensor_value_info("c_out", onnx.TensorProto.FLOAT, [1, N, H])
        )
    with pytest.raises(UnsupportedOpError, match=f"{op_type} node 'Y'.*{match}"):
        gn.from_onnx(model)
