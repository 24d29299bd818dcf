"""Winograd F(2x2, 3x3) (cpp/conv_winograd.h): float32 3x3 convs with stride 1 and pad 1 on
an AVX-512 CPU, forward and dx. Switched on for every such layer ('always'), on random
shapes (tiny and odd planes, channel counts off the vector width, batch 1 and empty), it
matches the naive loops within the rounding of its own terms, and gives bitwise the same
results on one thread as on two."""

import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphnet.kernels import _C
from .test_conv_paths import case, run
from .test_fast_layers import (
    assert_within_rounding,
    conv_backward_ref,
    conv_error_bounds,
    conv_forward_ref,
)

pytestmark = pytest.mark.skipif(
    not _C.avx512_conv_active(), reason="no AVX-512: Winograd is never used"
)

# The transforms of F(2x2, 3x3): V = B^T d B, U = G g G^T, y = A^T M A.
BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)


def winograd_bound(x, w, b):
    """Per output, the sum of the magnitudes of the terms Winograd adds up: |A^T| (sum over
    channels of |U| |V|) |A| + |b|, with |U| = |G| |g| |G^T| and |V| = |B^T| |d| |B| on each
    tile's 4x4 patch. Each rounding (transforms, products, sums) is a multiple of it. Wider
    than conv_error_bounds: a tile's terms take in its whole patch, and cancel exactly only
    in exact arithmetic."""
    x, w, b = (np.abs(np.asarray(a, np.float64)) for a in (x, w, b))
    N, C, H, W = x.shape
    th, tw = (H + 1) // 2, (W + 1) // 2
    xp = np.zeros((N, C, 2 * th + 2, 2 * tw + 2))
    xp[:, :, 1 : H + 1, 1 : W + 1] = x
    patches = np.stack(
        [
            np.stack([xp[:, :, i : i + 2 * th : 2, j : j + 2 * tw : 2] for j in range(4)], -1)
            for i in range(4)
        ],
        -2,
    )  # N, C, th, tw, 4, 4
    v = np.einsum("ai,nctuij,bj->nctuab", np.abs(BT), patches, np.abs(BT))
    u = np.einsum("ai,fcij,bj->fcab", np.abs(G), w, np.abs(G))
    m = np.einsum("nctuab,fcab->nftuab", v, u)
    y = np.einsum("ia,nftuab,jb->nftiuj", np.abs(AT), m, np.abs(AT))
    y = y.reshape(N, w.shape[0], 2 * th, 2 * tw)[:, :, :H, :W]
    return y + b[None, :, None, None]


@contextlib.contextmanager
def winograd_mode(mode):
    """Winograd switched to `mode` inside, back to 'auto' after."""
    _C.set_winograd_conv(mode)
    try:
        yield
    finally:
        _C.set_winograd_conv("auto")


def run_winograd(x, w, b, threads):
    with winograd_mode("always"):
        return run(x, w, b, 1, 1, threads)


@settings(max_examples=60, deadline=None)
@given(
    N=st.integers(0, 3),
    C=st.integers(1, 21),
    H=st.integers(1, 11),
    W=st.integers(1, 40),
    F=st.integers(1, 35),
    seed=st.integers(0, 2**16),
)
def test_winograd_matches_naive_and_any_thread_count(N, C, H, W, F, seed):
    x, w, b = case(N, C, H, W, F, 3, np.float32, seed)
    results, dout = run_winograd(x, w, b, threads=2)
    refs = (conv_forward_ref(x, w, b, 1, 1),) + tuple(conv_backward_ref(dout, x, w, 1, 1))
    turned = np.flip(w, (2, 3)).transpose(1, 0, 2, 3)  # dx: dout convolved with these
    bounds = (
        winograd_bound(x, w, b),
        winograd_bound(dout, turned, np.zeros(C)),
    ) + conv_error_bounds(dout, x, w, b, 1, 1)[2:]
    for got, ref, bound in zip(results, refs, bounds):
        assert got.dtype == np.float32
        # 1e-5 = 168 float32 epsilons: the worst case of sums of up to ~160 channels' terms
        assert_within_rounding(got, ref, bound, 1e-5)
    one_thread, _ = run_winograd(x, w, b, threads=1)
    for got, again in zip(results, one_thread):
        np.testing.assert_array_equal(got, again)


@pytest.mark.parametrize(
    "C, F, k, stride, pad, dtype, winograd",
    [
        (16, 16, 3, 1, 1, np.float32, True),
        (32, 64, 3, 1, 1, np.float32, True),
        (3, 32, 3, 1, 1, np.float32, False),  # few channels: the direct kernel is faster
        (32, 15, 3, 1, 1, np.float32, False),
        (32, 32, 3, 1, 1, np.float64, False),  # float64 keeps its path
        (32, 32, 3, 1, 0, np.float32, False),
        (32, 32, 3, 2, 1, np.float32, False),
        (32, 32, 5, 1, 2, np.float32, False),
    ],
)
def test_which_layers_take_winograd(C, F, k, stride, pad, dtype, winograd):
    """By default ('auto'): switching Winograd off changes the forward's last bits exactly
    where it runs."""
    x, w, b = case(2, C, 12, 16, F, k, dtype, seed=0)
    on = _C.conv_forward(x, w, b, stride, pad)
    with winograd_mode("off"):
        off = _C.conv_forward(x, w, b, stride, pad)
    assert np.array_equal(on, off) != winograd


@pytest.mark.parametrize(
    "N, C, H, W, F, gemm",
    [
        (1, 128, 8, 8, 256, True),  # 16 tiles, 2^15 filter-channel pairs
        (1, 256, 7, 8, 128, True),
        (1, 181, 8, 7, 181, False),  # under 2^15 pairs
        (2, 128, 8, 8, 256, False),  # 32 tiles
        (1, 128, 10, 8, 256, True),  # 20 tiles
        (1, 128, 12, 11, 256, False),  # 36 tiles
    ],
)
def test_wide_layers_on_few_tiles_run_im2col_and_gemm(N, C, H, W, F, gemm):
    """By default ('auto') the forward of a layer whose transformed weights outgrow L2, on
    a call of under 32 tiles, is im2col + GEMM's, bit for bit; else Winograd's."""
    x, w, b = case(N, C, H, W, F, 3, np.float32, seed=1)
    on = _C.conv_forward(x, w, b, 1, 1)
    _C.set_direct_conv(False)
    try:
        im2col = _C.conv_forward(x, w, b, 1, 1)
    finally:
        _C.set_direct_conv(True)
    with winograd_mode("always"):
        winograd = _C.conv_forward(x, w, b, 1, 1)
    assert np.array_equal(on, im2col) == gemm
    assert np.array_equal(on, winograd) != gemm
    assert_within_rounding(on, conv_forward_ref(x, w, b, 1, 1), winograd_bound(x, w, b), 1e-5)
    threads = _C.get_num_threads()
    _C.set_num_threads(1 if threads > 1 else 2)
    try:
        np.testing.assert_array_equal(_C.conv_forward(x, w, b, 1, 1), on)
    finally:
        _C.set_num_threads(threads)


def test_winograd_mode_is_checked():
    with pytest.raises(ValueError, match="'off', 'auto' or 'always'"):
        _C.set_winograd_conv("sometimes")


@settings(max_examples=15, deadline=None)
@given(
    N=st.integers(1, 3),
    C=st.integers(1, 18),
    H=st.integers(2, 9),
    W=st.integers(2, 20),
    F=st.integers(1, 20),
    seed=st.integers(0, 2**16),
)
def test_fused_conv_relu_pool_on_winograd_equals_the_chain(N, C, H, W, F, seed):
    """The fused forward hands Winograd a per-thread output buffer: bit for bit the chain."""
    x, w, b = case(N, C, H, W, F, 3, np.float32, seed)
    with winograd_mode("always"):
        relu = _C.relu_forward(_C.conv_forward(x, w, b, 1, 1))[0]
        want, want_winners = _C.max_pool_forward(relu, 2, 2, 2)
        got, got_winners = _C.conv_relu_pool_forward(x, w, b, 1, 1, 2, 2, 2)
    np.testing.assert_array_equal(got_winners, want_winners)
    assert got.tobytes() == want.tobytes()
