"""The C++ softmax loss over rows behind temporal_softmax_loss (cpp/softmax_loss.h): against
a float64 numpy reference on random shapes (ragged AVX2 tails, one class, masked rows, an
empty batch), the AVX2 exp against the C library's, the same bits on any number of
threads, NaN and inf scores, and bad labels refused with ValueError (never a crash)."""

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from graphnet import rnn_layers as R
from graphnet.kernels import _C
from .test_avx2 import kernel_threads
from .test_recurrent_kernels import avx2_activations


def reference(x, labels, weight):
    """The weighted loss and its gradient, in float64 numpy, the textbook way."""
    x = x.astype(np.float64)
    p = np.exp(x - x.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    rows = np.arange(len(x))
    loss = -(weight * np.log(p[rows, labels])).sum()
    dx = p * weight[:, None]
    dx[rows, labels] -= weight
    return loss, dx


# The label's entry is weight * (p - 1): with p near 1 it cancels, and float32's p is exact
# only to an ulp or two of 1.0 (6e-8 each), so the absolute bound is two ulps of 1.0.
TOLERANCE = {
    np.float64: dict(rtol=1e-12, atol=1e-15),
    np.float32: dict(rtol=2e-5, atol=2 * np.finfo(np.float32).eps),
}


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(0, 40),
    V=st.integers(1, 40),
    dtype=st.sampled_from([np.float32, np.float64]),
    avx2=st.booleans(),
    seed=st.integers(0, 2**16),
)
@example(rows=17, V=3, dtype=np.float32, avx2=False, seed=3)  # p - 1 two ulps off
def test_matches_the_float64_reference(rows, V, dtype, avx2, seed):
    rng = np.random.default_rng(seed)
    x = (3 * rng.standard_normal((rows, V))).astype(dtype)
    labels = rng.integers(V, size=rows)
    weight = (rng.random(rows) * (rng.random(rows) < 0.8)).astype(dtype)  # some masked
    with avx2_activations(avx2):
        loss, dx = _C.softmax_loss(x, labels, weight)
    expected_loss, expected_dx = reference(x, labels, weight.astype(np.float64))
    assert dx.dtype == dtype and dx.shape == x.shape
    np.testing.assert_allclose(loss, expected_loss, **TOLERANCE[dtype])
    np.testing.assert_allclose(dx, expected_dx, **TOLERANCE[dtype])


def test_temporal_softmax_loss_in_float16_computes_in_float32():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 5))
    y, mask = rng.integers(5, size=(2, 3)), np.ones((2, 3), bool)
    loss, dx = R.temporal_softmax_loss(x.astype(np.float16), y, mask)
    expected_loss, expected_dx = R.temporal_softmax_loss(
        x.astype(np.float16).astype(np.float32), y, mask
    )
    assert dx.dtype == np.float32
    assert loss == expected_loss and np.array_equal(dx, expected_dx)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_bits_on_any_number_of_threads(dtype):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((700, 1000)).astype(dtype)  # 11 blocks of 64 rows
    labels = rng.integers(1000, size=700)
    weight = np.where(rng.random(700) < 0.3, 0, 0.01).astype(dtype)  # masked rows too
    results = []
    for threads in (1, 2, 3):
        with kernel_threads(threads):
            results.append(_C.softmax_loss(x, labels, weight))
    for loss, dx in results[1:]:
        assert loss == results[0][0] and dx.tobytes() == results[0][1].tobytes()


def test_nan_scores_give_nan_and_masked_rows_add_nothing():
    x = np.array([[0.0, np.nan, 1.0], [np.inf, 0.0, 1.0], [0.0, 1.0, 2.0]], np.float32)
    labels = np.array([0, 1, 2])
    loss, dx = _C.softmax_loss(x, labels, np.array([1, 0, 1], np.float32))
    assert np.isnan(loss) and np.isnan(dx[0]).all()
    loss, dx = _C.softmax_loss(x[1:], labels[1:], np.array([0, 1], np.float32))
    expected_loss, expected_dx = reference(x[2:], labels[2:], np.ones(1))
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-6)
    np.testing.assert_allclose(dx[1:], expected_dx, rtol=1e-6)
    assert not dx[0].any()  # the masked row of an inf: no gradient either


@pytest.mark.parametrize(
    "args, message",
    [
        ((np.zeros((2, 3)), np.array([0, 3]), np.ones(2)), r"label 3 of row 1 is not in \[0, 3\)"),
        ((np.zeros((2, 3)), np.array([-1, 0]), np.ones(2)), r"label -1 of row 0"),
        ((np.zeros((2, 0)), np.array([0, 0]), np.ones(2)), r"not in \[0, 0\)"),
        ((np.zeros((2, 3)), np.array([0, 0], np.int32), np.ones(2)), "must be int64"),
        ((np.zeros((2, 3)), np.array([0, 0]), np.ones(3)), "row weights"),
        ((np.zeros((2, 3)), np.array([0, 0]), np.ones(2, np.float32)), "dtype"),
        ((np.zeros(3), np.array([0]), np.ones(1)), "2-D"),
    ],
)
def test_bad_arguments_are_refused(args, message):
    with pytest.raises(ValueError, match=message):
        _C.softmax_loss(*args)


def test_no_rows_no_loss():
    loss, dx = _C.softmax_loss(np.zeros((0, 0)), np.zeros(0, np.int64), np.zeros(0))
    assert loss == 0.0 and dx.shape == (0, 0)


def mean_by_numpy(x, labels, gradient=True):
    """What the softmax loss gate computed around softmax_loss before mean_softmax_loss: a
    weight of 1 per row, the loss divided by the rows in float64 and rounded to x's dtype,
    dx divided by the rows in numpy."""
    loss, dx = _C.softmax_loss(x, labels, np.ones(len(x), x.dtype), gradient)
    if dx is not None:
        dx /= len(x)
    return np.asarray(loss / len(x), dtype=x.dtype)[()], dx


@settings(max_examples=80, deadline=None)
@given(
    rows=st.integers(1, 300),
    V=st.integers(1, 40),
    dtype=st.sampled_from([np.float32, np.float64]),
    special=st.sampled_from([None, np.inf, -np.inf, np.nan, -0.0]),
    threads=st.integers(1, 3),
    gradient=st.booleans(),
    seed=st.integers(0, 2**16),
)
@example(rows=1, V=10, dtype=np.float32, special=None, threads=1, gradient=True, seed=0)
def test_the_mean_is_softmax_loss_divided_by_numpy_bit_for_bit(
    rows, V, dtype, special, threads, gradient, seed
):
    rng = np.random.default_rng(seed)
    x = (5 * rng.standard_normal((rows, V))).astype(dtype)
    if special is not None:
        x[rng.integers(rows), rng.integers(V)] = special
    labels = rng.integers(V, size=rows)
    with kernel_threads(threads), np.errstate(all="ignore"):
        loss, dx = _C.mean_softmax_loss(x, labels, gradient)
        want_loss, want_dx = mean_by_numpy(x, labels, gradient)
    assert type(loss) is dtype and loss.tobytes() == want_loss.tobytes()
    if gradient:
        assert dx.dtype == dtype and dx.shape == x.shape
        assert dx.tobytes() == want_dx.tobytes()
    else:
        assert dx is None and want_dx is None


@pytest.mark.parametrize(
    "args, message",
    [
        ((np.zeros((2, 3)), np.array([0, 3])), r"label 3 of row 1 is not in \[0, 3\)"),
        ((np.zeros((2, 3), np.float32), np.array([-1, 0])), r"label -1 of row 0"),
        ((np.zeros((0, 3)), np.zeros(0, np.int64)), "no rows"),
        ((np.zeros((2, 3)), np.array([0, 0], np.int32)), "must be int64"),
        ((np.zeros((2, 3)), np.array([0, 0, 0])), "labels"),
        ((np.zeros((2, 3), np.int64), np.array([0, 0])), "float32 or float64"),
        ((np.zeros(3), np.array([0])), "2-D"),
    ],
)
def test_the_mean_refuses_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        _C.mean_softmax_loss(*args)


def temporal_by_numpy(x, y, mask, gradient):
    """What temporal_softmax_loss computed around softmax_loss before sequence_softmax_loss:
    each step weighted by (mask.astype(bool) / max(N, 1)).astype(x.dtype)."""
    N, T, V = x.shape
    weight = (mask.reshape(N * T).astype(bool) / max(N, 1)).astype(x.dtype)
    return _C.softmax_loss(x.reshape(N * T, V), y.reshape(N * T), weight, gradient)


# (N, T, V) up to 7 sequences of 9 steps, and the zoo's language model's one of 50 steps
SEQUENCES = st.tuples(st.integers(0, 7), st.integers(1, 9), st.integers(1, 40)) | st.just(
    (1, 50, 65)
)


@settings(max_examples=80, deadline=None)
@given(
    shape=SEQUENCES,
    dtypes=st.tuples(st.sampled_from([np.float32, np.float64]), st.sampled_from([bool, np.int64])),
    special=st.sampled_from([None, np.inf, -np.inf, np.nan, -0.0]),
    threads=st.integers(1, 3),
    gradient=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_the_sequence_loss_is_the_masked_softmax_loss_bit_for_bit(
    shape, dtypes, special, threads, gradient, seed
):
    (N, T, V), (dtype, mask_dtype) = shape, dtypes
    rng = np.random.default_rng(seed)
    x = (5 * rng.standard_normal((N, T, V))).astype(dtype)
    if special is not None and N:
        x[rng.integers(N), rng.integers(T), rng.integers(V)] = special
    y = rng.integers(V, size=(N, T))
    mask = rng.integers(-2, 3, size=(N, T)).astype(mask_dtype)  # zeros, ones, 2 and -1
    with kernel_threads(threads), np.errstate(all="ignore"):
        loss, dx = _C.sequence_softmax_loss(x, y, mask, gradient)
        want_loss, want_dx = temporal_by_numpy(x, y, mask, gradient)
    assert type(loss) is float and np.float64(loss).tobytes() == np.float64(want_loss).tobytes()
    if gradient:
        assert dx.dtype == dtype and dx.shape == x.shape
        assert dx.tobytes() == want_dx.tobytes()
    else:
        assert dx is None


@pytest.mark.parametrize(
    "args, message",
    [
        ((np.zeros((1, 2, 3)), np.array([[0, 3]]), np.ones((1, 2), bool)), r"label 3 of row 1"),
        ((np.zeros((1, 2, 3)), np.array([[0, 0]], np.int32), np.ones((1, 2), bool)), "int64"),
        ((np.zeros((1, 2, 3)), np.array([[0, 0]]), np.ones((1, 2))), "bool or int64"),
        ((np.zeros((1, 2, 3)), np.array([[0, 0]]), np.ones((1, 2), np.int32)), "bool or int64"),
        ((np.zeros((1, 2, 3)), np.array([[0, 0, 0]]), np.ones((1, 2), bool)), "y must have shape"),
        ((np.zeros((1, 2, 3)), np.array([[0, 0]]), np.ones((2, 1), bool)), "mask must have shape"),
        ((np.zeros((1, 2, 3), np.float16), np.array([[0, 0]]), np.ones((1, 2), bool)), "float32"),
        ((np.zeros((2, 3)), np.array([[0, 0]]), np.ones((1, 2), bool)), "3-D"),
    ],
)
def test_the_sequence_loss_refuses_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        _C.sequence_softmax_loss(*args)


@pytest.mark.parametrize(
    "y_dtype, mask_dtype, x_dtype",
    [
        (np.int64, np.bool_, np.float32),
        (np.int32, np.bool_, np.float64),
        (np.int64, np.uint8, np.float32),
        (np.int64, np.int64, np.float16),
    ],
)
def test_temporal_softmax_loss_is_the_same_in_the_binding_and_around_it(
    y_dtype, mask_dtype, x_dtype
):
    """The course function takes the binding where it can, numpy's calls where it cannot
    (other label, mask or score dtypes): the numbers of the numpy calls either way."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 4, 6)).astype(x_dtype)
    y = rng.integers(6, size=(3, 4)).astype(y_dtype)
    mask = (rng.random((3, 4)) < 0.7).astype(mask_dtype)
    loss, dx = R.temporal_softmax_loss(x, y, mask)
    kernel_x = x if x.dtype != np.float16 else x.astype(np.float32)
    want_loss, want_dx = temporal_by_numpy(kernel_x, y.astype(np.int64), mask, True)
    assert loss == want_loss and dx.tobytes() == want_dx.tobytes()
    y[0, 0] = 6
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 6\)"):
        R.temporal_softmax_loss(x, y, mask)  # the course's words, from the binding's refusal
