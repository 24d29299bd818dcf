"""Winograd F(2x2, 3x3), F(4x4, 3x3), F(2x2, 5x5) and F(2x2, 7x7) (cpp/conv_winograd.h):
float32 3x3 convs with stride 1 and pad 1 on an AVX-512 CPU, 5x5 ones with pad 2 and 7x7
ones with pad 3, forward, dx and dw, and of such layers with a narrower pad (down to 0).
Switched on for every such layer ('always', each tile), on random shapes (tiny and odd
planes, channel counts off the vector width, batch 1 and empty), it matches the naive
loops within the rounding of its own terms, and gives bitwise the same results on one
thread as on two."""

import contextlib

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from graphnet.kernels import _C
from .test_avx2 import assert_same_bits_on_any_thread_count, kernel_threads
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


def toom_cook(points, m, r):
    """B^T, G, A^T of F(m, r) on the finite interpolation points and infinity (Lavin and
    Gray's construction): B^T's row of p holds the coefficients of the product of (x - q)
    over the other finite points q (infinity's row: over all of them), G's row of p is p^k
    over the product of (p - q), A^T's rows are 1, p, ..., p^(m-1), infinity's 1 in the
    last."""
    alpha = len(points) + 1
    bt, g, at = np.zeros((alpha, alpha)), np.zeros((alpha, r)), np.zeros((m, alpha))
    for j, p in enumerate(points):
        others = [q for q in points if q != p]
        bt[j, : alpha - 1] = np.polynomial.polynomial.polyfromroots(others)
        g[j] = [p**k / np.prod([p - q for q in others]) for k in range(r)]
        at[:, j] = [p**i for i in range(m)]
    bt[-1] = np.polynomial.polynomial.polyfromroots(points)
    g[-1, -1] = at[-1, -1] = 1
    return bt, g, at


# (m, k): the transforms of F(m x m, k x k). The 6x6 and 8x8 tiles', written out: the
# kernels' (conv_winograd_avx512.cpp).
TRANSFORMS = {
    (2, 3): (BT, G, AT),
    (2, 5): toom_cook([0, 1, -1, 2, -2], 2, 5),
    (4, 3): toom_cook([0, 1, -1, 2, -2], 4, 3),
    (2, 7): toom_cook([0, 1, -1, 2, -2, 0.5, -0.5], 2, 7),
}


def test_the_6x6_transforms_are_the_kernels():
    np.testing.assert_allclose(
        TRANSFORMS[4, 3][1] * [[4], [-6], [-6], [24], [24], [1]],
        [[1, 0, 0], [1, 1, 1], [1, -1, 1], [1, 2, 4], [1, -2, 4], [0, 0, 1]],
    )
    np.testing.assert_array_equal(
        TRANSFORMS[4, 3][2],
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
    )
    np.testing.assert_array_equal(TRANSFORMS[4, 3][0], TRANSFORMS[2, 5][0])
    bt, g, at = TRANSFORMS[2, 5]
    np.testing.assert_array_equal(
        bt,
        [
            [4, 0, -5, 0, 1, 0],
            [0, -4, -4, 1, 1, 0],
            [0, 4, -4, -1, 1, 0],
            [0, -2, -1, 2, 1, 0],
            [0, 2, -1, -2, 1, 0],
            [0, 4, 0, -5, 0, 1],
        ],
    )
    np.testing.assert_allclose(
        g * [[4], [-6], [-6], [24], [24], [1]],
        [
            [1, 0, 0, 0, 0],
            [1] * 5,
            [1, -1, 1, -1, 1],
            [1, 2, 4, 8, 16],
            [1, -2, 4, -8, 16],
            [0, 0, 0, 0, 1],
        ],
    )
    np.testing.assert_array_equal(at, [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 1]])


def test_the_8x8_transforms_are_the_kernels():
    """F(2x2, 7x7)'s, as conv_winograd_avx512.cpp writes them (its row 0 of B^T and of G
    negated, which leaves every product the same)."""
    bt, g, at = TRANSFORMS[2, 7]
    np.testing.assert_array_equal(-bt[0], [1, 0, -21 / 4, 0, 21 / 4, 0, -1, 0])
    np.testing.assert_array_equal(
        bt[1:],
        [
            [0, 1, 1, -17 / 4, -17 / 4, 1, 1, 0],
            [0, -1, 1, 17 / 4, -17 / 4, -1, 1, 0],
            [0, 1 / 2, 1 / 4, -5 / 2, -5 / 4, 2, 1, 0],
            [0, -1 / 2, 1 / 4, 5 / 2, -5 / 4, -2, 1, 0],
            [0, 2, 4, -5 / 2, -5, 1 / 2, 1, 0],
            [0, -2, 4, 5 / 2, -5, -1 / 2, 1, 0],
            [0, -1, 0, 21 / 4, 0, -21 / 4, 0, 1],
        ],
    )
    powers = 2.0 ** np.arange(7)
    np.testing.assert_allclose(
        g * [[-1], [-9 / 2], [-9 / 2], [90], [90], [90], [90], [1]],
        [
            [1, 0, 0, 0, 0, 0, 0],
            [1] * 7,
            [1, -1, 1, -1, 1, -1, 1],
            powers,
            powers * [1, -1, 1, -1, 1, -1, 1],
            powers[::-1],
            powers[::-1] * [1, -1, 1, -1, 1, -1, 1],
            [0, 0, 0, 0, 0, 0, 1],
        ],
    )
    np.testing.assert_array_equal(
        at, [[1, 1, 1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 1 / 2, -1 / 2, 1]]
    )


def transformed_inputs_bound(x, m=2, k=3, pad=None):
    """|V| = |B^T| |d| |B| of each m x m tile's (m + k - 1) x (m + k - 1) patch of |x|
    padded by pad (a "same" conv's unless given), the tiles covering the output: N, C, th,
    tw, m + k - 1, m + k - 1."""
    bt = TRANSFORMS[m, k][0]
    x = np.abs(np.asarray(x, np.float64))
    N, C, H, W = x.shape
    pad = (k - 1) // 2 if pad is None else pad
    Ho, Wo = H + 2 * pad - k + 1, W + 2 * pad - k + 1
    th, tw, alpha = -(-Ho // m), -(-Wo // m), m + k - 1
    xp = np.zeros((N, C, m * th + k - 1, m * tw + k - 1))
    xp[:, :, pad : H + pad, pad : W + pad] = x
    patches = np.stack(
        [
            np.stack([xp[:, :, i : i + m * th : m, j : j + m * tw : m] for j in range(alpha)], -1)
            for i in range(alpha)
        ],
        -2,
    )
    return np.einsum("ai,nctuij,bj->nctuab", np.abs(bt), patches, np.abs(bt))


def winograd_bound(x, w, b, m=2, pad=None):
    """Per output, the sum of the magnitudes of the terms Winograd adds up: |A^T| (sum over
    channels of |U| |V|) |A| + |b|, with |U| = |G| |g| |G^T| and |V| = |B^T| |d| |B| on each
    tile's patch (x padded by pad, a "same" conv's unless given). Each rounding
    (transforms, products, sums) is a multiple of it. Wider than conv_error_bounds: a
    tile's terms take in its whole patch, and cancel exactly only in exact arithmetic."""
    w, b = (np.abs(np.asarray(a, np.float64)) for a in (w, b))
    N, C, H, W = np.shape(x)
    k = w.shape[-1]
    _, g, at = TRANSFORMS[m, k]
    pad = (k - 1) // 2 if pad is None else pad
    H, W = H + 2 * pad - k + 1, W + 2 * pad - k + 1  # the output's
    th, tw = -(-H // m), -(-W // m)
    v = transformed_inputs_bound(x, m, k, pad)
    u = np.einsum("ai,fcij,bj->fcab", np.abs(g), w, np.abs(g))
    products = np.einsum("nctuab,fcab->nftuab", v, u)
    y = np.einsum("ia,nftuab,jb->nftiuj", np.abs(at), products, np.abs(at))
    y = y.reshape(N, w.shape[0], m * th, m * tw)[:, :, :H, :W]
    return y + b[None, :, None, None]


def winograd_dw_bound(dout, x, k=3, m=2, pad=None):
    """Per weight, the sum of the magnitudes of the terms Winograd's weight gradient
    (F(m x m, k x k)) adds up: |G^T| (sum over tiles of |Q| |V|) |G|, with |Q| = |A| |dy|
    |A^T| of each tile's m x m output gradient (zeros past the plane), x padded by pad (a
    "same" conv's unless given)."""
    _, g, at = (np.abs(t) for t in TRANSFORMS[m, k])
    dout = np.abs(np.asarray(dout, np.float64))
    N, F, H, W = dout.shape
    th, tw = -(-H // m), -(-W // m)
    dy = np.zeros((N, F, m * th, m * tw))
    dy[:, :, :H, :W] = dout
    tiles = dy.reshape(N, F, th, m, tw, m).transpose(0, 1, 2, 4, 3, 5)  # N, F, th, tw, m, m
    q = np.einsum("ai,nftuab,bj->nftuij", at, tiles, at)
    du = np.einsum("nftuab,nctuab->fcab", q, transformed_inputs_bound(x, m, k, pad))
    return np.einsum("ai,fcab,bj->fcij", g, du, g)


@contextlib.contextmanager
def winograd_mode(mode, tiles="auto"):
    """Winograd switched to `mode` (and 3x3 layers' tiles to `tiles`) inside, back to
    'auto' after."""
    _C.set_winograd_conv(mode, tiles)
    try:
        yield
    finally:
        _C.set_winograd_conv("auto")


def run_winograd(x, w, b, threads, tiles="auto", pad=None):
    with winograd_mode("always", tiles):
        return run(x, w, b, 1, (w.shape[-1] - 1) // 2 if pad is None else pad, threads)


@pytest.mark.parametrize("m, k", [(2, 3), (4, 3), (2, 5), (2, 7)])
@settings(max_examples=60, deadline=None)
@given(
    N=st.integers(0, 3),
    C=st.integers(1, 21),
    H=st.integers(1, 11),
    W=st.integers(1, 40),
    F=st.integers(1, 35),
    narrower=st.integers(0, 2),
    seed=st.integers(0, 2**16),
)
def test_winograd_matches_naive_and_any_thread_count(m, k, N, C, H, W, F, narrower, seed):
    """On a "same" layer, and on narrower pads, down to a "valid" conv's 0."""
    pad, tiles = max(0, (k - 1) // 2 - narrower), f"{m}x{m}"
    H, W = H + k - 1 - 2 * pad, W + k - 1 - 2 * pad  # an output of at least 1 x 1
    x, w, b = case(N, C, H, W, F, k, np.float32, seed)
    results, dout = run_winograd(x, w, b, threads=2, tiles=tiles, pad=pad)
    refs = (conv_forward_ref(x, w, b, 1, pad),) + tuple(conv_backward_ref(dout, x, w, 1, pad))
    turned = np.flip(w, (2, 3)).transpose(1, 0, 2, 3)  # dx: dout convolved with these
    bounds = (
        winograd_bound(x, w, b, m, pad),
        winograd_bound(dout, turned, np.zeros(C), m, k - 1 - pad),
        winograd_dw_bound(dout, x, k, m, pad),
        conv_error_bounds(dout, x, w, b, 1, pad)[3],
    )
    for got, ref, bound in zip(results, refs, bounds):
        assert got.dtype == np.float32
        # 1e-5 = 168 float32 epsilons: the worst case of sums of up to ~160 channels' terms
        assert_within_rounding(got, ref, bound, 1e-5)
    one_thread, _ = run_winograd(x, w, b, threads=1, tiles=tiles, pad=pad)
    for got, again in zip(results, one_thread):
        np.testing.assert_array_equal(got, again)


@pytest.mark.parametrize("m", [2, 4])
@settings(max_examples=25, deadline=None)
@given(
    N=st.integers(1, 40),
    C=st.integers(1, 20),
    H=st.integers(1, 11),
    W=st.integers(1, 11),
    F=st.integers(1, 20),
    pad=st.integers(0, 1),
    seed=st.integers(0, 2**16),
)
def test_winograd_forward_on_groups_of_small_images(m, N, C, H, W, F, pad, seed):
    """The forward and dx take small images several a call (their tiles filling the
    products' vectors, the last group short), on a "same" pad and a "valid" one: within the
    rounding bounds of the naive loops, and each image's bits those of a call on it alone,
    on any thread count."""
    H, W = H + 2 - 2 * pad, W + 2 - 2 * pad  # an output of at least 1 x 1
    x, w, b = case(N, C, H, W, F, 3, np.float32, seed)
    Ho, Wo = H + 2 * pad - 2, W + 2 * pad - 2
    dout = np.random.default_rng(seed + 1).standard_normal((N, F, Ho, Wo)).astype(np.float32)
    turned = np.flip(w, (2, 3)).transpose(1, 0, 2, 3)

    def passes(images, threads):
        with winograd_mode("always", f"{m}x{m}"), kernel_threads(threads):
            return (
                _C.conv_forward(images, w, b, 1, pad),
                _C.conv_backward(dout[: len(images)], images, w, 1, pad, need_dw=False)[0],
            )

    out, dx = passes(x, threads=2)
    out_bound = winograd_bound(x, w, b, m, pad)
    assert_within_rounding(out, conv_forward_ref(x, w, b, 1, pad), out_bound, 1e-5)
    dx_ref = conv_backward_ref(dout, x, w, 1, pad)[0]
    dx_bound = winograd_bound(dout, turned, np.zeros(C), m, 2 - pad)
    assert_within_rounding(dx, dx_ref, dx_bound, 1e-5)
    for got, again in zip((out, dx), passes(x, threads=1)):
        np.testing.assert_array_equal(got, again)
    for n in {0, N // 2, N - 1}:
        alone_out, _ = passes(x[n : n + 1], threads=1)
        np.testing.assert_array_equal(out[n], alone_out[0])
    with winograd_mode("always", f"{m}x{m}"):
        alone_dx = _C.conv_backward(dout[N - 1 :], x[N - 1 :], w, 1, pad, need_dw=False)[0]
    np.testing.assert_array_equal(dx[N - 1], alone_dx[0])


@pytest.mark.parametrize(
    "C, F, k, stride, pad, dtype, winograd",
    [
        (16, 16, 3, 1, 1, np.float32, True),
        (32, 64, 3, 1, 1, np.float32, True),
        (3, 32, 3, 1, 1, np.float32, False),  # few channels: the direct kernel is faster
        (32, 15, 3, 1, 1, np.float32, False),
        (32, 32, 3, 1, 1, np.float64, False),  # float64 keeps its path
        (32, 32, 3, 1, 0, np.float32, True),  # a "valid" conv: narrower pads too
        (32, 32, 3, 1, 2, np.float32, False),  # a wider pad
        (32, 32, 3, 2, 1, np.float32, False),
        (32, 32, 5, 1, 2, np.float32, True),
        (32, 32, 5, 1, 1, np.float32, True),
        (32, 32, 5, 1, 0, np.float32, True),
        (32, 32, 5, 1, 2, np.float64, False),
        (16, 16, 7, 1, 3, np.float32, True),
        (16, 32, 7, 1, 1, np.float32, True),  # 8 x 12 outputs
        (32, 32, 7, 1, 0, np.float32, False),  # 6 x 10 outputs: under 7 pixels
        (3, 32, 7, 1, 3, np.float32, False),  # a first layer: 3-deep products
        (32, 32, 7, 2, 3, np.float32, False),
        (32, 32, 7, 1, 3, np.float64, False),
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
    "C, F, k, H, W, winograd",
    [
        (8, 33, 7, 12, 16, True),  # fewer channels: 8+ in and out, 128+ pairs
        (16, 15, 7, 12, 16, True),
        (33, 8, 7, 8, 35, True),
        (8, 16, 5, 12, 16, True),
        (12, 12, 5, 8, 16, True),
        (8, 8, 7, 12, 16, False),  # 64 pairs
        (6, 32, 7, 12, 16, False),
        (8, 33, 3, 12, 16, False),  # 3x3 keeps 16+
        (8, 33, 7, 12, 15, False),  # rows under 16 pixels
        (8, 33, 7, 7, 16, False),  # under 8 rows
    ],
)
def test_which_narrow_layers_take_winograd_forward_and_dx(C, F, k, H, W, winograd):
    """By default ('auto') 5x5 and 7x7 "same" layers of 8-15 channels in or out run the forward
    and dx on Winograd where those passes' outputs have 8+ rows of 16+ pixels. (Each pass
    reads its own output: on a "same" layer the forward's and dx's are one size.)"""
    pad = (k - 1) // 2
    x, w, b = case(2, C, H, W, F, k, np.float32, seed=0)
    dout = np.random.default_rng(1).standard_normal((2, F, H, W)).astype(np.float32)

    def passes():
        dx = _C.conv_backward(dout, x, w, 1, pad, need_dw=False)[0]
        return _C.conv_forward(x, w, b, 1, pad), dx

    on = passes()
    with winograd_mode("off"):
        off = passes()
    assert [not np.array_equal(a, b) for a, b in zip(on, off)] == [winograd, winograd]
    assert_same_bits_on_any_thread_count(passes)


@pytest.mark.parametrize(
    "N, C, F, H, W, winograd",
    [
        (16, 64, 64, 6, 6, True),  # images 2x2 tiles cover, of 64+ channels in and out
        (8, 64, 128, 4, 6, True),
        (16, 128, 64, 4, 4, True),
        (4, 128, 64, 4, 4, False),  # on calls of 8+ images
        (16, 32, 64, 6, 6, False),  # the tap kernel is faster on fewer channels
        (16, 64, 64, 5, 6, False),  # tiles past the image's last row
        (16, 64, 64, 6, 3, False),
        (16, 64, 64, 2, 2, False),
    ],
)
def test_which_small_images_take_winograd_forward(N, C, F, H, W, winograd):
    """By default ('auto'): under 7 pixels the forward runs on Winograd on images its 2x2
    tiles cover exactly, of 64+ channels in and out, 8+ images a call."""
    x, w, b = case(N, C, H, W, F, 3, np.float32, seed=0)
    on = _C.conv_forward(x, w, b, 1, 1)
    with winograd_mode("off"):
        off = _C.conv_forward(x, w, b, 1, 1)
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
    with kernel_threads(1 if _C.get_num_threads() > 1 else 2):
        np.testing.assert_array_equal(_C.conv_forward(x, w, b, 1, 1), on)


@pytest.mark.parametrize(
    "C, F, H, W, k, dtype, winograd",
    [
        (16, 16, 12, 16, 3, np.float32, True),
        (32, 64, 16, 13, 3, np.float32, True),
        (32, 32, 8, 16, 3, np.float32, False),  # small images: its transforms fill few lanes
        (16, 15, 16, 16, 3, np.float32, False),
        (128, 128, 7, 8, 3, np.float32, True),  # but it pays on 128+ channels from 7 x 7 on
        (128, 128, 4, 8, 3, np.float32, True),  # and on smaller images 2x2 tiles cover
        (128, 128, 4, 6, 3, np.float32, True),  # on calls of 64+ of them (16 images: 96)
        (128, 128, 5, 8, 3, np.float32, False),
        (64, 64, 8, 8, 3, np.float32, False),  # 4x4 tiles on 64+ channels: 16+ images
        (64, 64, 11, 12, 3, np.float32, False),
        (128, 127, 8, 8, 3, np.float32, False),
        (256, 512, 8, 8, 3, np.float32, True),
        (512, 512, 8, 8, 3, np.float32, True),  # by blocks of pairs, past the slots' size
        (32, 32, 16, 16, 3, np.float64, False),
        (16, 32, 12, 16, 5, np.float32, True),
        (32, 64, 16, 16, 5, np.float32, True),
        (32, 16, 16, 16, 5, np.float32, False),  # 5x5: from 17 filters out on
        (16, 17, 16, 16, 5, np.float32, True),
        (31, 18, 30, 7, 5, np.float32, True),  # 5x5 and 7x7 from 7 pixels, on 64+ positions
        (64, 64, 8, 8, 5, np.float32, True),
        (64, 64, 7, 7, 5, np.float32, False),
        (32, 32, 6, 12, 5, np.float32, False),
        (128, 128, 7, 8, 5, np.float32, True),
        (128, 256, 8, 8, 5, np.float32, True),
        (256, 256, 8, 8, 5, np.float32, True),  # 36 points: by blocks of pairs
        (32, 64, 16, 16, 5, np.float64, False),
        (16, 32, 16, 16, 7, np.float32, True),
        (16, 16, 16, 16, 7, np.float32, False),  # 7x7: from 17 filters out on too
        (24, 24, 16, 16, 7, np.float32, True),
        (32, 32, 8, 12, 7, np.float32, True),
        (12, 32, 16, 16, 7, np.float32, False),  # 16+ channels in
        (3, 32, 16, 16, 7, np.float32, False),
        (16, 32, 16, 16, 7, np.float64, False),
    ],
)
def test_which_layers_take_winograd_for_the_weight_gradient(C, F, H, W, k, dtype, winograd):
    """By default ('auto'): switching Winograd off changes dw's last bits exactly where it
    runs."""
    N = 2 if H * W >= 64 else 16
    x, w, _ = case(N, C, H, W, F, k, dtype, seed=0)
    dout = np.random.default_rng(1).standard_normal((N, F, H, W)).astype(dtype)
    assert dw_takes_winograd(dout, x, w, (k - 1) // 2) == winograd


@pytest.mark.parametrize("N, winograd", [(8, False), (16, True)])
def test_wide_small_images_take_winograd_for_the_weight_gradient_from_64_tiles(N, winograd):
    """3x3 128 -> 128 on 4 x 4 images: 2x2 tiles, 4 an image."""
    x, w, _ = case(N, 128, 4, 4, 128, 3, np.float32, seed=0)
    dout = np.random.default_rng(1).standard_normal((N, 128, 4, 4)).astype(np.float32)
    assert dw_takes_winograd(dout, x, w, 1) == winograd


def dw_takes_winograd(dout, x, w, pad):
    """Whether switching Winograd off changes dw's bits ('auto' against 'off')."""
    on = _C.conv_backward(dout, x, w, 1, pad, need_dx=False)[1]
    with winograd_mode("off"):
        off = _C.conv_backward(dout, x, w, 1, pad, need_dx=False)[1]
    return not np.array_equal(on, off)


@pytest.mark.parametrize(
    "C, F, H, k, pad, winograd",
    [
        (32, 32, 30, 3, 0, True),  # its tiles cover the 28 x 28 output
        (32, 64, 18, 5, 0, True),
        (32, 64, 16, 5, 1, True),
        (32, 32, 12, 3, 0, False),  # 10 x 10 outputs: under 12 pixels
        (16, 32, 30, 3, 0, False),  # 3x3: from 32 channels in and out on
        (16, 32, 30, 3, 1, True),  # (on a "same" pad from 16)
        (32, 16, 18, 5, 0, False),  # 5x5: from 17 filters out on
    ],
)
def test_which_narrow_pads_take_winograd_for_the_weight_gradient(C, F, H, k, pad, winograd):
    """By default ('auto') dw's sizes rules read the output its tiles cover."""
    x, w, _ = case(2, C, H, H, F, k, np.float32, seed=0)
    Ho = H + 2 * pad - k + 1
    dout = np.random.default_rng(1).standard_normal((2, F, Ho, Ho)).astype(np.float32)
    assert dw_takes_winograd(dout, x, w, pad) == winograd


def test_winograd_mode_is_checked():
    with pytest.raises(ValueError, match="'off', 'auto' or 'always'"):
        _C.set_winograd_conv("sometimes")
    with pytest.raises(ValueError, match="'auto', '2x2' or '4x4'"):
        _C.set_winograd_conv("auto", "3x3")


@pytest.mark.parametrize(
    "N, C, F, H, W, tiles",
    [
        (2, 32, 32, 32, 32, "4x4"),
        (2, 64, 80, 16, 17, "4x4"),
        (1, 16, 64, 12, 14, "4x4"),  # 12 tiles, but a small weights' transform
        (2, 32, 32, 16, 16, "4x4"),
        (2, 64, 64, 32, 10, "2x2"),  # 9-10 pixels: 4x4 tiles past the image, few lanes
        (2, 64, 64, 32, 11, "4x4"),
        (1, 32, 32, 11, 11, "2x2"),  # 11 pixels on a few tiles: 64+ channels only
        (1, 64, 64, 11, 11, "4x4"),
        (8, 32, 32, 11, 11, "4x4"),  # 72 tiles
        (16, 64, 64, 8, 8, "4x4"),  # 4x4 tiles cover the image, 64+ channels
        (16, 32, 64, 8, 8, "2x2"),
        (3, 64, 64, 8, 8, "2x2"),  # 12 tiles of 2^12 filter-channel pairs
        (2, 256, 128, 16, 16, "2x2"),  # 32 tiles of 2^15 filter-channel pairs
        (4, 256, 128, 16, 16, "4x4"),  # 64 tiles
    ],
)
def test_which_layers_take_4x4_tiles(N, C, F, H, W, tiles):
    """By default ('auto') the forward and dx of 3x3 layers are bit for bit those of the
    tiles that pay there."""
    x, w, b = case(N, C, H, W, F, 3, np.float32, seed=0)
    dout = np.random.default_rng(1).standard_normal((N, F, H, W)).astype(np.float32)

    def passes():
        return _C.conv_forward(x, w, b, 1, 1), _C.conv_backward(dout, x, w, 1, 1)[0]

    on = passes()
    with winograd_mode("auto", tiles):
        for got, want in zip(on, passes()):
            np.testing.assert_array_equal(got, want)
    with winograd_mode("auto", "2x2" if tiles == "4x4" else "4x4"):
        assert not np.array_equal(on[0], passes()[0])


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


def winograd_dw(dout, x, w, threads, mode="always", tiles="auto", pad=None):
    """conv_backward's dw and db alone, on `threads` threads, Winograd switched to `mode`
    (and 3x3 layers' tiles to `tiles`), with pad (a "same" conv's unless given)."""
    pad = (w.shape[-1] - 1) // 2 if pad is None else pad
    with kernel_threads(threads), winograd_mode(mode, tiles):
        _, dw, db = _C.conv_backward(dout, x, w, 1, pad, need_dx=False)
    return dw, db


@pytest.mark.parametrize("m, k", [(2, 3), (4, 3), (2, 5), (2, 7)])
@settings(max_examples=40, deadline=None)
@given(
    N=st.integers(1, 6),
    C=st.integers(1, 40),
    H=st.integers(1, 40),
    W=st.integers(1, 70),
    F=st.integers(1, 40),
    narrower=st.integers(0, 2),
    seed=st.integers(0, 2**16),
)
def test_winograd_weight_gradient_over_many_tiles(m, k, N, C, H, W, F, narrower, seed):
    """The weight gradient over blocks of tile rows that cross images and images that cross
    blocks (on 4x4 tiles, rows of up to 8 tiles 2 or 4 to the 16 lanes), on a "same" pad
    and narrower ones (its tiles covering the smaller output): within its terms' rounding
    of the naive loops, and bitwise the same on one thread as on two."""
    pad = max(0, (k - 1) // 2 - narrower)
    Ho, Wo = H + 2 * pad - k + 1, W + 2 * pad - k + 1
    assume(Ho >= 1 and Wo >= 1)
    x, w, _ = case(N, C, H, W, F, k, np.float32, seed)
    dout = np.random.default_rng(seed + 1).standard_normal((N, F, Ho, Wo)).astype(np.float32)
    tiles = f"{m}x{m}"
    dw, db = winograd_dw(dout, x, w, threads=2, tiles=tiles, pad=pad)
    _, ref_dw, ref_db = conv_backward_ref(dout, x, w, 1, pad)
    assert dw.dtype == np.float32
    assert_within_rounding(dw, ref_dw, winograd_dw_bound(dout, x, k, m, pad), 1e-5)
    db_bound = conv_error_bounds(dout, x, w, w[:, 0, 0, 0], 1, pad)[3]
    assert_within_rounding(db, ref_db, db_bound, 1e-5)
    one_dw, one_db = winograd_dw(dout, x, w, threads=1, tiles=tiles, pad=pad)
    np.testing.assert_array_equal(dw, one_dw)
    np.testing.assert_array_equal(db, one_db)


@pytest.mark.parametrize("m, k", [(2, 3), (4, 3), (2, 5), (2, 7)])
@pytest.mark.parametrize(
    "N, C, H, W, F", [(1, 17, 3, 1030, 5), (2, 3, 1200, 3, 18), (1, 1, 1, 1, 1)]
)
def test_winograd_weight_gradient_on_long_rows_and_columns(m, k, N, C, H, W, F):
    """A tile row longer than a block (258-515 tiles) is a block of its own; a tall plane's
    300-600 tile rows span several blocks."""
    x, w, _ = case(N, C, H, W, F, k, np.float32, seed=2)
    dout = np.random.default_rng(3).standard_normal((N, F, H, W)).astype(np.float32)
    dw, _ = winograd_dw(dout, x, w, threads=2, tiles=f"{m}x{m}")
    ref = conv_backward_ref(dout, x, w, 1, (k - 1) // 2)[1]
    assert_within_rounding(dw, ref, winograd_dw_bound(dout, x, k, m), 1e-5)
    np.testing.assert_array_equal(dw, winograd_dw(dout, x, w, threads=1, tiles=f"{m}x{m}")[0])


def test_winograd_weight_gradient_rounding_is_the_direct_kernels_order():
    """Summed over 12800 tiles (two 160 x 160 images of relu-like inputs), F(2x2, 3x3)'s
    weight gradient's error against float64 stays within 2x the direct kernels': each
    point's products are summed a block of tiles at a time, the blocks' sums then added."""
    rng = np.random.default_rng(4)
    x = np.maximum(rng.standard_normal((2, 16, 160, 160)), 0).astype(np.float32)
    w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    dout = rng.standard_normal((2, 16, 160, 160)).astype(np.float32)
    ref = conv_backward_ref(dout.astype(np.float64), x.astype(np.float64), w, 1, 1)[1]
    winograd = winograd_dw(dout, x, w, threads=1, tiles="2x2")[0] - ref
    direct = winograd_dw(dout, x, w, threads=1, mode="off")[0] - ref
    assert np.sqrt(np.mean(winograd**2)) < 2 * np.sqrt(np.mean(direct**2))


@pytest.mark.torch
@pytest.mark.parametrize("m, k", [(2, 3), (4, 3), (2, 5), (2, 7)])
@settings(max_examples=10, deadline=None)
@given(
    N=st.integers(1, 4),
    C=st.integers(1, 36),
    H=st.integers(1, 20),
    F=st.integers(1, 36),
    narrower=st.integers(0, 2),
    seed=st.integers(0, 2**16),
)
def test_winograd_weight_gradient_matches_pytorch(m, k, N, C, H, F, narrower, seed):
    torch = pytest.importorskip("torch")
    pad = max(0, (k - 1) // 2 - narrower)
    Ho = H + 2 * pad - k + 1
    assume(Ho >= 1)
    x, w, _ = case(N, C, H, H + 3, F, k, np.float32, seed)
    dout = np.random.default_rng(seed + 1).standard_normal((N, F, Ho, Ho + 3)).astype(np.float32)
    dw, db = winograd_dw(dout, x, w, threads=2, tiles=f"{m}x{m}", pad=pad)
    want_dw, want_db = torch_weight_gradient(torch, dout, x, w, pad)
    assert_within_rounding(dw, want_dw, winograd_dw_bound(dout, x, k, m, pad), 2e-5)
    np.testing.assert_allclose(db, want_db, rtol=1e-4, atol=1e-4)


def torch_weight_gradient(torch, dout, x, w, pad):
    """PyTorch's dw and db of a stride-1 conv with pad, in float64."""
    _, dw, db = torch.ops.aten.convolution_backward(
        *(torch.from_numpy(a).double() for a in (dout, x, w)),
        [w.shape[0]],
        [1, 1],
        [pad, pad],
        [1, 1],
        False,
        [0, 0],
        1,
        [False, True, True],
    )
    return dw.numpy(), db.numpy()


@pytest.mark.parametrize(
    "N, C, F, H, k",
    [
        (16, 100, 100, 8, 3),  # 4x4 tiles, 4 an image: 2 blocks of filters, 3 of channels
        (8, 150, 400, 8, 5),  # 36 points of 150 x 400 pairs: 2 blocks of 4 images' tiles
        (3, 20, 70, 4, 3),  # 12 tiles
    ],
)
def test_winograd_weight_gradient_by_blocks_of_pairs(N, C, F, H, k):
    """Where a batch's tiles are few or the slots large, dw goes by blocks of filters and
    channels over blocks of images' tiles: within its terms' rounding of the naive loops,
    and bitwise the same on one thread as on two."""
    x, w, _ = case(N, C, H, H, F, k, np.float32, seed=5)
    dout = np.random.default_rng(6).standard_normal((N, F, H, H)).astype(np.float32)
    dw, db = winograd_dw(dout, x, w, threads=2)
    m = 4 if k == 3 and H == 8 else 2
    _, ref_dw, ref_db = conv_backward_ref(dout, x, w, 1, (k - 1) // 2)
    assert_within_rounding(dw, ref_dw, winograd_dw_bound(dout, x, k, m), 1e-5)
    np.testing.assert_allclose(db, ref_db, rtol=1e-4, atol=1e-4)
    one_dw, one_db = winograd_dw(dout, x, w, threads=1)
    np.testing.assert_array_equal(dw, one_dw)
    np.testing.assert_array_equal(db, one_db)


@pytest.mark.torch
@settings(max_examples=15, deadline=None)
@given(
    N=st.integers(1, 8),
    C=st.integers(40, 150),
    F=st.integers(40, 150),
    H=st.integers(4, 12),
    k=st.sampled_from([3, 5]),
    seed=st.integers(0, 2**16),
)
def test_winograd_weight_gradient_by_blocks_of_pairs_matches_pytorch(N, C, F, H, k, seed):
    """Wide layers on small images, every pass on Winograd ('always'), on 2x2 tiles (3x3
    also on 4x4): dw within its terms' rounding of PyTorch's, the same on any thread count."""
    torch = pytest.importorskip("torch")
    x, w, b = case(N, C, H, H, F, k, np.float32, seed)
    dout = np.random.default_rng(seed + 1).standard_normal((N, F, H, H)).astype(np.float32)
    pad = (k - 1) // 2
    want_dw, _ = torch_weight_gradient(torch, dout, x, w, pad)
    for m in (2, 4) if k == 3 else (2,):
        dw, _ = winograd_dw(dout, x, w, threads=2, tiles=f"{m}x{m}")
        assert_within_rounding(dw, want_dw, winograd_dw_bound(dout, x, k, m), 1e-5)
        np.testing.assert_array_equal(dw, winograd_dw(dout, x, w, threads=1, tiles=f"{m}x{m}")[0])


@pytest.mark.parametrize("N, C, F, H", [(4, 256, 512, 4), (1, 520, 256, 8)])
def test_winograd_by_blocks_of_filters_matches_naive(N, C, F, H):
    """The forward and dx by blocks of filters (2^17+ pairs, 16 tiles): within their terms'
    rounding of the naive loops, bitwise the same on one thread as on two."""
    x, w, b = case(N, C, H, H, F, 3, np.float32, seed=7)
    dout = np.random.default_rng(8).standard_normal((N, F, H, H)).astype(np.float32)
    results = []
    for threads in (2, 1):
        with kernel_threads(threads):
            results.append(
                (
                    _C.conv_forward(x, w, b, 1, 1),
                    _C.conv_backward(dout, x, w, 1, 1, need_dw=False)[0],
                )
            )
    for got, again in zip(*results):
        np.testing.assert_array_equal(got, again)
    out, dx = results[0]
    turned = np.flip(w, (2, 3)).transpose(1, 0, 2, 3)
    assert_within_rounding(
        out, conv_forward_ref(x, w, b, 1, 1), winograd_bound(x, w, b, 4, 1), 1e-5
    )
    want_dx = conv_backward_ref(dout, x, w, 1, 1)[0]
    assert_within_rounding(dx, want_dx, winograd_bound(dout, turned, np.zeros(C), 4, 1), 1e-5)


@pytest.mark.torch
@settings(max_examples=6, deadline=None)
@given(
    N=st.integers(1, 5),
    C=st.integers(256, 300),
    F=st.integers(512, 530),
    H=st.sampled_from([4, 8, 12]),
    swap=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_winograd_by_blocks_of_filters_matches_pytorch(N, C, F, H, swap, seed):
    """3x3 layers of 2^17+ filter-channel pairs on images that 4x4 tiles cover, 16+ tiles
    a call: the forward and dx by blocks of filters on F(4x4, 3x3) ('auto'), within their
    terms' rounding of PyTorch's, bitwise the same on one thread as on two; the fused
    conv-relu-pool the same as the chain."""
    torch = pytest.importorskip("torch")
    C, F = (F, C) if swap else (C, F)
    assume(N * (H // 4) ** 2 >= 16)
    x, w, b = case(N, C, H, H, F, 3, np.float32, seed)
    dout = np.random.default_rng(seed + 1).standard_normal((N, F, H, H)).astype(np.float32)

    def passes():
        return _C.conv_forward(x, w, b, 1, 1), _C.conv_backward(dout, x, w, 1, 1, need_dw=False)[0]

    with kernel_threads(2):
        out, dx = passes()
    with kernel_threads(1):
        for got, again in zip((out, dx), passes()):
            np.testing.assert_array_equal(got, again)
    with winograd_mode("auto", "2x2"):  # F(2x2, 3x3) or the other kernels instead
        assert not np.array_equal(passes()[0], out)
    tx, tw = torch.from_numpy(x).double(), torch.from_numpy(w).double()
    want = torch.nn.functional.conv2d(tx, tw, torch.from_numpy(b).double(), 1, 1).numpy()
    want_dx = torch.ops.aten.convolution_backward(
        torch.from_numpy(dout).double(),
        tx,
        tw,
        None,
        [1, 1],
        [1, 1],
        [1, 1],
        False,
        [0, 0],
        1,
        [True, False, False],
    )[0].numpy()
    turned = np.flip(w, (2, 3)).transpose(1, 0, 2, 3)
    assert_within_rounding(out, want, winograd_bound(x, w, b, 4, 1), 1e-5)
    assert_within_rounding(dx, want_dx, winograd_bound(dout, turned, np.zeros(C), 4, 1), 1e-5)
    relu = _C.relu_forward(out)[0]
    want_pooled, want_winners = _C.max_pool_forward(relu, 2, 2, 2)
    pooled, winners = _C.conv_relu_pool_forward(x, w, b, 1, 1, 2, 2, 2)
    np.testing.assert_array_equal(winners, want_winners)
    np.testing.assert_array_equal(pooled, want_pooled)


@pytest.mark.torch
@pytest.mark.parametrize("m, k", [(4, 3), (2, 5), (2, 7)])
@settings(max_examples=10, deadline=None)
@given(
    N=st.integers(1, 3),
    channels=st.tuples(st.integers(1, 70), st.integers(1, 70)),
    H=st.integers(1, 18),
    seed=st.integers(0, 2**16),
)
def test_winograd_6x6_and_8x8_tiles_match_pytorch(m, k, N, channels, H, seed):
    """Forward and dx on 6x6 and 8x8 tiles, on channel counts past the naive test's,
    against PyTorch's float64."""
    torch = pytest.importorskip("torch")
    C, F = channels
    x, w, b = case(N, C, H, H + 5, F, k, np.float32, seed)
    (y, dx, _, _), dout = run_winograd(x, w, b, threads=2, tiles=f"{m}x{m}")
    x64, w64 = torch.from_numpy(x).double().requires_grad_(), torch.from_numpy(w).double()
    pad = (k - 1) // 2
    want = torch.nn.functional.conv2d(x64, w64, torch.from_numpy(b).double(), padding=pad)
    want.backward(torch.from_numpy(dout).double())
    turned = np.flip(w, (2, 3)).transpose(1, 0, 2, 3)
    assert_within_rounding(y, want.detach().numpy(), winograd_bound(x, w, b, m), 1e-5)
    dx_bound = winograd_bound(dout, turned, np.zeros(C), m)
    assert_within_rounding(dx, x64.grad.numpy(), dx_bound, 1e-5)


@pytest.mark.parametrize(
    "m, k, C, F, H, limit",
    [
        (2, 5, 32, 64, 16, 5),  # measured 2.6-4.2x on layers of 16-128 channels
        (4, 3, 64, 64, 16, 8),  # measured 3.9-6.1x on layers of 16-256 channels
        (2, 7, 32, 64, 16, 10),  # measured 4.6-7.0x on layers of 16-128 channels
    ],
)
def test_winograd_6x6_and_8x8_tiles_error_against_the_direct_kernels(m, k, C, F, H, limit):
    """On relu-like inputs, the forward's and dx's rms error against float64 on 6x6 and 8x8
    tiles stays within `limit` times the direct kernels' (docs/performance/kernels.md)."""
    rng = np.random.default_rng(5)
    x = np.maximum(rng.standard_normal((2, C, H, H)), 0).astype(np.float32)
    w = (rng.standard_normal((F, C, k, k)) / np.sqrt(C * k * k)).astype(np.float32)
    b = np.zeros(F, np.float32)
    dout = rng.standard_normal((2, F, H, H)).astype(np.float32)
    pad = (k - 1) // 2
    x64, w64, b64, dout64 = (a.astype(np.float64) for a in (x, w, b, dout))
    refs = conv_forward_ref(x64, w64, b64, 1, pad), conv_backward_ref(dout64, x64, w64, 1, pad)[0]

    def errors(mode):
        with winograd_mode(mode, f"{m}x{m}"):
            got = _C.conv_forward(x, w, b, 1, pad), _C.conv_backward(dout, x, w, 1, pad)[0]
        return [np.sqrt(np.mean((a - r) ** 2)) for a, r in zip(got, refs)]

    for winograd, direct in zip(errors("always"), errors("off")):
        assert winograd < limit * direct


@pytest.mark.parametrize(
    "m, k, C, F, H, limit",
    [
        (2, 5, 32, 64, 16, 20),  # measured 7.5-19x on 16-256 channels
        (4, 3, 32, 64, 16, 20),  # measured 4.9-13x on 16-256 channels, 12-160 pixels
        (4, 3, 16, 16, 64, 20),
        (2, 7, 32, 64, 16, 50),  # measured 24-41x on 16-128 channels
    ],
)
def test_winograd_large_tiles_weight_gradient_error_against_the_direct_kernels(
    m, k, C, F, H, limit
):
    """On relu-like inputs, the weight gradient's rms error against float64 on 6x6 and 8x8
    tiles stays within `limit` times the direct or tap kernel's: G^T dU G takes
    differences of sums over tiles of terms scaled by up to 10 (V) and 3 (Q, F(2x2, 5x5))
    or 15 (F(4x4, 3x3)), on 8x8 tiles by up to 21 (V) and 3.5 (Q) with weights of up to 64 /
    90 (G) (docs/performance/kernels.md)."""
    rng = np.random.default_rng(5)
    x = np.maximum(rng.standard_normal((2, C, H, H)), 0).astype(np.float32)
    w = (rng.standard_normal((F, C, k, k)) / np.sqrt(C * k * k)).astype(np.float32)
    dout = rng.standard_normal((2, F, H, H)).astype(np.float32)
    pad = (k - 1) // 2
    ref = conv_backward_ref(dout.astype(np.float64), x.astype(np.float64), w, 1, pad)[1]
    winograd = winograd_dw(dout, x, w, threads=1, tiles=f"{m}x{m}")[0] - ref
    direct = winograd_dw(dout, x, w, threads=1, mode="off")[0] - ref
    assert np.sqrt(np.mean(winograd**2)) < limit * np.sqrt(np.mean(direct**2))


@pytest.mark.parametrize(
    "N, C, F, H, W, tiles",
    [
        (2, 32, 32, 32, 32, "4x4"),
        (4, 64, 64, 16, 16, "4x4"),
        (8, 16, 24, 12, 13, "4x4"),
        (6, 256, 512, 14, 12, "4x4"),
        (4, 128, 128, 10, 16, "2x2"),  # under 11 pixels: few tiles fill few lanes
        (16, 64, 64, 8, 8, "4x4"),  # but on images they cover, 64+ channels
        (16, 128, 64, 11, 11, "4x4"),
        (3, 256, 256, 16, 16, "2x2"),  # 48 tiles: too few for the fixed costs
    ],
)
def test_which_layers_take_4x4_tiles_for_the_weight_gradient(N, C, F, H, W, tiles):
    """By default ('auto') a 3x3 layer's Winograd dw is bit for bit that of the tiles
    that pay there."""
    x, w, _ = case(N, C, H, W, F, 3, np.float32, seed=0)
    dout = np.random.default_rng(1).standard_normal((N, F, H, W)).astype(np.float32)
    on = winograd_dw(dout, x, w, threads=1, mode="auto")
    forced = winograd_dw(dout, x, w, threads=1, mode="auto", tiles=tiles)
    other_tiles = "2x2" if tiles == "4x4" else "4x4"
    other = winograd_dw(dout, x, w, threads=1, mode="auto", tiles=other_tiles)
    np.testing.assert_array_equal(on[0], forced[0])
    assert not np.array_equal(on[0], other[0])
