"""The sequence gates (word_embedding, rnn, lstm, rnn_step, lstm_step, temporal_affine,
temporal_softmax_loss, attention): values and gradients against the course's functions
(graphnet.kernels.rnn_layers), numerical gradients in float64, float32, the per-step
gradients of the hidden states against an unrolled graph of step gates, a graph of them
all through checkpoints, networkx, the drawing and the step player, and the errors."""

import shutil

import numpy as np
import pytest

import graphnet as gn
from graphnet import viz
from graphnet.gates.base import fill, rule_of
from graphnet.kernels import rnn_layers as course

from .round_trips import assert_round_trip_keeps_the_graph

rng = np.random.default_rng(1606)
N, T, D, H, V = 2, 4, 3, 5, 6

SEQUENCE_OPS = {
    "word_embedding",
    "rnn",
    "lstm",
    "rnn_step",
    "lstm_step",
    "temporal_affine",
    "temporal_softmax_loss",
    "attention",
    "masked_attention",
}


def normal(*shape, scale=1.0):
    return rng.standard_normal(shape) * scale


WORDS = np.array([[1, 0, 5, 1], [3, 3, 2, 0]])
MASK = np.array([[1, 1, 1, 0], [1, 1, 0, 0]])
CAUSAL = np.tril(np.ones((T, T), dtype=bool))


def course_attention(mask):
    return lambda q, k, v: course.attention_forward(q, k, v, mask)[0]


# name -> (build(g, *float input nodes), float input arrays, the course's function of them)
CASES = {
    "word_embedding": (
        lambda g, W: g.word_embedding(WORDS, W),
        [normal(V, D)],
        lambda W: course.word_embedding_forward(WORDS, W)[0],
    ),
    "rnn": (
        lambda g, *a: g.rnn(*a),
        [
            normal(N, T, D),
            normal(N, H),
            normal(D, H, scale=0.5),
            normal(H, H, scale=0.5),
            normal(H),
        ],
        lambda *a: course.rnn_forward(*a)[0],
    ),
    "lstm": (
        lambda g, *a: g.lstm(*a),
        [
            normal(N, T, D),
            normal(N, H),
            normal(D, 4 * H, scale=0.5),
            normal(H, 4 * H, scale=0.5),
            normal(4 * H),
        ],
        lambda *a: course.lstm_forward(*a)[0],
    ),
    "rnn_step": (
        lambda g, *a: g.rnn_step(*a),
        [normal(N, D), normal(N, H), normal(D, H), normal(H, H), normal(H)],
        lambda *a: course.rnn_step_forward(*a)[0],
    ),
    "lstm_step": (
        lambda g, *a: g.lstm_step(*a),
        [
            normal(N, D),
            normal(N, H),
            normal(N, H),
            normal(D, 4 * H, scale=0.5),
            normal(H, 4 * H, scale=0.5),
            normal(4 * H),
        ],
        lambda *a: np.stack(course.lstm_step_forward(*a)[:2]),
    ),
    "temporal_affine": (
        lambda g, *a: g.temporal_affine(*a),
        [normal(N, T, D), normal(D, V), normal(V)],
        lambda *a: course.temporal_affine_forward(*a)[0],
    ),
    "temporal_softmax_loss": (
        lambda g, x: g.temporal_softmax_loss(x, WORDS, MASK),
        [normal(N, T, V)],
        lambda x: course.temporal_softmax_loss(x, WORDS, MASK)[0],
    ),
    "temporal_softmax_loss, a boolean mask": (
        lambda g, x: g.temporal_softmax_loss(x, WORDS, MASK == 1),
        [normal(N, T, V)],
        lambda x: course.temporal_softmax_loss(x, WORDS, MASK)[0],
    ),
    "attention": (
        lambda g, *a: g.attention(*a),
        [normal(N, T, D), normal(N, 3, D), normal(N, 3, H)],
        course_attention(None),
    ),
    "attention, heads broadcast": (
        lambda g, *a: g.attention(*a),
        [normal(N, 2, T, D), normal(1, 2, 3, D), normal(3, H)],
        course_attention(None),
    ),
    "masked_attention, causal": (
        lambda g, *a: g.attention(*a, mask=CAUSAL),
        [normal(N, T, D), normal(N, T, D), normal(N, T, H)],
        course_attention(CAUSAL),
    ),
}


def build(name, dtype=np.float64):
    make, arrays, _ = CASES[name]
    g = gn.Graph(dtype=dtype)
    nodes = [g.input(f"in{i}", shape=a.shape) for i, a in enumerate(arrays)]
    out = make(g, *nodes)
    return g, out, {f"in{i}": a.astype(dtype) for i, a in enumerate(arrays)}


@pytest.mark.parametrize("name", CASES)
def test_value_against_the_course_function_and_gradient_against_numerical(name):
    _, arrays, reference = CASES[name]
    g, out, feeds = build(name)
    value = g.run(out, feeds)
    np.testing.assert_allclose(value, reference(*arrays), rtol=1e-12, atol=1e-12)
    assert out.static_shape == np.shape(value)
    errors = gn.gradcheck(g, feeds)
    assert set(errors) == set(feeds) and max(errors.values()) < 1e-7, errors


COURSE_BACKWARD = {
    "rnn": (course.rnn_forward, course.rnn_backward),
    "lstm": (course.lstm_forward, course.lstm_backward),
    "rnn_step": (course.rnn_step_forward, course.rnn_step_backward),
    "temporal_affine": (course.temporal_affine_forward, course.temporal_affine_backward),
    "attention": (course.attention_forward, course.attention_backward),
}


@pytest.mark.parametrize("name", COURSE_BACKWARD)
def test_gradients_are_the_course_backward_functions(name):
    g, out, feeds = build(name)
    value = g.run(out, feeds)
    upstream = normal(*np.shape(value))
    g.backward(out, grad=upstream)
    forward, backward = COURSE_BACKWARD[name]
    expected = backward(upstream, forward(*feeds.values())[1])
    for key, grad in zip(feeds, expected):
        np.testing.assert_allclose(g[key].grad, grad, rtol=1e-12, atol=1e-12)


def test_lstm_step_and_the_loss_gradients_are_the_course_ones():
    g, out, feeds = build("lstm_step")
    g.run(out, feeds)
    dnext_h, dnext_c = normal(N, H), normal(N, H)
    g.backward(out, grad=np.stack([dnext_h, dnext_c]))
    _, _, cache = course.lstm_step_forward(*feeds.values())
    for key, grad in zip(feeds, course.lstm_step_backward(dnext_h, dnext_c, cache)):
        np.testing.assert_allclose(g[key].grad, grad, rtol=1e-12, atol=1e-12)

    g, out, feeds = build("temporal_softmax_loss")
    g.run(out, feeds)
    g.backward()
    _, dx = course.temporal_softmax_loss(feeds["in0"], WORDS, MASK)
    np.testing.assert_allclose(g["in0"].grad, dx, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", CASES)
def test_float32_keeps_float32_and_agrees_with_float64(name):
    g64, out64, feeds = build(name)
    g32, out32, feeds32 = build(name, np.float32)
    expected, value = g64.run(out64, feeds), g32.run(out32, feeds32)
    assert np.asarray(out32.value).dtype == np.float32
    np.testing.assert_allclose(value, expected, rtol=2e-5, atol=2e-5)
    upstream = normal(*np.shape(expected))
    g64.backward(out64, grad=upstream)
    g32.backward(out32, grad=upstream)
    for key in feeds:
        assert g32[key].grad.dtype == np.float32, key
        np.testing.assert_allclose(g32[key].grad, g64[key].grad, rtol=1e-4, atol=1e-4)


def unrolled(cell, x, h0, Wx, Wh, b):
    """The same recurrence as one step gate per time step; returns the graph, the node
    whose value is every hidden state (N, T, H) and the step nodes."""
    g = gn.Graph()
    xs, h, Wxn, Whn, bn = (
        g.param(n, a) for n, a in zip(("x", "h0", "Wx", "Wh", "b"), (x, h0, Wx, Wh, b))
    )
    c = g.const(np.zeros_like(h0), name="c0")
    steps, hs = [], []
    for t in range(x.shape[1]):
        if cell == "rnn":
            h = g.rnn_step(xs[:, t], h, Wxn, Whn, bn, name=f"h{t + 1}")
            steps.append(h)
        else:
            state = g.lstm_step(xs[:, t], h, c, Wxn, Whn, bn, name=f"state{t + 1}")
            h, c = state[0], state[1]
            steps.append(state)
        hs.append(g.reshape(h, (x.shape[0], 1, -1)))
    return g, g.concat(hs, axis=1, name="h"), steps


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_hidden_state_grads_are_dL_dh_t_of_the_unrolled_steps(cell):
    _, arrays, _ = CASES[cell]
    g, out, feeds = build(cell)
    value = g.run(out, feeds)
    upstream = normal(*value.shape)
    g.backward(out, grad=upstream)
    per_step = out.gate.hidden_state_grads(out.grad, out.cache)

    steps_graph, steps_out, steps = unrolled(cell, *arrays)
    np.testing.assert_allclose(steps_graph.run(steps_out), value, rtol=1e-12, atol=1e-12)
    steps_graph.backward(steps_out, grad=upstream)
    for t, step in enumerate(steps):
        reached = step.grad if cell == "rnn" else step.grad[0]
        np.testing.assert_allclose(per_step[:, t], reached, rtol=1e-10, atol=1e-12)
    for position, key in enumerate(("x", "h0", "Wx", "Wh", "b")):
        np.testing.assert_allclose(
            steps_graph[key].grad, g[f"in{position}"].grad, rtol=1e-10, atol=1e-12
        )
    assert (
        out.gate.summarize_cache(out.cache, ["x"])[0]
        == f"saved the hidden states h_1..h_T {(N, T, H)}"
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lstm_in_eval_mode_saves_no_states_and_a_backward_after_it_still_works(dtype):
    """Eval mode keeps only the inputs: the same value, bit for bit; a backward runs the
    train-mode forward again and gives the train-mode gradients, bit for bit."""
    g, out, feeds = build("lstm", dtype)
    upstream = normal(N, T, H).astype(dtype)
    value = g.run(out, feeds)
    g.backward(out, grad=upstream)
    trained = {key: g[key].grad.copy() for key in feeds}
    reached = out.gate.hidden_state_grads(out.grad, out.cache)

    eval_value = g.eval().run(out, feeds)
    assert eval_value.tobytes() == value.tobytes() and eval_value.dtype == dtype
    assert out.gate.summarize_cache(out.cache, ["x"]) == [
        "eval mode: saved only the inputs (a backward runs the forward again)"
    ]
    g.backward(out, grad=upstream)
    for key, grad in trained.items():
        assert g[key].grad.tobytes() == grad.tobytes(), key
    np.testing.assert_array_equal(out.gate.hidden_state_grads(out.grad, out.cache), reached)
    assert g.train().run(out, feeds).tobytes() == value.tobytes()
    assert out.gate.summarize_cache(out.cache, ["x"])[0].startswith("saved the hidden states")


# ----- one graph with every sequence gate -----------------------------------------------


def every_sequence_gate_graph(dtype=np.float64):
    """A small captioner that uses each of the sequence gates."""
    rng = np.random.default_rng(16)
    g = gn.Graph(dtype=dtype)
    words, targets = g.input("words", dtype=np.int64), g.input("targets", dtype=np.int64)
    mask = g.input("mask", dtype=np.int64)
    features = g.input("features", shape=(None, H))

    def param(name, *shape):
        return g.param(name, rng.standard_normal(shape) * 0.5)

    x = g.word_embedding(words, param("W_embed", V, D), name="embed")  # (N, T, D)
    h_rnn = g.rnn(x, features, param("Wx", D, H), param("Wh", H, H), param("b", H), name="rnn")
    h_lstm = g.lstm(
        x, features, param("Wx4", D, 4 * H), param("Wh4", H, 4 * H), param("b4", 4 * H), name="lstm"
    )
    attended = g.attention(h_rnn, h_lstm, h_lstm, name="attend")
    causal = g.attention(h_lstm, h_lstm, h_rnn, mask=CAUSAL, name="causal")
    first = g.rnn_step(x[:, 0], features, g["Wx"], g["Wh"], g["b"], name="step")
    state = g.lstm_step(x[:, 0], first, features, g["Wx4"], g["Wh4"], g["b4"], name="lstm_step")
    hidden = attended + causal + g.reshape(state[0] + state[1], (-1, 1, H), name="bias")
    scores = g.temporal_affine(hidden, param("W_vocab", H, V), param("b_vocab", V), name="scores")
    g.temporal_softmax_loss(scores, targets, mask, name="loss")
    feeds = dict(
        words=WORDS, targets=WORDS[:, ::-1].copy(), mask=MASK, features=rng.standard_normal((N, H))
    )
    return g, feeds


def test_the_every_gate_graph_uses_every_sequence_gate_and_passes_gradcheck():
    g, feeds = every_sequence_gate_graph()
    assert SEQUENCE_OPS <= {n.op for n in g.nodes}
    g.forward(feeds)
    errors = gn.gradcheck(g, feeds)
    # Below 1e-6 rather than the per-gate 1e-7: a few entries of the LSTM weights'
    # gradients are ~1e-6, where centred differences keep few digits (measured 1.8e-7).
    # A wrong rule gives 1e-2.
    assert set(errors) == set(g.params) | {"features"} and max(errors.values()) < 1e-6, errors


def forward_and_grads(g, feeds):
    loss = g.forward(feeds)
    g.backward()
    return loss, {name: g[name].grad for name in [*g.params, "features"]}


@pytest.mark.parametrize("route", ["checkpoint", "networkx"])
def test_round_trips_keep_every_sequence_gate(route, tmp_path):
    g, feeds = every_sequence_gate_graph()
    assert_round_trip_keeps_the_graph(g, feeds, forward_and_grads, route, tmp_path / "sequence.npz")


def test_step_player_text_gives_each_sequence_gates_rule_and_formula():
    g, feeds = every_sequence_gate_graph()
    g.forward(feeds)
    frames = {frame.node.name: frame for frame in viz.backward_steps(g)}
    forward = {frame.node.name: frame for frame in viz.forward_steps(g)}
    seen = set()
    for node in g.nodes:
        if node.gate is None or node.op not in SEQUENCE_OPS:
            continue
        rule = fill(
            rule_of(type(node.gate)), [i.name for i in node.inputs], node.name, node.gate.attrs()
        )
        assert f"Local rule: {rule}" in frames[node.name].text, node.name
        assert f"{node.name} = " in forward[node.name].text
        seen.add(node.op)
    assert seen == SEQUENCE_OPS


@pytest.mark.skipif(not shutil.which("dot"), reason="the Graphviz 'dot' program is not installed")
def test_drawing_shows_each_sequence_gate_and_its_cache():
    import html

    g, feeds = every_sequence_gate_graph()
    g.forward(feeds)
    g.backward()
    source = html.unescape(viz.draw(g, show_cache=True, collapse=False).source)
    for node in g.nodes:
        if node.op in SEQUENCE_OPS:
            assert node.op in source
            for line in node.gate.summarize_cache(node.cache, [i.name for i in node.inputs]):
                assert line in source, (node.name, line)
    viz.draw(g).pipe(format="svg")


# ----- errors -----------------------------------------------------------------------------


def recurrent_inputs(g, D_=D, H_=H, blocks=1, N_=N):
    return (
        g.input("x", shape=(N_, T, D_)),
        g.input("h0", shape=(N, H)),
        g.param("Wx", np.zeros((D, blocks * H_))),
        g.param("Wh", np.zeros((H_, blocks * H_))),
        g.param("b", np.zeros(blocks * H_)),
    )


BAD = [
    (lambda g: g.rnn(*recurrent_inputs(g, D_=D + 1)), "Wx (3, 5) must have D rows"),
    (lambda g: g.rnn(*recurrent_inputs(g, N_=N + 1)), "x (3, 4, 3) must have N"),
    (lambda g: g.lstm(*recurrent_inputs(g)), "Wx (3, 5) must have 4H columns = 20"),
    (lambda g: g.rnn(*recurrent_inputs(g, H_=H + 1)), "Wx (3, 6) must have H columns = 5, got 6"),
    (
        lambda g: g.rnn(
            *recurrent_inputs(g)[:3],
            g.param("Wh5x6", np.zeros((H, H + 1))),
            g.param("b5", np.zeros(H)),
        ),
        "Wh (5, 6) must have shape (H, H) = (5, 5)",
    ),
    (
        lambda g: g.word_embedding(
            g.input("w", shape=(N,), dtype=np.int64), g.param("W", np.zeros((V, D)))
        ),
        "x must be word indices (N, T), got (2,)",
    ),
    (
        lambda g: g.temporal_affine(
            g.input("x", shape=(N, T, D)),
            g.param("w", np.zeros((D + 1, V))),
            g.param("b", np.zeros(V)),
        ),
        "w (4, 6) must have D rows",
    ),
    (
        lambda g: g.temporal_softmax_loss(g.input("x", shape=(N, T, V)), WORDS[:, :2], MASK),
        "y (2, 2) must have the shape (N, T) of x",
    ),
    (
        lambda g: g.attention(
            g.input("q", shape=(N, T, D)),
            g.input("k", shape=(N, 3, D + 1)),
            g.input("v", shape=(N, 3, H)),
        ),
        "k (2, 3, 4) must have the features",
    ),
    (
        lambda g: g.attention(
            g.input("q", shape=(N, T, D)),
            g.input("k", shape=(N, 3, D)),
            g.input("v", shape=(N, 3, H)),
            mask=CAUSAL,
        ),
        "mask (4, 4) does not broadcast to the scores (2, 4, 3)",
    ),
]


@pytest.mark.parametrize("make, message", BAD)
def test_bad_shapes_name_the_node_the_gate_and_the_shapes(make, message):
    g = gn.Graph()
    with pytest.raises(gn.GraphError) as err:
        make(g)
    text = str(err.value)
    assert message in text and " gate '" in text and "(inputs: " in text, text


def test_bad_words_at_run_time_name_the_node():
    g = gn.Graph()
    words = g.input("words", shape=(None, T))
    g.word_embedding(words, g.param("W", np.zeros((V, D))), name="embed")
    for bad in (V, -1, 2**40, -(2**63)):  # past the end, negative, far off both ways
        words = np.zeros((N, T), np.int64)
        words[-1, -1] = bad
        with pytest.raises(
            gn.GraphError, match=rf"node 'embed' \(gate 'word_embedding'\).*\[0, 6\).*{bad}"
        ):
            g.forward(words=words)
    g.forward(words=np.full((N, T), V - 1))  # the graph still runs after the errors
    np.testing.assert_array_equal(g["embed"].value, np.zeros((N, T, D)))
    with pytest.raises(gn.GraphError, match="takes integers"):
        g.word_embedding(g.input("floats", dtype=np.float64), g["W"])
