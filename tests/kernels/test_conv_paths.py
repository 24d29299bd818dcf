"""The conv paths the model zoo's layers take (benchmarks/zoo_models.py): 1x1 (a plain GEMM
on the image, no im2col), 3x3 and 5x5 with stride 1 (in float32 on rows of 16+ pixels the
direct kernels, AVX-512 or AVX2, as many filters and the CPU decide) or stride 2 (im2col +
GEMM), in float32 and float64. Random shapes
around those, with rows wide enough to reach every path, are checked against the naive
loops in float64 (within rounding of each result's terms) and against PyTorch, and each
result is bitwise the same on one thread as on two."""

import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphnet.gates.elementwise import Relu
from graphnet.gates.pointwise import LeakyRelu
from graphnet.kernels import _C
from .test_fast_layers import (
    assert_within_rounding,
    conv_backward_ref,
    conv_error_bounds,
    conv_forward_ref,
)

TOL = {np.float64: 1e-9, np.float32: 1e-5}


def student_layer():
    """(kernel, stride, pad) as students write them: 'same' padding or none."""
    return st.sampled_from([1, 3, 5]).flatmap(
        lambda k: st.tuples(
            st.just(k), st.sampled_from([1, 2]), st.sampled_from(sorted({0, (k - 1) // 2}))
        )
    )


def case(N, C, H, W, F, k, dtype, seed):
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((N, C, H, W)).astype(dtype),
        rng.standard_normal((F, C, k, k)).astype(dtype),
        rng.standard_normal(F).astype(dtype),
    )


def run(x, w, b, stride, pad, threads, avx512=True):
    before = _C.get_num_threads()
    _C.set_num_threads(threads)
    _C.set_avx512_conv(avx512)
    try:
        out = _C.conv_forward(x, w, b, stride, pad)
        dout = np.random.default_rng(1).standard_normal(out.shape).astype(x.dtype)
        return (out,) + tuple(_C.conv_backward(dout, x, w, stride, pad)), dout
    finally:
        _C.set_num_threads(before)
        _C.set_avx512_conv(True)


def assert_matches_naive_on_one_and_two_threads(x, w, b, stride, pad, avx512=True):
    """Forward, dx, dw and db on two threads within rounding of the naive loops, and the
    same bits on one thread."""
    results, dout = run(x, w, b, stride, pad, threads=2, avx512=avx512)
    bounds = conv_error_bounds(dout, x, w, b, stride, pad)
    refs = (conv_forward_ref(x, w, b, stride, pad),) + tuple(
        conv_backward_ref(dout, x, w, stride, pad)
    )
    for got, ref, bound in zip(results, refs, bounds, strict=True):
        assert got.dtype == x.dtype
        assert_within_rounding(got, ref, bound, TOL[x.dtype.type])
    one_thread, _ = run(x, w, b, stride, pad, threads=1, avx512=avx512)
    for got, again in zip(results, one_thread, strict=True):
        np.testing.assert_array_equal(got, again)


def assert_stride_one_matches_naive(N, C, H, W, F, kh, kw, pad, seed):
    """A random float32 stride-1 layer with a kh x kw kernel, where it fits."""
    if kh > H + 2 * pad or kw > W + 2 * pad:
        return
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((F, C, kh, kw)).astype(np.float32)
    b = rng.standard_normal(F).astype(np.float32)
    assert_matches_naive_on_one_and_two_threads(x, w, b, 1, pad)


@settings(max_examples=80, deadline=None)
@given(
    N=st.integers(1, 3),
    C=st.integers(1, 9),
    H=st.integers(1, 5),
    W=st.integers(1, 36),
    F=st.sampled_from([1, 2, 5, 6, 7, 11, 12, 13, 25, 48, 50]),
    layer=student_layer(),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
    avx512=st.booleans(),
)
def test_conv_paths_match_naive_and_any_thread_count(N, C, H, W, F, layer, dtype, seed, avx512):
    """avx512=False: the AVX2 forward kernel on a CPU that also has AVX-512."""
    k, stride, pad = layer
    if k > H + 2 * pad or k > W + 2 * pad:
        return  # the kernel does not fit: the fuzz tests check that error
    x, w, b = case(N, C, H, W, F, k, dtype, seed)
    assert_matches_naive_on_one_and_two_threads(x, w, b, stride, pad, avx512)


@pytest.mark.parametrize("W", [2, 4, 16, 17, 18, 30, 32, 34, 48, 66])
@pytest.mark.parametrize("pad", [0, 1])
def test_stride_two_splits_rows_of_any_width_into_phases(W, pad):
    """The phase planes of a stride-2 conv take each row's even and odd pixels 16 pairs at a
    time (AVX-512), the last 1-15 pairs masked: rows of 1-33 pairs, and an odd width;
    forward and gradients against the naive loops, training's dw too."""
    x, w, b = case(2, 3, 5, W, 20, 3 if W > 2 or pad else 1, np.float32, seed=W + pad)
    assert_matches_naive_on_one_and_two_threads(x, w, b, 2, pad)


@pytest.mark.parametrize("stride", [3, 4])
@pytest.mark.parametrize("W", [1, 2, 3, 5, 8, 13, 16, 28, 31, 47, 48, 49, 63, 64, 65, 100])
def test_strides_three_and_four_split_rows_of_any_width_into_phases(stride, W):
    """The phase planes of stride 3 and 4 take 16 pixels of each column phase at a time
    from 3 or 4 vectors of a row (two permutes and a blend), the rest masked: rows shorter
    than one step, one step (48, 64 pixels), a step and a bit; kernels as large as the
    stride (non-overlapping patches) and larger, pads 0-2, odd channel counts."""
    for k, pad in ((stride, 0), (stride, 1), (stride + 2, 2)):
        if k > W + 2 * pad:
            continue
        x, w, b = case(2, 5, 7, W, 13, k, np.float32, seed=W + stride + pad)
        assert_matches_naive_on_one_and_two_threads(x, w, b, stride, pad)


@pytest.mark.parametrize("F", [1, 6, 7, 8, 9, 10, 11, 12, 13, 16, 20, 24, 25, 32, 48, 61, 64])
@pytest.mark.parametrize("C, k", [(1, 3), (2, 3), (3, 3), (3, 5), (7, 5)])
def test_direct_forward_packs_every_tile_of_filters_and_block_of_taps(C, k, F):
    """The AVX-512 direct forward packs each tile of 6-12 filters x taps turned around in
    16 x 16 blocks: 9, 18, 27, 75 and 175 taps (whole blocks and remainders), filters
    filling no tile, one, two and more with a remainder, on every tile width (6-12 filters
    one tile, 13 on tiles of 7, 20 of 10, 25 of 9, 32 and 61-64 of 8, 48 of 12); one image
    and two."""
    for N in (1, 2):
        x, w, b = case(N, C, 6, 16, F, k, np.float32, seed=F * C + k)
        assert_matches_naive_on_one_and_two_threads(x, w, b, 1, (k - 1) // 2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("H, W", [(32, 32), (25, 40), (1, 33), (3, 7)])
def test_first_layer_bias_gradient_over_whole_planes(H, W, dtype):
    """A 3-channel first layer's db sums each plane of its output gradient in 32 interleaved
    partial sums (conv.cpp's plane_sum): planes of 1024, 1000, 33 and 21 positions (whole
    groups of 32, a remainder, fewer than 32), within rounding of the naive loops and the
    same bits on one thread and two."""
    x, w, b = case(3, 3, H, W, 32, 3, dtype, seed=H * W)
    assert_matches_naive_on_one_and_two_threads(x, w, b, 1, 1)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "k, stride, pad, C, H, F",
    [
        (1, 1, 0, 64, 32, 32),  # network in network: a GEMM per image
        (1, 1, 0, 32, 16, 64),
        (1, 2, 0, 16, 16, 32),  # a residual net's downsampling shortcut (im2col)
        (3, 1, 1, 32, 32, 32),  # VGG
        (3, 1, 1, 64, 16, 64),  # VGG, deeper: the dw kernel with vectors along the filters
        (3, 2, 1, 32, 32, 64),  # strided instead of pooling
        (5, 1, 2, 16, 16, 32),  # LeNet-style
        (5, 2, 2, 3, 32, 16),
        # rows under 16 pixels: the direct AVX-512 kernel (8- or 12-filter tiles) or the tap kernel
        (7, 1, 3, 3, 7, 16),
        (5, 1, 2, 8, 8, 8),
        (5, 1, 2, 16, 8, 16),
        (3, 1, 1, 16, 4, 32),
        (5, 1, 2, 24, 14, 12),
        (3, 1, 1, 40, 9, 40),
        (5, 1, 2, 64, 14, 64),
        # wide layers on small images (a CIFAR VGG's last blocks): im2col + GEMM over images
        (3, 1, 1, 256, 4, 512),
        (3, 1, 1, 512, 2, 512),
        (3, 1, 1, 192, 3, 192),
        (1, 1, 0, 256, 2, 384),
        (5, 1, 2, 160, 4, 160),
    ],
)
def test_conv_paths_match_pytorch(k, stride, pad, C, H, F, dtype):
    torch = pytest.importorskip("torch")
    x, w, b = case(4, C, H, H, F, k, dtype, seed=k + stride)
    (out, dx, dw, db), dout = run(x, w, b, stride, pad, threads=2)
    xt, wt, bt = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
    expected = torch.nn.functional.conv2d(xt, wt, bt, stride=stride, padding=pad)
    expected.backward(torch.from_numpy(dout))
    rtol, atol = (1e-4, 1e-3) if dtype == np.float32 else (1e-10, 1e-10)
    for got, ref in ((out, expected), (dx, xt.grad), (dw, wt.grad), (db, bt.grad)):
        np.testing.assert_allclose(got, ref.detach().numpy(), rtol=rtol, atol=atol)


@pytest.mark.skipif(not _C.direct_conv_active(), reason="no AVX2 + FMA: no direct kernels")
@pytest.mark.parametrize(
    "F, k, pad, direct_runs",
    [
        (32, 3, 1, True),
        (48, 3, 1, "avx512"),  # many filters: im2col + GEMM beats the AVX2 kernels (conv_direct.h)
        (32, 1, 0, False),  # pointwise: one GEMM on the image
        (32, 1, 1, True),
    ],
)
def test_which_float32_layers_take_the_direct_kernels(F, k, pad, direct_runs):
    """Switching the direct kernels off changes the last bits exactly where they run."""
    if direct_runs == "avx512":
        direct_runs = _C.avx512_conv_active()
    direct_runs = direct_runs and _C.direct_conv_active()  # none in a portable build
    x, w, b = case(2, 4, 6, 16, F, k, np.float32, seed=0)
    on, _ = run(x, w, b, 1, pad, threads=1)
    _C.set_direct_conv(False)
    try:
        off, _ = run(x, w, b, 1, pad, threads=1)
    finally:
        _C.set_direct_conv(True)
    same = all(np.array_equal(a, b_) for a, b_ in zip(on, off))
    assert same != direct_runs


@settings(max_examples=40, deadline=None)
@given(
    N=st.integers(0, 3),
    C=st.integers(16, 19),
    H=st.integers(1, 4),
    W=st.integers(16, 37),
    F=st.sampled_from([1, 6, 8, 12, 15, 16, 17, 33, 48, 64, 65]),
    k=st.sampled_from([1, 3, 5]),
    pad=st.integers(0, 3),
    seed=st.integers(0, 2**16),
)
def test_weight_gradient_on_many_channels(N, C, H, W, F, k, pad, seed):
    """Layers on 16+ channels: in float32 with stride 1 on an AVX-512 CPU, the weight
    gradient with vectors along the filters for 16+ filters (lanes past F dropped) and
    along a row's pixels for fewer, for every row width, padding and batch size, empty
    included."""
    if k > H + 2 * pad or (k == 1 and pad == 0):
        return  # does not fit, or a pointwise GEMM
    x, w, b = case(N, C, H, W, F, k, np.float32, seed)
    assert_matches_naive_on_one_and_two_threads(x, w, b, 1, pad)


@settings(max_examples=40, deadline=None)
@given(
    N=st.integers(0, 3),
    C=st.integers(16, 41),
    H=st.integers(1, 6),
    W=st.integers(16, 37),
    F=st.sampled_from([1, 15, 16, 17, 33, 48, 64, 65]),
    kh=st.integers(1, 5),
    kw=st.sampled_from([3, 3, 2, 5]),
    pad=st.integers(0, 2),
    seed=st.integers(0, 2**16),
)
def test_weight_gradient_of_kernels_three_wide(N, C, H, W, F, kh, kw, pad, seed):
    """The filter-vector weight gradient reads a 3-wide kernel's taps in triples (one window
    row each): kernels 3 wide and of any height, so that tiles of 6, 8, 12 or 24 taps end
    inside or past the last channel, against the naive loops and bitwise on 1 and 2 threads;
    other widths take the tap-by-tap loop."""
    assert_stride_one_matches_naive(N, C, H, W, F, kh, kw, pad, seed)


@settings(max_examples=80, deadline=None)
@given(
    N=st.integers(0, 3),
    C=st.integers(16, 49),
    H=st.integers(1, 20),
    W=st.integers(1, 37),
    F=st.integers(1, 33),
    k=st.sampled_from([3, 3, 5, 7]),
    pad=st.integers(0, 3),
    seed=st.integers(0, 2**16),
)
def test_weight_gradient_of_square_layers_on_few_filters(N, C, H, W, F, k, pad, seed):
    """3x3, 5x5 and 7x7 layers of 16+ channels and under 32 filters: in float32 on an
    AVX-512 CPU the weight gradient with vectors along the channels (the image turned
    channels-last, lanes past C zero; filter tiles of 4, 3, 2 and 1; row blocks of any
    height; rows of any width), db summed with it, against the naive loops and bitwise on
    1 and 2 threads."""
    assert_stride_one_matches_naive(N, C, H, W, F, k, k, pad, seed)


@settings(max_examples=60, deadline=None)
@given(
    N=st.integers(0, 3),
    C=st.sampled_from([3, 5, 6, 7, 8, 9, 12, 16, 17, 40, 64]),
    H=st.integers(1, 9),
    W=st.integers(1, 17),
    F=st.sampled_from([5, 6, 7, 8, 9, 12, 15, 16, 17, 40, 48, 64]),
    kh=st.sampled_from([2, 3, 5, 7]),
    kw=st.sampled_from([2, 3, 5, 7]),
    pad=st.integers(0, 3),
    seed=st.integers(0, 2**16),
)
def test_stride_one_layers_on_short_rows_and_narrow_filter_tiles(N, C, H, W, F, kh, kw, pad, seed):
    """float32 stride-1 layers on rows of up to 17 pixels and 5-64 filters or channels: on an
    AVX-512 CPU the direct forward kernel's 6- to 12-filter tiles (a row of 9-16 pixels in
    one vector, two rows a tile; rows of 8 or fewer two to a vector, four a tile), also
    for dx, and the tap kernel's forward and dx
    on the rows under 16 pixels it takes (any pad, wider than the kernel too); against the
    naive loops and bitwise on 1 and 2 threads."""
    assert_stride_one_matches_naive(N, C, H, W, F, kh, kw, pad, seed)


@pytest.mark.parametrize("F", [6, 7, 12, 13, 16, 20, 80])
@pytest.mark.parametrize("k, pad", [(7, 3), (5, 0), (3, 1), (1, 1)])
def test_direct_forward_runs_short_rows_two_to_a_vector(F, k, pad):
    """On rows of 8 pixels or fewer the AVX-512 direct kernel holds two rows a vector (its
    lanes 0-7 and 8-15), 4 rows a tile, a last vector with one row: output rows 1-9 (a
    tile or none and 1-3 more), widths 1-8; the same bits as each row computed alone in a
    vector of a wide image (the same sums in the same order), and within rounding of the
    naive loops, on 1 and 2 threads. Without that kernel (the portable build, an AVX2 CPU)
    the naive loops alone: the wide image may take another path, with other sums."""
    for H in (h for h in (1, 3, 4, 5, 7, 8, 9) if h >= k - 2 * pad):
        for W in range(max(1, k - 2 * pad), 9 + k - 1 - 2 * pad):
            x, w, b = case(2, 3, H, W, F, k, np.float32, seed=F + H * 10 + W)
            assert_matches_naive_on_one_and_two_threads(x, w, b, 1, pad)
            if not _C.avx512_conv_active():
                continue
            wide = np.zeros((2, 3, H, W + 24), np.float32)
            wide[..., :W] = x  # its first columns' windows see x and zeros, as x's padding
            out = _C.conv_forward(x, w, b, 1, pad)
            np.testing.assert_array_equal(
                out, _C.conv_forward(wide, w, b, 1, pad)[..., : out.shape[3]]
            )


@pytest.mark.parametrize("C, F", [(3, 48), (48, 96), (96, 48), (112, 112), (40, 80)])
@pytest.mark.parametrize("W", [10, 13, 15])
def test_stride_one_rows_of_10_to_15_pixels_by_filter_count(C, F, W):
    """Rows of 10-15 pixels: the tap kernel's forward (dx) where the filters (channels),
    rounded up to 16, fill its tiles of 4 and 3 vectors (48, 96, 112), else the direct
    kernel (80); pads 0-2, 3x3 and 5x5, one image and two, against the naive loops and
    bitwise on 1 and 2 threads."""
    for k in (3, 5):
        for pad in (0, 1, 2):
            assert_stride_one_matches_naive(1 + pad % 2, C, W - 1, W, F, k, k, pad, seed=C + W)


@settings(max_examples=60, deadline=None)
@given(
    N=st.integers(1, 4),
    C=st.integers(1, 8),
    H=st.integers(2, 12),
    Wo=st.integers(5, 16),
    F=st.integers(1, 15),
    k=st.sampled_from([2, 3, 4, 5]),
    pad=st.integers(0, 2),
    seed=st.integers(0, 2**16),
)
def test_small_weight_gradients_on_short_rows(N, C, H, Wo, F, k, pad, seed):
    """Stride-1 layers on rows of 5-16 pixels with few taps and filters: the weight
    gradient on im2col + GEMM where taps x filters are few for the row (3x3 and 5x5 with
    at most "same" pads, under 32 taps, up to 20 taps x filters a pixel of the row past
    6), else on the tap kernel; against the naive loops, bitwise on 1, 2 and 3 threads."""
    W = Wo + k - 1 - 2 * pad
    if W < 1 or k > H + 2 * pad:
        return
    x, w, b = case(N, C, H, W, F, k, np.float32, seed)
    assert_matches_naive_on_one_and_two_threads(x, w, b, 1, pad)
    two, _ = run(x, w, b, 1, pad, threads=2)
    three, _ = run(x, w, b, 1, pad, threads=3)
    for got, again in zip(two, three, strict=True):
        np.testing.assert_array_equal(got, again)


@pytest.mark.parametrize(
    "C, k, Wo, F",
    [
        (3, 3, 15, 5),  # random-0-21's first layer: 135 weights, the GEMM's
        (3, 3, 15, 6),  # 162 of 180: the GEMM
        (3, 3, 15, 7),  # 189: the tap kernel
        (1, 3, 8, 4),  # 36 of 40
        (1, 3, 8, 5),  # 45 of 40: the tap kernel
        (4, 3, 15, 1),  # 36 taps: the tap kernel
        (7, 2, 12, 4),  # 2x2: the tap kernel
        (1, 5, 12, 4),  # 5x5, 100 of 120
        (1, 5, 6, 1),  # no pixel past 6
    ],
)
def test_small_weight_gradients_either_side_of_the_rule(C, k, Wo, F):
    """Taps x filters on both sides of the GEMM's share of short rows, one and two images
    a chunk, against the naive loops and bitwise on 1 and 2 threads."""
    for N, pad in ((2, 0), (5, 1)):
        x, w, b = case(N, C, 9, Wo + k - 1 - 2 * pad, F, k, np.float32, seed=C + Wo + F)
        assert_matches_naive_on_one_and_two_threads(x, w, b, 1, pad)


def assert_same_gradients(grads, expected):
    """conv_backward's (dx, dw, db) bit for bit, dx None where it was not asked for."""
    for grad, want in zip(grads, expected, strict=True):
        if want is None:
            assert grad is None
        else:
            np.testing.assert_array_equal(grad, want)


ACTIVATIONS = {
    "relu": (Relu(), ("relu", 0.0)),
    "leaky_relu": (LeakyRelu(0.1), ("leaky_relu", 0.1)),
    "leaky_relu 0": (LeakyRelu(0.0), ("leaky_relu", 0.0)),
}


@settings(max_examples=80, deadline=None)
@given(
    N=st.integers(0, 3),
    C=st.sampled_from([1, 3, 16, 17]),
    H=st.integers(1, 18),
    W=st.integers(1, 18),
    F=st.sampled_from([1, 5, 16, 33, 64]),
    layer=student_layer(),
    dtype=st.sampled_from([np.float32, np.float64]),
    path=st.sampled_from(["default", "no avx512", "no direct", "winograd always"]),
    activation=st.sampled_from(sorted(ACTIVATIONS)),
    need_dx=st.booleans(),
    nan=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_conv_activation_is_the_gates_each_way_on_every_path(
    N, C, H, W, F, layer, dtype, path, activation, need_dx, nan, seed
):
    """conv_forward(activation=...) (the conv -> relu / leaky relu step's kernel, and the
    eval-mode conv -> batchnorm -> relu step's) on every path is the activation gate of
    conv_forward's output (NaNs pass); conv_backward(activation=..., act_out=that output)
    is conv_backward of the gate's gradient, NaN and infinite upstream gradients included;
    bit for bit, on 1 and 2 threads."""
    k, stride, pad = layer
    if k > H + 2 * pad or k > W + 2 * pad:
        return
    x, w, b = case(N, C, H, W, F, k, dtype, seed)
    gate, (name, alpha) = ACTIVATIONS[activation]
    plain = _C.conv_forward(x, w, b, stride, pad)
    dout = np.random.default_rng(seed + 1).standard_normal(plain.shape).astype(dtype)
    if nan and N:
        x[0, 0, 0, 0] = np.nan
        dout.flat[::5], dout.flat[1::7], dout.flat[2::11] = np.nan, np.inf, -np.inf
    switch, restore = {
        "default": (lambda: None, lambda: None),
        "no avx512": (lambda: _C.set_avx512_conv(False), lambda: _C.set_avx512_conv(True)),
        "no direct": (lambda: _C.set_direct_conv(False), lambda: _C.set_direct_conv(True)),
        "winograd always": (
            lambda: _C.set_winograd_conv("always"),
            lambda: _C.set_winograd_conv("auto"),
        ),
    }[path]
    before = _C.get_num_threads()
    try:
        switch()
        plain = _C.conv_forward(x, w, b, stride, pad)
        expected, saved = gate.forward(plain)
        (through,) = gate.backward(dout, saved, (True,))
        expected_grads = _C.conv_backward(through, x, w, stride, pad, need_dx=need_dx)
        for threads in (1, 2):
            _C.set_num_threads(threads)
            got = _C.conv_forward(x, w, b, stride, pad, activation=name, alpha=alpha)
            assert got.dtype == dtype
            np.testing.assert_array_equal(got, expected)
            # by position, as the conv gate passes them
            np.testing.assert_array_equal(_C.conv_forward(x, w, b, stride, pad, name, alpha), got)
            grads = _C.conv_backward(
                dout, x, w, stride, pad, need_dx=need_dx, activation=name, alpha=alpha, act_out=got
            )
            assert_same_gradients(grads, expected_grads)
            # by position, as conv_backward_fast passes them
            by_position = _C.conv_backward(dout, x, w, stride, pad, need_dx, True, name, alpha, got)
            assert_same_gradients(by_position, grads)
    finally:
        _C.set_num_threads(before)
        restore()


def test_conv_activation_refuses_what_it_cannot_take():
    x, w, b = case(2, 3, 5, 5, 4, 3, np.float32, 0)
    out = _C.conv_forward(x, w, b, 1, 1)
    with pytest.raises(ValueError, match="not one it can apply"):
        _C.conv_forward(x, w, b, 1, 1, activation="gelu")
    for alpha in (-0.1, np.inf, np.nan):
        with pytest.raises(ValueError, match="alpha must be finite and >= 0"):
            _C.conv_forward(x, w, b, 1, 1, activation="leaky_relu", alpha=alpha)
    with pytest.raises(ValueError, match="needs act_out"):
        _C.conv_backward(out, x, w, 1, 1, activation="relu")
    with pytest.raises(ValueError, match="act_out must have shape"):
        _C.conv_backward(out, x, w, 1, 1, activation="relu", act_out=out[:1])
    with pytest.raises(ValueError, match="act_out"):
        _C.conv_backward(out, x, w, 1, 1, activation="relu", act_out=out.astype(np.float64))


@settings(max_examples=60, deadline=None)
@given(
    N=st.integers(1, 3),
    C=st.integers(28, 70),
    H=st.integers(1, 9),
    W=st.integers(1, 40),
    F=st.sampled_from([1, 7, 16, 33, 64]),
    k=st.sampled_from([1, 3]),
    direct=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_gemm_forward_on_either_side_of_the_avx512_product(N, C, H, W, F, k, direct, dtype, seed):
    """The forward's GEMM (every pointwise conv, and the im2col path): graphnet's product
    (the AVX-512 kernel from 32 inner indices on, below that OpenBLAS), then the bias; within
    rounding of the reference on any batch, and the same bits on one and two threads (one
    image's product splits across them)."""
    pad = 0 if k == 1 else 1
    if k > H + 2 * pad or k > W + 2 * pad:
        return
    x, w, b = case(N, C, H, W, F, k, dtype, seed)
    _C.set_direct_conv(direct)
    try:
        (out, *_), dout = run(x, w, b, 1, pad, threads=2)
        (again, *_), _ = run(x, w, b, 1, pad, threads=1)
    finally:
        _C.set_direct_conv(True)
    bound = conv_error_bounds(dout, x, w, b, 1, pad)[0]
    assert_within_rounding(out, conv_forward_ref(x, w, b, 1, pad), bound, TOL[dtype])
    np.testing.assert_array_equal(out, again)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "N, H, stride",
    [(70, 20, 2), (40, 6, 2), (9, 31, 1)],  # 6, 2 and 8 chunks of the weight gradient's sums
)
def test_weight_gradient_chunks_of_positions(N, H, stride, dtype):
    """dw is summed in fixed chunks of images of at least 1024 output positions (2-16
    chunks): within rounding of the naive loops, the same bits on one and two threads."""
    x, w, b = case(N, 3, H, H, 4, 3, dtype, seed=N)
    assert_matches_naive_on_one_and_two_threads(x, w, b, stride, 1)


WIDE = [96, 128, 160, 192, 256, 384, 512]


@settings(max_examples=20, deadline=None)
@given(
    N=st.sampled_from([1, 2, 3, 5]),
    C=st.sampled_from(WIDE),
    F=st.sampled_from(WIDE),
    H=st.integers(1, 8),
    W=st.integers(1, 8),
    layer=st.sampled_from([(3, 1), (3, 1), (3, 0), (1, 0), (5, 2), (5, 0)]),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_wide_layers_on_small_images(N, C, F, H, W, layer, dtype, seed):
    """Layers of 96-512 channels on images of 1-8 pixels, batch 1 and odd batches: in
    float32 on an AVX-512 CPU the passes whose weights outgrow L2 (and dx on images under
    5 pixels, or with pad 0) run im2col + GEMM over several images at a time, the weight gradient by
    blocks of channels straight into dw; the rest the tap, Winograd and direct kernels, and
    float64 im2col throughout. Against the naive loops, the same bits on 1 and 2 threads."""
    k, pad = layer
    if k > H + 2 * pad or k > W + 2 * pad:
        return
    if k == 5:  # the naive loops' time: 5x5 reaches the GEMM paths from 160 channels on
        C, F = min(C, 192), min(F, 192)
    if N * H * W * C * F * k * k > 10**8:  # and the largest layers on one image
        N = 1
    x, w, b = case(N, C, H, W, F, k, dtype, seed)
    assert_matches_naive_on_one_and_two_threads(x, w, b, 1, pad)


@settings(max_examples=40, deadline=None)
@given(
    N=st.integers(1, 5),
    C=st.integers(20, 70),
    F=st.sampled_from([33, 100, 257]),
    H=st.integers(1, 6),
    W=st.integers(1, 6),
    kh=st.integers(1, 5),
    kw=st.integers(1, 5),
    pad=st.integers(0, 3),
    avx512_product=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_gemm_forward_by_blocks_of_channels(
    N, C, F, H, W, kh, kw, pad, avx512_product, dtype, seed
):
    """The im2col forward over several images a GEMM (taps x filters 2^13+) by blocks of
    channels, each block's product added to the ones before (on the AVX-512 product or
    OpenBLAS), the im2col of small images through its table of the padded plane (any kernel
    and pad): within rounding of the naive loops, the same bits on 1 and 2 threads."""
    if kh > H + 2 * pad or kw > W + 2 * pad:
        return
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((F, C, kh, kw)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    _C.set_direct_conv(False)
    _C.set_avx512_matmul(avx512_product)
    before = _C.get_num_threads()
    try:
        outs = []
        for threads in (2, 1):
            _C.set_num_threads(threads)
            outs.append(_C.conv_forward(x, w, b, 1, pad))
    finally:
        _C.set_num_threads(before)
        _C.set_avx512_matmul(True)
        _C.set_direct_conv(True)
    dout = np.ones_like(outs[0])
    bound = conv_error_bounds(dout, x, w, b, 1, pad)[0]
    assert_within_rounding(outs[0], conv_forward_ref(x, w, b, 1, pad), bound, TOL[dtype])
    np.testing.assert_array_equal(outs[0], outs[1])


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("N, C, H, F", [(3, 256, 4, 512), (2, 384, 2, 256), (1, 512, 6, 512)])
def test_wide_layers_take_the_activation_gradient_on_the_whole_batch(N, C, H, F, activation):
    """The weight gradient by blocks of channels reads the whole batch's dout: with an
    activation, the gradient through it first; bit for bit the gate's gradient through
    conv_backward, on 1 and 2 threads, with and without dx."""
    x, w, b = case(N, C, H, H, F, 3, np.float32, seed=C + H)
    gate, (name, alpha) = ACTIVATIONS[activation]
    out = _C.conv_forward(x, w, b, 1, 1, activation=name, alpha=alpha)
    expected_out, saved = gate.forward(_C.conv_forward(x, w, b, 1, 1))
    np.testing.assert_array_equal(out, expected_out)
    dout = np.random.default_rng(H).standard_normal(out.shape).astype(np.float32)
    (through,) = gate.backward(dout, saved, (True,))
    before = _C.get_num_threads()
    try:
        for need_dx in (True, False):
            expected = _C.conv_backward(through, x, w, 1, 1, need_dx=need_dx)
            for threads in (1, 2):
                _C.set_num_threads(threads)
                got = _C.conv_backward(
                    dout, x, w, 1, 1, need_dx=need_dx, activation=name, alpha=alpha, act_out=out
                )
                assert_same_gradients(got, expected)
    finally:
        _C.set_num_threads(before)


@contextlib.contextmanager
def pad_skip(mode):
    """_C.set_pad_skip_conv(mode) inside, 'auto' (the default) after."""
    _C.set_pad_skip_conv(mode)
    try:
        yield
    finally:
        _C.set_pad_skip_conv("auto")


@settings(max_examples=80, deadline=None)
@given(
    N=st.integers(1, 6),
    C=st.integers(1, 40),
    F=st.integers(1, 40),
    H=st.integers(1, 8),
    W=st.integers(1, 8),
    kh=st.integers(2, 5),
    kw=st.integers(2, 5),
    pad=st.integers(1, 4),
    avx512_product=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_pad_skipping_product_on_any_layer(N, C, F, H, W, kh, kw, pad, avx512_product, dtype, seed):
    """Every stride-1 layer whose pad lies inside the kernel, with the pad-skipping product
    forced ('always'): the forward and dx (its forward of dout with the filters turned) by
    classes of output columns and one GEMM per kernel row, on the AVX-512 product reading
    the weights in place or on OpenBLAS from their copies. Odd channels, non-square images
    and kernels, batch 1: within rounding of the naive loops, the same bits on 1 and 2
    threads."""
    if pad >= min(kh, kw) or kh > H + 2 * pad or kw > W + 2 * pad:
        return
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((F, C, kh, kw)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    _C.set_avx512_matmul(avx512_product)
    try:
        with pad_skip("always"):
            assert_matches_naive_on_one_and_two_threads(x, w, b, 1, pad)
    finally:
        _C.set_avx512_matmul(True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "N, C, F, H, W, k",
    [
        (8, 256, 512, 4, 4, 3),  # the forward as im2col + GEMM would run it (gemm_forward)
        (16, 129, 131, 2, 2, 3),  # odd channels, 56% of the pairs in the padding
        (9, 128, 160, 3, 5, 5),  # 5x5 on a non-square image, an odd batch
        (4, 64, 65, 6, 6, 3),  # dx only (batch 4): Winograd's layer
        (40, 97, 64, 1, 1, 3),  # dx only (97 channels), one pixel: the centre tap alone
        (64, 128, 129, 2, 3, 3),  # all three passes: dw by blocks of channels, 64 images
    ],
)
def test_wide_layers_skip_the_padding(N, C, F, H, W, k, dtype):
    """Where the pad-skipping product pays ('auto'): the same results as the naive loops,
    on 1 and 2 threads the same bits, and within rounding of the other kernels ('off')."""
    x, w, b = case(N, C, H, W, F, k, dtype, seed=C + F)
    assert_matches_naive_on_one_and_two_threads(x, w, b, 1, k // 2)
    with pad_skip("off"):
        other, dout = run(x, w, b, 1, k // 2, threads=1)
    got, _ = run(x, w, b, 1, k // 2, threads=1)
    for g, o in zip(got, other, strict=True):
        np.testing.assert_allclose(g, o, rtol=TOL[dtype] * 100, atol=TOL[dtype] * 100 * C * k * k)


@pytest.mark.torch
@pytest.mark.parametrize("mode", ["auto", "always"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "N, C, H, F, k", [(16, 256, 4, 256, 3), (16, 512, 2, 256, 3), (8, 160, 3, 128, 5)]
)
def test_pad_skipping_product_matches_pytorch(N, C, H, F, k, dtype, mode):
    torch = pytest.importorskip("torch")
    x, w, b = case(N, C, H, H, F, k, dtype, seed=k + C)
    with pad_skip(mode):
        (out, dx, dw, db), dout = run(x, w, b, 1, k // 2, threads=2)
    xt, wt, bt = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
    expected = torch.nn.functional.conv2d(xt, wt, bt, padding=k // 2)
    expected.backward(torch.from_numpy(dout))
    rtol, atol = (1e-4, 1e-3) if dtype == np.float32 else (1e-10, 1e-10)
    for got, ref in ((out, expected), (dx, xt.grad), (dw, wt.grad), (db, bt.grad)):
        np.testing.assert_allclose(got, ref.detach().numpy(), rtol=rtol, atol=atol)


def test_set_pad_skip_conv_refuses_other_modes():
    with pytest.raises(ValueError, match="'off', 'auto' or 'always'"):
        _C.set_pad_skip_conv("sometimes")


@settings(max_examples=30, deadline=None)
@given(
    N=st.integers(1, 3),
    C=st.integers(14, 33),
    H=st.integers(20, 34),
    W=st.integers(30, 40),
    F=st.sampled_from([48, 63, 64, 65, 80, 100]),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_pointwise_layers_from_few_channels_to_many_filters(N, C, H, W, F, dtype, seed):
    """A 1x1 conv from 16-31 channels to 64+ filters on images of 1024+ positions: its
    dw^T (C x F) as the AVX-512 product dout x^T on the filters' rows, added to the
    chunk's slot transposed; dx image by image in the chunks (every pointwise conv);
    either side of each threshold."""
    x, w, b = case(N, C, H, W, F, 1, dtype, seed)
    assert_matches_naive_on_one_and_two_threads(x, w, b, 1, 0)


@settings(max_examples=20, deadline=None)
@given(
    N=st.integers(1, 3),
    C=st.sampled_from([1, 16, 33, 64, 128, 129]),
    H=st.integers(15, 24),
    W=st.integers(30, 40),
    F=st.sampled_from([1, 8, 16, 31, 32]),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_pointwise_forward_of_few_filters_on_large_images(N, C, H, W, F, dtype, seed):
    """A 1x1 conv of under 32 filters from up to 128 channels on 512+ positions: its
    forward on OpenBLAS 256 positions a call (the last call narrower); either side of the
    thresholds."""
    x, w, b = case(N, C, H, W, F, 1, dtype, seed)
    assert_matches_naive_on_one_and_two_threads(x, w, b, 1, 0)


@pytest.mark.parametrize(
    "C, F, H, stride",
    [(64, 64, 8, 1), (16, 16, 32, 1), (17, 33, 8, 1), (3, 16, 32, 1), (32, 64, 16, 2)],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_image_of_the_zoo_layers(C, F, H, stride, dtype):
    """Batch 1: the weight gradient's one slot transposed into dw in 16 x 16 blocks (taps x
    filters to filters x taps, the last blocks masked where K or F is not a multiple of 16)."""
    x, w, b = case(1, C, H, H, F, 3, dtype, seed=C + F)
    assert_matches_naive_on_one_and_two_threads(x, w, b, stride, 1)


@settings(max_examples=80, deadline=None)
@given(
    N=st.integers(1, 5),
    C=st.integers(1, 20),
    F=st.sampled_from([1, 2, 6, 14, 16, 18, 30, 48, 64]),
    Ho=st.integers(1, 7),
    Wo=st.integers(1, 9),
    k=st.integers(1, 7),
    stride=st.integers(1, 3),
    pad=st.integers(0, 6),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_input_gradient_of_outputs_smaller_than_the_kernel(
    N, C, F, Ho, Wo, k, stride, pad, dtype, seed
):
    """dx of layers whose outputs have a few positions (rows under 8, the gather's col2im,
    for windows that overlap or not), down to one: on stride 1 the GEMM where dout padded
    by k - 1 - pad is mostly zeros, else the kernels that compute those zeros; any pad
    under the kernel. Within rounding of the naive loops, the same bits on 1, 2 and 3
    threads."""
    if pad >= k:
        return
    H, W = (Ho - 1) * stride + k - 2 * pad, (Wo - 1) * stride + k - 2 * pad
    if H < 1 or W < 1:
        return
    x, w, b = case(N, C, H, W, F, k, dtype, seed)
    assert_matches_naive_on_one_and_two_threads(x, w, b, stride, pad)
    two, _ = run(x, w, b, stride, pad, threads=2)
    three, _ = run(x, w, b, stride, pad, threads=3)
    for got, again in zip(two, three, strict=True):
        np.testing.assert_array_equal(got, again)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "C, F, H, W, k, pad",
    [
        (14, 30, 6, 7, 5, 0),  # random-0-17's conv4: 7x the positions, the GEMM's
        (30, 18, 8, 9, 5, 0),  # 3.6x, under 2 + 48 / 18: the direct kernel's
        (14, 30, 8, 9, 5, 0),  # 3.6x, at 2 + 48 / 30: the GEMM's
        (16, 64, 5, 6, 3, 0),  # 2.5x, under 2.75: the kernels'
        (8, 16, 7, 8, 7, 0),  # one row of two outputs
        (3, 5, 3, 4, 7, 2),  # a pad that leaves one row of outputs
    ],
)
def test_input_gradient_either_side_of_the_padded_zeros_rule(C, F, H, W, k, pad, dtype):
    """Stride-1 dx on either side of padded_dx_mostly_zeros, against the naive loops,
    bitwise on 1 and 2 threads, and against float64 numerical gradients."""
    x, w, b = case(3, C, H, W, F, k, dtype, seed=C + F + H)
    assert_matches_naive_on_one_and_two_threads(x, w, b, 1, pad)
    if dtype is not np.float64:
        return
    dout = np.random.default_rng(2).standard_normal(_C.conv_forward(x, w, b, 1, pad).shape)
    dx = _C.conv_backward(dout, x, w, 1, pad)[0]
    rng = np.random.default_rng(3)
    for _ in range(8):
        at = tuple(int(rng.integers(0, n)) for n in x.shape)
        step = np.zeros_like(x)
        step[at] = 1e-6
        plus = np.sum(_C.conv_forward(x + step, w, b, 1, pad) * dout)
        minus = np.sum(_C.conv_forward(x - step, w, b, 1, pad) * dout)
        assert abs((plus - minus) / 2e-6 - dx[at]) <= 1e-6 * (1 + abs(dx[at]))
