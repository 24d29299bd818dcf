"""The C++ row means behind the mean gate over trailing axes (cpp/row_means.h): numpy's
pairwise summation, so np.mean's numbers bit for bit, on row lengths on both sides of
numpy's block of 128 and its unroll of 8, many rows and few, NaN, inf and -0.0, the same
bits on any number of threads, and bad arguments refused with ValueError (never a crash).
The same for the means over a middle axis (summed in order, as numpy does) and their
gradient spread back."""

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from graphnet.kernels import _C
from .test_avx2 import kernel_threads

DTYPES = st.sampled_from([np.float32, np.float64])


def same_bits(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


@settings(max_examples=120, deadline=None)
@given(
    rows=st.integers(1, 50),
    n=st.one_of(st.integers(1, 300), st.integers(300, 20000)),
    dtype=DTYPES,
    scale=st.sampled_from([1e-3, 1.0, 1e3, 1e30]),
    seed=st.integers(0, 2**16),
)
@example(rows=3, n=7, dtype=np.float32, scale=1.0, seed=0)  # below the unroll
@example(rows=3, n=135, dtype=np.float32, scale=1.0, seed=0)  # one split, ragged halves
@example(rows=2, n=8193, dtype=np.float64, scale=1.0, seed=0)  # past numpy's buffer size
def test_row_means_are_np_mean_bit_for_bit(rows, n, dtype, scale, seed):
    x = (np.random.default_rng(seed).standard_normal((rows, n)) * scale).astype(dtype)
    same_bits(_C.row_means(x), np.mean(x, axis=1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 8, 9, 49, 130])
def test_special_values_are_np_means(dtype, n):
    x = np.zeros((6, n), dtype)
    x[0] = -0.0  # a sum of -0.0 is 0.0 in numpy (0 + ...)
    x[1, -1] = np.nan
    x[2, 0] = np.inf
    x[3, : min(n, 2)] = [np.inf, -np.inf][: min(n, 2)]
    x[4] = np.finfo(dtype).max  # the sum overflows to inf
    x[5] = np.arange(n)
    with np.errstate(all="ignore"):
        same_bits(_C.row_means(x), np.mean(x, axis=1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_bits_on_any_number_of_threads(dtype):
    x = np.random.default_rng(2).standard_normal((3000, 49)).astype(dtype)  # several blocks
    results = []
    for threads in (1, 2):
        with kernel_threads(threads):
            results.append(_C.row_means(x))
    same_bits(results[0], results[1])


def test_a_non_contiguous_input_is_averaged_as_its_values():
    x = np.random.default_rng(3).standard_normal((40, 30)).astype(np.float32)
    same_bits(_C.row_means(x.T), np.mean(np.ascontiguousarray(x.T), axis=1))


@pytest.mark.parametrize(
    "x, message",
    [
        (np.zeros(3), "2-D"),
        (np.zeros((2, 3, 4)), "2-D"),
        (np.zeros((2, 3), np.int64), "float32 or float64"),
        (np.zeros((2, 3), np.float16), "float32 or float64"),
    ],
)
def test_bad_arguments_are_refused(x, message):
    with pytest.raises(ValueError, match=message):
        _C.row_means(x)


def test_empty_rows():
    assert _C.row_means(np.zeros((0, 5), np.float32)).shape == (0,)
    with np.errstate(invalid="ignore"):
        assert np.isnan(_C.row_means(np.zeros((2, 0)))).all()  # 0 / 0, as np.mean


# ---- the means over a middle axis, and their gradient -----------------------------------


@settings(max_examples=120, deadline=None)
@given(
    outer=st.integers(1, 6),
    n=st.one_of(st.integers(1, 20), st.integers(120, 700)),
    inner=st.integers(2, 70),
    dtype=DTYPES,
    scale=st.sampled_from([1e-3, 1.0, 1e3, 1e30]),
    seed=st.integers(0, 2**16),
)
@example(outer=1, n=32, inner=64, dtype=np.float32, scale=1.0, seed=0)  # a transformer's
@example(outer=2, n=1000, inner=2, dtype=np.float32, scale=1.0, seed=0)  # numpy's pairwise size
def test_middle_means_are_np_mean_bit_for_bit(outer, n, inner, dtype, scale, seed):
    x = (np.random.default_rng(seed).standard_normal((outer, n, inner)) * scale).astype(dtype)
    same_bits(_C.middle_means(x), np.mean(x, axis=1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 2, 9, 130])
def test_middle_means_of_special_values_are_np_means(dtype, n):
    x = np.zeros((2, n, 6), dtype)
    x[0, :, 0] = -0.0  # a sum of -0.0 is 0.0 in numpy (0 + ...)
    x[0, -1, 1] = np.nan
    x[0, 0, 2] = np.inf
    x[0, : min(n, 2), 3] = [np.inf, -np.inf][: min(n, 2)]
    x[0, :, 4] = np.finfo(dtype).max  # the sum overflows to inf
    x[1] = np.arange(n * 6).reshape(n, 6)
    with np.errstate(all="ignore"):
        same_bits(_C.middle_means(x), np.mean(x, axis=1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_middle_means_and_spread_give_the_same_bits_on_any_number_of_threads(dtype):
    x = np.random.default_rng(4).standard_normal((301, 37, 11)).astype(dtype)  # several blocks
    dout = x[:, 0]
    results = []
    for threads in (1, 2, 3):
        with kernel_threads(threads):
            results.append((_C.middle_means(x), _C.spread_means(dout, 37)))
    for means, spread in results[1:]:
        same_bits(means, results[0][0])
        same_bits(spread, results[0][1])


def test_middle_means_of_a_view_are_those_of_its_values():
    x = np.random.default_rng(5).standard_normal((6, 40, 30)).astype(np.float32)
    for view in (x.transpose(2, 1, 0), x[:, ::3, 1::2]):
        same_bits(_C.middle_means(view), np.mean(np.ascontiguousarray(view), axis=1))


@settings(max_examples=60, deadline=None)
@given(
    outer=st.integers(0, 5),
    n=st.integers(0, 40),
    inner=st.integers(0, 9),
    dtype=DTYPES,
    seed=st.integers(0, 2**16),
)
def test_spread_means_are_the_divided_gradient_broadcast(outer, n, inner, dtype, seed):
    dout = (np.random.default_rng(seed).standard_normal((outer, inner)) * 100).astype(dtype)
    divided = np.true_divide(dout[:, None], max(n, 1))
    dx = _C.spread_means(dout, n)
    same_bits(dx, np.broadcast_to(divided, (outer, n, inner)).copy())
    assert dx.flags.c_contiguous


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: _C.middle_means(np.zeros((2, 3))), "3-D"),
        (lambda: _C.middle_means(np.zeros((2, 3, 4), np.int64)), "float32 or float64"),
        (lambda: _C.spread_means(np.zeros((2, 3, 4)), 2), "2-D"),
        (lambda: _C.spread_means(np.zeros((2, 3), np.float16), 2), "float32 or float64"),
        (lambda: _C.spread_means(np.zeros((2, 3)), -1), "0 or more"),
        (lambda: _C.spread_means(np.zeros((4, 3)), 2**62), "64 bits"),
    ],
)
def test_bad_middle_arguments_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_middle_means_of_empty_axes():
    assert _C.middle_means(np.zeros((0, 5, 3), np.float32)).shape == (0, 3)
    assert _C.middle_means(np.zeros((2, 5, 0))).shape == (2, 0)
    with np.errstate(invalid="ignore"):
        assert np.isnan(_C.middle_means(np.zeros((2, 0, 3)))).all()  # 0 / 0, as np.mean
