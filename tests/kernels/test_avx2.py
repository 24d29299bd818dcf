"""The AVX2 kernels: the direct float32 stride-1 convolution and the skinny matrix multiply
under the affine forward. Each is checked against float64 references (the naive conv loops,
numpy's product), against the im2col + GEMM path it replaces, on every register-tile
remainder (filters, row tails, row tiles, column tails, inner blocks), and for bitwise
thread-count independence."""

import contextlib
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphnet.kernels import _C
from .test_fast_layers import (
    assert_within_rounding,
    conv_backward_ref,
    conv_error_bounds,
    conv_forward_ref,
)


def cpu_has_avx2_and_fma():
    """Whether the AVX2 kernels can run here: the CPU has AVX2 and FMA, and the build has
    the x86 kernels (a GRAPHNET_PORTABLE build has none)."""
    with open("/proc/cpuinfo") as info:
        flags = set(re.search(r"^flags\s*:(.*)$", info.read(), re.M).group(1).split())
    return {"avx2", "fma"} <= flags and _C.x86_kernels_built


@contextlib.contextmanager
def direct_conv(enabled):
    _C.set_direct_conv(enabled)
    try:
        yield
    finally:
        _C.set_direct_conv(True)


@contextlib.contextmanager
def kernel_threads(n):
    before = _C.get_num_threads()
    _C.set_num_threads(n)
    try:
        yield
    finally:
        _C.set_num_threads(before)


def assert_same_bits_on_any_thread_count(run, *args):
    """run(*args) gives a sequence of arrays: the same bits on 1, 2 and 3 kernel threads."""
    results = []
    for threads in (1, 2, 3):
        with kernel_threads(threads):
            results.append(run(*args))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_the_direct_kernels_run_on_this_cpu():
    """Otherwise the tests below would only exercise im2col + GEMM."""
    assert _C.direct_conv_active() == cpu_has_avx2_and_fma()
    with direct_conv(False):
        assert not _C.direct_conv_active()


def conv_case(N, C, H, W, F, HH, WW, pad, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((F, C, HH, WW)).astype(np.float32)
    b = rng.standard_normal(F).astype(np.float32)
    Ho, Wo = H + 2 * pad - HH + 1, W + 2 * pad - WW + 1
    dout = rng.standard_normal((N, F, Ho, Wo)).astype(np.float32)
    return x, w, b, dout


def check_direct_conv(N, C, H, W, F, HH, WW, pad, seed=0):
    x, w, b, dout = conv_case(N, C, H, W, F, HH, WW, pad, seed)
    bounds = conv_error_bounds(dout, x, w, b, 1, pad)
    out = _C.conv_forward(x, w, b, 1, pad)
    grads = _C.conv_backward(dout, x, w, 1, pad)
    refs = (conv_forward_ref(x, w, b, 1, pad),) + tuple(conv_backward_ref(dout, x, w, 1, pad))
    with direct_conv(False):  # the path it replaces gives the same numbers, to rounding
        others = (_C.conv_forward(x, w, b, 1, pad),) + _C.conv_backward(dout, x, w, 1, pad)
    for got, ref, other, bound in zip((out,) + grads, refs, others, bounds):
        assert got.dtype == np.float32
        assert_within_rounding(got, ref, bound, 1e-5)
        assert_within_rounding(got, other, bound, 2e-5)


# Output rows of 16, 20 and 32 pixels pick tiles of 6, 4 and 3 filters (x 2, 3, 4 vectors);
# filters 1..14 cover every remainder of those and of the 3-filter gradient tile.
@pytest.mark.slow
@pytest.mark.parametrize("W", [16, 20, 32])
@pytest.mark.parametrize("F", [1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 14])
def test_direct_conv_every_filter_remainder(F, W):
    check_direct_conv(2, 2, 5, W, F, 3, 3, 1)


# Rows of 2 to 8 vectors, with and without a masked tail (5 vectors take 3-vector tiles
# that run one vector past the row; 7 take 4-vector tiles).
@pytest.mark.slow
@pytest.mark.parametrize("W", [16, 17, 23, 24, 25, 31, 32, 33, 40, 41, 47, 48, 49, 57, 64])
def test_direct_conv_every_row_tail(W):
    check_direct_conv(2, 3, 4, W, 7, 3, 3, 1)


@pytest.mark.parametrize(
    "case",
    [
        (3, 3, 32, 32, 32, 7, 7, 3),  # the CIFAR layer
        (2, 1, 6, 20, 3, 6, 5, 0),  # kernel as tall as the image: one output row
        (2, 4, 7, 16, 5, 1, 1, 1),  # 1x1 kernel, padded (unpadded, it is one GEMM)
        (2, 13, 6, 16, 5, 3, 3, 1),  # 13 channels: dx, a conv with 13 outputs, has a remainder
        (1, 5, 8, 16, 9, 5, 2, 3),  # pad 3 >= kernel width 2: dx falls back to im2col + GEMM
        (2, 3, 11, 16, 8, 3, 5, 2),  # 45 taps, not a multiple of the 4-tap gradient tile
        (2, 3, 9, 15, 7, 3, 3, 1),  # rows of 15 < 16: everything on im2col + GEMM
    ],
)
@pytest.mark.slow
def test_direct_conv_shapes(case):
    check_direct_conv(*case)


def test_rows_narrower_than_two_vectors_take_im2col_and_gemm():
    """Below 16 output pixels a row the AVX2 tile would spend a broadcast per FMA and lose
    (README), so the switch changes nothing there; at 16 and above it does. (The AVX-512
    kernels, switched off here, take shorter rows: test_conv_paths.py.)"""

    def all_results(x, w, b, dout, pad):
        return (_C.conv_forward(x, w, b, 1, pad),) + _C.conv_backward(dout, x, w, 1, pad)

    _C.set_avx512_conv(False)
    try:
        for W, direct_runs in ((15, False), (32, True)):
            x, w, b, dout = conv_case(2, 3, 8, W, 8, 3, 3, 1)
            on = all_results(x, w, b, dout, 1)
            with direct_conv(False):
                off = all_results(x, w, b, dout, 1)
            same = all(np.array_equal(a, b_) for a, b_ in zip(on, off))
            assert same != (direct_runs and _C.direct_conv_active())  # none in a portable build
    finally:
        _C.set_avx512_conv(True)


@settings(max_examples=120, deadline=None)
@given(
    N=st.integers(1, 3),
    C=st.integers(1, 4),
    H=st.integers(1, 12),
    W=st.integers(10, 50),
    F=st.integers(1, 14),
    HH=st.integers(1, 7),
    WW=st.integers(1, 7),
    pad=st.integers(0, 4),
    seed=st.integers(0, 2**16),
)
@pytest.mark.slow
def test_direct_conv_fuzz(N, C, H, W, F, HH, WW, pad, seed):
    if HH > H + 2 * pad or WW > W + 2 * pad:
        return
    check_direct_conv(N, C, H, W, F, HH, WW, pad, seed)


def test_direct_conv_gradient_ignores_inf_the_window_never_reaches():
    """Pixels of the last columns are outside every window of the first kernel column
    (pad 0), so an inf there must not leak into that column of dw as 0 * inf."""
    x, w, b, dout = conv_case(2, 1, 5, 19, 3, 2, 4, 0)  # rows of 16
    x[:, :, :, -1] = np.inf
    dw = _C.conv_backward(dout, x, w, 1, 0)[1]
    assert np.isfinite(dw[:, :, :, 0]).all()
    with np.errstate(invalid="ignore"):  # the reference's inf - inf, expected
        ref = conv_backward_ref(dout, x, w, 1, 0)[1]
    np.testing.assert_array_equal(np.isfinite(dw), np.isfinite(ref))
    assert not np.isfinite(dw[:, :, :, -1]).any()  # the last kernel column does see it


def test_direct_conv_is_bitwise_equal_on_any_thread_count():
    x, w, b, dout = conv_case(37, 3, 12, 20, 7, 5, 5, 2)
    results = []
    for threads in (1, 2, 3):
        with kernel_threads(threads):
            results.append((_C.conv_forward(x, w, b, 1, 2),) + _C.conv_backward(dout, x, w, 1, 2))
    for other in results[1:]:
        for a, b_ in zip(results[0], other):
            np.testing.assert_array_equal(a, b_)


# ---- the skinny matrix multiply -----------------------------------------------------


@pytest.fixture
def no_avx512_matmul():
    """On a CPU with AVX-512 the products below run on gemm_avx512 (test_matmul.py checks
    it); the skinny kernel serves the CPUs with AVX2 only, so switch the AVX-512 one off."""
    _C.set_avx512_matmul(False)
    yield
    _C.set_avx512_matmul(True)


def skinny(m, n, k, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((m, k)).astype(np.float32),
        rng.standard_normal((k, n)).astype(np.float32),
    )


# n >= 24 and k >= 8 * max(m, n) select it. Rows 1..9 cover the 4-row tile's remainders,
# columns the 24-column tile's (and its 8-column vectors'), k the 256-deep blocks' edges.
@pytest.mark.slow
@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 9, 50])
@pytest.mark.parametrize("n", [24, 25, 31, 32, 33, 40, 41, 47, 48, 49, 100])
def test_skinny_matmul_every_tile_remainder(m, n, no_avx512_matmul):
    k = 8 * max(m, n) + 3
    a, b = skinny(m, n, k, seed=m * 100 + n)
    np.testing.assert_allclose(
        _C.matmul(a, b), a.astype(np.float64) @ b, rtol=1e-5, atol=1e-5 * np.sqrt(k)
    )


@pytest.mark.parametrize("k", [255, 256, 257, 511, 8192])
def test_skinny_matmul_block_edges(k, no_avx512_matmul):
    a, b = skinny(5, 30, k)
    np.testing.assert_allclose(
        _C.matmul(a, b), a.astype(np.float64) @ b, rtol=1e-5, atol=1e-5 * np.sqrt(k)
    )


def test_skinny_matmul_is_bitwise_equal_on_any_thread_count_and_takes_views(no_avx512_matmul):
    a, b = skinny(50, 100, 4096)
    a_strided = np.zeros((50, 2 * 4096), np.float32)[:, ::2]  # the same numbers, as views
    a_strided[...] = a
    b_fortran = np.asfortranarray(b)
    results = []
    for threads in (1, 2, 3, 7):
        with kernel_threads(threads):
            results.append(_C.matmul(a, b))
            np.testing.assert_array_equal(results[-1], _C.matmul(a_strided, b_fortran))
    for other in results[1:]:
        np.testing.assert_array_equal(results[0], other)


def test_skinny_matmul_propagates_nan_and_inf():
    a, b = skinny(6, 30, 1000)
    a[2, 500] = np.nan
    b[10, 3] = np.inf
    out = _C.matmul(a, b)
    ref = a.astype(np.float64) @ b
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_array_equal(np.isinf(out), np.isinf(ref))
