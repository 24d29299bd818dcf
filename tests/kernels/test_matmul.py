"""graphnet._C.matmul, the product under the affine gate, against numpy."""

import numpy as np
import pytest

from graphnet.kernels import _C


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize("transpose_b", [False, True])
@pytest.mark.parametrize(
    "m,n,k", [(50, 100, 8192 // 16), (1, 1, 1), (300, 7, 33), (5, 200, 3), (0, 4, 3), (4, 3, 0)]
)
def test_matmul_matches_numpy(dtype, tol, transpose_a, transpose_b, m, n, k):
    rng = np.random.default_rng(m * 1000 + n * 10 + k)
    a = rng.standard_normal((k, m) if transpose_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if transpose_b else (k, n)).astype(dtype)
    expected = (a.T if transpose_a else a).astype(np.float64) @ (b.T if transpose_b else b)
    out = _C.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b)
    assert out.dtype == dtype and out.shape == (m, n)
    np.testing.assert_allclose(out, expected, rtol=tol, atol=tol * max(1, k))


def test_matmul_takes_views_and_is_bitwise_equal_on_any_thread_count():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((64, 300)).astype(np.float32)[:, ::2]  # not contiguous
    b = np.asfortranarray(rng.standard_normal((150, 90)).astype(np.float32))
    before = _C.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            _C.set_num_threads(threads)
            results.append(_C.matmul(a, b))
    finally:
        _C.set_num_threads(before)
    np.testing.assert_allclose(results[0], a.astype(np.float64) @ b, rtol=1e-5, atol=1e-4)
    for other in results[1:]:
        np.testing.assert_array_equal(results[0], other)


@pytest.mark.parametrize(
    "a,b,kwargs,words",
    [
        (np.ones((2, 3)), np.ones((4, 5)), {}, r"op\(a\) is 2 x 3 but op\(b\) is 4 x 5"),
        (np.ones((2, 3)), np.ones((3,)), {}, r"matmul b must be 2-D"),
        (np.ones((2, 3), np.float32), np.ones((3, 2)), {}, "has dtype float64 but a has float32"),
        (np.ones((2, 3), int), np.ones((3, 2), int), {}, "must be float32 or float64"),
    ],
)
def test_matmul_errors_name_the_shapes(a, b, kwargs, words):
    with pytest.raises(ValueError, match=words):
        _C.matmul(a, b, **kwargs)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize("transpose_b", [False, True])
@pytest.mark.parametrize("n,k", [(100, 3072), (1, 7), (513, 2), (24, 4096)])
def test_one_row_takes_the_vector_path(dtype, tol, transpose_a, transpose_b, n, k):
    """m = 1 (one sample through an affine layer) runs BLAS's gemv: the same product, and
    the same bits on any thread count."""
    rng = np.random.default_rng(n + k)
    a = rng.standard_normal((k, 1) if transpose_a else (1, k)).astype(dtype)
    b = rng.standard_normal((n, k) if transpose_b else (k, n)).astype(dtype)
    expected = (a.T if transpose_a else a).astype(np.float64) @ (b.T if transpose_b else b)
    before = _C.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            _C.set_num_threads(threads)
            results.append(_C.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b))
    finally:
        _C.set_num_threads(before)
    assert results[0].dtype == dtype and results[0].shape == (1, n)
    np.testing.assert_allclose(results[0], expected, rtol=tol, atol=tol * max(1, k))
    np.testing.assert_array_equal(results[0], results[1])
