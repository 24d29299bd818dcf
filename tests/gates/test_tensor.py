"""The general tensor gates (matmul, reshape, indexing, mean, pow, gelu, cross_entropy, ...):
values against numpy and naive loops, gradients against numerical gradients in float64
(through the graph with gn.gradcheck, and gate by gate with the course's
eval_numerical_gradient_array), float32, fan-out, broadcasting, and the errors."""

import math

import numpy as np
import pytest

import graphnet as gn
from graphnet.gates.base import unbroadcast
from graphnet.gradient_check import eval_numerical_gradient_array, rel_error

rng = np.random.default_rng(16)


def normal(*shape):
    return rng.standard_normal(shape)


def positive(*shape):
    return rng.uniform(0.5, 2.0, shape)


IDS = np.array([[4, 0, 4], [1, 1, 3]])  # repeats: those rows' gradients add up
MASK = np.array([[True], [False], [True]])
LABELS = np.array([[0, 4, -1], [2, -1, 1]])  # -1: ignored


def erf(x):
    return np.vectorize(math.erf)(x)


def avg_pool_loops(x, height, width, stride):
    n, c, h, w = x.shape
    out = np.zeros((n, c, 1 + (h - height) // stride, 1 + (w - width) // stride))
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            window = x[:, :, i * stride : i * stride + height, j * stride : j * stride + width]
            out[:, :, i, j] = window.sum(axis=(2, 3)) / (height * width)
    return out


def cross_entropy_loops(scores, labels, ignore):
    total, count = 0.0, 0
    for position in np.ndindex(labels.shape):
        if labels[position] != ignore:
            row = scores[position]
            total += math.log(np.exp(row).sum()) - row[labels[position]]
            count += 1
    return total / count


# name -> (build(g, *input nodes), input arrays, numpy or naive reference)
CASES = {
    "matmul": (lambda g, a, b: a @ b, [normal(3, 4), normal(4, 5)], np.matmul),
    "matmul batch axes broadcast": (
        lambda g, a, b: a @ b,
        [normal(2, 1, 3, 4), normal(5, 4, 2)],
        np.matmul,
    ),
    "matmul stack @ matrix": (lambda g, a, b: a @ b, [normal(2, 3, 4), normal(4, 5)], np.matmul),
    "matmul matrix @ stack": (lambda g, a, b: a @ b, [normal(3, 4), normal(2, 4, 5)], np.matmul),
    "matmul vector @ matrix": (lambda g, a, b: a @ b, [normal(4), normal(4, 5)], np.matmul),
    "matmul matrix @ vector": (lambda g, a, b: a @ b, [normal(3, 4), normal(4)], np.matmul),
    "matmul vector @ vector": (lambda g, a, b: a @ b, [normal(4), normal(4)], np.matmul),
    "matmul vector @ stack": (lambda g, a, b: a @ b, [normal(4), normal(2, 4, 5)], np.matmul),
    "matmul stack @ vector": (lambda g, a, b: a @ b, [normal(2, 3, 4), normal(4)], np.matmul),
    "matmul fan-out (x @ x.T)": (
        lambda g, x: x @ g.transpose(x),
        [normal(3, 4)],
        lambda x: x @ x.T,
    ),
    "reshape": (lambda g, x: g.reshape(x, (4, -1)), [normal(2, 3, 4)], lambda x: x.reshape(4, -1)),
    "flatten": (lambda g, x: g.flatten(x), [normal(2, 3, 4)], lambda x: x.reshape(2, 12)),
    "flatten axis 0": (lambda g, x: g.flatten(x, axis=0), [normal(2, 3)], np.ravel),
    "transpose": (
        lambda g, x: g.transpose(x, (1, -1, 0)),
        [normal(2, 3, 4)],
        lambda x: x.transpose(1, 2, 0),
    ),
    "transpose reversed": (lambda g, x: g.transpose(x), [normal(2, 3, 4)], np.transpose),
    "concat": (
        lambda g, a, b, c: g.concat([a, b, c], axis=1),
        [normal(2, 1, 3), normal(2, 4, 3), normal(2, 2, 3)],
        lambda a, b, c: np.concatenate([a, b, c], axis=1),
    ),
    "concat fan-out": (
        lambda g, a, b: g.concat([a, b, a], axis=-1),
        [normal(2, 3), normal(2, 1)],
        lambda a, b: np.concatenate([a, b, a], axis=-1),
    ),
    "slice": (lambda g, x: x[:, 2:5], [normal(3, 6)], lambda x: x[:, 2:5]),
    "slice int": (lambda g, x: x[1], [normal(3, 6)], lambda x: x[1]),
    "slice ... None -1": (
        lambda g, x: x[..., None, -1],
        [normal(2, 3, 4)],
        lambda x: x[..., None, -1],
    ),
    "slice negative step": (lambda g, x: x[::-2, 1], [normal(5, 3)], lambda x: x[::-2, 1]),
    "take (embedding)": (lambda g, w: w[IDS], [normal(5, 4)], lambda w: w[IDS]),
    "take axis 1": (lambda g, x: x[:, IDS], [normal(2, 5, 3)], lambda x: x[:, IDS]),
    "take last axis": (lambda g, x: x[..., IDS[0]], [normal(2, 3, 5)], lambda x: x[..., IDS[0]]),
    "mean": (lambda g, x: g.mean(x), [normal(3, 4)], np.mean),
    "mean axis keepdims": (
        lambda g, x: g.mean(x, axis=(0, 2), keepdims=True),
        [normal(3, 4, 2)],
        lambda x: x.mean(axis=(0, 2), keepdims=True),
    ),
    "global_avg_pool": (
        lambda g, x: g.global_avg_pool(x),
        [normal(2, 3, 4, 5)],
        lambda x: x.mean(axis=(2, 3)),
    ),
    "negate": (lambda g, x: -x, [normal(3, 2)], np.negative),
    "pow 2": (lambda g, x: x**2, [normal(3, 2)], np.square),
    "pow 3": (lambda g, x: g.pow(x, 3), [normal(3, 2)], lambda x: x**3),
    "pow -1.5": (lambda g, x: x**-1.5, [positive(3, 2)], lambda x: x**-1.5),
    "pow 0": (lambda g, x: x**0, [normal(3, 2)], np.ones_like),
    "sqrt": (lambda g, x: g.sqrt(x), [positive(3, 2)], np.sqrt),
    "abs": (lambda g, x: abs(x), [normal(3, 4)], np.abs),
    "min": (lambda g, a, b: g.min(a, b), [normal(3, 4), normal(4)], np.minimum),
    "clip": (lambda g, x: g.clip(x, -0.5, 0.7), [normal(4, 5)], lambda x: np.clip(x, -0.5, 0.7)),
    "clip low only": (
        lambda g, x: g.clip(x, low=0.2),
        [normal(4, 5)],
        lambda x: np.maximum(x, 0.2),
    ),
    "where": (
        lambda g, a, b: g.where(MASK, a, b),
        [normal(3, 4), normal(4)],
        lambda a, b: np.where(MASK, a, b),
    ),
    "where, a constant": (
        lambda g, a: g.where(MASK, a, -5.0),
        [normal(3, 4)],
        lambda a: np.where(MASK, a, -5.0),
    ),
    "leaky_relu": (
        lambda g, x: g.leaky_relu(x),
        [normal(3, 4)],
        lambda x: np.where(x > 0, x, 0.01 * x),
    ),
    "leaky_relu alpha": (
        lambda g, x: g.leaky_relu(x, alpha=0.2),
        [normal(3, 4)],
        lambda x: np.where(x > 0, x, 0.2 * x),
    ),
    # Slopes well away from 0 (at GELU's minimum near -0.75, and far left, a tiny slope
    # drowns in the numerical gradient's rounding).
    "gelu": (
        lambda g, x: g.gelu(x),
        [np.linspace(-2.5, 3, 12).reshape(3, 4)],
        lambda x: x * (1 + erf(x / 2**0.5)) / 2,
    ),
    "gelu tanh": (
        lambda g, x: g.gelu(x, approximate="tanh"),
        [np.linspace(-2.5, 3, 12)],
        lambda x: x * (1 + np.tanh((2 / np.pi) ** 0.5 * (x + 0.044715 * x**3))) / 2,
    ),
    "softplus": (lambda g, x: g.softplus(x), [normal(3, 4) * 2], lambda x: np.log1p(np.exp(x))),
    "log_softmax": (
        lambda g, x: g.log_softmax(x),
        [normal(3, 4)],
        lambda x: x - np.log(np.exp(x).sum(axis=-1, keepdims=True)),
    ),
    "log_softmax axis 0": (
        lambda g, x: g.log_softmax(x, axis=0),
        [normal(3, 4)],
        lambda x: x - np.log(np.exp(x).sum(axis=0, keepdims=True)),
    ),
    "avg_pool": (
        lambda g, x: g.avg_pool(x),
        [normal(2, 3, 6, 4)],
        lambda x: avg_pool_loops(x, 2, 2, 2),
    ),
    "avg_pool overlapping": (
        lambda g, x: g.avg_pool(x, 3, 2, stride=1),
        [normal(2, 2, 5, 4)],
        lambda x: avg_pool_loops(x, 3, 2, 1),
    ),
    "avg_pool stride 2, ragged": (
        lambda g, x: g.avg_pool(x, 3, 3, stride=2),
        [normal(1, 2, 8, 7)],
        lambda x: avg_pool_loops(x, 3, 3, 2),
    ),
    "cross_entropy": (
        lambda g, s: g.cross_entropy(s, LABELS[0, :2]),
        [normal(2, 5)],
        lambda s: cross_entropy_loops(s, LABELS[0, :2], None),
    ),
    "cross_entropy ignore": (
        lambda g, s: g.cross_entropy(s, LABELS, ignore_index=-1),
        [normal(2, 3, 5)],
        lambda s: cross_entropy_loops(s, LABELS, -1),
    ),
}


def build(name, dtype=np.float64):
    make, arrays, _ = CASES[name]
    g = gn.Graph(dtype=dtype)
    nodes = [g.input(f"in{i}", shape=a.shape) for i, a in enumerate(arrays)]
    out = make(g, *nodes)
    return g, out, {f"in{i}": a.astype(dtype) for i, a in enumerate(arrays)}


@pytest.mark.parametrize("name", CASES)
def test_value_against_numpy_and_gradient_against_numerical(name):
    _, arrays, reference = CASES[name]
    g, out, feeds = build(name)
    value = g.run(out, feeds)
    np.testing.assert_allclose(value, reference(*arrays), rtol=1e-12, atol=1e-12)
    assert out.static_shape == np.shape(value)
    errors = gn.gradcheck(g, feeds)
    assert set(errors) == set(feeds) and max(errors.values()) < 1e-7, errors


def one_input_forward(gate, values, position):
    """The gate's output as a function of its input `position`, the others held fixed."""
    return lambda x: gate.forward(*values[:position], x, *values[position + 1 :])[0]


@pytest.mark.parametrize("name", CASES)
def test_each_gates_backward_against_eval_numerical_gradient_array(name):
    """Gate by gate, without the graph: the course's numerical gradient of the gate's own
    forward, for a random upstream gradient."""
    g, out, feeds = build(name)
    g.run(out, feeds)
    for node in [n for n in g.nodes if n.gate is not None]:
        values = [
            np.array(i.value, dtype=np.float64) if i.dtype.kind == "f" else i.value
            for i in node.inputs
        ]
        dout = normal(*np.shape(node.value))
        _, cache = node.gate.forward(*values)
        needs = [i.dtype.kind == "f" for i in node.inputs]
        grads = node.gate.backward(dout, cache, needs)
        for position, need in enumerate(needs):
            if not need:
                continue
            forward = one_input_forward(node.gate, values, position)
            numeric = eval_numerical_gradient_array(forward, values[position], dout)
            analytic = unbroadcast(np.asarray(grads[position]), np.shape(values[position]))
            assert rel_error(analytic, numeric) < 1e-7, (node.name, position)


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


def test_fan_out_adds_what_each_consumer_sends():
    g = gn.Graph()
    x = g.input("x", shape=(3, 4))
    picked = x[:, 1:3] * 2.0
    g.sum(g.concat([x @ np.eye(4), picked, x[:, [0, 0]]], axis=1))
    g.forward(x=normal(3, 4))
    g.backward()
    expected = np.ones((3, 4))
    expected[:, 1:3] += 2
    expected[:, 0] += 2
    np.testing.assert_allclose(x.grad, expected)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_saves_its_slope_in_train_mode_and_x_in_eval_mode(approximate, dtype):
    """The train-mode forward saves the slope its kernel writes (a GeluSlope), the
    eval-mode one x: each backward gives the bits of the kernel that recomputes the slope
    from x, NaN, inf and -0.0 included; the values are the same bits either way."""
    from graphnet.gates.pointwise import Gelu, GeluSlope
    from graphnet.kernels import _C

    gate = Gelu(approximate)
    x = (normal(3, 5, 7) * 4).astype(dtype)
    x.flat[:4] = [np.nan, np.inf, -np.inf, -0.0]
    dout = normal(3, 5, 7).astype(dtype)
    want = _C.pointwise_backward(gate.kernel[0], dout, x)
    (out, slope), (eval_out, saved) = gate.forward(x), gate.eval_forward(x)
    assert type(slope) is GeluSlope and saved is x
    np.testing.assert_array_equal(out, eval_out)
    for cache in (slope, saved):
        (dx,) = gate.backward(dout, cache, (True,))
        assert dx.dtype == dtype
        np.testing.assert_array_equal(dx.view(np.uint8), want.view(np.uint8))
    assert "slope" in gate.summarize_cache(slope, ["h"])[0]


def test_gelu_fanned_out_gives_the_same_gradients_after_a_train_or_eval_forward():
    """A GELU read by two consumers: its fanned-out gradient through the saved slope (train
    mode) and through x (eval mode, then a backward) agree bit for bit, and with the
    numerical gradient in float64."""
    g = gn.Graph()
    x = g.input("x", shape=(2, 9))
    h = g.gelu(x, name="h")
    g.sum(h * h + h * 3.0)
    feed = normal(2, 9) * 2
    grads = []
    for mode in (g.train, g.eval):
        mode()
        g.forward(x=feed)
        g.backward()
        grads.append(x.grad.copy())
    np.testing.assert_array_equal(grads[0], grads[1])
    g.train()
    assert gn.gradcheck(g, x=feed)["x"] < 1e-7


def test_min_tie_goes_to_the_first_input():
    g = gn.Graph()
    a, b = g.input("a"), g.input("b")
    g.min(a, b)
    g.forward(a=np.array([1.0, 2.0, 3.0]), b=np.array([1.0, 5.0, -1.0]))
    g.backward(grad=np.ones(3))
    np.testing.assert_array_equal(a.grad, [1, 1, 0])
    np.testing.assert_array_equal(b.grad, [0, 0, 1])


def test_the_gradient_at_kinks_is_the_documented_one():
    g = gn.Graph()
    x = g.input("x")
    g.sum(
        g.concat(
            [abs(x), g.leaky_relu(x, 0.1), g.clip(x, -1, 1), g.clip(x, -1, 1, limits_pass=False)]
        )
    )
    g.forward(x=np.array([0.0, -1.0, 1.0]))
    g.backward()
    # abs: 0 at 0; leaky relu: alpha at 0; clip: passes at both limits, or with
    # limits_pass=False (hardtanh's) blocks there.
    np.testing.assert_allclose(x.grad, [0 + 0.1 + 1 + 1, -1 + 0.1 + 1 + 0, 1 + 1 + 1 + 0])


def test_where_sends_nothing_through_the_unpicked_side_even_when_it_is_infinite():
    g = gn.Graph()
    scores = g.input("scores", shape=(2, 3))
    mask = np.tril(np.ones((2, 3), dtype=bool))
    g.sum(g.softmax(g.where(mask, scores, -np.inf)) * np.arange(3.0))
    g.forward(scores=normal(2, 3))
    g.backward()
    assert np.isfinite(scores.grad).all() and (scores.grad[~mask] == 0).all()


def test_softplus_and_log_softmax_do_not_overflow():
    g = gn.Graph()
    x = g.input("x")
    soft, log_probs = g.softplus(x), g.log_softmax(x)
    g.sum(g.concat([soft, log_probs]) * np.array([1.0, 1, 2, 3]))
    g.forward(x=np.array([-1000.0, 1000.0]))
    np.testing.assert_allclose(soft.value, [0, 1000])
    np.testing.assert_allclose(log_probs.value, [-2000, 0])
    g.backward()
    # softplus: σ(x) = (0, 1); log softmax: dout - softmax·Σ dout = (2, 3) - (0, 1)·5.
    np.testing.assert_allclose(x.grad, [0 + 2, 1 - 2])


def test_cross_entropy_counts_only_the_unignored_and_is_zero_with_none():
    g = gn.Graph()
    s = g.input("s", shape=(None, 3))
    y = g.input("y", dtype=np.int64)
    g.cross_entropy(s, y, ignore_index=0)
    scores = normal(4, 3)
    loss = g.forward(s=scores, y=np.array([0, 2, 0, 1]))
    assert loss == pytest.approx(cross_entropy_loops(scores, np.array([0, 2, 0, 1]), 0))
    g.backward()
    assert (s.grad[[0, 2]] == 0).all() and y.grad is None
    assert g.forward(s=scores, y=np.zeros(4, dtype=int)) == 0.0
    g.backward()
    assert (s.grad == 0).all()


def test_empty_batches():
    g = gn.Graph()
    x = g.input("x", shape=(None, 4))
    w = g.param("w", normal(4, 3))
    rows = (x @ w)[:, 1:]
    g.add(g.cross_entropy(rows, g.input("y", dtype=np.int64)), g.sum(g.mean(x, axis=1)))
    assert g.forward(x=np.zeros((0, 4)), y=np.zeros(0, dtype=int)) == 0.0
    g.backward()
    assert x.grad.shape == (0, 4) and (w.grad == 0).all()


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("shape", [(0, 4), (2, 0, 3), (0, 0)])
def test_log_softmax_along_any_axis_of_an_empty_batch(shape, axis):
    g = gn.Graph()
    x = g.input("x", shape=(None,) + shape[1:])
    g.sum(g.log_softmax(x, axis=axis % len(shape) if axis >= 0 else axis))
    g.forward(x=np.zeros(shape))
    g.backward()
    assert g["log_softmax_1"].value.shape == x.grad.shape == shape


def test_take_with_an_integer_input_and_a_fed_index_batch():
    g = gn.Graph()
    words = g.param("W", normal(10, 3))
    ids = g.input("ids", shape=(None, 4))  # no dtype: only take reads it, so it stays int
    g.sum(words[ids] * normal(2, 4, 3))
    batch = np.array([[1, 2, 2, 9], [0, 1, 1, 1]])
    g.forward(ids=batch)
    assert ids.value.dtype == np.int64
    g.backward()
    assert ids.grad is None and (words.grad[[3, 4, 5, 6, 7, 8]] == 0).all()
    assert max(gn.gradcheck(g, ids=batch).values()) < 1e-7


def test_matmul_uses_one_product_for_rows_times_a_matrix(monkeypatch):
    """x @ W with x a stack: one call of the C++ product forward and per gradient."""
    from graphnet.gates import tensor

    calls = []
    real = tensor.matmul
    monkeypatch.setattr(tensor, "matmul", lambda *a, **k: calls.append(1) or real(*a, **k))
    g = gn.Graph()
    x, w = g.input("x", shape=(2, 3, 4)), g.param("w", normal(4, 5))
    g.sum(x @ w)
    g.forward(x=normal(2, 3, 4))
    g.backward()
    assert len(calls) == 3


@pytest.mark.parametrize(
    "a_shape,b_shape",
    [
        ((5, 3, 4, 6), (3, 6, 2)),  # per-head weights shared by the batch
        ((1, 3, 4, 6), (5, 3, 6, 2)),  # queries shared by the batch
        ((5, 1, 4, 6), (1, 3, 6, 2)),  # both broadcast, along different axes
        ((4, 6), (5, 3, 6, 2)),  # one matrix against a stack
        ((6,), (5, 3, 6, 2)),  # a vector against a stack
        ((5, 3, 4, 6), (1, 1, 6, 2)),
    ],
)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matmul_gradients_of_broadcast_operands_sum_as_the_stack_did(a_shape, b_shape, dtype):
    """Each operand's gradient summed in C++ over the batch axes it was broadcast along:
    the bits of the stack of products summed by numpy (what the executor did), on 1-3
    threads, and float64's centred differences."""
    from graphnet.kernels import _C

    rng = np.random.default_rng(8)
    a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
    dout = rng.standard_normal(np.matmul(a, b).shape).astype(dtype)
    g = gn.Graph(dtype=dtype)
    product = g.matmul(g.param("a", a), g.param("b", b), name="ab")

    def gradients(threads):
        before = _C.get_num_threads()
        _C.set_num_threads(threads)
        try:
            g.forward()
            g.backward(product, dout)
            return g["a"].grad, g["b"].grad
        finally:
            _C.set_num_threads(before)

    results = [gradients(threads) for threads in (1, 2, 3)]
    a2 = a.astype(dtype)[np.newaxis] if a.ndim == 1 else a.astype(dtype)
    dout2 = np.expand_dims(dout, -2) if a.ndim == 1 else dout
    stack_da = _C.batched_matmul(dout2, b.astype(dtype), False, True)
    stack_db = _C.batched_matmul(a2, dout2, True, False)
    da = unbroadcast(stack_da, a2.shape)
    da = da[..., 0, :] if a.ndim == 1 else da
    for result in results:
        np.testing.assert_array_equal(result[0], da)
        np.testing.assert_array_equal(result[1], unbroadcast(stack_db, b.shape))
    if dtype == np.float64:
        assert max(gn.gradcheck(g).values()) < 1e-7


def test_matmul_of_stacks_runs_one_product_per_pass_and_its_gradients_match_numerical(monkeypatch):
    """q @ kᵀ and weights @ v of a hand-written attention over (2, 3) heads, k shared by
    the first axis (broadcast): one batched product per matmul gate and pass, gradients
    against centred differences in float64."""
    from graphnet.gates import tensor
    from graphnet.kernels import _C

    calls = []
    real = _C.batched_matmul
    monkeypatch.setattr(tensor._C, "batched_matmul", lambda *a: calls.append(1) or real(*a))
    rng = np.random.default_rng(6)
    g = gn.Graph()
    q = g.param("q", rng.standard_normal((2, 3, 5, 4)))
    k = g.param("k", rng.standard_normal((1, 3, 6, 4)))
    v = g.param("v", rng.standard_normal((2, 3, 6, 4)))
    weights = g.softmax((q @ g.transpose(k, (0, 1, 3, 2))) * 0.5)
    g.sum((weights @ v) * g.const(rng.standard_normal((2, 3, 5, 4))))
    g.forward()
    g.backward()
    assert len(calls) == 6  # two products forward, two per product backward
    assert max(gn.gradcheck(g).values()) < 1e-7


# ----- errors ------------------------------------------------------------------------

BAD_SHAPES = [
    (lambda g, a, b: g.matmul(a, b, name="mm"), [(2, 3), (4, 5)], "3 columns but b (4, 5) has 4"),
    (lambda g, a, b: g.matmul(a, b, name="mm"), [(2, 3, 4), (5, 4, 2)], "batch axes"),
    (lambda g, a, b: g.matmul(a, b, name="mm"), [(), (3,)], "rank >= 1"),
    (lambda g, x: g.reshape(x, (5, -1), name="rs"), [(2, 3, 4)], "cannot reshape (2, 3, 4)"),
    (lambda g, x: g.reshape(x, (5, 4), name="rs"), [(2, 3, 4)], "into (5, 4)"),
    (lambda g, x: g.flatten(x, axis=3, name="fl"), [(2, 3)], "from axis 3"),
    (lambda g, x: g.transpose(x, (0, 0, 1), name="tr"), [(2, 3, 4)], "not a permutation"),
    (lambda g, x: g.transpose(x, (0, 1), name="tr"), [(2, 3, 4)], "not a permutation"),
    (lambda g, a, b: g.concat([a, b], axis=1, name="cc"), [(2, 3), (4, 3)], "differ along axis 0"),
    (lambda g, a, b: g.concat([a, b], name="cc"), [(2, 3), (2, 3, 1)], "one rank"),
    (lambda g, a: g.concat([a], axis=2, name="cc"), [(2, 3)], "axis 2 is out of range"),
    (lambda g, x: g.index(x, (0, 1, 2), name="ix"), [(2, 3)], "indexes 3 axes"),
    (lambda g, x: g.index(x, (slice(None), 3), name="ix"), [(2, 3)], "index 3 is out of range"),
    (lambda g, x: g.take(x, [0], axis=2, name="tk"), [(2, 3)], "axis 2 is out of range"),
    (lambda g, x: g.mean(x, axis=3, name="mn"), [(2, 3)], "axis 3 is out of range"),
    (lambda g, a, b: g.min(a, b, name="mi"), [(2, 3), (4,)], "do not broadcast"),
    (lambda g, a, b: g.where(np.ones((5, 1)), a, b, name="wh"), [(2, 3), (3,)], "do not broadcast"),
    (lambda g, x: g.log_softmax(x, axis=2, name="ls"), [(2, 3)], "axis 2 is out of range"),
    (lambda g, x: g.avg_pool(x, 4, 4, name="ap"), [(2, 3, 3, 3)], "larger than"),
    (lambda g, x: g.avg_pool(x, name="ap"), [(2, 3, 4)], "(N, C, H, W)"),
    (
        lambda g, s: g.cross_entropy(s, np.zeros(3, dtype=int), name="ce"),
        [(2, 5)],
        "without its last",
    ),
]


@pytest.mark.parametrize("make,shapes,message", BAD_SHAPES)
def test_bad_shapes_name_the_node_the_gate_and_the_shapes(make, shapes, message):
    g = gn.Graph()
    nodes = [g.input(f"in{i}", shape=s) for i, s in enumerate(shapes)]
    with pytest.raises(gn.GraphError) as caught:
        make(g, *nodes)
    text = str(caught.value)
    op = text.split(" gate ")[0]
    assert op in gn.gate_names() and message in text, text
    assert all(f"'in{i}' {s}" in text for i, s in enumerate(shapes)), text


BAD_ATTRS = [
    ("reshape", dict(shape=(-1, -1)), "at most one -1"),
    ("pow", dict(exponent=float("nan")), "exponent must be a finite number"),
    ("clip", dict(), "needs low, high or both"),
    ("clip", dict(low=2, high=1), "low <= high"),
    ("clip", dict(low=0, limits_pass="no"), "limits_pass must be True or False"),
    ("gelu", dict(approximate="fast"), "'none' or 'tanh'"),
    ("leaky_relu", dict(alpha="0.1"), "alpha must be"),
    ("slice", dict(key="1:2:3:4"), "cannot read"),
    ("slice", dict(key="::0"), "step cannot be zero"),
    ("slice", dict(key="..., 1, ..."), "more than one '...'"),
    ("transpose", dict(axes=(0, 1.5)), "axes[1] must be an integer"),
]


@pytest.mark.parametrize("op,attrs,message", BAD_ATTRS)
def test_bad_hyperparameters(op, attrs, message):
    g = gn.Graph()
    with pytest.raises(gn.GraphError, match=None) as caught:
        g.apply(op, g.input("x", shape=(2, 3)), name="bad", **attrs)
    assert f"{op} gate 'bad'" in str(caught.value) and message in str(caught.value)


@pytest.mark.parametrize(
    "make,feed,message",
    [
        (
            lambda g, x: g.take(g.param("W", normal(5, 2)), x, name="emb"),
            np.array([1, 5]),
            "indices [5] are out of range for axis 0 of size 5",
        ),
        (
            lambda g, x: g.cross_entropy(g.param("s", normal(2, 3)), x, name="ce"),
            np.array([1, 3]),
            "labels [3] are not classes 0..2",
        ),
    ],
)
def test_bad_integers_at_run_time_name_the_node(make, feed, message):
    g = gn.Graph()
    make(g, g.input("x", dtype=np.int64))
    with pytest.raises(gn.GraphError) as caught:
        g.forward(x=feed)
    assert message in str(caught.value) and "gate" in str(caught.value)


def test_run_time_shape_mismatch_names_the_node_and_the_shapes():
    g = gn.Graph()
    g.matmul(g.input("a"), g.input("b"), name="product")
    with pytest.raises(gn.GraphError) as caught:
        g.forward(a=normal(2, 3), b=normal(4, 2))
    text = str(caught.value)
    assert "'product'" in text and "matmul" in text and "(2, 3)" in text and "(4, 2)" in text


def test_indexing_errors_and_nodes_are_not_iterable():
    g = gn.Graph()
    x = g.input("x", shape=(3, 4))
    with pytest.raises(gn.GraphError, match="boolean mask"):
        x[np.array([True, False, True])]
    with pytest.raises(gn.GraphError, match="one array"):
        x[[0, 1], [1, 2]]
    with pytest.raises(TypeError, match="not iterable"):
        list(x)
    with pytest.raises(gn.GraphError, match="exponent must be a number"):
        x**x


def test_gates_that_move_numbers_keep_labels_integers():
    """Labels reshaped, sliced, transposed, concatenated or gathered stay integers, so a
    loss takes them (as F.cross_entropy(logits.view(-1, V), y.view(-1)) does)."""
    g = gn.Graph()
    y = g.input("y", shape=(2, 3), dtype=np.int64)
    flat = g.reshape(y, (-1,), name="flat")
    assert flat.dtype == np.int64 and not flat.requires_grad
    for node in (g.transpose(y), g.concat([y, y], axis=0), y[:, 1:], g.flatten(y, axis=0)):
        assert node.dtype == np.int64
    assert g.exp(y).dtype == g.dtype  # arithmetic on integers gives the graph's floats
    scores = g.input("scores", shape=(6, 4))
    g.softmax_loss(scores, flat, name="loss")
    labels = np.array([[0, 1, 2], [3, 0, 1]])
    assert g.run("loss", scores=np.zeros((6, 4)), y=labels) == pytest.approx(np.log(4))


@pytest.mark.parametrize("relation", [">", ">=", "<", "<=", "==", "!="])
def test_compare_is_an_int8_mask_that_takes_no_gradient(relation):
    g = gn.Graph(dtype=np.float32)
    x, y = g.input("x", shape=(None, 3)), g.input("y", shape=(3,))
    mask = g.compare(x, relation, y, name="mask")
    assert mask.dtype == np.int8 and not mask.requires_grad
    # A leaky-style gate built on it: the gradient flows around the mask, not through it.
    out = g.sum(g.where(mask, 2 * x, y) * 3.0)
    xv = np.array([[0.5, 1.0, -2.0], [1.0, 0.0, 3.0]], np.float32)
    yv = np.array([1.0, 0.0, 3.0], np.float32)
    g.forward(x=xv, y=yv)
    expected = {
        ">": xv > yv,
        ">=": xv >= yv,
        "<": xv < yv,
        "<=": xv <= yv,
        "==": xv == yv,
        "!=": xv != yv,
    }[relation]
    np.testing.assert_array_equal(mask.value, expected.astype(np.int8))
    g.backward()
    np.testing.assert_array_equal(x.grad, np.where(expected, 6.0, 0.0))
    np.testing.assert_array_equal(y.grad, np.where(expected, 0.0, 3.0).sum(axis=0))
    assert out.value.dtype == np.float32


@pytest.mark.parametrize("fuse", [False, True])
def test_a_node_read_only_by_a_compare_gets_zeros_and_the_rest_their_gradients(fuse):
    """A computed node in front of a compare (tanh(x) > 0, x * 0.7 > y as a where's mask)
    is an ancestor of the loss that no gradient reaches: backward ran its gate on a dout
    of None and failed ("unsupported operand type(s) for *: 'NoneType' and 'float'");
    now it gets zeros, as every node the loss does not send a gradient to."""
    g = gn.Graph()
    g.fuse = fuse
    x, y = g.input("x", shape=(None, 3)), g.input("y", shape=(3,))
    squashed, scaled = g.tanh(x, name="squashed"), g.multiply(x, 0.7, name="scaled")
    positive, below = g.compare(squashed, ">", 0.0), g.compare(scaled, "<", y)
    g.sum((g.where(positive, 2 * x, y) + g.where(below, x, 0.0)) * 3.0, name="loss")
    xv, yv = np.array([[0.5, -1.0, 2.0], [1.0, 0.0, 3.0]]), np.array([1.0, 0.0, 1.0])
    for _ in range(2):  # the plan as built, then as kept
        g.forward(x=xv, y=yv)
        g.backward()
        picked, under = np.tanh(xv) > 0, xv * 0.7 < yv
        np.testing.assert_array_equal(x.grad, 6.0 * picked + 3.0 * under)
        np.testing.assert_array_equal(y.grad, np.where(picked, 0.0, 3.0).sum(axis=0))
        for node in (squashed, scaled):
            np.testing.assert_array_equal(node.grad, np.zeros((2, 3)))


def test_compare_on_numbers_and_a_mask_times_a_float():
    g = gn.Graph()
    a = g.input("a")
    g.multiply(a, g.compare(a, "<=", 1.0), name="f")
    for value, grad in ((0.5, 1.0), (2.0, 0.0)):
        g.forward(a=value)
        g.backward()
        assert g["f"].value == value * (value <= 1.0) and a.grad == grad
    with pytest.raises(gn.GraphError, match="relation must be one of"):
        g.compare(a, "=>", 1.0)
