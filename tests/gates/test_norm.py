"""The layernorm and spatial groupnorm gates: numerical gradients in float64, the course's
array functions, PyTorch, train and eval mode alike, and every place a gate shows up
(drawing, steps, checkpoints)."""

import numpy as np
import pytest

import graphnet as gn
from graphnet import layers, viz

rng = np.random.default_rng(5)


def layernorm_graph(shape, dtype=np.float64):
    g = gn.Graph(dtype=dtype)
    x = g.input("x", shape=(None,) + shape[1:])
    D = shape[-1]
    out = g.layernorm(
        x,
        g.param("gamma", rng.uniform(0.5, 1.5, D)),
        g.param("beta", rng.standard_normal(D)),
        name="ln",
    )
    g.sum(g.multiply(out, g.const(rng.standard_normal(shape[1:]))), name="loss")
    return g


def groupnorm_graph(C, G, gamma_shape, dtype=np.float64):
    g = gn.Graph(dtype=dtype)
    x = g.input("x", shape=(None, C, 5, 4))
    out = g.spatial_groupnorm(
        x,
        g.param("gamma", rng.uniform(0.5, 1.5, gamma_shape)),
        g.param("beta", rng.standard_normal(gamma_shape)),
        G,
        name="gn",
    )
    # out feeds two gates: fan-out; random weights, so no gradient cancels to about 0
    first = g.multiply(out, g.const(rng.standard_normal((C, 5, 4))))
    second = g.multiply(out, g.const(rng.standard_normal((C, 5, 4))))
    g.sum(g.add(first, second), name="loss")
    return g


@pytest.mark.parametrize("shape", [(4, 6), (3, 5, 7)])
def test_layernorm_gradients_and_the_course_function(shape):
    g = layernorm_graph(shape)
    x = rng.standard_normal(shape) * 3 + 1
    errors = gn.gradcheck(g, x=x)
    assert set(errors) == {"x", "gamma", "beta"} and max(errors.values()) < 1e-7
    g.forward(x=x)
    want, _ = layers.layernorm_forward(
        x.reshape(-1, shape[-1]), g["gamma"].value, g["beta"].value, {}
    )
    np.testing.assert_allclose(g["ln"].value, want.reshape(shape), rtol=1e-12, atol=1e-12)
    normalized = (want - g["beta"].value) / g["gamma"].value  # the drawings' x_hat, x's shape
    np.testing.assert_allclose(g["ln"].cache[0].x_hat, normalized.reshape(shape), atol=1e-10)
    train = g["ln"].value.copy()
    g.eval().forward(x=x)
    np.testing.assert_array_equal(g["ln"].value, train)  # no batch statistics: same in eval


@pytest.mark.parametrize("C, G, gamma_shape", [(6, 3, (6,)), (4, 1, (1, 4, 1, 1)), (4, 4, (4,))])
@pytest.mark.slow
def test_groupnorm_gradients_and_the_course_function(C, G, gamma_shape):
    g = groupnorm_graph(C, G, gamma_shape)
    x = rng.standard_normal((3, C, 5, 4)) * 2 - 1
    errors = gn.gradcheck(g, x=x)
    # Normalizing subtracts means: the small entries of dx are differences of larger terms,
    # where centred differences leave ~1e-7 of noise (PyTorch agrees to ~1e-12, below).
    assert max(errors.values()) < 1e-6, errors
    assert g["gamma"].grad.shape == gamma_shape  # gradcheck leaves the gradients it checked
    g.forward(x=x)
    want, _ = layers.spatial_groupnorm_forward(x, g["gamma"].value, g["beta"].value, G, {})
    np.testing.assert_allclose(g["gn"].value, want, rtol=1e-12, atol=1e-12)


@pytest.mark.torch
@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-5), (np.float64, 1e-12)])
def test_both_against_torch(dtype, tol):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = rng.standard_normal((3, 6, 5, 4)).astype(dtype)
    dout = rng.standard_normal(x.shape).astype(dtype)
    for build, reference in (
        (
            lambda g, x, w, b: g.spatial_groupnorm(x, w, b, 3, name="out"),
            lambda x, w, b: F.group_norm(x, 3, w, b, eps=1e-5),
        ),
        (
            lambda g, x, w, b: g.layernorm(x, w, b, name="out"),
            lambda x, w, b: F.layer_norm(x, (4,), w[:4], b[:4], eps=1e-5),
        ),
    ):
        g = gn.Graph(dtype=dtype)
        w = rng.uniform(0.5, 1.5, 6).astype(dtype)
        b = rng.standard_normal(6).astype(dtype)
        is_layernorm = "layer_norm" in reference.__code__.co_names
        params = (w[:4], b[:4]) if is_layernorm else (w, b)
        build(g, g.input("x"), g.param("w", params[0]), g.param("b", params[1]))
        got = g.forward(x=x)
        g.backward("out", grad=dout)
        tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
        want = reference(tx, tw, tb)
        want.backward(torch.tensor(dout))
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=tol, atol=tol)
        np.testing.assert_allclose(g["x"].grad, tx.grad.numpy(), rtol=tol * 10, atol=tol * 10)
        n = len(params[0])
        np.testing.assert_allclose(g["w"].grad, tw.grad.numpy()[:n], rtol=tol * 10, atol=tol * 10)


def test_drawn_stepped_saved_and_loaded(tmp_path):
    g = groupnorm_graph(6, 2, (6,))
    x = rng.standard_normal((2, 6, 5, 4))
    loss = g.forward(x=x)
    g.backward()
    assert "G = 2 groups" in viz.draw(g, show_cache=True).source
    text = next(f.text for f in viz.backward_steps(g) if f.node.name == "gn")
    assert "groupnorm: like layernorm" in text
    loaded = gn.load(gn.save(g, tmp_path / "gn.npz"))
    assert loaded["gn"].gate.attrs() == {"G": 2, "eps": 1e-5}
    assert loaded.forward(x=x) == loss


def test_bad_settings_and_shapes_name_the_node():
    g = gn.Graph()
    x = g.input("x", shape=(None, 6, 4, 4))
    gamma, beta = g.param("gamma", np.ones(6)), g.param("beta", np.zeros(6))
    with pytest.raises(
        gn.GraphError, match="spatial_groupnorm gate 'a': G=4 groups do not divide the 6 channels"
    ):
        g.spatial_groupnorm(x, gamma, beta, 4, name="a")
    with pytest.raises(gn.GraphError, match="'b': G .*must be >= 1"):
        g.spatial_groupnorm(x, gamma, beta, 0, name="b")
    with pytest.raises(gn.GraphError, match="layernorm gate 'c': gamma must be \\(4,\\)"):
        g.layernorm(x, gamma, beta, name="c")
    with pytest.raises(gn.GraphError, match="layernorm gate 'd': eps must be a positive"):
        g.layernorm(g.input("y", shape=(None, 6)), gamma, beta, eps=0.0, name="d")


def norm_graph(op, dtype):
    """A graph of one norm gate (fresh running averages), with its feed."""
    shape = {
        "batchnorm": (7, 5),
        "spatial_batchnorm": (4, 6, 3, 5),
        "layernorm": (3, 4, 6),
        "spatial_groupnorm": (4, 6, 3, 5),
    }[op]
    g = gn.Graph(dtype=dtype)
    x = g.input("x", shape=(None,) + shape[1:])
    C = shape[-1] if op == "layernorm" else shape[1]
    local = np.random.default_rng(7)
    gamma = g.param("gamma", local.uniform(0.5, 1.5, C))
    beta = g.param("beta", local.standard_normal(C))
    attrs = {"G": 3} if op == "spatial_groupnorm" else {}
    out = g.apply(op, x, gamma, beta, name="norm", **attrs)
    g.sum(g.multiply(out, g.const(local.standard_normal(shape[1:]))), name="loss")
    return g, (local.standard_normal(shape) * 2 + 1).astype(dtype)


@pytest.mark.parametrize("op", ["batchnorm", "spatial_batchnorm", "layernorm", "spatial_groupnorm"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_gates_run_the_cpp_kernels_like_the_numpy_reference(op, dtype, monkeypatch):
    from graphnet.kernels import norm

    tol = 2e-5 if dtype == np.float32 else 1e-12
    results = []
    for native in (True, False):
        if not native:
            monkeypatch.setattr(norm, "native", lambda *arrays: False)
        g, x = norm_graph(op, dtype)
        seen = []
        for mode in ("train", "train", "eval"):
            getattr(g, mode)()
            g.forward(x=x)
            g.backward()
            seen += [g["norm"].value, g["x"].grad, g["gamma"].grad, g["beta"].grad]
            seen += [np.asarray(g["norm"].state[k]) for k in sorted(g["norm"].state)]
        node = g["norm"]  # the drawings summarize either kernel's cache
        assert any("x_hat" in line for line in node.gate.summarize_cache(node.cache, "xgb"))
        results.append(seen)
    for ours, reference in zip(*results):
        assert ours.dtype == reference.dtype
        np.testing.assert_allclose(ours, reference, rtol=tol, atol=tol * 10)


def test_mixed_dtypes_take_the_numpy_reference():
    g = gn.Graph(dtype=np.float32)
    x = g.input("x", shape=(None, 3))
    bn = g.batchnorm(
        x,
        g.param("gamma", np.ones(3), dtype=np.float64),
        g.param("beta", np.zeros(3), dtype=np.float64),
        name="bn",
    )
    g.sum(bn)
    g.forward(x=rng.standard_normal((4, 3)).astype(np.float32))
    g.backward()
    assert bn.value.dtype == np.float64  # promoted as numpy does
    assert g["x"].grad.shape == (4, 3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unseeded_dropout_draws_from_the_nodes_stream_in_xs_precision(dtype):
    data = rng.standard_normal((60, 50)).astype(dtype) + 3

    def run():
        np.random.seed(3)  # seeds the node's stream when it first runs
        g = gn.Graph(dtype=dtype)
        x = g.input("x")
        drop = g.dropout(x, p=0.3, name="drop")
        g.sum(g.multiply(drop, g.const(np.arange(3000.0).reshape(60, 50))))
        outs = [g.forward(x=data) for _ in range(2)]
        g.backward()
        return drop.value, x.grad, outs

    out, dx, (first, second) = run()
    assert out.dtype == dtype and dx.dtype == dtype
    assert first != second  # a new mask per call
    kept = out != 0
    assert abs(kept.mean() - 0.7) < 0.03
    scale = dtype(1 / 0.7)
    np.testing.assert_array_equal(out, data * np.where(kept, scale, dtype(0)))
    np.testing.assert_array_equal(
        dx, np.arange(3000.0).reshape(60, 50).astype(dtype) * np.where(kept, scale, dtype(0))
    )
    again = run()
    np.testing.assert_array_equal(again[0], out)  # np.random.seed makes a run repeatable


@pytest.mark.parametrize("bits", [np.random.PCG64, np.random.MT19937, np.random.Philox])
def test_unseeded_dropout_keys_are_the_streams_64_bit_integers(bits):
    """Each mask's key is int(stream.integers(2**64, dtype=np.uint64)), whatever the node's
    stream (a PCG64 one, as the gate makes, reads its raw output instead)."""
    from graphnet.kernels import _C

    data = rng.standard_normal((5, 40)).astype(np.float32)
    g = gn.Graph(dtype=np.float32)
    drop = g.dropout(g.input("x"), p=0.4, name="drop")
    g.store.state(drop.index)["rng"] = np.random.Generator(bits(11))
    reference = np.random.Generator(bits(11))
    for _ in range(3):
        g.forward(x=data)
        key = int(reference.integers(2**64, dtype=np.uint64))
        out, _ = _C.dropout_forward(data, key, 1 - 0.4)
        np.testing.assert_array_equal(drop.value, out)
