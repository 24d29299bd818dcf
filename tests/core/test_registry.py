"""A gate defined outside the package works everywhere a built-in one does: built with
Graph.apply, checked with gradcheck, drawn, stepped through, watched by anomaly mode,
converted to networkx and back, saved and loaded."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import graphnet as gn
from graphnet import viz


@gn.register_gate
class Cube(gn.Gate):
    """f = x³."""

    op = "cube"
    inputs = ("x",)
    formula = "{0}³"
    rule = "a cube gate scales the upstream gradient by 3·{0}²"
    derivatives = ("3·{0}²",)

    def shape(self, x):
        return x

    def forward(self, x):
        return x**3, x

    def backward(self, dout, cache, needs):
        return (3 * cache**2 * dout,)

    def summarize_cache(self, cache, input_names):
        return [f"saved {input_names[0]} for 3·{input_names[0]}²"]


@gn.register_gate
class ScaledSoftplus(gn.Gate):
    """f = ln(1 + e^(beta x)) / beta, with a hyperparameter."""

    op = "scaled_softplus"
    inputs = ("x",)

    def __init__(self, beta=1.0):
        if not beta > 0:
            raise gn.GateError(f"beta must be positive, got {beta!r}")
        self.beta = float(beta)

    def attrs(self):
        return {"beta": self.beta}

    def shape(self, x):
        return x

    def forward(self, x):
        return np.logaddexp(0, self.beta * x) / self.beta, x

    def backward(self, dout, cache, needs):
        return (dout / (1 + np.exp(-self.beta * cache)),)


def circuit():
    g = gn.Graph()
    x, w = g.input("x"), g.param("w", np.array([0.5, -1.5, 2.0]))
    c = g.apply("cube", g.multiply(x, w, name="xw"), name="c")
    s = g.apply("scaled_softplus", c, beta=2.0, name="s")
    g.sum(g.add(s, c, name="fan"), name="loss")  # c feeds two gates: fan-out
    return g


FEED = {"x": np.array([0.3, -0.7, 1.1])}


def test_the_gates_are_registered():
    assert {"cube", "scaled_softplus"} <= set(gn.gate_names())
    assert gn.gate_names() == sorted(gn.gate_names())


def test_forward_and_backward_match_the_formulas():
    g = circuit()
    x, w = FEED["x"], g["w"].value
    c = (x * w) ** 3
    s = np.logaddexp(0, 2 * c) / 2
    assert g.forward(FEED) == pytest.approx(np.sum(s + c))
    g.backward()
    dc = 1 / (1 + np.exp(-2 * c)) + 1
    np.testing.assert_allclose(g["w"].grad, dc * 3 * (x * w) ** 2 * x, rtol=1e-12)
    assert gn.gradcheck(g, FEED)["w"] < 1e-8


def test_hyperparameters_are_checked_by_the_gate():
    g = gn.Graph()
    with pytest.raises(gn.GraphError, match="scaled_softplus gate 's': beta must be positive"):
        g.apply("scaled_softplus", g.input("x"), beta=-1.0, name="s")
    with pytest.raises(gn.GraphError, match="unexpected keyword argument 'gamma'"):
        g.apply("scaled_softplus", g.input("y"), gamma=1.0)
    with pytest.raises(gn.GraphError, match="cube gate 'k' takes 1 input"):
        g.apply("cube", g["x"], g["y"], name="k")
    assert "s" not in g and "k" not in g  # nothing half-built is left behind


def test_drawing_steps_and_anomaly_mode():
    g = circuit()
    g.forward(FEED)
    g.backward()
    source = viz.draw(g, show_cache=True).source
    assert "cube" in source and "saved xw for 3·xw²" in source
    frames = viz.backward_steps(g)
    cube_text = next(f.text for f in frames if f.node.name == "c")
    assert "c = xw³" in cube_text
    assert "a cube gate scales the upstream gradient by 3·xw²" in cube_text
    softplus = next(f.text for f in frames if f.node.name == "s")
    assert "Fan-out: c already had" in softplus  # from 'fan', whose step came first
    assert "f = ln(1 + e^(beta x)) / beta" in softplus  # a gate without a rule: its docstring
    forward = [f.text for f in viz.forward_steps(g)]
    assert any("c = xw³" in text for text in forward)
    with (
        gn.detect_anomaly(),
        np.errstate(over="ignore"),
        pytest.raises(gn.AnomalyError, match="node 'c' \\(gate 'cube'"),
    ):
        g.forward(x=np.array([1e200, 0.0, 0.0]))


def test_networkx_round_trip():
    g = circuit()
    g.forward(FEED)
    rebuilt = gn.Graph.from_networkx(g.to_networkx())
    assert rebuilt["s"].gate.attrs() == {"beta": 2.0}
    assert rebuilt.forward(FEED) == g.forward(FEED)


def test_save_and_load_where_the_gate_is_registered(tmp_path):
    g = circuit()
    path = gn.save(g, tmp_path / "custom.npz")
    loaded = gn.load(path)
    assert [n.op for n in loaded.nodes] == [n.op for n in g.nodes]
    assert loaded.forward(FEED) == g.forward(FEED)


@pytest.mark.slow
def test_loading_where_the_gate_is_not_registered_names_it(tmp_path):
    path = gn.save(circuit(), tmp_path / "custom.npz")
    script = textwrap.dedent(f"""
        import json, graphnet as gn
        try:
            gn.load({str(path)!r})
        except gn.CheckpointError as err:
            print(json.dumps(str(err)))
    """)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    message = json.loads(out)
    assert "'cube'" in message and "not registered" in message and "register_gate" in message


def test_registration_rules():
    with pytest.raises(gn.GraphError, match="already registered by"):

        @gn.register_gate
        class AnotherCube(Cube):
            pass

    with pytest.raises(gn.GraphError, match="op must be a Python identifier"):

        @gn.register_gate
        class Input(Cube):
            op = "input"

    with pytest.raises(gn.GraphError, match="does not define backward"):

        @gn.register_gate
        class NoBackward(gn.Gate):
            op = "no_backward"

            def forward(self, x):
                return x, None

    with pytest.raises(TypeError, match="subclass of graphnet.Gate"):
        gn.register_gate(object)
    # a notebook cell run twice registers the same class again: allowed
    assert gn.register_gate(Cube) is Cube
    with pytest.raises(gn.GraphError, match="unknown gate 'forward'"):
        gn.Graph().apply("forward")
