"""The network gates (conv, max pool, batchnorm, spatial batchnorm, dropout) in a graph:
numerical gradients in float64, the course's layer functions, train/eval mode."""

import re

import numpy as np
import pytest

import graphnet as gn
from graphnet import layers
from graphnet.gates.norm import Dropout
from graphnet.kernels import layers as kernel_layers

rng = np.random.default_rng(7)


def conv_graph(dtype=np.float64, stride=1, pad=0, data_grad=True):
    g = gn.Graph(dtype=dtype)
    x = g.input("x", shape=(None, 2, 7, 6), requires_grad=data_grad)
    w = g.param("w", rng.standard_normal((3, 2, 3, 3)))
    b = g.param("b", rng.standard_normal(3))
    out = g.conv(x, w, b, stride=stride, pad=pad, name="conv")
    return g, out


@pytest.mark.slow
@pytest.mark.parametrize("stride,pad", [(1, 0), (1, 1), (2, 1), (2, 0), (3, 2)])
def test_conv_gate_gradients_and_shape(stride, pad):
    g, out = conv_graph(stride=stride, pad=pad)
    x = rng.standard_normal((2, 2, 7, 6))
    value = g.run(out, x=x)
    expected, _ = layers.conv_forward_naive(
        x, g["w"].value, g["b"].value, {"stride": stride, "pad": pad}
    )
    np.testing.assert_allclose(value, expected, rtol=1e-10, atol=1e-12)
    assert out.static_shape[1:] == expected.shape[1:] and out.static_shape[0] is None
    g.sum(g.multiply(out, g.const(rng.standard_normal(expected.shape))))
    errors = gn.gradcheck(g, x=x)
    assert set(errors) == {"x", "w", "b"} and max(errors.values()) < 1e-7, errors


def test_conv_skips_the_data_gradient_when_nobody_needs_it():
    g, out = conv_graph(data_grad=False)
    g.sum(out)
    g.forward(x=rng.standard_normal((2, 2, 7, 6)))
    g.backward()
    assert g["x"].grad is None and g["w"].grad.shape == (3, 2, 3, 3)
    assert max(gn.gradcheck(g, x=rng.standard_normal((2, 2, 7, 6))).values()) < 1e-7


@pytest.mark.slow
def test_max_pool_gate_gradients_with_overlapping_windows():
    g = gn.Graph()
    x = g.input("x", shape=(2, 3, 7, 7))
    pooled = g.max_pool(x, pool_height=3, pool_width=2, stride=2, name="pool")
    assert pooled.static_shape == (2, 3, 3, 3)
    # Positive weights: an input winning two overlapping windows gets their sum, which
    # weights of both signs could cancel to a gradient so small that the centred
    # differences' rounding (about eps * |sum| / h) is 1e-7 of it. Its own generator makes
    # the test the same alone or after others.
    draw = np.random.default_rng(11)
    g.sum(g.multiply(pooled, g.const(draw.uniform(0.5, 1.5, (2, 3, 3, 3)))))
    data = (draw.permutation(2 * 3 * 7 * 7).reshape(2, 3, 7, 7) - 147) / 10.0  # no ties
    assert gn.gradcheck(g, x=data)["x"] < 1e-7
    expected, _ = layers.max_pool_forward_naive(
        data, {"pool_height": 3, "pool_width": 2, "stride": 2}
    )
    np.testing.assert_array_equal(pooled.value, expected)


def test_max_pool_tie_goes_to_the_first_maximum():
    g = gn.Graph()
    x = g.input("x")
    g.max_pool(x, 2, 2, 2)
    g.forward(x=np.ones((1, 1, 2, 2)))
    g.backward(grad=np.ones((1, 1, 1, 1)))
    np.testing.assert_array_equal(x.grad[0, 0], [[1, 0], [0, 0]])


@pytest.mark.parametrize("spatial", [False, True])
def test_batchnorm_gate_train_and_eval(spatial):
    shape = (6, 3, 2, 2) if spatial else (6, 3)
    g = gn.Graph()
    x = g.input("x", shape=(None,) + shape[1:])
    gamma, beta = g.param("gamma", rng.uniform(0.5, 2, 3)), g.param("beta", rng.standard_normal(3))
    builder = "spatial_batchnorm" if spatial else "batchnorm"
    bn = getattr(g, builder)(x, gamma, beta, momentum=0.8, name="bn")
    g.sum(g.multiply(bn, g.const(rng.standard_normal(shape))))
    batches = [rng.standard_normal(shape) * 3 + 1 for _ in range(3)]
    errors = gn.gradcheck(g, x=batches[0])
    assert max(errors.values()) < 1e-7, errors

    g2 = gn.Graph()
    x2 = g2.input("x")
    bn2 = getattr(g2, builder)(
        x2, g2.param("gamma", np.ones(3)), g2.param("beta", np.zeros(3)), momentum=0.8
    )
    mean, var = np.zeros(3), np.zeros(3)
    axes = (0, 2, 3) if spatial else (0,)
    for batch in batches:
        out = g2.run(bn2, x=batch)
        mean = 0.8 * mean + 0.2 * batch.mean(axis=axes)
        var = 0.8 * var + 0.2 * batch.var(axis=axes)
        np.testing.assert_allclose(out.mean(axis=axes), 0, atol=1e-10)
    np.testing.assert_allclose(bn2.state["running_mean"], mean, rtol=1e-12)
    np.testing.assert_allclose(bn2.state["running_var"], var, rtol=1e-12)
    g2.eval()
    out = g2.run(bn2, x=batches[0])
    bshape = (1, 3, 1, 1) if spatial else (1, 3)
    expected = (batches[0] - mean.reshape(bshape)) / np.sqrt(var.reshape(bshape) + 1e-5)
    np.testing.assert_allclose(out, expected, rtol=1e-10)
    np.testing.assert_allclose(bn2.state["running_mean"], mean, rtol=1e-12)  # untouched in eval


def test_batchnorm_gradient_in_eval_mode():
    g = gn.Graph()
    x = g.input("x", shape=(None, 4))
    bn = g.batchnorm(x, g.param("gamma", rng.uniform(0.5, 2, 4)), g.param("beta", np.zeros(4)))
    g.sum(g.multiply(g.tanh(bn), g.const(rng.standard_normal((5, 4)))))
    for _ in range(20):  # running statistics close to the data's
        g.run(bn, x=rng.standard_normal((5, 4)))
    g.eval()
    errors = gn.gradcheck(g, x=rng.standard_normal((5, 4)))
    assert max(errors.values()) < 1e-7, errors


def test_batchnorm_shape_errors_name_the_gate():
    g = gn.Graph()
    x = g.input("x", shape=(None, 4))
    with pytest.raises(gn.GraphError, match=r"batchnorm gate 'bn'.*gamma must be \(4,\)"):
        g.batchnorm(x, g.param("gamma", np.ones(3)), g.param("beta", np.ones(4)), name="bn")


def test_dropout_gate_modes_and_seeds():
    g = gn.Graph()
    x = g.input("x")
    drop = g.dropout(x, p=0.3, seed=5, name="drop")
    data = rng.standard_normal((200, 50)) + 3
    first, second = g.run(drop, x=data), g.run(drop, x=data)
    np.testing.assert_array_equal(first, second)  # seeded: the same mask every call
    assert abs((first == 0).mean() - 0.3) < 0.02
    np.testing.assert_allclose(first[first != 0], data[first != 0] / 0.7)
    g.sum(g.multiply(drop, drop))
    assert gn.gradcheck(g, x=data[:4, :5])["x"] < 1e-7
    g.eval()
    np.testing.assert_array_equal(g.run(drop, x=data), data)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", [None, 7])
def test_eval_dropout_is_the_identity_forward_and_backward(dtype, seed):
    """Eval mode returns the input array itself and the course's test-mode cache: no mask,
    the gradient passed through as it is, the same as the course's dropout_forward."""
    gate = Dropout(p=0.4, seed=seed)
    x = rng.standard_normal((3, 5)).astype(dtype)
    out, cache = gate.forward({}, False, x)
    assert out is x
    assert cache == kernel_layers.dropout_forward(x, {"mode": "test", "p": 0.4, "seed": seed})[1]
    dout = rng.standard_normal((3, 5)).astype(dtype)
    np.testing.assert_array_equal(gate.backward(dout, cache, (True,))[0], dout)


def test_unseeded_dropout_draws_new_masks_reproducibly():
    def masks():
        np.random.seed(0)
        g = gn.Graph()
        drop = g.dropout(g.input("x"), p=0.5)
        return [g.run(drop, x=np.ones((4, 8))) for _ in range(2)]

    a, b = masks(), masks()
    assert not np.array_equal(a[0], a[1])
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_conv_build_errors_name_the_gate_and_shapes():
    g = gn.Graph()
    x = g.input("x", shape=(None, 3, 5, 5))
    w = g.param("w", np.zeros((4, 2, 3, 3)))
    b = g.param("b", np.zeros(4))
    with pytest.raises(gn.GraphError, match=r"conv gate 'c1'.*3 channels but w \(4, 2, 3, 3\)"):
        g.conv(x, w, b, name="c1")
    w7 = g.param("w7", np.zeros((4, 3, 7, 7)))
    with pytest.raises(gn.GraphError, match=r"larger than the \(padded\) input height 5"):
        g.conv(x, w7, b)
    with pytest.raises(gn.GraphError, match="conv gate .*stride must be >= 1"):
        g.conv(x, w7, b, stride=0, pad=1)
    with pytest.raises(gn.GraphError, match=r"max_pool gate .*x must be \(N, C, H, W\)"):
        g.max_pool(g.input("flat", shape=(2, 3)))


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_small_cnn_against_torch(dtype):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    g = gn.Graph(dtype=dtype)
    x, y = g.input("x", shape=(None, 3, 8, 8)), g.input("y", dtype=np.int64)
    params = {
        "w": rng.standard_normal((4, 3, 3, 3)) * 0.3,
        "b": rng.standard_normal(4),
        "gamma": rng.uniform(0.5, 1.5, 4),
        "beta": rng.standard_normal(4),
        "W2": rng.standard_normal((64, 5)) * 0.1,
        "b2": np.zeros(5),
    }
    p = {k: g.param(k, v.astype(dtype)) for k, v in params.items()}
    h = g.relu(
        g.spatial_batchnorm(g.conv(x, p["w"], p["b"], stride=1, pad=1), p["gamma"], p["beta"])
    )
    scores = g.affine(g.max_pool(h, 2, 2, 2), p["W2"], p["b2"])
    g.softmax_loss(scores, y)
    data, labels = rng.standard_normal((6, 3, 8, 8)).astype(dtype), rng.integers(0, 5, 6)
    loss = g.forward(x=data, y=labels)
    g.backward()

    t = {k: torch.tensor(v.astype(dtype), requires_grad=True) for k, v in params.items()}
    tx = torch.tensor(data, requires_grad=True)
    th = F.relu(
        F.batch_norm(
            F.conv2d(tx, t["w"], t["b"], padding=1),
            None,
            None,
            t["gamma"],
            t["beta"],
            training=True,
            eps=1e-5,
        )
    )
    tscores = F.max_pool2d(th, 2).reshape(6, -1) @ t["W2"] + t["b2"]
    tloss = F.cross_entropy(tscores, torch.tensor(labels))
    tloss.backward()
    tol = 2e-4 if dtype == np.float32 else 1e-9
    assert loss == pytest.approx(tloss.item(), rel=tol)
    np.testing.assert_allclose(g["x"].grad, tx.grad.numpy(), rtol=tol, atol=tol)
    for k in params:
        assert g[k].grad.dtype == dtype
        np.testing.assert_allclose(g[k].grad, t[k].grad.numpy(), rtol=tol, atol=tol)


@pytest.mark.parametrize(
    "builder, kwargs, words",
    [
        ("conv", dict(pad=2**63 - 1), "pad"),
        ("conv", dict(pad=2**40), "pad"),
        ("conv", dict(stride=10**30), "stride"),
        ("conv", dict(stride=-(2**63)), "stride"),
        ("max_pool", dict(pool_height=2**62), "pool_height"),
        ("max_pool", dict(stride=2**64), "stride"),
    ],
)
def test_absurd_integers_are_refused_when_the_gate_is_built(builder, kwargs, words):
    """Sizes, strides and pads the kernels could not count in int64 never reach them: the
    builder refuses them, naming the setting, and no message shows a negative size."""
    g = gn.Graph()
    x = g.input("x", shape=(None, 3, 8, 8))
    args = (
        (x, g.param("w", np.ones((2, 3, 3, 3))), g.param("b", np.zeros(2)))
        if builder == "conv"
        else (x,)
    )
    with pytest.raises(gn.GraphError, match=f"{builder} gate 'g': {words}") as error:
        getattr(g, builder)(*args, name="g", **kwargs)
    if all(value >= 0 for value in kwargs.values()):
        assert not re.search(r"-\d", str(error.value)), error.value


def test_shapes_whose_sizes_multiply_past_int64_are_refused():
    g = gn.Graph()
    with pytest.raises(gn.GraphError, match="input 'x'.*multiply to more than fits in 64"):
        g.input("x", shape=(None, 2**40, 2**40))


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", [1, 13])
def test_affine_fan_out_on_the_avx512_product_against_torch(dtype, batch):
    """288 features (odd, past the 256 inner indices that select the AVX-512 product on a
    CPU that has it) to 37 hidden units, whose relu fans out to two affines; training
    gradients and eval-mode scores against PyTorch, 1 and 2 threads bitwise equal."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    from graphnet.kernels import _C

    g = gn.Graph(dtype=dtype)
    x, y = g.input("x", shape=(None, 4, 8, 9)), g.input("y", dtype=np.int64)
    params = {
        "W1": rng.standard_normal((288, 37)) * 0.1,
        "b1": rng.standard_normal(37),
        "W2": rng.standard_normal((37, 10)) * 0.3,
        "b2": rng.standard_normal(10),
        "W3": rng.standard_normal((37, 10)) * 0.3,
        "b3": np.zeros(10),
    }
    p = {k: g.param(k, v.astype(dtype)) for k, v in params.items()}
    h = g.relu(g.affine(x, p["W1"], p["b1"]))
    scores = g.add(g.affine(h, p["W2"], p["b2"]), g.affine(h, p["W3"], p["b3"]), name="scores")
    g.softmax_loss(scores, y)
    data, labels = rng.standard_normal((batch, 4, 8, 9)).astype(dtype), rng.integers(0, 10, batch)

    def run(threads):
        before = _C.get_num_threads()
        _C.set_num_threads(threads)
        try:
            loss = g.train().forward(x=data, y=labels)
            g.backward()
            grads = {k: g[k].grad.copy() for k in [*params, "x"]}
            return loss, grads, g.eval().run("scores", {"x": data})
        finally:
            _C.set_num_threads(before)

    loss, grads, eval_scores = run(1)
    loss2, grads2, eval_scores2 = run(2)
    assert loss == loss2
    np.testing.assert_array_equal(eval_scores, eval_scores2)
    for k in grads:
        np.testing.assert_array_equal(grads[k], grads2[k])

    t = {k: torch.tensor(v.astype(dtype), requires_grad=True) for k, v in params.items()}
    tx = torch.tensor(data, requires_grad=True)
    th = F.relu(tx.reshape(batch, -1) @ t["W1"] + t["b1"])
    tscores = (th @ t["W2"] + t["b2"]) + (th @ t["W3"] + t["b3"])
    tloss = F.cross_entropy(tscores, torch.tensor(labels))
    tloss.backward()
    tol = 2e-4 if dtype == np.float32 else 1e-9
    assert loss == pytest.approx(tloss.item(), rel=tol)
    np.testing.assert_allclose(eval_scores, tscores.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(grads["x"], tx.grad.numpy(), rtol=tol, atol=tol)
    for k in params:
        assert grads[k].dtype == dtype
        np.testing.assert_allclose(grads[k], t[k].grad.numpy(), rtol=tol, atol=tol)
