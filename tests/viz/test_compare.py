"""viz.snapshot and viz.diff: a snapshot keeps its moment, diff colours each node by the
log ratio of its gradient norms (checked against numpy), in the right direction, and
matches the nodes of two different graphs by name."""

import math

import numpy as np
import pytest

import graphnet as gn
from graphnet import viz
from graphnet.viz.scale import GREW, SHRANK, SAME


def net(batchnorm=False, seed=0):
    rng = np.random.default_rng(seed)
    g = gn.Graph()
    x = g.input("x", shape=(None, 5))
    h = g.affine(
        x, g.param("W1", rng.standard_normal((5, 6))), g.param("b1", np.zeros(6)), name="fc1"
    )
    if batchnorm:
        h = g.batchnorm(h, g.param("gamma", np.ones(6)), g.param("beta", np.zeros(6)), name="bn")
    h = g.relu(h, name="relu")
    g.softmax_loss(
        g.affine(
            h, g.param("W2", rng.standard_normal((6, 3))), g.param("b2", np.zeros(3)), name="fc2"
        ),
        np.array([0, 1, 2, 1]),
        name="loss",
    )
    g.forward(x=rng.standard_normal((4, 5)))
    g.backward()
    return g


def fill(drawing, name):
    import re

    line = next(
        row for row in drawing.source.splitlines() if re.search(rf"<B>{re.escape(name)}</B>", row)
    )
    return re.search(r'fillcolor="(#\w+)"', line).group(1)


def test_a_snapshot_keeps_its_moment():
    g = net()
    before = viz.snapshot(g, "step 0")
    w_grad = g["W1"].grad.copy()
    g.params["W1"] = g.params["W1"] * 3
    g.forward(x=np.ones((4, 5)))
    g.backward()
    assert np.array_equal(before.view.grads["W1"], w_grad)
    assert not np.array_equal(before.view.grads["W1"], g["W1"].grad)
    assert "<svg" in before.draw()._repr_mimebundle_()["image/svg+xml"]


def test_diff_colours_each_node_by_the_log_ratio_of_its_gradient_norms():
    g = net()
    before = viz.snapshot(g, "before")
    g.params["W2"] = g.params["W2"] * 10  # larger W2: larger gradients reach layer 1
    g.forward(x=np.random.default_rng(0).standard_normal((4, 5)))
    g.backward()
    drawing = viz.diff(before, g)
    for name in ("W1", "fc1", "relu", "W2", "fc2"):
        expected = math.log10(
            np.linalg.norm(g[name].grad) / np.linalg.norm(before.view.grads[name])
        )
        assert drawing.changes[name] == pytest.approx(expected, rel=1e-9)
    grew = [n for n, c in drawing.changes.items() if c > 0.3]
    shrank = [n for n, c in drawing.changes.items() if c < -0.3]
    assert "W1" in grew and shrank, drawing.changes

    def leans(colour, towards):
        rgb = [int(colour[i : i + 2], 16) for i in (1, 3, 5)]
        same = [int(SAME[i : i + 2], 16) for i in (1, 3, 5)]
        end = [int(towards[i : i + 2], 16) for i in (1, 3, 5)]
        return sum((a - b) * (c - b) for a, b, c in zip(rgb, same, end)) > 0

    for name in grew:
        assert leans(fill(drawing, name), GREW)
    for name in shrank:
        assert leans(fill(drawing, name), SHRANK)
    assert "before → after" in drawing.source and "×" in drawing.source
    assert drawing.changes["loss"] == 0.0  # the seed is 1 both times


def test_diff_of_two_graphs_matches_nodes_by_name():
    plain, normalized = net(), net(batchnorm=True)
    drawing = viz.diff(plain, normalized)
    assert "bn" not in drawing.changes and "gamma" not in drawing.changes
    assert set(drawing.changes) >= {"W1", "fc1", "relu", "W2", "fc2"}
    assert fill(drawing, "bn") == "#ffffff"
    assert "no gradient in before" in drawing.source
    with pytest.raises(TypeError, match="Graph"):
        viz.diff("a graph", plain)
