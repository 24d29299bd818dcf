"""The C++ multiclass hinge loss behind the svm_loss gate (cpp/svm_loss.h): its gradient is
the course's numpy formula's bit for bit and its loss that formula's to rounding (summed in
double) on random shapes, layouts and scales, NaN and inf scores as numpy has them, and bad
arguments refused with ValueError (never a crash)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphnet.kernels import _C, layers


@settings(max_examples=150, deadline=None)
@given(
    N=st.integers(1, 40),
    C=st.integers(1, 120),
    dtype=st.sampled_from([np.float32, np.float64]),
    scale=st.sampled_from([1e-3, 1.0, 50.0, 1e4]),
    transposed=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_svm_loss_is_the_course_formula(N, C, dtype, scale, transposed, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((C, N) if transposed else (N, C)) * scale).astype(dtype)
    x = x.T if transposed else x
    labels = rng.integers(0, C, N)
    loss, dx = _C.svm_loss(x, labels)
    want_loss, want_dx = layers.svm_loss(x, labels)
    assert dx.dtype == dtype and dx.flags.c_contiguous
    np.testing.assert_array_equal(dx, want_dx)
    exact = layers.svm_loss(x.astype(np.float64), labels)[0]  # margins rounded in float64
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(loss, exact, rtol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_and_inf_scores_are_numpys(dtype):
    x = np.array([[0.0, np.nan, 1.0], [np.inf, 0.0, 1.0], [0.0, 1.0, -np.inf], [np.nan, 0, 0]])
    x = x.astype(dtype)
    labels = np.array([0, 1, 2, 0])
    with np.errstate(invalid="ignore"):
        want_loss, want_dx = layers.svm_loss(x, labels)
        for rows in (slice(0, 1), slice(1, 2), slice(2, 3), slice(3, 4), slice(None)):
            loss, dx = _C.svm_loss(x[rows], labels[rows])
            want_loss, want_dx = layers.svm_loss(x[rows], labels[rows])
            np.testing.assert_array_equal(dx, want_dx)
            np.testing.assert_array_equal(loss, want_loss)  # NaN, inf or small integers


@pytest.mark.parametrize(
    "args, message",
    [
        ((np.zeros((2, 3)), np.array([0, 3])), r"label 3 of row 1 is not in \[0, 3\)"),
        ((np.zeros((2, 3)), np.array([-1, 0])), r"label -1 of row 0"),
        ((np.zeros((2, 0)), np.array([0, 0])), r"not in \[0, 0\)"),
        ((np.zeros((2, 3)), np.array([0, 0], np.int32)), "must be int64"),
        ((np.zeros((2, 3)), np.array([0, 0, 0])), "labels must have shape"),
        ((np.zeros((2, 3), np.int64), np.array([0, 0])), "float32 or float64"),
        ((np.zeros(3), np.array([0])), "2-D"),
    ],
)
def test_bad_arguments_are_refused(args, message):
    with pytest.raises(ValueError, match=message):
        _C.svm_loss(*args)


def test_no_rows_no_margins():
    loss, dx = _C.svm_loss(np.zeros((0, 3)), np.zeros(0, np.int64))
    assert np.isnan(loss) and dx.shape == (0, 3)  # 0 / 0 rows, as a mean of nothing
