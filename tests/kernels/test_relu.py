"""The relu kernels: np.maximum(x, 0)'s numbers and the mask x > 0, on AVX2 (float32 and
float64 have kernels of their own there) and on the portable loop bit for bit the same, NaN
passing through, any size (the vector bodies of 4 and 32 elements and their tails, thread
chunks), the same for any thread count; and the max pooling's AVX2 planes (float32 and
float64, the 2x2 stride-2 rows and any other window at stride 1 or 2), against the scalar
ones and the naive loops."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphnet.kernels import _C

from .test_avx2 import kernel_threads
from .test_fast_layers import max_pool_forward_ref

SPECIAL = [-1.5, 0.0, -0.0, 2.0, np.nan, -np.nan, np.inf, -np.inf, 1e-30, 5e-324, -5e-324]


def relu_with(avx2, x):
    return on_avx2(avx2, _C.relu_forward, x)


def on_avx2(avx2, kernel, *args, **kwargs):
    """kernel(*args, **kwargs) with the AVX2 relu and pooling kernels on or off."""
    before = _C.avx2_activations_active()
    _C.set_avx2_activations(avx2)
    try:
        return kernel(*args, **kwargs)
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


def pool_with(avx2, x, relu_first, window):
    return on_avx2(avx2, _C.max_pool_forward, x, *window, relu_first=relu_first)


@settings(max_examples=300, deadline=None)
@given(
    N=st.integers(1, 2),
    C=st.integers(1, 3),
    H=st.integers(1, 12),
    W=st.integers(1, 45),
    window=st.one_of(  # (pool_height, pool_width, stride); the CNNs' 2x2 stride 2 often
        st.just((2, 2, 2)), st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(1, 6))
    ),
    relu_first=st.booleans(),
    rounded=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_max_pool_on_avx2_is_the_scalar_planes(
    N, C, H, W, window, relu_first, rounded, dtype, seed
):
    """Max pooling with any window and stride (overlapping windows, windows ending at the
    plane's edge, stride larger than the window; the 2x2 stride-2 rows and the planes of
    whole vectors of windows and their partial last ones on AVX2): the same maxima as the
    scalar planes and the naive loops (the first in row-major order, a NaN beating any
    number, -0 and +0 apart), the same winners, on one and two threads."""
    window = (min(window[0], H), min(window[1], W), window[2])
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    if rounded:  # ties everywhere
        x = np.round(x)
    flat = x.reshape(-1)
    flat[rng.integers(0, flat.size, 6)] = rng.choice(SPECIAL, 6).astype(dtype)
    bits = f"u{x.itemsize}"
    (out, winners), (scalar_out, scalar_winners) = (
        pool_with(avx2, x, relu_first, window) for avx2 in (True, False)
    )
    np.testing.assert_array_equal(out.view(bits), scalar_out.view(bits))
    np.testing.assert_array_equal(winners, scalar_winners)
    seen = np.maximum(x, 0) if relu_first else x
    np.testing.assert_array_equal(out, max_pool_forward_ref(seen, *window))
    with kernel_threads(2):
        again = pool_with(True, x, relu_first, window)
    np.testing.assert_array_equal(again[0].view(bits), out.view(bits))
    np.testing.assert_array_equal(again[1], winners)
