"""The softmax and SVM loss gates on their C++ kernels, and the mean gate over trailing axes
on C++ row means: against the course's numpy losses and PyTorch's on random shapes (float32
and float64, int32 and int64 labels), the course's error for bad labels, the course's
kernel for other dtypes; the mean against np.mean bit for bit on images of any size, and
over any single axis of any rank."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphnet as gn
from graphnet.gates.nn import SoftmaxLoss, SvmLoss
from graphnet.gates.reduce import Sum
from graphnet.gates.tensor import Mean
from graphnet.kernels import layers

LOSSES = ["softmax_loss", "svm_loss"]
TOLERANCE = {np.float32: dict(rtol=2e-5, atol=1e-7), np.float64: dict(rtol=1e-12, atol=1e-15)}


def loss_graph(kind, scores, labels):
    g = gn.Graph(dtype=scores.dtype)
    x = g.param("x", scores)
    y = g.input("y", shape=(None,), dtype=labels.dtype, requires_grad=False)
    out = getattr(g, kind)(x, y)
    g.forward(y=labels)
    g.backward(out)
    return out.value, g["x"].grad


def random_scores(N, C, dtype, seed):
    rng = np.random.default_rng(seed)
    return (3 * rng.standard_normal((N, C))).astype(dtype), rng.integers(0, C, N)


@settings(max_examples=80, deadline=None)
@given(
    kind=st.sampled_from(LOSSES),
    N=st.integers(1, 70),
    C=st.integers(1, 130),
    dtype=st.sampled_from([np.float32, np.float64]),
    label_dtype=st.sampled_from([np.int64, np.int32]),
    seed=st.integers(0, 2**16),
)
def test_loss_gates_are_the_course_losses(kind, N, C, dtype, label_dtype, seed):
    scores, labels = random_scores(N, C, dtype, seed)
    loss, dscores = loss_graph(kind, scores, labels.astype(label_dtype))
    want_loss, want_dscores = getattr(layers, kind)(scores, labels)
    assert loss.dtype == dtype and dscores.dtype == dtype
    np.testing.assert_allclose(loss, want_loss, **TOLERANCE[dtype])
    np.testing.assert_allclose(dscores, want_dscores, **TOLERANCE[dtype])


@pytest.mark.torch
@pytest.mark.parametrize("kind", LOSSES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("N, C", [(1, 10), (16, 10), (64, 17), (100, 1000), (7, 1)])
def test_loss_gates_are_pytorchs(kind, dtype, N, C):
    torch = pytest.importorskip("torch")
    scores, labels = random_scores(N, C, dtype, N * C)
    loss, dscores = loss_graph(kind, scores, labels)
    t = torch.tensor(scores, requires_grad=True)
    F = torch.nn.functional
    if kind == "softmax_loss":
        want = F.cross_entropy(t, torch.from_numpy(labels))
    else:  # PyTorch averages over the C classes too; the course sums over them
        want = F.multi_margin_loss(t, torch.from_numpy(labels)) * C
    want.backward()
    np.testing.assert_allclose(loss, want.item(), **TOLERANCE[dtype])
    np.testing.assert_allclose(dscores, t.grad.numpy(), **TOLERANCE[dtype])


@pytest.mark.parametrize("kind", LOSSES)
def test_a_bad_label_raises_the_course_error(kind):
    scores, labels = random_scores(3, 5, np.float32, 0)
    for bad in (5, -1):
        labels[1] = bad
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\)"):
            loss_graph(kind, scores, labels)


@pytest.mark.parametrize("gate", [SoftmaxLoss, SvmLoss])
def test_other_dtypes_take_the_course_kernel(gate):
    scores, labels = random_scores(4, 6, np.float16, 1)
    loss, dscores = gate().forward(scores, labels)
    want_loss, want_dscores = gate.kernel(scores, labels)
    assert loss.dtype == np.float16 and loss == np.float16(want_loss)
    np.testing.assert_array_equal(dscores, want_dscores)


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a.reshape(-1).view(np.uint8), b.reshape(-1).view(np.uint8))


@settings(max_examples=60, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 9), st.integers(1, 40), st.integers(1, 40), st.integers(1, 40)),
    axis=st.sampled_from([(2, 3), (-2, -1), 3, (1, 2, 3), None, (0, 1, 2, 3), (1, 3)]),
    keepdims=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
    layout=st.sampled_from(["C", "F", "sliced"]),
)
def test_mean_gate_is_np_mean_bit_for_bit_on_images(shape, axis, keepdims, dtype, layout):
    x = np.random.default_rng(sum(shape)).standard_normal(shape).astype(dtype) * 1e3
    if layout == "F":
        x = np.asfortranarray(x)
    elif layout == "sliced":
        x = x[:, :, ::2]
    out, cache = Mean(axis=axis, keepdims=keepdims).forward(x)
    expected = np.mean(x, axis=axis, keepdims=keepdims)
    assert type(out) is type(expected) and cache == x.shape
    same_bits(out, expected)


@settings(max_examples=80, deadline=None)
@given(
    shape=st.lists(st.integers(1, 40), min_size=2, max_size=4).map(tuple),
    pick=st.data(),
    keepdims=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
    layout=st.sampled_from(["C", "F", "sliced"]),
)
def test_mean_gate_over_one_axis_is_np_mean_bit_for_bit(shape, pick, keepdims, dtype, layout):
    """A single axis anywhere (a transformer's mean over the steps: C++ sums in order where
    entries follow it), and its gradient: dout / n in each averaged entry."""
    axis = pick.draw(st.integers(-len(shape), len(shape) - 1))
    x = np.random.default_rng(sum(shape)).standard_normal(shape).astype(dtype) * 1e3
    if layout == "F":
        x = np.asfortranarray(x)
    elif layout == "sliced":
        x = x[..., ::2]
    gate = Mean(axis=axis, keepdims=keepdims)
    out, cache = gate.forward(x)
    same_bits(out, np.mean(x, axis=axis, keepdims=keepdims))
    dout = np.random.default_rng(len(shape)).standard_normal(np.shape(out)).astype(dtype)
    (dx,) = gate.backward(dout, cache, (True,))
    spread = dout / x.shape[axis] if keepdims else np.expand_dims(dout / x.shape[axis], axis)
    same_bits(dx, np.broadcast_to(spread, x.shape).copy())


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the means of empty axes
@settings(max_examples=80, deadline=None)
@given(
    shape=st.lists(st.integers(0, 5), min_size=1, max_size=4).map(tuple),
    pick=st.data(),
    keepdims=st.booleans(),
    dtype=st.sampled_from([np.float16, np.float32, np.float64, np.int64]),
)
def test_sum_and_mean_backward_spread_dout_as_broadcast_copies_do(shape, pick, keepdims, dtype):
    """The gates' backward, dout (divided by n for the mean) in every summed entry, against
    np.expand_dims and np.broadcast_to's copy of it, bit for bit."""
    rank = len(shape)
    single = st.sampled_from([None, *range(-rank, rank)])  # None: every axis
    axis = pick.draw(single | st.sets(st.integers(0, rank - 1), min_size=1).map(tuple))
    for gate in (Sum(axis=axis, keepdims=keepdims), Mean(axis=axis, keepdims=keepdims)):
        if dtype is np.int64 and gate.op == "mean":
            continue  # a mean's gradient is of a float
        x = np.zeros(shape, dtype)
        out, cache = gate.forward(x)
        dout = (np.random.default_rng(rank).standard_normal(np.shape(out)) * 100).astype(dtype)
        (dx,) = gate.backward(dout, cache, (True,))
        summed = sorted(gate._axes(rank))
        n = max(int(np.prod([shape[a] for a in summed])), 1)
        spread = dout / n if gate.op == "mean" else dout
        if not keepdims and axis is not None:
            spread = np.expand_dims(spread, tuple(summed))
        same_bits(dx, np.broadcast_to(spread, shape).copy())
        assert dx.flags.c_contiguous and dx.flags.writeable
