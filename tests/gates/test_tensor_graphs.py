"""Graphs built from the tensor gates: a layer norm and a scaled dot-product attention head
against numpy (and PyTorch); a graph using every new gate through checkpoints, networkx,
the drawing and the step player."""

import math
import shutil

import numpy as np
import pytest

import graphnet as gn
from graphnet import viz
from graphnet.gates.base import fill, rule_of

from .round_trips import assert_round_trip_keeps_the_graph

rng = np.random.default_rng(1616)

TENSOR_OPS = {
    "matmul",
    "reshape",
    "flatten",
    "transpose",
    "concat",
    "slice",
    "take",
    "mean",
    "negate",
    "pow",
    "sqrt",
    "abs",
    "min",
    "clip",
    "where",
    "leaky_relu",
    "gelu",
    "softplus",
    "log_softmax",
    "avg_pool",
    "cross_entropy",
}


def layer_norm(g, x, gamma, beta, eps=1e-5):
    """Normalise each row of x over its last axis, then scale and shift: seven gates."""
    centred = x - g.mean(x, axis=-1, keepdims=True)
    variance = g.mean(centred**2, axis=-1, keepdims=True)
    return centred / g.sqrt(variance + eps) * gamma + beta


def attention_head(g, x, wq, wk, wv, causal):
    """softmax(q kᵀ / √d) v with q, k, v = x wq, x wk, x wv; x (N, T, D)."""
    q, k, v = x @ wq, x @ wk, x @ wv
    scores = q @ g.transpose(k, (0, 2, 1)) / math.sqrt(wq.shape[1])
    if causal:
        steps = x.shape[1]
        scores = g.where(np.tril(np.ones((steps, steps), dtype=bool)), scores, -np.inf)
    return g.softmax(scores) @ v


def numpy_layer_norm(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(x.var(axis=-1, keepdims=True) + eps) * gamma + beta


def numpy_attention(x, wq, wk, wv, causal):
    q, k, v = x @ wq, x @ wk, x @ wv
    scores = np.einsum("ntd,nsd->nts", q, k) / np.sqrt(wq.shape[1])
    if causal:
        scores = np.where(np.tri(x.shape[1], dtype=bool), scores, -np.inf)
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    return np.einsum("nts,nsd->ntd", weights, v)


def layer_norm_graph():
    g = gn.Graph()
    x = g.input("x", shape=(None, 3, 6))
    out = layer_norm(
        g, x, g.param("gamma", rng.uniform(0.5, 2, 6)), g.param("beta", rng.standard_normal(6))
    )
    return g, out, rng.standard_normal((2, 3, 6)) * 3 + 1


def attention_graph(causal):
    g = gn.Graph()
    x = g.input("x", shape=(None, 4, 5))
    weights = [g.param(name, rng.standard_normal((5, 3))) for name in ("wq", "wk", "wv")]
    return g, attention_head(g, x, *weights, causal), rng.standard_normal((2, 4, 5))


def test_layer_norm_from_gates():
    g, out, x = layer_norm_graph()
    value = g.run(out, x=x)
    np.testing.assert_allclose(
        value, numpy_layer_norm(x, g["gamma"].value, g["beta"].value), rtol=1e-12, atol=1e-12
    )
    errors = gn.gradcheck(g, x=x)
    assert set(errors) == {"x", "gamma", "beta"} and max(errors.values()) < 1e-7, errors


@pytest.mark.parametrize("causal", [False, True])
def test_attention_head_from_gates(causal):
    g, out, x = attention_graph(causal)
    value = g.run(out, x=x)
    params = [g[name].value for name in ("wq", "wk", "wv")]
    np.testing.assert_allclose(value, numpy_attention(x, *params, causal), rtol=1e-12, atol=1e-12)
    errors = gn.gradcheck(g, x=x)
    assert set(errors) == {"x", "wq", "wk", "wv"} and max(errors.values()) < 1e-7, errors


@pytest.mark.torch
def test_layer_norm_and_attention_against_torch():
    torch = pytest.importorskip("torch")
    g, out, x = layer_norm_graph()
    upstream = rng.standard_normal((2, 3, 6))
    g.run(out, x=x)
    g.backward(out, grad=upstream)
    tx, gamma, beta = (
        torch.tensor(a, requires_grad=True) for a in (x, g["gamma"].value, g["beta"].value)
    )
    expected = torch.nn.functional.layer_norm(tx, (6,), gamma, beta, eps=1e-5)
    expected.backward(torch.tensor(upstream))
    np.testing.assert_allclose(out.value, expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    for node, tensor in zip((g["x"], g["gamma"], g["beta"]), (tx, gamma, beta)):
        np.testing.assert_allclose(node.grad, tensor.grad.numpy(), rtol=1e-9, atol=1e-12)

    g, out, x = attention_graph(causal=True)
    g.run(out, x=x)
    upstream = rng.standard_normal((2, 4, 3))
    g.backward(out, grad=upstream)
    tx = torch.tensor(x, requires_grad=True)
    tw = [torch.tensor(g[name].value, requires_grad=True) for name in ("wq", "wk", "wv")]
    expected = torch.nn.functional.scaled_dot_product_attention(
        tx @ tw[0], tx @ tw[1], tx @ tw[2], is_causal=True
    )
    expected.backward(torch.tensor(upstream))
    np.testing.assert_allclose(out.value, expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    for name, tensor in zip(("x", "wq", "wk", "wv"), [tx] + tw):
        np.testing.assert_allclose(g[name].grad, tensor.grad.numpy(), rtol=1e-9, atol=1e-12)


def every_gate_graph():
    """A small classifier that uses each of the tensor gates at least once."""
    rng = np.random.default_rng(16)  # its own: the same graph and feeds in every test
    g = gn.Graph()
    x = g.input("x", shape=(None, 2, 4, 4))
    ids, labels = g.input("ids", dtype=np.int64), g.input("labels", dtype=np.int64)
    words = g.param("words", rng.standard_normal((6, 8)))
    pooled = g.flatten(g.avg_pool(x, name="pool"), name="flat")  # (N, 8)
    features = g.concat([pooled, g.take(words, ids, name="embed")], axis=1, name="cat")
    grid = g.transpose(g.reshape(features, (-1, 4, 4), name="grid"), (0, 2, 1), name="tr")
    mixed = g.matmul(grid, g.param("M", rng.standard_normal((4, 3))), name="mm")  # (N, 4, 3)
    rows = g.mean(mixed[:, 1:3], axis=1, name="rows")  # (N, 3)
    smooth = g.concat(
        [
            g.gelu(rows, name="gelu"),
            g.softplus(rows, name="softplus"),
            g.leaky_relu(rows, 0.1, name="leaky"),
        ],
        axis=1,
        name="acts",
    )  # (N, 9)
    bounded = g.clip(g.min(smooth, abs(-smooth) ** 1.5, name="min"), -2, 2, name="clip")
    kept = g.where(np.arange(9) % 4 != 0, bounded, g.sqrt(g.abs(smooth) + 1.0), name="where")
    scores = g.concat([kept[:, :3], g.global_avg_pool(x, name="gap")], axis=1, name="scores")
    g.add(
        g.cross_entropy(scores, labels, ignore_index=-1, name="loss"),
        g.mean(g.log_softmax(kept, name="logp")),
        name="total",
    )
    feeds = dict(
        x=rng.standard_normal((3, 2, 4, 4)), ids=np.array([5, 0, 5]), labels=np.array([4, -1, 1])
    )
    return g, feeds


def test_the_every_gate_graph_uses_every_tensor_gate_and_passes_gradcheck():
    g, feeds = every_gate_graph()
    assert TENSOR_OPS <= {n.op for n in g.nodes}
    g.forward(feeds)
    errors = gn.gradcheck(g, feeds)
    # Below the per-gate tests' 1e-7: a few gradient entries here are ~1e-5, where the
    # centred differences of a loss of ~1 keep only six digits. A wrong rule gives 1e-2.
    assert set(errors) == {"x", "words", "M"} and max(errors.values()) < 1e-6, errors


def forward_and_grads(g, feeds):
    loss = g.forward(feeds)
    g.backward()
    return loss, {name: g[name].grad for name in ("x", "words", "M")}


@pytest.mark.parametrize("route", ["checkpoint", "networkx"])
def test_round_trips_keep_every_gate_and_its_hyperparameters(route, tmp_path):
    g, feeds = every_gate_graph()
    assert_round_trip_keeps_the_graph(g, feeds, forward_and_grads, route, tmp_path / "tensor.npz")


def test_step_player_text_gives_each_gates_rule_and_formula():
    g, feeds = every_gate_graph()
    g.forward(feeds)
    frames = {frame.node.name: frame for frame in viz.backward_steps(g)}
    forward = {frame.node.name: frame for frame in viz.forward_steps(g)}
    seen = set()
    for node in g.nodes:
        if node.gate is None or node.op not in TENSOR_OPS or node.name not in frames:
            continue
        names = [i.name for i in node.inputs]
        rule = fill(rule_of(type(node.gate)), names, node.name, node.gate.attrs())
        assert f"Local rule: {rule}" in frames[node.name].text, node.name
        assert f"gate {node.name} = " in frames[node.name].text
        assert f"{node.name} = " in forward[node.name].text
        seen.add(node.op)
    assert seen == TENSOR_OPS


@pytest.mark.skipif(not shutil.which("dot"), reason="the Graphviz 'dot' program is not installed")
def test_drawing_shows_each_gate_its_hyperparameters_and_its_cache():
    import html

    g, feeds = every_gate_graph()
    g.forward(feeds)
    g.backward()
    source = html.unescape(viz.draw(g, show_cache=True, collapse=False).source)
    for node in g.nodes:
        if node.op in TENSOR_OPS:
            assert node.op in source
            for line in node.gate.summarize_cache(node.cache, [i.name for i in node.inputs]):
                assert line in source, (node.name, line)
    assert "slice (key=:, 1:3)" in source and "transpose (axes=(0, 2, 1))" in source
    viz.draw(g).pipe(format="svg")  # and Graphviz renders it
