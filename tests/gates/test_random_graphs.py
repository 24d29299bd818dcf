"""Random graphs of the general gates, as a student strings them together: chains with
fan-out (one node read by several gates), broadcasting against a row, batches of 0, 1 and
odd sizes, float64 and float32. Values and gradients against the graph's own PyTorch
module (gn.to_torch) and, float64, against gn.gradcheck; a second forward and backward
gives the same gradients; a checkpoint round trip the same value."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphnet as gn
from graphnet.core.gradcheck import numerical_gradient

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.torch,
    pytest.mark.slow,
    # the mean of an empty batch is NaN, as torch's
    pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning"),
]

D = 4


# op -> build(g, a): one node read, ...
UNARY = {
    "tanh": lambda g, a: g.tanh(a),
    "sigmoid": lambda g, a: g.sigmoid(a),
    "relu": lambda g, a: g.relu(a),
    "exp": lambda g, a: g.exp(g.tanh(a)),
    "softplus": lambda g, a: g.softplus(a),
    "abs": lambda g, a: abs(a),
    "negate": lambda g, a: -a,
    "square": lambda g, a: a**2,
    "cube": lambda g, a: g.pow(a, 3.0),
    "sqrt": lambda g, a: g.sqrt(a * a + 1.0),
    "leaky_relu": lambda g, a: g.leaky_relu(a, 0.1),
    "gelu": lambda g, a: g.gelu(a),
    "gelu tanh": lambda g, a: g.gelu(a, approximate="tanh"),
    "clip": lambda g, a: g.clip(a, -0.5, 0.7),
    "log_softmax rows": lambda g, a: g.log_softmax(a, axis=-1),
    "log_softmax batch": lambda g, a: g.log_softmax(a, axis=0),
    "mean keepdims": lambda g, a: g.mean(a, axis=1, keepdims=True) + a,
    "transposes": lambda g, a: g.transpose(g.transpose(a)),
    "rotate": lambda g, a: g.concat([a[:, 1:], a[:, :1]], axis=1),
    "take": lambda g, a: g.take(a, np.array([3, 0, 0, 2]), axis=1),
    "reshape": lambda g, a: g.reshape(g.reshape(a, (-1,)), (-1, D)),
    "softmax": lambda g, a: g.softmax(a),
}
# ... or build(g, a, b, W): two (b may be a row), or one and the param W
BINARY = {
    "add": lambda g, a, b, W: a + b,
    "subtract": lambda g, a, b, W: a - b,
    "multiply": lambda g, a, b, W: a * b,
    "divide": lambda g, a, b, W: a / (b * b + 1.0),
    "max": lambda g, a, b, W: g.max(a, b),
    "min": lambda g, a, b, W: g.min(a, b),
    "matmul": lambda g, a, b, W: a @ W,
    "where": lambda g, a, b, W: g.where(np.array([1, 0, 1, 1]), a, b),
    "concat": lambda g, a, b, W: g.concat([a, b], axis=1)[:, 1 : 1 + D],
}
# (arity, op, which node, which other node, a binary op against a row)
STEPS = st.one_of(
    *(
        st.tuples(st.just(arity), st.sampled_from(sorted(ops)), st.integers(0, 99),
                  st.integers(0, 99), st.booleans())
        for arity, ops in ((1, UNARY), (2, BINARY))
    )
)  # fmt: skip


def build(dtype, steps, seed):
    """A graph from the drawn steps: each reads one or two earlier nodes (picked by the
    drawn integers), a binary step sometimes against a row (the mean over the batch);
    the nodes nobody reads add up into the scalar sink."""
    rng = np.random.default_rng(seed)
    g = gn.Graph(dtype=dtype)
    X = g.input("X", shape=(None, D))
    W, b = g.param("W", rng.standard_normal((D, D))), g.param("b", rng.standard_normal(D))
    nodes = [X, g.affine(X, W, b)]
    for arity, op, i, j, row in steps:
        a, c = nodes[i % len(nodes)], nodes[j % len(nodes)]
        if arity == 1:
            nodes.append(UNARY[op](g, a))
        else:
            if row and op not in ("concat", "matmul"):
                c = g.mean(c, axis=0, keepdims=True)
            nodes.append(BINARY[op](g, a, c, W))
    read = {id(i) for n in nodes for i in n.inputs}
    unread = [n for n in nodes[1:] if id(n) not in read]
    sink = g.mean(unread[0] * nodes[1])
    for n in unread[1:]:
        sink = sink + g.sum(n)
    return g


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(STEPS, min_size=1, max_size=8),
    seed=st.integers(0, 2**16),
    batch=st.sampled_from([0, 1, 3, 5]),
    dtype=st.sampled_from([np.float64, np.float32]),
)
def test_a_random_graph_agrees_with_its_torch_module_and_the_gradient_check(
    steps, seed, batch, dtype, tmp_path_factory
):
    g = build(dtype, steps, seed)
    X = np.random.default_rng(seed + 1).standard_normal((batch, D)).astype(dtype)
    with np.errstate(all="ignore"):  # and 0 / 0 in it
        loss = g.forward(X=X)
        g.backward()
        grads = {name: np.array(grad) for name, grad in g.grads.items()}
        module = gn.to_torch(g)
        expected = module(torch.tensor(X))
        expected.backward()
        tol = 1e-9 if dtype == np.float64 else 2e-4
        atol = max(tol, rounding_scale(dtype) * largest_finite(n.value for n in g.nodes))
        np.testing.assert_allclose(loss, expected.item(), rtol=tol, atol=atol)
        for name, param in module.named_parameters():
            atol = max(tol, rounding_scale(dtype) * largest_finite([grads[name]]))
            np.testing.assert_allclose(grads[name], param.grad.numpy(), rtol=tol, atol=atol)
        g.forward(X=X)
        g.backward()
        for name, grad in g.grads.items():
            np.testing.assert_array_equal(grad, grads[name])
        path = tmp_path_factory.mktemp("graph") / "graph.npz"
        gn.save(g, path)
        np.testing.assert_array_equal(gn.load(path).forward(X=X), loss)
    if dtype == np.float64 and batch:
        errors = gn.gradcheck(g, X=X)
        analytic = {name: np.array(grad) for name, grad in {**g.grads, "X": g["X"].grad}.items()}
        for name, error in errors.items():
            if error >= 1e-5:
                assert_agrees_below_the_differences_resolution(g, X, name, analytic[name])


def rounding_scale(dtype):
    """What two summation orders may differ by, per unit of the largest term summed: about
    80 units in the last place (float32 terms of 4e3 cancelling to a loss of 1 differ by
    5e-4 between graphnet and PyTorch)."""
    return 80 * np.finfo(dtype).eps


def largest_finite(arrays):
    """The largest finite magnitude among float arrays (None and integer ones skipped), at
    least 1."""
    largest = 1.0
    for value in arrays:
        value = np.asarray(value) if value is not None else np.zeros(0)
        if value.dtype.kind == "f" and value.size:
            finite = np.abs(value[np.isfinite(value)])
            largest = max(largest, float(finite.max(initial=0.0)))
    return largest


def assert_agrees_below_the_differences_resolution(g, X, name, analytic):
    """gradcheck's relative error is elementwise, over a floor of 1e-8: an entry far below
    what centred differences resolve (exactly 0 from x - x, gelu's slope of 1e-13 at -8, a
    slope of 1e-6 beside slopes of 1e5 through cubes) against a numerical 0 or rounding
    noise reads as a large error. The differences' rounding grows with the sink's terms,
    which the gradient's largest entry follows: each entry agrees to 1e-5 of itself or to
    1e-9 of that largest entry (about 50 times the rounding of float64 over 2h)."""
    array = X if name == "X" else g.params[name]
    numeric = numerical_gradient(lambda _: float(g.forward(X=X)), array, 1e-5)
    largest = max(1.0, float(np.max(np.abs(numeric), initial=0.0)))
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-9 * largest, err_msg=name)
