"""Every gate's values and gradients against numpy, numerical gradients (float64) and,
where it is installed, PyTorch."""

import numpy as np
import pytest

import graphnet as gn
from graphnet.gates import elementwise

rng = np.random.default_rng(42)


def positive(shape):
    return rng.uniform(0.5, 2.0, shape)


def normal(shape):
    return rng.standard_normal(shape)


def labels(n, classes):
    return rng.integers(0, classes, n)


# name -> (builder(g, *nodes), inputs, numpy reference, torch reference)
CASES = {
    "add": (
        lambda g, a, b: g.add(a, b),
        [normal((3, 4)), normal((4,))],
        lambda a, b: a + b,
        lambda t, a, b: a + b,
    ),
    "subtract": (
        lambda g, a, b: g.subtract(a, b),
        [normal((3, 1)), normal((3, 4))],
        lambda a, b: a - b,
        lambda t, a, b: a - b,
    ),
    "multiply": (
        lambda g, a, b: g.multiply(a, b),
        [normal((2, 3)), normal((2, 3))],
        lambda a, b: a * b,
        lambda t, a, b: a * b,
    ),
    "divide": (
        lambda g, a, b: g.divide(a, b),
        [normal((2, 3)), positive((2, 3))],
        lambda a, b: a / b,
        lambda t, a, b: a / b,
    ),
    "max": (
        lambda g, a, b: g.max(a, b),
        [normal((4, 5)), normal((4, 5))],
        np.maximum,
        lambda t, a, b: t.maximum(a, b),
    ),
    "relu": (
        lambda g, x: g.relu(x),
        [normal((3, 5))],
        lambda x: np.maximum(x, 0),
        lambda t, x: t.relu(x),
    ),
    "exp": (lambda g, x: g.exp(x), [normal((3, 2))], np.exp, lambda t, x: t.exp(x)),
    "log": (lambda g, x: g.log(x), [positive((3, 2))], np.log, lambda t, x: t.log(x)),
    "sigmoid": (
        lambda g, x: g.sigmoid(x),
        [normal((3, 2)) * 4],
        lambda x: 1 / (1 + np.exp(-x)),
        lambda t, x: t.sigmoid(x),
    ),
    "tanh": (lambda g, x: g.tanh(x), [normal((3, 2))], np.tanh, lambda t, x: t.tanh(x)),
    "sum": (lambda g, x: g.sum(x), [normal((3, 4))], np.sum, lambda t, x: x.sum()),
    "sum_axis": (
        lambda g, x: g.sum(x, axis=1),
        [normal((3, 4, 2))],
        lambda x: x.sum(axis=1),
        lambda t, x: x.sum(dim=1),
    ),
    "sum_keepdims": (
        lambda g, x: g.sum(x, axis=(0, 2), keepdims=True),
        [normal((3, 4, 2))],
        lambda x: x.sum(axis=(0, 2), keepdims=True),
        lambda t, x: x.sum(dim=(0, 2), keepdim=True),
    ),
    "affine": (
        lambda g, x, w, b: g.affine(x, w, b),
        [normal((4, 2, 3)), normal((6, 5)), normal(5)],
        lambda x, w, b: x.reshape(4, -1) @ w + b,
        lambda t, x, w, b: x.reshape(4, -1) @ w + b,
    ),
    "softmax": (
        lambda g, x: g.softmax(x),
        [normal((4, 5))],
        lambda x: np.exp(x) / np.exp(x).sum(axis=1, keepdims=True),
        lambda t, x: t.softmax(x, dim=1),
    ),
}
LOSSES = {
    "softmax_loss": (
        lambda g, s, y: g.softmax_loss(s, y),
        lambda t, s, y: t.nn.functional.cross_entropy(s, y),
    ),
    "svm_loss": (
        lambda g, s, y: g.svm_loss(s, y),
        lambda t, s, y: t.nn.functional.multi_margin_loss(s, y) * s.shape[1],
    ),
}


def build(builder, arrays, dtype=np.float64):
    g = gn.Graph(dtype=dtype)
    nodes = [g.input(f"in{i}", shape=a.shape) for i, a in enumerate(arrays)]
    out = builder(g, *nodes)
    feeds = {f"in{i}": a.astype(dtype) for i, a in enumerate(arrays)}
    return g, out, feeds


@pytest.mark.parametrize("name", CASES)
def test_gate_value_and_numerical_gradient(name):
    builder, arrays, reference, _ = CASES[name]
    g, out, feeds = build(builder, arrays)
    value = g.run(out, feeds)
    np.testing.assert_allclose(value, reference(*arrays), rtol=1e-12, atol=1e-12)
    assert out.static_shape == np.shape(value)
    errors = gn.gradcheck(g, feeds)
    assert set(errors) == set(feeds)
    assert max(errors.values()) < 1e-7, errors


@pytest.mark.parametrize("name", LOSSES)
def test_loss_gate_value_and_numerical_gradient(name):
    builder, _ = LOSSES[name]
    scores, y = normal((6, 4)), labels(6, 4)
    g = gn.Graph()
    loss = builder(g, g.input("scores", shape=(None, 4)), g.input("y", dtype=np.int64))
    assert loss.static_shape == ()
    g.run(loss, scores=scores, y=y)
    errors = gn.gradcheck(g, scores=scores, y=y)
    assert list(errors) == ["scores"] and errors["scores"] < 1e-7
    assert g["y"].grad is None


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", CASES)
def test_gate_against_torch(name, dtype):
    torch = pytest.importorskip("torch")
    builder, arrays, _, torch_fn = CASES[name]
    g, out, feeds = build(builder, arrays, dtype)
    value = g.run(out, feeds)
    upstream = normal(np.shape(value)).astype(dtype)
    g.backward(out, grad=upstream)
    tensors = [torch.tensor(a.astype(dtype), requires_grad=True) for a in arrays]
    expected = torch_fn(torch, *tensors)
    expected.backward(torch.tensor(upstream))
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    assert np.asarray(out.value).dtype == dtype
    np.testing.assert_allclose(value, expected.detach().numpy(), **tol)
    for i, t in enumerate(tensors):
        assert g[f"in{i}"].grad.dtype == dtype
        np.testing.assert_allclose(g[f"in{i}"].grad, t.grad.numpy(), **tol)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", LOSSES)
def test_loss_against_torch(name, dtype):
    torch = pytest.importorskip("torch")
    builder, torch_fn = LOSSES[name]
    scores, y = normal((8, 5)).astype(dtype), labels(8, 5)
    g = gn.Graph(dtype=dtype)
    builder(g, g.input("scores"), g.input("y", dtype=np.int64))
    loss = g.forward(scores=scores, y=y)
    g.backward()
    s = torch.tensor(scores, requires_grad=True)
    expected = torch_fn(torch, s, torch.tensor(y))
    expected.backward()
    tol = 1e-5 if dtype == np.float32 else 1e-10
    assert loss == pytest.approx(expected.item(), rel=tol)
    np.testing.assert_allclose(g["scores"].grad, s.grad.numpy(), rtol=tol, atol=tol)


def test_a_wrong_gate_is_caught_by_gradcheck():
    from graphnet.gates.elementwise import Multiply

    @gn.register_gate
    class ForgetsToSwap(Multiply):
        """The classic mistake: d(a*b)/da taken as a instead of b."""

        op = "multiply_that_forgets_to_swap"

        def backward(self, dout, cache, needs):
            a, b = cache
            return dout * a, dout * b

    g = gn.Graph()
    x, y = g.input("x", shape=(3,)), g.input("y", shape=(3,))
    g.sum(g.apply("multiply_that_forgets_to_swap", x, y, name="bad"))
    errors = gn.gradcheck(g, x=normal(3), y=normal(3))
    assert errors["x"] > 1e-2 and errors["y"] > 1e-2


def test_gradcheck_refuses_float32():
    g = gn.Graph(dtype=np.float32)
    g.tanh(g.input("x"))
    with pytest.raises(gn.GraphError, match="float64"):
        gn.gradcheck(g, x=1.0)


def test_affine_takes_an_empty_batch():
    g = gn.Graph()
    x = g.input("x", shape=(None, 2, 3))
    out = g.affine(x, g.param("w", np.ones((6, 4))), g.param("b", np.ones(4)))
    assert g.run(out, x=np.zeros((0, 2, 3))).shape == (0, 4)
    g.backward(out, grad=np.zeros((0, 4)))
    assert x.grad.shape == (0, 2, 3)
    np.testing.assert_array_equal(g["w"].grad, np.zeros((6, 4)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_kernel_gives_numpys_numbers(dtype):
    from graphnet.kernels import _C

    x = np.array([[-1.5, 0.0, -0.0, 2.0], [np.nan, np.inf, -np.inf, 1e-30]], dtype)
    out, keep = _C.relu_forward(x)
    np.testing.assert_array_equal(out, np.maximum(x, 0))
    np.testing.assert_array_equal(keep, x > 0)
    dout = np.array([[1.0, 2.0, 3.0, np.nan], [4.0, 5.0, 6.0, 7.0]], dtype)
    np.testing.assert_array_equal(_C.relu_backward(dout, keep), dout * (x > 0))
    assert out.dtype == dtype and _C.relu_backward(dout, keep).dtype == dtype
    with pytest.raises(ValueError, match=r"relu dout must have shape \(2, 4\)"):
        _C.relu_backward(dout[:, :2], keep)


SPECIAL_NUMBERS = [
    -3.0,
    -0.0,
    0.0,
    5e-324,
    1e-300,
    0.3,
    2.5,
    20.0,
    -20.0,
    1e308,
    np.inf,
    -np.inf,
    np.nan,
    -np.nan,
]


def test_scalar_fast_paths_give_the_ufuncs_numbers():
    """relu and tanh take plain Python on single float64 numbers (a scalar circuit), where
    a ufunc call costs more than the rest of the step; they must give the ufuncs' numbers
    bit for bit, signed zeros and non-finite numbers included, and keep the type."""
    relu, tanh = elementwise.Relu(), elementwise.Tanh()
    for x in map(np.float64, SPECIAL_NUMBERS):
        out, passes = relu.forward(x)
        want = np.maximum(x, 0)
        assert type(out) is np.float64 and passes == (x > 0)
        assert out.tobytes() == want.tobytes() or (np.isnan(out) and np.isnan(want)), x
        out, cache = tanh.forward(x)
        want = np.tanh(x)
        assert type(out) is np.float64 and cache is out
        assert out.tobytes() == want.tobytes() or (np.isnan(out) and np.isnan(want)), x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_square_sends_each_edge_the_product_and_its_input_twice_that(dtype):
    """x * x (an L2 penalty's square): the gate computes the upstream times x once for both
    of its edges; x receives their sum, 2 x dout, with the numbers of two products."""
    rng = np.random.default_rng(5)
    g = gn.Graph(dtype=dtype)
    w = g.param("w", rng.standard_normal((7, 3)).astype(dtype))
    total = g.sum(g.multiply(w, w, name="square"), name="total")
    g.forward()
    g.backward(total)
    one = w.value * np.ones_like(w.value)  # the upstream, times the other input
    np.testing.assert_array_equal(w.grad, one + one)
    edges = [grad for (consumer, _), grad in g.edge_gradients().items() if consumer == "square"]
    assert len(edges) == 2
    for grad in edges:
        np.testing.assert_array_equal(grad, one)
    if dtype == np.float64:
        assert max(gn.gradcheck(g).values()) < 1e-8
