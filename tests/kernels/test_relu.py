"""The relu kernels: np.maximum(x, 0)'s numbers and the mask x > 0, on AVX2 (float32 and
float64 have kernels of their own there) and on the portable loop bit for bit the same, NaN
passing through, any size (the vector bodies of 4 and 32 elements and their tails, thread
chunks), the same for any thread count."""

import numpy as np
import pytest

from graphnet.kernels import _C

SPECIAL = [-1.5, 0.0, -0.0, 2.0, np.nan, -np.nan, np.inf, -np.inf, 1e-30, 5e-324, -5e-324]


def relu_with(avx2, x):
    before = _C.avx2_activations_active()
    _C.set_avx2_activations(avx2)
    try:
        return _C.relu_forward(x)
    finally:
        _C.set_avx2_activations(before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 11, 31, 32, 33, 64, 95, 4099, 3 * 65536 + 7])
def test_relu_forward_is_numpys_on_both_paths(dtype, n):
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n).astype(dtype)
    x[: min(n, len(SPECIAL))] = SPECIAL[:n]
    fast, portable = relu_with(True, x), relu_with(False, x)
    out, keep = fast
    np.testing.assert_array_equal(out, np.maximum(x, 0))
    np.testing.assert_array_equal(keep, x > 0)
    assert out.dtype == dtype and keep.dtype == np.bool_
    # the same bits on both paths, NaN payloads and the sign of zero included
    bits = f"u{out.itemsize}"
    np.testing.assert_array_equal(out.view(bits), portable[0].view(bits))
    np.testing.assert_array_equal(keep, portable[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_forward_the_same_for_any_thread_count(dtype):
    x = np.random.default_rng(2).standard_normal((5, 70_001)).astype(dtype)
    before = _C.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            _C.set_num_threads(threads)
            results.append(_C.relu_forward(x))
    finally:
        _C.set_num_threads(before)
    for out, keep in results[1:]:
        np.testing.assert_array_equal(out.view(np.uint8), results[0][0].view(np.uint8))
        np.testing.assert_array_equal(keep, results[0][1])
    np.testing.assert_array_equal(_C.relu_forward(x.T)[0], np.maximum(x.T, 0))
