"""The sequence gates coming back in: graphnet -> ONNX -> graphnet and graphnet -> torch ->
graphnet for every case of tests/gates/test_sequence.py; ONNX RNN and LSTM nodes made by
hand (checked against onnxruntime); torch's nn.LSTM, nn.RNN, nn.Embedding and
F.scaled_dot_product_attention through from_torch (checked against torch's autograd);
and the settings graphnet's gates cannot express, refused with the node and the setting."""

import io

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
@pytest.mark.slow
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
@pytest.mark.slow
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
    arrays = dict(onnx_weights(4, initial_h=True), initial_c=np.zeros((1, N, H)))
    model = recurrent_model(
        "LSTM", ["x", "W", "R", "B", "", "initial_h", "initial_c"], arrays, outputs=("Y", "Y_h")
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
@pytest.mark.torch
@pytest.mark.parametrize("layout", [0, 1])
def test_hand_made_lstm_with_a_cell_state_becomes_steps_with_torchs_gradients(layout):
    """initial_c not zero and Y_c read: lstm_step gates, one per step."""
    torch = pytest.importorskip("torch")
    arrays = dict(onnx_weights(4, initial_h=True), initial_c=rng.normal(size=(1, N, H)))
    batch_first = {
        k: v.transpose(1, 0, 2) if k.startswith("initial") else v for k, v in arrays.items()
    }
    inputs = ["x", "W", "R", "B", "", "initial_h", "initial_c"]
    outputs = ("Y", "Y_h", "Y_c")
    model = recurrent_model(
        "LSTM", inputs, batch_first if layout else arrays, outputs, layout=layout
    )
    g = gn.from_onnx(model)
    assert [n.op for n in g.nodes].count("lstm_step") == T
    x = rng.normal(size=(T, N, D)).astype(np.float32)
    expected = onnxruntime_outputs(recurrent_model("LSTM", inputs, arrays, outputs), x)
    x_fed = x.transpose(1, 0, 2) if layout else x
    for name, value in zip(outputs, expected):
        if layout:  # onnxruntime's layout 0: (T, 1, N, H), (1, N, H)
            value = value.transpose(2, 0, 1, 3) if name == "Y" else value.transpose(1, 0, 2)
        np.testing.assert_allclose(g.run(name, {"x": x_fed}), value, rtol=1e-5, atol=1e-6)

    # gradients of the sum of Y_c against torch's LSTM on the weights mapped
    module = torch.nn.LSTM(D, H)
    W, R, B = (arrays[k][0].astype(np.float32) for k in ("W", "R", "B"))
    to_torch = lambda a: np.concatenate([dict(zip("iofg", np.split(a, 4)))[k] for k in "ifgo"])  # noqa: E731
    with torch.no_grad():
        for p, value in zip(module.parameters(), (W, R, B[: 4 * H], B[4 * H :])):
            p.copy_(torch.tensor(to_torch(value)))
    t = {
        k: torch.tensor(v.astype(np.float32), requires_grad=True)
        for k, v in (("x", x), ("h", arrays["initial_h"]), ("c", arrays["initial_c"]))
    }
    module(t["x"], (t["h"], t["c"]))[1][1].sum().backward()
    g.run("Y_c", {"x": x_fed})
    g.backward("Y_c", np.ones((N, 1, H) if layout else (1, N, H), np.float32))
    np.testing.assert_allclose(
        g["x"].grad,
        t["x"].grad.numpy().transpose(1, 0, 2) if layout else t["x"].grad.numpy(),
        rtol=1e-4,
        atol=1e-5,
    )
    for name, key in (("initial_h", "h"), ("initial_c", "c")):
        grad = t[key].grad.numpy()
        np.testing.assert_allclose(g[name].grad, grad[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        g["W"].grad, course_blocks(module.weight_ih_l0.grad.numpy().T, "ifgo"), rtol=1e-4, atol=1e-5
    )


@pytest.mark.onnx
@pytest.mark.parametrize("layout", [0, 1])
def test_hand_made_rnn_without_a_bias_with_an_initial_state_matches_onnxruntime(layout):
    arrays = onnx_weights(1, bias=False, initial_h=True)
    inputs = ["x", "W", "R", "", "", "initial_h"]
    batch_first = dict(arrays, initial_h=arrays["initial_h"].transpose(1, 0, 2))
    model = recurrent_model(
        "RNN", inputs, batch_first if layout else arrays, outputs=("Y", "Y_h"), layout=layout
    )
    x = rng.normal(size=(N, T, D) if layout else (T, N, D)).astype(np.float32)
    g = gn.from_onnx(model)
    assert [n.op for n in g.nodes].count("rnn") == 1
    if layout == 0:
        Y, Y_h = onnxruntime_outputs(model, x)
    else:  # onnxruntime runs layout 0 only: the same weights on the transposed input
        time_first = recurrent_model("RNN", inputs, arrays, outputs=("Y", "Y_h"))
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
        ("LSTM", "x W R B  h c", {}, {"h": (1, N, H), "c": (1, N, H)}, ("Y",), "unknown number"),
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
    if match == "unknown number":  # a cell state given, on x of unknown length
        model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "T"
    with pytest.raises(UnsupportedOpError, match=f"{op_type} node 'Y'.*{match}"):
        gn.from_onnx(model)


@pytest.mark.onnx
@pytest.mark.parametrize("hidden_size", [10**12, H + 1, 0, -4])
def test_a_hidden_size_the_weights_do_not_have_is_refused_before_anything_is_sized(hidden_size):
    """A crafted file's hidden_size must not size the zero bias or state (10**12 used to
    ask for 14.6 TiB) nor reach numpy as a negative dimension."""
    model = recurrent_model("LSTM", ["x", "W", "R"], onnx_weights(4, bias=False))
    (attr,) = [a for a in model.graph.node[0].attribute if a.name == "hidden_size"]
    attr.i = hidden_size
    with pytest.raises(UnsupportedOpError, match=f"LSTM node 'Y'.*hidden size {hidden_size} "):
        gn.from_onnx(model)


# ----- CaptioningRNN's training graph ---------------------------------------------------


def captioning(cell_type):
    from graphnet.models import CaptioningRNN

    np.random.seed(0)
    words = {"<NULL>": 0, "<START>": 1, "<END>": 2, "a": 3, "b": 4}
    model = CaptioningRNN(
        words, input_dim=6, wordvec_dim=5, hidden_dim=4, cell_type=cell_type, dtype=np.float64
    )
    captions = np.array([[1, 3, 4, 2, 0], [1, 4, 2, 0, 0], [1, 3, 3, 3, 2]])
    feeds = dict(
        features=np.random.randn(3, 6),
        captions=captions,
        mask=(captions[:, 1:] != 0).astype(np.int64),
    )
    return model, feeds


@pytest.mark.parametrize("cell_type", ["rnn", "lstm"])
@pytest.mark.parametrize(
    "way",
    [pytest.param("onnx", marks=pytest.mark.onnx), pytest.param("torch", marks=pytest.mark.torch)],
)
def test_captioning_loss_graph_round_trips_with_its_loss_and_gradients(cell_type, way):
    model, feeds = captioning(cell_type)
    if way == "onnx":
        pytest.importorskip("onnx")
        back = gn.from_onnx(gn.to_onnx(model.graph))
    else:
        torch = pytest.importorskip("torch")
        module = gn.to_torch(model.graph)
        back = gn.from_torch(module, tuple(torch.tensor(feeds[n]) for n in module.input_names))
    ops = [n.op for n in back.nodes]
    for op in ("word_embedding", cell_type, "temporal_softmax_loss"):
        assert ops.count(op) == 1, op
    loss, grads = model.loss(feeds["features"], feeds["captions"])
    value, back_grads = graphnet_run(back, feeds, "loss" if way == "onnx" else None)
    assert value == pytest.approx(loss, rel=1e-12)
    for name, grad in grads.items():
        np.testing.assert_allclose(back_grads[name], grad, rtol=1e-10, atol=1e-13, err_msg=name)


# ----- torch modules through from_torch -------------------------------------------------


def torch_reference(module, feeds, names):
    """torch's output and gradients (float64), the parameters' in graphnet's layout: an
    RNN/LSTM weight transposed with its blocks in the course's order, its one bias the
    gradient of bias_ih (bias_hh's is the same), a Linear weight transposed."""
    from .reference import torch_run

    value, grads = torch_run(module, feeds, names)
    blocks = {"LSTM": "ifgo", "RNN": None}
    kinds = {name: type(m).__name__ for name, m in module.named_modules()}
    expected = {}
    for name, grad in grads.items():
        owner, _, leaf = name.rpartition(".")
        order = blocks.get(kinds.get(owner), None)
        if leaf.startswith("bias_hh"):
            np.testing.assert_allclose(grad, grads[name.replace("bias_hh", "bias_ih")])
            continue
        if leaf.startswith("weight_") and kinds.get(owner) in blocks:
            grad = grad.T
        elif kinds.get(owner) == "Linear" and leaf == "weight":
            grad = grad.T
        expected[name] = course_blocks(grad, order) if order else grad
    return value, expected


def char_lstm(torch, batch_first, returns="scores"):
    """An embedding, an LSTM from zeros and a Linear: a character-level language model."""

    class CharLSTM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(V, D)
            self.lstm = torch.nn.LSTM(D, H, batch_first=batch_first)
            self.head = torch.nn.Linear(H, V)

        def forward(self, ids):
            out, (h, c) = self.lstm(self.embed(ids))
            if returns == "h_n":
                return h
            if returns == "c_n":
                return c
            return self.head(out)

    return CharLSTM().double()


@pytest.mark.torch
@pytest.mark.parametrize("batch_first", [True, False])
def test_a_torch_char_lstm_imports_with_torchs_values_and_gradients(batch_first):
    torch = pytest.importorskip("torch")
    module = char_lstm(torch, batch_first)
    ids = rng.integers(0, V, (N, T) if batch_first else (T, N))
    g = gn.from_torch(module, (torch.tensor(ids),))
    ops = [n.op for n in g.nodes]
    assert ops.count("lstm") == 1
    assert ops.count("word_embedding") == 1
    expected = torch_reference(module, {"ids": ids}, ["ids"])
    assert_runs_equal(graphnet_run(g, {"ids": ids}), expected, rtol=1e-10, atol=1e-12)
    if batch_first:  # the zero initial state follows the batch size
        more = rng.integers(0, V, (N + 2, T))
        assert_runs_equal(
            graphnet_run(g, {"ids": more}),
            torch_reference(module, {"ids": more}, ["ids"]),
            rtol=1e-10,
            atol=1e-12,
        )


@pytest.mark.torch
@pytest.mark.parametrize("cell", ["RNN", "LSTM"])
@pytest.mark.parametrize("batch_first, bias", [(True, True), (False, True), (True, False)])
def test_torch_rnn_and_lstm_with_an_initial_state_and_h_n(cell, batch_first, bias):
    torch = pytest.importorskip("torch")

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = getattr(torch.nn, cell)(D, H, batch_first=batch_first, bias=bias)

        def forward(self, x, h0):
            state = (h0, torch.zeros_like(h0)) if cell == "LSTM" else h0
            out, h_n = self.cell(x, state)
            h_n = h_n[0] if cell == "LSTM" else h_n
            return out.sum(1 if batch_first else 0) + 2 * h_n[0]

    module = Model().double()
    feeds = dict(
        x=rng.normal(size=(N, T, D) if batch_first else (T, N, D)), h0=rng.normal(size=(1, N, H))
    )
    g = gn.from_torch(module, tuple(torch.tensor(v) for v in feeds.values()))
    assert [n.op for n in g.nodes].count(cell.lower()) == 1
    expected = torch_reference(module, feeds, list(feeds))
    assert_runs_equal(graphnet_run(g, feeds), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.torch
@pytest.mark.parametrize("mask", ["none", "bool", "causal"])
def test_scaled_dot_product_attention_imports_as_the_attention_gate(mask):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    allowed = rng.random((T, T + 1)) < 0.6
    allowed[0] = False  # a query that may attend to no key: a zero output in both

    class Attend(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("allowed", torch.tensor(allowed))

        def forward(self, q, k, v):
            if mask == "bool":
                return F.scaled_dot_product_attention(q, k, v, attn_mask=self.allowed)
            return F.scaled_dot_product_attention(q, k, v, is_causal=mask == "causal")

    keys = T if mask == "causal" else T + 1
    feeds = dict(
        q=rng.normal(size=(N, 2, T, D)),
        k=rng.normal(size=(N, 2, keys, D)),
        v=rng.normal(size=(N, 2, keys, H)),
    )
    g = gn.from_torch(Attend(), tuple(torch.tensor(v) for v in feeds.values()))
    assert [n.op for n in g.nodes if n.kind == "gate"] == [
        "attention" if mask == "none" else "masked_attention"
    ]
    expected = torch_reference(Attend(), feeds, list(feeds))
    assert_runs_equal(graphnet_run(g, feeds), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.torch
def test_torch_embedding_of_any_ids_is_a_take():
    torch = pytest.importorskip("torch")
    module = torch.nn.Embedding(V, D).double()
    ids = rng.integers(0, V, (N, T, 2))
    g = gn.from_torch(module, (torch.tensor(ids),))
    assert [n.op for n in g.nodes if n.kind == "gate"] == ["take"]
    feeds = {"input": ids}
    assert_runs_equal(graphnet_run(g, feeds), torch_reference(module, feeds, ["input"]), rtol=1e-12)


@pytest.mark.torch
@pytest.mark.parametrize(
    "make, match",
    [
        (lambda t: t.nn.LSTM(D, H, num_layers=2), "aten.lstm node 'lstm'.*num_layers=2"),
        (
            lambda t: t.nn.LSTM(D, H, bidirectional=True),
            "aten.lstm node 'lstm'.*bidirectional=True",
        ),
        (lambda t: t.nn.RNN(D, H, num_layers=3), "aten.rnn_tanh node 'rnn_tanh'.*num_layers=3"),
        (lambda t: t.nn.RNN(D, H, nonlinearity="relu"), "aten.rnn_relu"),
        (lambda t: t.nn.GRU(D, H), "aten.gru"),
    ],
)
def test_torch_recurrent_settings_the_gates_lack_are_refused_by_name(make, match):
    torch = pytest.importorskip("torch")

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = make(torch)

        def forward(self, x):
            return self.layer(x)[0]

    with pytest.raises(UnsupportedOpError, match=match):
        gn.from_torch(Model(), (torch.randn(T, N, D),))


@pytest.mark.torch
@pytest.mark.parametrize("batch_first", [True, False])
def test_torch_lstm_with_a_cell_state_given_and_c_n_read_becomes_steps(batch_first):
    torch = pytest.importorskip("torch")

    class Given(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(D, H, batch_first=batch_first)

        def forward(self, x, h0, c0):
            out, (h, c) = self.lstm(x, (h0, c0))
            return out.sum(1 if batch_first else 0) + 3 * c[0] - h[0]

    module = Given().double()
    feeds = dict(
        x=rng.normal(size=(N, T, D) if batch_first else (T, N, D)),
        h0=rng.normal(size=(1, N, H)),
        c0=rng.normal(size=(1, N, H)),
    )
    g = gn.from_torch(module, tuple(torch.tensor(v) for v in feeds.values()))
    assert [n.op for n in g.nodes].count("lstm_step") == T
    assert_runs_equal(
        graphnet_run(g, feeds), torch_reference(module, feeds, list(feeds)), rtol=1e-10, atol=1e-12
    )
    # c_n read from nn.LSTM's default zero state
    reads_c = char_lstm(torch, True, returns="c_n")
    ids = rng.integers(0, V, (N, T))
    g = gn.from_torch(reads_c, (torch.tensor(ids),))
    assert [n.op for n in g.nodes].count("lstm_step") == T
    assert_runs_equal(
        graphnet_run(g, {"ids": ids}),
        torch_reference(reads_c, {"ids": ids}, ["ids"]),
        rtol=1e-10,
        atol=1e-12,
    )
    h_n = gn.from_torch(char_lstm(torch, True, returns="h_n"), (torch.tensor(ids),))
    assert [n.op for n in h_n.nodes].count("lstm") == 1


@pytest.mark.torch
def test_attention_settings_the_gate_lacks_are_refused_by_name():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    q = torch.randn(N, T, D)
    for kwargs, match in (
        (dict(attn_mask=torch.zeros(T, T)), "torch.float32 attn_mask"),
        (dict(scale=0.3), "scale=0.3"),
        (dict(dropout_p=0.1), "dropout_p=0.1"),
    ):

        class Attend(torch.nn.Module):
            def forward(self, q, kwargs=kwargs):
                return F.scaled_dot_product_attention(q, q, q, **kwargs)

        with pytest.raises(
            UnsupportedOpError, match=f"aten.scaled_dot_product_attention node .*{match}"
        ):
            gn.from_torch(Attend(), (q,))


@pytest.mark.onnx
@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.parametrize("cell", ["LSTM", "RNN"])
@pytest.mark.parametrize("dynamo", [True, False], ids=["torch.export", "TorchScript"])
def test_torch_onnx_export_of_a_recurrent_layer_imports_with_torchs_values(cell, dynamo):
    """An ONNX file from another tool: torch.onnx.export's default exporter and its older
    TorchScript one (which computes the zero initial state from the input's shape)."""
    torch = pytest.importorskip("torch")
    onnx, _ = _onnx()
    if dynamo:
        pytest.importorskip("onnxscript")  # what torch.onnx.export's default exporter runs on

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = getattr(torch.nn, cell)(D, H, batch_first=True)

        def forward(self, x):
            return self.layer(x)[0]

    module = Model().eval()
    x = torch.randn(N, T, D)
    buffer = io.BytesIO()
    torch.onnx.export(module, (x,), buffer, dynamo=dynamo, input_names=["x"], output_names=["y"])
    g = gn.from_onnx(onnx.load_from_string(buffer.getvalue()))
    # the default exporter writes an ONNX LSTM, and nn.RNN unrolled into MatMul, Add, Tanh
    unrolled = dynamo and cell == "RNN"
    assert [n.op for n in g.nodes].count(cell.lower()) == (0 if unrolled else 1)
    expected = module(x).detach().numpy()
    np.testing.assert_allclose(g.run("y", {"x": x.numpy()}), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.torch
@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_to_torch_of_an_empty_sequence_gives_no_hidden_states(cell):
    torch = pytest.importorskip("torch")
    g2 = gn.Graph()
    blocks = 4 if cell == "lstm" else 1
    x, h0 = g2.input("x", shape=(None, None, 3)), g2.input("h0", shape=(None, 5))
    weights = [
        g2.param(n, np.ones(s))
        for n, s in (("Wx", (3, blocks * 5)), ("Wh", (5, blocks * 5)), ("b", (blocks * 5,)))
    ]
    getattr(g2, cell)(x, h0, *weights, name="out")
    module = gn.to_torch(g2)
    result = module(
        torch.zeros(2, 0, 3, dtype=torch.float64), torch.ones(2, 5, dtype=torch.float64)
    )
    assert result.shape == (2, 0, 5)
    assert g2.run("out", x=np.zeros((2, 0, 3)), h0=np.ones((2, 5))).shape == (2, 0, 5)
