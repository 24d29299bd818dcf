"""Step-by-step frames: one per scheduler step, the chain rule spelled out, the fan-out
sums, the last frame equal to backward(), and the HTML / GIF / PNG exports."""

import json
import re
import shutil

import numpy as np
import pytest

import graphnet as gn
from graphnet._format import num
from graphnet import viz
from graphnet.viz.scale import ACTIVE_FILL

needs_dot = pytest.mark.skipif(
    not shutil.which("dot"), reason="the Graphviz 'dot' program is not installed"
)


def circuit():
    g = gn.Graph()
    x, y, z = g.input("x"), g.input("y"), g.input("z")
    g.multiply(g.add(x, y, name="q"), z, name="f")
    g.forward(x=-2.0, y=5.0, z=-4.0)
    return g


def fan_out():
    """x feeds two gates: its gradient is the sum of what both send back."""
    g = gn.Graph()
    x, y = g.input("x"), g.input("y")
    m = g.max(g.multiply(x, y, name="xy"), x, name="m")
    g.add(m, x, name="f")
    g.forward(x=3.0, y=2.0)
    return g


def mlp():
    rng = np.random.default_rng(0)
    g = gn.Graph()
    x = g.input("x", shape=(None, 5))
    h = g.relu(
        g.affine(
            x, g.param("W1", rng.standard_normal((5, 6))), g.param("b1", np.zeros(6)), name="fc1"
        ),
        name="relu",
    )
    h = g.batchnorm(h, g.param("gamma", np.ones(6)), g.param("beta", np.zeros(6)), name="bn")
    scores = g.affine(
        h, g.param("W2", rng.standard_normal((6, 3))), g.param("b2", np.zeros(3)), name="fc2"
    )
    g.softmax_loss(scores, np.array([0, 2, 1, 1]), name="loss")
    g.forward(x=rng.standard_normal((4, 5)))
    return g


def backward_grads(g):
    g.backward()
    return {n.name: n.grad for n in g.nodes if n.grad is not None}


@pytest.mark.parametrize("make", [circuit, fan_out, mlp])
def test_one_frame_per_scheduler_step_and_the_last_equals_backward(make):
    g = make()
    frames = viz.backward_steps(g)
    steps = g.plan(g.sinks[0], "backward").steps
    assert len(frames) == len(steps)
    assert [f.node for f in frames] == [step.node for step in steps]
    assert [f.step for f in frames] == list(range(1, len(steps) + 1))
    assert all(n.grad is None for n in g.nodes)  # stepping leaves the graph untouched
    expected = backward_grads(g)
    assert frames[-1].grads.keys() == expected.keys()
    for name, grad in expected.items():
        np.testing.assert_allclose(frames[-1].grads[name], grad, rtol=1e-12, atol=0)


def test_the_circuit_frames_spell_out_the_chain_rule():
    first, second = viz.backward_steps(circuit())
    assert first.node.name == "f" and second.node.name == "q"
    assert "upstream gradient df/df = 1" in first.text.lower()
    assert "multiply gate swaps" in first.text
    assert "df/dq = df/df × z = 1 × (-4) = -4" in first.text
    assert "df/dz = df/df × q = 1 × 3 = 3" in first.text
    assert "add gate distributes" in second.text
    assert "df/dx = df/dq × 1 = (-4) × 1 = -4" in second.text
    assert first.received == {"q": -4.0, "z": 3.0}
    assert first.grads == {"f": 1.0, "q": -4.0, "z": 3.0}
    assert second.edge_grads == {("f", 0): -4.0, ("f", 1): 3.0, ("q", 0): -4.0, ("q", 1): -4.0}


def test_fan_out_frames_show_previous_plus_new_equals_total():
    frames = viz.backward_steps(fan_out())
    texts = {f.node.name: f.text for f in frames}
    assert "max gate routes" in texts["m"]
    # f = max(x*y, x) + x at x=3, y=2: the max routes 1 to xy; x gets 1 from f directly,
    # 0 from the max, then y = 2 through the multiply.
    assert "Fan-out: x already had 1, so it now has 1 + 0 = 1" in texts["m"]
    assert "Fan-out: x already had 1, so it now has 1 + 2 = 3" in texts["xy"]
    assert frames[-1].grads["x"] == 3.0
    g = gn.Graph()
    x = g.input("x")
    g.multiply(x, x, name="square")  # one gate, two edges from the same input
    g.forward(x=3.0)
    (frame,) = viz.backward_steps(g)
    assert "Fan-out: x already had 3, so it now has 3 + 3 = 6" in frame.text
    assert frame.grads["x"] == 6.0 and frame.edge_grads == {("square", 0): 3.0, ("square", 1): 3.0}


def test_tensor_frames_describe_shapes_and_norms_and_name_the_rule():
    frames = viz.backward_steps(mlp())
    texts = {f.node.name: f.text for f in frames}
    assert "softmax loss" in texts["loss"] and "labels get no gradient" in texts["loss"]
    assert "affine: dbn = dout·W2ᵀ, dW2 = bnᵀ·dout" in texts["fc2"]
    assert "batchnorm" in texts["bn"] and "relu gate passes" in texts["relu"]
    norm = np.linalg.norm(frames[-1].grads["W1"])
    assert re.search(r"dloss/dW1: shape \(5, 6\), .*L2 " + re.escape(num(norm)), texts["fc1"])


def test_backward_steps_from_a_node_with_a_seed_and_the_errors():
    g = circuit()
    frames = viz.backward_steps(g, node="q", grad=2.0)
    g.backward("q", grad=2.0)  # nodes q does not depend on get zeros
    assert len(frames) == 1 and frames[0].grads == {
        "q": 2.0,
        "x": 2.0,
        "y": 2.0,
        "z": 0.0,
        "f": 0.0,
    }
    assert frames[0].grads == {n.name: n.grad for n in g.nodes}
    with pytest.raises(gn.GraphError, match="call forward"):
        g2 = gn.Graph()
        g2.tanh(g2.input("x"))
        viz.backward_steps(g2)


def test_forward_frames_fill_values_in_topologically():
    g = circuit()
    frames = viz.forward_steps(g)
    assert [f.node.name for f in frames] == ["q", "f"]
    assert frames[0].values == {"x": -2.0, "y": 5.0, "z": -4.0, "q": 3.0}
    assert frames[1].values["f"] == -12.0
    assert "f = q × z" in frames[1].text and "= 3 × (-4) = -12" in frames[1].text
    assert "forward pass done" in frames[-1].text


def test_frame_drawings_highlight_the_active_node_and_fill_gradients_in():
    first, second = viz.backward_steps(circuit())
    source = first.draw().source
    active = re.search(r"^\s*n_f \[.*$", source, re.M).group(0)
    assert f'fillcolor="{ACTIVE_FILL}"' in active
    assert source.count(ACTIVE_FILL) == 2  # the active gate, and its line in the legend
    assert "grad ?" in source  # x and y have no gradient yet
    assert re.search(r"n_q -> n_f \[.*style=bold", source)
    assert not re.search(r"n_x -> n_q \[.*style=bold", source)
    assert "grad ?" not in second.draw().source
    assert "Step 1 of 2" in source  # the frame's text is the drawing's title
    assert "<B>grad" not in viz.forward_steps(circuit())[0].draw(legend=False).source

    def width(frame, edge):
        return re.search(edge + r" \[.*penwidth=([\d.]+)", frame.draw().source).group(1)

    # every frame of a walk draws on the last frame's scale: widths do not jump
    assert width(first, "n_z -> n_f") == width(second, "n_z -> n_f")


@needs_dot
def test_html_player_is_self_contained(tmp_path):
    frames = viz.backward_steps(mlp())
    page = viz.export_html(frames, tmp_path / "steps.html").read_text()
    assert page.count("<svg") == 1  # one drawing, laid out once; the frames restyle it
    data = json.loads(re.search(r'id="graphnet-data">(.*?)</script>', page, re.S).group(1))
    assert len(data["frames"]) == len(data["texts"]) == len(frames)
    assert data["texts"] == [f.text for f in frames]
    for control in ('id="prev"', 'id="next"', 'id="play"', 'id="counter"', "ArrowRight"):
        assert control in page
    # Nothing is fetched: no external script, style, image or link. XML namespace
    # declarations (xmlns="http://www.w3.org/2000/svg") are names, never fetched.
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert not re.search(r"<(script|link|img|iframe)[^>]*\s(src|href)=", page)
    assert "@import" not in page and "url(" not in page
    readable = page.replace(json.dumps(data).replace("</", "<\\/"), data["svg"])
    without_namespaces = re.sub(r'xmlns(:\w+)?="[^"]*"', "", readable)
    assert "http://" not in without_namespaces and "https://" not in without_namespaces


@pytest.mark.slow
@needs_dot
def test_gif_and_png_sequences(tmp_path):
    from PIL import Image

    frames = viz.backward_steps(circuit()) + viz.forward_steps(circuit())
    gif = viz.export_gif(frames, tmp_path / "steps.gif", seconds=0.5)
    with Image.open(gif) as image:
        assert image.format == "GIF" and image.n_frames == len(frames)
    paths = viz.export_pngs(frames, tmp_path / "pngs")
    assert [p.name for p in paths] == [f"step_{i:03d}.png" for i in range(1, len(frames) + 1)]
    for path in paths:
        with Image.open(path) as image:
            image.verify()
