"""Backprop through time made visible: step_grad_norms and plot_bptt against a graph
unrolled by hand from rnn_step / lstm_step gates, viz.unroll (same values and gradients
as the whole-sequence gate), its drawing (flags on the vanishing steps, the PNG size of a
long sequence) and the step player through a short unrolled RNN."""

import numpy as np
import pytest
from PIL import Image

import graphnet as gn
from graphnet import viz

N, D, H = 2, 3, 5


def recurrent(cell, T, seed=0, scale=0.5, forget_bias=0.0):
    """A layer on a random sequence whose loss reads only the last hidden state, after a
    forward and a backward; returns (graph, layer node, input arrays)."""
    rng = np.random.default_rng(seed)
    blocks = 1 if cell == "rnn" else 4
    b = np.zeros(blocks * H)
    if cell == "lstm":
        b[H : 2 * H] = forget_bias  # the course's order i, f, o, g
    arrays = (
        rng.standard_normal((N, T, D)),
        rng.standard_normal((N, H)),
        rng.standard_normal((D, blocks * H)) * scale,
        rng.standard_normal((H, blocks * H)) * scale,
        b,
    )
    g = gn.Graph()
    x, h0 = g.input("x", shape=(N, T, D)), g.input("h0", shape=(N, H))
    layer = getattr(g, cell)(
        x, h0, *(g.param(n, a) for n, a in zip(("Wx", "Wh", "b"), arrays[2:])), name=cell
    )
    g.sum(layer[:, -1], name="loss")
    g.forward(x=arrays[0], h0=arrays[1])
    g.backward()
    return g, layer, arrays


def by_hand(cell, x, h0, Wx, Wh, b, upstream):
    """The same recurrence unrolled in a plain loop of step gates, backpropagated from
    `upstream`; returns dL/dh_t of each step, (T, N, H)."""
    g = gn.Graph()
    xs, h, Wxn, Whn, bn = (
        g.param(n, a) for n, a in zip(("x", "h0", "Wx", "Wh", "b"), (x, h0, Wx, Wh, b))
    )
    c = g.const(np.zeros_like(h0), name="c0")
    hs = []
    for t in range(x.shape[1]):
        if cell == "rnn":
            h = g.rnn_step(xs[:, t], h, Wxn, Whn, bn)
        else:
            state = g.lstm_step(xs[:, t], h, c, Wxn, Whn, bn)
            h, c = state[0], state[1]
        hs.append(h)
    loss = g.sum(g.multiply(hs[-1], g.const(upstream[:, -1])))
    for t, h_t in enumerate(hs[:-1]):  # the other steps' upstream gradients (zero here)
        loss = g.add(loss, g.sum(g.multiply(h_t, g.const(upstream[:, t]))))
    g.run(loss)
    g.backward(loss)  # the last LSTM step's cell state is a second sink
    return np.stack([h_t.grad for h_t in hs])


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_step_grad_norms_are_the_norms_of_the_steps_gradients(cell):
    _, layer, arrays = recurrent(cell, T=6)
    reached = by_hand(cell, *arrays, layer.grad)
    expected = np.linalg.norm(reached.reshape(6, -1), axis=1)
    np.testing.assert_allclose(viz.step_grad_norms(layer), expected, rtol=1e-10)
    assert viz.step_grad_norms(layer)[-1] == pytest.approx(np.sqrt(N * H))  # d sum / d h_T


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_unroll_computes_what_the_layer_does(cell):
    g, layer, arrays = recurrent(cell, T=6)
    u = viz.unroll(g)
    np.testing.assert_allclose(u[cell].value, layer.value, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(u[cell].grad, layer.grad)
    for name, position in (("x", 0), ("h0", 1), ("Wx", 2), ("Wh", 3), ("b", 4)):
        np.testing.assert_allclose(
            u[name].grad, layer.inputs[position].grad, rtol=1e-10, atol=1e-14
        )
    reached = by_hand(cell, *arrays, layer.grad)
    for t in range(6):
        np.testing.assert_allclose(u[f"t{t + 1}/h"].grad, reached[t], rtol=1e-10, atol=1e-14)
    assert u[f"t1/{'h' if cell == 'rnn' else 'lstm'}"].op == f"{cell}_step"


def test_the_rnn_vanishes_and_the_lstm_keeps_its_gradient():
    _, rnn, _ = recurrent("rnn", T=40, scale=0.4)
    _, lstm, _ = recurrent("lstm", T=40, scale=0.4, forget_bias=3.0)
    rnn_norms, lstm_norms = viz.step_grad_norms(rnn), viz.step_grad_norms(lstm)
    assert rnn_norms[0] < 1e-6 * rnn_norms[-1]
    assert lstm_norms[0] > 1e-2 * lstm_norms[-1]


def test_plot_bptt_draws_one_line_per_layer_and_writes_a_png(tmp_path):
    _, rnn, _ = recurrent("rnn", T=30, scale=0.4)
    _, lstm, _ = recurrent("lstm", T=30, scale=0.4, forget_bias=3.0)
    path = tmp_path / "bptt.png"
    fig = viz.plot_bptt({"RNN": rnn, "LSTM": lstm}, path=path)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_allclose(lines["RNN"].get_ydata(), viz.step_grad_norms(rnn))
    np.testing.assert_allclose(lines["LSTM"].get_xdata(), np.arange(1, 31))
    assert any(label.startswith("vanishing") for label in lines)  # the RNN comes near 1e-6
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (700, 400)
        assert len(image.convert("RGB").getcolors(1 << 16)) > 10
    assert [
        line.get_label() for line in viz.plot_bptt([rnn], vanishing=None).axes[0].get_lines()
    ] == ["rnn"]


def test_unroll_and_plot_bptt_refuse_what_they_cannot_use():
    g = gn.Graph()
    x = g.input("x")
    g.tanh(x, name="y")
    with pytest.raises(ValueError, match="0 rnn/lstm nodes"):
        viz.unroll(g)
    with pytest.raises(TypeError, match="rnn or lstm node, got 'tanh'"):
        viz.step_grad_norms(g["y"])
    g2 = gn.Graph()
    layer = g2.rnn(
        g2.input("x"),
        g2.input("h0"),
        *(g2.param(n, np.zeros(s)) for n, s in (("Wx", (D, H)), ("Wh", (H, H)), ("b", H))),
    )
    g2.forward(x=np.zeros((N, 3, D)), h0=np.zeros((N, H)))  # no backward
    with pytest.raises(ValueError, match="no gradient"):
        viz.unroll(layer)
    with pytest.raises(ValueError, match="at least one"):
        viz.plot_bptt([])


def test_the_unrolled_drawing_flags_the_steps_where_the_gradient_vanishes(tmp_path):
    _, rnn, _ = recurrent("rnn", T=40, scale=0.4)
    u = viz.unroll(rnn)
    drawing = viz.draw(u)
    norms = viz.step_grad_norms(rnn)
    vanished = {f"t{t + 1}/h" for t in range(40) if norms[t] < 1e-6}
    assert vanished and "t40/h" not in drawing.flags
    assert vanished <= {name for name, flag in drawing.flags.items() if flag == "vanishing"}
    assert "vanishing" in drawing.source  # the collapsed early steps say so


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_a_long_unrolled_sequence_stays_within_4000_px(cell, tmp_path):
    _, layer, _ = recurrent(cell, T=200, scale=0.4, forget_bias=3.0)
    png = viz.export(viz.draw(viz.unroll(layer)), tmp_path / "long.png")
    with Image.open(png) as image:
        assert max(image.size) <= 4000, image.size


def test_the_step_player_through_a_short_unrolled_rnn(tmp_path):
    _, rnn, _ = recurrent("rnn", T=3)
    u = viz.unroll(rnn)
    frames = viz.backward_steps(u, "rnn", grad=rnn.grad)
    steps = [f.text for f in frames]
    assert len(frames) == len([n for n in u.nodes if n.gate is not None])
    assert any(
        text.startswith("Step 4 of 9 (backward): gate t3/h = tanh((t3/x)·Wx")
        and "an RNN step" in text
        for text in steps
    )
    np.testing.assert_allclose(frames[-1].grads["t1/h"], u["t1/h"].grad)
    page = viz.export_html(frames, tmp_path / "player.html").read_text(encoding="utf-8")
    assert page.count("<svg") >= 1 and "t2/h" in page
