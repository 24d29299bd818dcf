"""The float32 conv path on the AVX-512 tap kernels (cpp/conv_phases.cpp, cpp/conv_taps.h):
strides 2-4, any kernel and pad, and the weight gradient of stride-1 layers of many
filters; on a CPU without AVX-512 (or with it switched off) im2col + GEMM. Random shapes
(odd sizes, even and odd kernels, pads 0-2, empty and one-image batches) against the naive
loops in float64, within rounding of each result's terms; each result bitwise the same on
one thread as on two; the gradients against central differences of the float64 loops;
PyTorch on the zoo's layers."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from graphnet.kernels import _C
from .test_conv_paths import case, run
from .test_fast_layers import (
    assert_within_rounding,
    conv_backward_ref,
    conv_error_bounds,
    conv_forward_ref,
    numerical_grad,
)


def check_against_naive(x, w, b, stride, pad, avx512):
    results, dout = run(x, w, b, stride, pad, threads=2, avx512=avx512)
    bounds = conv_error_bounds(dout, x, w, b, stride, pad)
    refs = (conv_forward_ref(x, w, b, stride, pad),) + tuple(
        conv_backward_ref(dout, x, w, stride, pad)
    )
    for got, ref, bound in zip(results, refs, bounds):
        assert got.dtype == np.float32
        assert_within_rounding(got, ref, bound, 1e-5)
    one_thread, _ = run(x, w, b, stride, pad, threads=1, avx512=avx512)
    for got, again in zip(results, one_thread):
        np.testing.assert_array_equal(got, again)


@pytest.mark.slow
@settings(max_examples=120, deadline=None)
@given(
    N=st.integers(0, 3),
    C=st.sampled_from([*range(1, 10), 50, 64]),  # 50, 64: dx on the real columns only
    H=st.integers(1, 19),
    W=st.integers(1, 19),
    F=st.sampled_from([1, 3, 8, 15, 16, 17, 33, 50, 64, 128]),
    k=st.integers(1, 5),
    stride=st.sampled_from([2, 3, 4]),
    pad=st.integers(0, 2),
    seed=st.integers(0, 2**16),
    avx512=st.booleans(),
)
def test_strided_conv_matches_naive_and_any_thread_count(
    N, C, H, W, F, k, stride, pad, seed, avx512
):
    """avx512=False: what a CPU without AVX-512 runs (im2col + GEMM)."""
    if k > H + 2 * pad or k > W + 2 * pad:
        return  # the kernel does not fit: the fuzz tests check that error
    x, w, b = case(N, C, H, W, F, k, np.float32, seed)
    check_against_naive(x, w, b, stride, pad, avx512)


@pytest.mark.parametrize("avx512", [True, False])
@pytest.mark.parametrize(
    "N, C, H, F, k, stride, pad",
    [
        (2, 32, 32, 64, 3, 2, 1),  # the zoo's strided layers
        (2, 64, 16, 128, 3, 2, 1),
        (1, 16, 16, 32, 1, 2, 0),  # a residual shortcut: one phase of four has taps
        (2, 3, 31, 25, 3, 2, 1),  # the course's timing case, odd sizes
        (1, 5, 17, 7, 5, 3, 2),
        (2, 5, 9, 64, 3, 2, 1),  # filters filling the widest tiles: the forward's position map
        (3, 7, 11, 120, 4, 3, 2),
        (1, 6, 8, 50, 2, 2, 0),  # ... and planes as wide as the output: no map
        (1, 50, 9, 5, 3, 2, 1),  # channels in filling them: dx's map
        (2, 64, 11, 3, 5, 3, 2),
        # small images: several per call of the kernels (the forward where the filters fill
        # the widest tiles, dw always), the last group short
        (11, 6, 8, 64, 3, 2, 1),
        (9, 5, 7, 128, 3, 2, 0),
        (7, 3, 6, 20, 5, 2, 2),
        (13, 4, 5, 64, 3, 3, 1),
        (2, 3, 38, 16, 3, 2, 1),  # rows split 16 pixel pairs at a time, then 3 (then 10)
        # taps x filters past the forward's block (kTapBlockFloats): the forward over several
        # blocks of taps, each from the sums of the last (both), and dx's first phase (the 2nd)
        (1, 128, 9, 64, 5, 2, 2),
        (1, 64, 7, 300, 5, 2, 2),
        (1, 2, 20, 17, 3, 2, 2),
        (2, 8, 10, 50, 3, 1, 1),  # stride 1, many filters: the tap kernel's dw
        (2, 4, 9, 64, 5, 1, 2),
        (1, 3, 6, 48, 3, 1, 0),
        # passes im2col + GEMM takes: kernels narrower than the stride, dx of few channels
        (3, 16, 13, 32, 1, 2, 0),
        (2, 4, 14, 16, 1, 3, 0),
        (2, 33, 17, 20, 1, 4, 0),
        (2, 5, 11, 24, 2, 3, 1),
        (1, 6, 12, 16, 3, 4, 1),
        (2, 3, 16, 32, 3, 2, 1),
        (2, 7, 9, 14, 5, 2, 2),
    ],
)
def test_tap_layers_match_naive(N, C, H, F, k, stride, pad, avx512):
    x, w, b = case(N, C, H, H, F, k, np.float32, seed=N + C + k)
    check_against_naive(x, w, b, stride, pad, avx512)


@pytest.mark.parametrize("stride, pad", [(2, 1), (3, 0)])
def test_strided_gradients_match_numerical_gradients(stride, pad):
    """dx and dw of the float32 kernels against central differences of the float64 loops."""
    x, w, b = case(2, 3, 7, 8, 5, 3, np.float32, seed=stride)
    out = _C.conv_forward(x, w, b, stride, pad)
    dout = np.random.default_rng(2).standard_normal(out.shape).astype(np.float32)
    dx, dw, _ = _C.conv_backward(dout, x, w, stride, pad)
    x64, w64, b64, dout64 = (a.astype(np.float64) for a in (x, w, b, dout))
    num_dx = numerical_grad(lambda: conv_forward_ref(x64, w64, b64, stride, pad), x64, dout64)
    num_dw = numerical_grad(lambda: conv_forward_ref(x64, w64, b64, stride, pad), w64, dout64)
    np.testing.assert_allclose(dx, num_dx, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dw, num_dw, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not _C.avx512_conv_active(), reason="no AVX-512: no tap kernels")
def test_strided_float32_convs_take_the_tap_kernels():
    """Switching them off (im2col + OpenBLAS's GEMM instead) changes the last bits of every
    result. (The im2col weight gradient's AVX-512 product sums in the tap kernel's order.)"""
    x, w, b = case(2, 8, 12, 12, 16, 3, np.float32, seed=0)
    on, _ = run(x, w, b, 2, 1, threads=1)
    _C.set_direct_conv(False)
    _C.set_avx512_matmul(False)
    try:
        off, _ = run(x, w, b, 2, 1, threads=1)
    finally:
        _C.set_direct_conv(True)
        _C.set_avx512_matmul(True)
    assert all(not np.array_equal(a, b_) for a, b_ in zip(on[:3], off[:3]))


def passes_on(x, w, b, stride, pad, avx512):
    _C.set_avx512_conv(avx512)
    try:
        out = _C.conv_forward(x, w, b, stride, pad)
        dout = np.random.default_rng(3).standard_normal(out.shape).astype(np.float32)
        return (out,) + tuple(_C.conv_backward(dout, x, w, stride, pad)[:2])
    finally:
        _C.set_avx512_conv(True)


@pytest.mark.skipif(not _C.avx512_conv_active(), reason="no AVX-512: no tap kernels")
@pytest.mark.parametrize(
    "C, F, k, stride, gemm_passes",
    [
        (16, 32, 1, 2, (True, True, False)),  # 1x1 stride 2: its dw keeps the tap kernel
        (16, 32, 1, 3, (True, True, True)),
        (9, 20, 2, 3, (True, True, True)),
        (16, 16, 3, 4, (True, True, True)),
        (3, 32, 3, 2, (False, True, False)),  # few channels in: dx alone
        (4, 14, 5, 2, (False, True, False)),  # (2 images: from 3C filters on)
    ],
)
def test_strided_passes_that_gemm_runs_faster_take_it(C, F, k, stride, gemm_passes):
    """Kernels narrower than the stride (some phase planes meet no tap) and the dx of layers
    on few channels run im2col + GEMM: the same bits as with the tap kernels switched off.
    (The passes left on the tap kernels may give those bits too: the im2col weight
    gradient's AVX-512 product sums in the tap kernel's order.)"""
    x, w, b = case(2, C, 14, 15, F, k, np.float32, seed=C + F)
    auto = passes_on(x, w, b, stride, 0, avx512=True)
    gemm = passes_on(x, w, b, stride, 0, avx512=False)
    for got, on_gemm, takes_gemm in zip(auto, gemm, gemm_passes, strict=True):
        if takes_gemm:
            np.testing.assert_array_equal(got, on_gemm)


@pytest.mark.torch
@pytest.mark.parametrize(
    "C, H, F, k, stride, pad",
    [(32, 32, 64, 3, 2, 1), (64, 16, 128, 3, 2, 1), (3, 32, 16, 5, 2, 2), (8, 15, 12, 3, 3, 1)],
)
def test_strided_conv_matches_pytorch(C, H, F, k, stride, pad):
    torch = pytest.importorskip("torch")
    x, w, b = case(2, C, H, H, F, k, np.float32, seed=k + stride)
    (out, dx, dw, db), dout = run(x, w, b, stride, pad, threads=2)
    xt, wt, bt = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
    expected = torch.nn.functional.conv2d(xt, wt, bt, stride=stride, padding=pad)
    expected.backward(torch.from_numpy(dout))
    for got, ref in ((out, expected), (dx, xt.grad), (dw, wt.grad), (db, bt.grad)):
        np.testing.assert_allclose(got, ref.detach().numpy(), rtol=1e-4, atol=1e-3)


@pytest.mark.torch
@settings(max_examples=40, deadline=None)
@given(
    N=st.integers(1, 3),
    C=st.sampled_from([1, 3, 5, 7, 12, 13, 16, 20]),
    F=st.sampled_from([5, 6, 7, 9, 12, 13, 16, 20, 25, 40]),
    H=st.integers(5, 33),
    W=st.integers(5, 33),
    layer=st.sampled_from(
        [(2, 2, 0), (3, 3, 0), (3, 3, 1), (4, 4, 0), (8, 8, 0), (7, 2, 3), (5, 1, 2), (7, 1, 3)]
    ),
    seed=st.integers(0, 2**16),
)
def test_patch_and_odd_channel_layers_match_pytorch_in_float64(N, C, F, H, W, layer, seed):
    """Layers off the zoo's grid: kernel = stride ("patchify", pad 0 and 1), the 7x7 stride-2
    stem, 5x5 and 7x7 "same" layers, on odd channel and filter counts and non-square images:
    every float32 pass against PyTorch's in float64."""
    torch = pytest.importorskip("torch")
    k, stride, pad = layer
    if k > H + 2 * pad or k > W + 2 * pad:
        return
    x, w, b = case(N, C, H, W, F, k, np.float32, seed)
    (out, dx, dw, db), dout = run(x, w, b, stride, pad, threads=2)
    xt, wt, bt = (torch.from_numpy(a.astype(np.float64)).requires_grad_() for a in (x, w, b))
    expected = torch.nn.functional.conv2d(xt, wt, bt, stride=stride, padding=pad)
    expected.backward(torch.from_numpy(dout.astype(np.float64)))
    bounds = conv_error_bounds(dout, x, w, b, stride, pad)
    refs = (expected, xt.grad, wt.grad, bt.grad)
    for got, ref, bound in zip((out, dx, dw, db), refs, bounds, strict=True):
        assert_within_rounding(got, ref.detach().numpy(), bound, 1e-5)


def forward_on(threads, x, w, b, pad):
    before = _C.get_num_threads()
    _C.set_num_threads(threads)
    try:
        return _C.conv_forward(x, w, b, 2, pad)
    finally:
        _C.set_num_threads(before)


@pytest.mark.parametrize("F", [16, 32, 48, 64, 80, 96, 112, 128])
def test_forward_any_count_of_positions(F):
    """The forward's last tile of positions covers the rest only (a tile of 2, 4 or 8
    positions where the widest tiles hold 6, 8, 12 or 24): every count of output
    positions per call, one image and several a call (the last group short), pads 0-2;
    each image's output the same bits alone as in its batch, and on one thread as on two."""
    for H in range(2, 18):
        for pad in (0, 1, 2) if H > 2 else (1, 2):
            x, w, b = case(5, 3, H, H + 1, F, 3, np.float32, seed=F + H + pad)
            ref = conv_forward_ref(x, w, b, 2, pad)
            outs = [forward_on(threads, x, w, b, pad) for threads in (1, 2)]
            np.testing.assert_allclose(outs[0], ref, rtol=1e-4, atol=1e-4)
            np.testing.assert_array_equal(outs[0], outs[1])
            for n in range(len(x)):
                np.testing.assert_array_equal(
                    _C.conv_forward(x[n : n + 1], w, b, 2, pad)[0], outs[0][n]
                )


@pytest.mark.parametrize("W", range(1, 36))
def test_stride2_dx_rows_of_any_width(W):
    """A stride-2 dx's rows merged from its two column phases straight into dx, 16 pixel
    pairs at a time (runs of pairs split where a block crosses rows, or where a row of odd
    width has no last odd pixel): every width 1-35, pads 0-2, channels across two blocks of
    16 (17, 33); the batch's first and last images too (the merge writes from an image's
    first float to its last)."""
    pad = W % 3
    if W + 2 * pad < 3:
        return
    x, w, b = case(3, 17 if W % 2 else 33, 5, W, 9, 3, np.float32, seed=W)
    check_against_naive(x, w, b, 2, pad, avx512=True)


@pytest.mark.parametrize(
    "C, H, F, k, stride, pad",
    # (on the tap kernel, not the lane kernel: 13+ channels, or under 20 taps a phase)
    [
        (17, 9, 8, 3, 2, 1),
        (33, 8, 64, 3, 2, 0),
        (40, 11, 9, 5, 2, 2),
        (17, 10, 6, 4, 3, 1),
        # 7x7: a filter's 49 taps transposed in blocks of 16 into their phases' rows
        (26, 15, 10, 7, 2, 3),
        (29, 16, 5, 7, 3, 2),
    ],
)
def test_tap_input_gradient_weights_packed_over_stale_buffers(C, H, F, k, stride, pad):
    """dx's packed weights (per phase, taps x channels padded to 16) go into buffers kept
    from earlier calls and not cleared: every lane is written, the padding channels' zeros
    too. A call whose weights are nan and inf leaves those buffers full of them; the same
    layer's next dx is then within rounding of the naive loops and the same bits as a dx
    computed before it."""
    x, w, b = case(2, C, H, H, F, k, np.float32, seed=C + k)
    Ho = (H + 2 * pad - k) // stride + 1
    dout = np.random.default_rng(5).standard_normal((2, F, Ho, Ho)).astype(np.float32)
    before = _C.conv_backward(dout, x, w, stride, pad)[0]
    poisoned = np.where(np.arange(w.size).reshape(w.shape) % 2, np.inf, np.nan).astype(np.float32)
    assert np.isnan(_C.conv_backward(dout, x, poisoned, stride, pad)[0]).any()
    dx = _C.conv_backward(dout, x, w, stride, pad)[0]
    np.testing.assert_array_equal(dx, before)
    bound = conv_error_bounds(dout, x, w, b, stride, pad)[1]
    assert_within_rounding(dx, conv_backward_ref(dout, x, w, stride, pad)[0], bound, 1e-5)


@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@given(
    N=st.sampled_from([1, 2, 3, 5]),
    C=st.sampled_from([1, 3, 15, 16, 17, 32, 33, 48, 64]),
    H=st.integers(1, 40),
    W=st.integers(1, 40),
    F=st.sampled_from([1, 9, 16, 20, 48, 64, 96]),
    pad=st.integers(0, 1),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_stride2_3x3_layers_match_naive(N, C, H, W, F, pad, dtype, seed):
    """3x3 stride 2, the zoo's down-sampling layers, on any image size up to 40 (odd and
    even, rows of one block of 16 pixel pairs and more), channels off the kernels' tiles,
    float32 (the tap kernels) and float64 (im2col + GEMM): against the naive loops, and the
    same bits on one thread as on two."""
    if H + 2 * pad < 3 or W + 2 * pad < 3:
        return
    x, w, b = case(N, C, H, W, F, 3, dtype, seed)
    results, dout = run(x, w, b, 2, pad, threads=2)
    bounds = conv_error_bounds(dout, x, w, b, 2, pad)
    refs = (conv_forward_ref(x, w, b, 2, pad),) + tuple(conv_backward_ref(dout, x, w, 2, pad))
    for got, ref, bound in zip(results, refs, bounds, strict=True):
        assert got.dtype == dtype
        assert_within_rounding(got, ref, bound, 1e-5 if dtype == np.float32 else 1e-12)
    one_thread, _ = run(x, w, b, 2, pad, threads=1)
    for got, again in zip(results, one_thread, strict=True):
        np.testing.assert_array_equal(got, again)


@pytest.mark.parametrize(
    "N, C, H, F, stride",
    [(37, 6, 6, 20, 2), (5, 16, 32, 64, 2), (1, 3, 9, 33, 2), (19, 8, 10, 50, 1)],
)
def test_tap_bias_gradient_summed_with_the_weight_gradient(N, C, H, F, stride):
    """db of the layers whose dw runs on the tap kernel (stride 2; stride 1 with many
    filters on short rows) is summed from the output gradient in the kernel's layout, chunk
    by chunk (2-16 chunks): against the naive loops, the same bits without dx as with it,
    and with a relu's gradient taken on the way (activation="relu")."""
    x, w, b = case(N, C, H, H, F, 3, np.float32, seed=N + F)
    out = _C.conv_forward(x, w, b, stride, 1)
    dout = np.random.default_rng(N).standard_normal(out.shape).astype(np.float32)
    _, dw, db = _C.conv_backward(dout, x, w, stride, 1)
    ref_dx, ref_dw, ref_db = conv_backward_ref(dout, x, w, stride, 1)
    np.testing.assert_allclose(db, ref_db, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(dw, ref_dw, rtol=1e-4, atol=1e-3)
    _, dw_alone, db_alone = _C.conv_backward(dout, x, w, stride, 1, need_dx=False)
    np.testing.assert_array_equal(db_alone, db)
    np.testing.assert_array_equal(dw_alone, dw)
    relu_out = _C.conv_forward(x, w, b, stride, 1, activation="relu")
    _, _, db_relu = _C.conv_backward(dout, x, w, stride, 1, activation="relu", act_out=relu_out)
    through = np.where(relu_out > 0, dout, np.float32(0))
    np.testing.assert_allclose(db_relu, through.sum(axis=(0, 2, 3)), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("C, H, F", [(32, 32, 64), (5, 9, 64), (16, 16, 20)])
def test_strided_conv_relu_pool_forward(C, H, F):
    """The forward brings each group's output into L2 before its kernel: with
    conv_relu_pool_forward that output is a thread's buffer of one image, reused."""
    x, w, b = case(3, C, H, H, F, 3, np.float32, seed=C)
    pooled, _ = _C.conv_relu_pool_forward(x, w, b, 2, 1, 2, 2, 2)
    conv = np.maximum(_C.conv_forward(x, w, b, 2, 1), 0)
    n, f, h, w_ = conv.shape
    expected = conv[:, :, : h // 2 * 2, : w_ // 2 * 2].reshape(n, f, h // 2, 2, w_ // 2, 2)
    np.testing.assert_array_equal(pooled, expected.max(axis=(3, 5)))


@pytest.mark.parametrize("F", range(1, 10))
def test_few_filters_forward_packs_positions(F):
    """1-8 filters (TapConv::pack: 4 positions a vector on 1-4 filters, 2 on 5-8; 9 on one
    lane each): every window 1-7, strides 2-4, pads 0-3 and an odd grid (planes of odd
    width, so output rows start at either lane of a pair), against the naive loops, and the
    same bits on 1, 2 and 3 threads and for each image alone."""
    for k in range(1, 8):
        for stride, pad in ((2, 0), (2, (k - 1) // 2), (3, 1), (4, 2)):
            if pad > (k - 1) // 2 + 1 or k < stride:
                continue
            x, w, b = case(4, 3, 13 + k, 9 + 2 * k, F, k, np.float32, seed=F * 10 + k + pad)
            ref = conv_forward_ref(x, w, b, stride, pad)
            before = _C.get_num_threads()
            outs = []
            try:
                for threads in (1, 2, 3):
                    _C.set_num_threads(threads)
                    outs.append(_C.conv_forward(x, w, b, stride, pad))
            finally:
                _C.set_num_threads(before)
            np.testing.assert_allclose(outs[0], ref, rtol=1e-4, atol=1e-4)
            for again in outs[1:]:
                np.testing.assert_array_equal(outs[0], again)
            np.testing.assert_array_equal(_C.conv_forward(x[1:2], w, b, stride, pad)[0], outs[0][1])


@pytest.mark.slow
@settings(max_examples=80, deadline=None)
@given(
    N=st.integers(0, 3),
    C=st.integers(1, 9),
    H=st.integers(1, 30),
    W=st.integers(1, 30),
    F=st.integers(1, 9),
    k=st.integers(1, 7),
    stride=st.sampled_from([2, 3, 4]),
    pad=st.integers(0, 3),
    seed=st.integers(0, 2**16),
)
def test_few_channel_strided_layers_match_naive(N, C, H, W, F, k, stride, pad, seed):
    """Student nets' small layers (1-9 channels and filters, windows up to 7): every pass
    within rounding of the naive loops, the same bits on one thread as on two."""
    if k > H + 2 * pad or k > W + 2 * pad:
        return
    x, w, b = case(N, C, H, W, F, k, np.float32, seed)
    check_against_naive(x, w, b, stride, pad, avx512=True)


def backward_on(threads, dout, x, w, stride, pad):
    before = _C.get_num_threads()
    _C.set_num_threads(threads)
    try:
        return _C.conv_backward(dout, x, w, stride, pad)
    finally:
        _C.set_num_threads(before)


def check_weight_gradient(mode, x, w, b, stride, pad, Wo):
    """dw and db with set_lane_conv(mode) against the naive loops, the same bits on 1, 2 and
    3 threads; the layer's output (Wo columns) and the dout they were taken with."""
    out = _C.conv_forward(x, w, b, stride, pad)
    assert out.shape[3] == Wo
    dout = np.random.default_rng(Wo).standard_normal(out.shape).astype(np.float32)
    _, ref_dw, ref_db = conv_backward_ref(dout, x, w, stride, pad)
    results = [
        with_lanes(mode, _C.conv_backward, dout, x, w, stride, pad, threads=t) for t in (1, 2, 3)
    ]
    np.testing.assert_allclose(results[0][1], ref_dw, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(results[0][2], ref_db, rtol=1e-5, atol=1e-4)
    for again in results[1:]:
        for got, same in zip(results[0], again, strict=True):
            np.testing.assert_array_equal(got, same)
    return out, dout


@pytest.mark.parametrize("F", [1, 2, 4, 5, 8, 9])
def test_few_filters_weight_gradient_packs_positions(F):
    """The weight gradient of 1-8 filters on the tap kernel (set_lane_conv("off"): else the
    lane kernel takes most) sums 4 (1-4 filters) or 2 (5-8) positions of a row
    a vector (TapConv::pack; 9 filters one a lane): output rows of every width 1-9, so each
    count of positions left past a row's whole groups, strides 1-3, batches of several
    calls of the kernel; against the naive loops, the same bits on 1, 2 and 3 threads; an
    inf in the input where no window reads it (past the last window of a row) leaves dw
    finite."""
    for Wo in range(1, 10):
        layers = ((3, 2, 1), (7, 2, 2), (3, 2, 0), (7, 2, 0), (5, 3, 0), (4, 3, 1), (3, 1, 0))
        for k, stride, pad in layers:
            W = (Wo - 1) * stride + k - 2 * pad
            if W < 1:
                continue
            x, w, b = case(37, 3, 11, W + stride - 1, F, k, np.float32, seed=F + Wo + k)
            out, dout = check_weight_gradient("off", x, w, b, stride, pad, Wo)
            if pad <= stride - 2:  # the columns past each row's last window: read by none
                Ho = out.shape[2]
                x[:, :, :, (Wo - 1) * stride + k - pad :] = np.inf
                x[:, :, (Ho - 1) * stride + k - pad :, :] = np.inf
                assert np.isinf(x).any()
                _, dw, _ = with_lanes("off", _C.conv_backward, dout, x, w, stride, pad)
                assert np.isfinite(dw).all()


def with_path(setter, mode, call, *args, threads=1):
    """_C's `call` with a path's setter (set_lane_conv, set_column_dx) at `mode`, on
    `threads` threads; the setter back at "auto" after."""
    before = _C.get_num_threads()
    _C.set_num_threads(threads)
    setter(mode)
    try:
        return call(*args)
    finally:
        setter("auto")
        _C.set_num_threads(before)


def with_lanes(mode, call, *args, threads=1):
    """_C's `call` with the lane kernel set_lane_conv(mode), on `threads` threads."""
    return with_path(_C.set_lane_conv, mode, call, *args, threads=threads)


@pytest.mark.slow
@settings(max_examples=100, deadline=None)
@given(
    N=st.integers(0, 3),
    C=st.integers(1, 24),
    H=st.integers(1, 40),
    W=st.integers(1, 40),
    F=st.integers(1, 40),
    k=st.integers(1, 7),
    stride=st.sampled_from([1, 2, 3, 4]),
    pad=st.integers(0, 3),
    seed=st.integers(0, 2**16),
)
def test_lane_kernel_passes_match_naive_and_the_tap_kernel(N, C, H, W, F, k, stride, pad, seed):
    """The forward, dx and dw with the positions along the lanes (set_lane_conv: on every
    layer, as its rules pick, and never; stride 1 for the weight gradient on short rows):
    the naive loops within rounding; the forward the same bits all three ways, as each
    output sums the same terms in the same order; dw as the rules pick it the bits of one of
    the two kernels; all on 1-3 threads the same bits."""
    if k > H + 2 * pad or k > W + 2 * pad:
        return
    x, w, b = case(N, C, H, W, F, k, np.float32, seed)
    out = with_lanes("always", _C.conv_forward, x, w, b, stride, pad)
    dout = np.random.default_rng(seed).standard_normal(out.shape).astype(np.float32)
    grads = with_lanes("always", _C.conv_backward, dout, x, w, stride, pad)
    bounds = conv_error_bounds(dout, x, w, b, stride, pad)
    assert_within_rounding(out, conv_forward_ref(x, w, b, stride, pad), bounds[0], 1e-5)
    refs = conv_backward_ref(dout, x, w, stride, pad)
    assert_within_rounding(grads[0], refs[0], bounds[1], 1e-5)
    assert_within_rounding(grads[1], refs[1], bounds[2], 1e-5)
    for mode, threads in (("auto", 2), ("off", 3), ("always", 3)):
        again = with_lanes(mode, _C.conv_forward, x, w, b, stride, pad, threads=threads)
        np.testing.assert_array_equal(again, out)
    again = with_lanes("always", _C.conv_backward, dout, x, w, stride, pad, threads=3)
    for got, same in zip(grads, again, strict=True):
        np.testing.assert_array_equal(got, same)
    off = with_lanes("off", _C.conv_backward, dout, x, w, stride, pad)
    assert_within_rounding(off[1], refs[1], bounds[2], 1e-5)
    auto = with_lanes("auto", _C.conv_backward, dout, x, w, stride, pad, threads=2)
    # (dw as one of the two kernels computes it, whichever the rule picks)
    assert np.array_equal(auto[1], grads[1]) or np.array_equal(auto[1], off[1])
    np.testing.assert_allclose(grads[2], refs[2], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(off[2], refs[2], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("F", [1, 3, 6, 8, 9, 14, 19, 24])
def test_lane_forward_every_grid_width_and_filter_group(F):
    """Output rows of 1-17 pixels on planes 1-3 columns wider (the grid's vectors keep 0-16
    lanes, compressed into rows that start anywhere in them), filters in groups of up to 8
    (19: 7, 6, 6), the last tile of 1-6 vectors; against the naive loops, the tap kernel's
    bits, and each image alone. An inf where no window reads it (the columns and rows past
    the last window, which the grid's dropped lanes read) leaves the output finite."""
    for Wo in range(1, 18):
        for k, stride, pad in ((3, 2, 1), (7, 2, 1), (5, 2, 0), (3, 3, 0), (4, 4, 1)):
            W = (Wo - 1) * stride + k - 2 * pad + stride - 1
            if W < 1:
                continue
            x, w, b = case(3, 2, 9 + stride, W, F, k, np.float32, seed=F + Wo + k)
            lanes = with_lanes("always", _C.conv_forward, x, w, b, stride, pad)
            assert lanes.shape[3] == Wo
            np.testing.assert_allclose(
                lanes, conv_forward_ref(x, w, b, stride, pad), rtol=1e-4, atol=1e-4
            )
            off = with_lanes("off", _C.conv_forward, x, w, b, stride, pad)
            np.testing.assert_array_equal(off, lanes)
            np.testing.assert_array_equal(
                with_lanes("always", _C.conv_forward, x[2:], w, b, stride, pad)[0], lanes[2]
            )
            if pad == 0 and W > (Wo - 1) * stride + k:
                Ho = lanes.shape[2]
                x[:, :, :, (Wo - 1) * stride + k :] = np.inf
                x[:, :, (Ho - 1) * stride + k :, :] = np.nan
                assert np.isfinite(
                    with_lanes("always", _C.conv_forward, x, w, b, stride, pad)
                ).all()


@pytest.mark.parametrize("stride, pad", [(2, 1), (3, 0), (2, 3)])
def test_lane_input_gradient_matches_numerical_gradient(stride, pad):
    """dx of 3 channels from a batch of 16 (on the lane kernel where its rule picks it, the
    same bits as forced onto it) against central differences of the float64 loops."""
    x, w, b = case(16, 3, 7, 9, 5, 4, np.float32, seed=stride + pad)
    out = _C.conv_forward(x, w, b, stride, pad)
    dout = np.random.default_rng(2).standard_normal(out.shape).astype(np.float32)
    dx, _, _ = _C.conv_backward(dout, x, w, stride, pad)  # (auto: 16 images of 3 channels)
    forced = with_lanes("always", _C.conv_backward, dout, x, w, stride, pad)
    np.testing.assert_array_equal(dx, forced[0])
    x64, w64, b64, dout64 = (a.astype(np.float64) for a in (x[:2], w, b, dout[:2]))
    num_dx = numerical_grad(lambda: conv_forward_ref(x64, w64, b64, stride, pad), x64, dout64)
    np.testing.assert_allclose(dx[:2], num_dx, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not _C.avx512_conv_active(), reason="no AVX-512: no lane kernel")
@pytest.mark.parametrize(
    "N, C, F, k, pad, lanes",
    [  # under 16 channels in the batch: on the lanes on up to 3C filters
        (1, 1, 3, 5, 2, True),
        (2, 3, 9, 3, 1, True),
        (1, 5, 4, 7, 3, True),  # fewer than 2C filters: else the tap kernel
        (3, 5, 15, 5, 0, True),
        (1, 8, 24, 3, 1, True),
        (2, 2, 7, 5, 2, False),  # more: im2col + GEMM
        (1, 6, 19, 7, 2, False),
    ],
)
def test_lane_input_gradient_of_small_batches(N, C, F, k, pad, lanes):
    """dx of a batch of under 16 channels (1-8 channels, 1-3 images) on the lane kernel on
    up to 3C filters (the bits of the lane kernel forced), else as with it switched off;
    the naive loops within rounding, the same bits on 1-3 threads."""
    x, w, b = case(N, C, 13, 15, F, k, np.float32, seed=N + C + F)
    check_input_gradient_rule(x, w, b, 2, pad, lanes, seed=C)


def check_input_gradient_rule(x, w, b, stride, pad, lanes, seed):
    """dx as set_lane_conv("auto") picks it: the bits of the lane kernel forced where
    `lanes`, else those with it switched off; the naive loops within rounding, the same
    bits on 1-3 threads."""
    out = _C.conv_forward(x, w, b, stride, pad)
    dout = np.random.default_rng(seed).standard_normal(out.shape).astype(np.float32)
    args = (dout, x, w, stride, pad, True, False)
    dx = with_lanes("auto", _C.conv_backward, *args)[0]
    expected = with_lanes("always" if lanes else "off", _C.conv_backward, *args)[0]
    np.testing.assert_array_equal(dx, expected)
    bounds = conv_error_bounds(dout, x, w, b, stride, pad)
    assert_within_rounding(dx, conv_backward_ref(dout, x, w, stride, pad)[0], bounds[1], 1e-5)
    for threads in (2, 3):
        np.testing.assert_array_equal(
            with_lanes("auto", _C.conv_backward, *args, threads=threads)[0], dx
        )


@pytest.mark.parametrize(
    "C, F, k, stride, pad",
    [  # on the lanes (lane_input_gradient_pays):
        (12, 8, 5, 2, 2),  # 9-12 channels, 50 taps a phase
        (20, 6, 7, 3, 1),  # 17-24 channels (3 groups in registers), stride 3
        (24, 5, 4, 2, 1),  # 20 taps a phase
        # on the tap kernel:
        (14, 8, 5, 2, 2),  # 13-16 channels fill its vectors
        (12, 2, 3, 2, 1),  # 4.5 taps a phase
        (10, 16, 2, 2, 0),  # 16 taps a phase
        (25, 8, 5, 2, 2),  # past 24 channels
    ],
)
def test_lane_input_gradient_of_9_to_24_channels(C, F, k, stride, pad):
    """dx of 9-24 channels on the lane kernel where its rule picks it (the channels in up to
    three groups in registers), else on the tap kernel: the bits of the tap kernel either
    way (each dx sums the same terms in the same order), the naive loops within rounding,
    and the same bits on 1-3 threads. An inf in x changes no dx."""
    x, w, b = case(3, C, 13, 11, F, k, np.float32, seed=C + F + k)
    out = _C.conv_forward(x, w, b, stride, pad)
    dout = np.random.default_rng(C).standard_normal(out.shape).astype(np.float32)
    dx = with_lanes("auto", _C.conv_backward, dout, x, w, stride, pad, True, False)[0]
    forced = with_lanes("always", _C.conv_backward, dout, x, w, stride, pad, True, False)[0]
    taps = with_lanes("off", _C.conv_backward, dout, x, w, stride, pad, True, False)[0]
    np.testing.assert_array_equal(forced, taps)
    np.testing.assert_array_equal(dx, forced)
    bounds = conv_error_bounds(dout, x, w, b, stride, pad)
    assert_within_rounding(dx, conv_backward_ref(dout, x, w, stride, pad)[0], bounds[1], 1e-5)
    for threads in (2, 3):
        np.testing.assert_array_equal(
            with_lanes(
                "auto", _C.conv_backward, dout, x, w, stride, pad, True, False, threads=threads
            )[0],
            dx,
        )
    x[1, 0, 2, 3] = np.inf  # dx does not read x
    np.testing.assert_array_equal(
        with_lanes("auto", _C.conv_backward, dout, x, w, stride, pad, True, False)[0], dx
    )


@settings(max_examples=60, deadline=None)
@given(
    N=st.integers(1, 4),
    C=st.integers(1, 20),
    H=st.integers(1, 30),
    W=st.integers(1, 40),
    F=st.integers(1, 50),
    k=st.integers(2, 7),
    pad=st.integers(0, 3),
    seed=st.integers(0, 2**16),
)
def test_stride_one_lanes_give_the_bits_of_the_kernels_they_replace(N, C, H, W, F, k, pad, seed):
    """Stride-1 forwards of few filters and dx of few channels (as the forward of dout, the
    filters turned) on the lane kernel, as its rule picks them and on every layer: the bits
    of the direct and tap kernels they replace (each output sums the same terms in the same
    order), the naive loops within rounding, the same bits on 1-3 threads. A NaN and an inf
    in x reach the outputs that read them alike. dx of under 6 channels on rows under 16
    pixels, which no direct or tap kernel takes, has the lane kernel's bits or im2col +
    GEMM's, whichever the rule picks."""
    if k > H + 2 * pad or k > W + 2 * pad or pad >= k:
        return
    x, w, b = case(N, C, H, W, F, k, np.float32, seed)
    hostile = x.copy()
    hostile[0, 0, 0, -1], hostile[-1, -1, -1, 0] = np.nan, np.inf
    for inputs in (x, hostile):
        off = with_lanes("off", _C.conv_forward, inputs, w, b, 1, pad)
        for mode, threads in (("auto", 1), ("always", 1), ("always", 3), ("auto", 2)):
            np.testing.assert_array_equal(
                with_lanes(mode, _C.conv_forward, inputs, w, b, 1, pad, threads=threads), off
            )
    dout = np.random.default_rng(seed).standard_normal(off.shape).astype(np.float32)
    args = (dout, x, w, 1, pad, True, False)
    dx_off = with_lanes("off", _C.conv_backward, *args)[0]
    dx_lanes = with_lanes("always", _C.conv_backward, *args)[0]
    if not (C < 6 and W < 16):  # (else the lanes replace im2col + GEMM: their own bits)
        np.testing.assert_array_equal(dx_lanes, dx_off)
    np.testing.assert_array_equal(
        with_lanes("always", _C.conv_backward, *args, threads=3)[0], dx_lanes
    )
    dx_auto = with_lanes("auto", _C.conv_backward, *args)[0]
    assert np.array_equal(dx_auto, dx_off) or np.array_equal(dx_auto, dx_lanes)
    np.testing.assert_array_equal(
        with_lanes("auto", _C.conv_backward, *args, threads=2)[0], dx_auto
    )
    bounds = conv_error_bounds(dout, x, w, b, 1, pad)
    assert_within_rounding(dx_lanes, conv_backward_ref(dout, x, w, 1, pad)[0], bounds[1], 1e-5)
    assert_within_rounding(
        with_lanes("always", _C.conv_forward, x, w, b, 1, pad),
        conv_forward_ref(x, w, b, 1, pad),
        bounds[0],
        1e-5,
    )
    assert_within_rounding(dx_off, conv_backward_ref(dout, x, w, 1, pad)[0], bounds[1], 1e-5)


@pytest.mark.parametrize(
    "N, C, H, W, F, k, pad, lanes",
    [  # dx of under 6 channels on rows under 16 pixels: on the lanes where they pay
        (16, 5, 22, 13, 8, 5, 2, True),  # random-0-21's 5 -> 8 5x5 pad 2 @22x13
        (3, 3, 14, 7, 4, 3, 1, True),
        (2, 5, 14, 13, 16, 7, 3, True),
        (1, 2, 9, 9, 3, 3, 0, True),
        (2, 1, 14, 7, 32, 5, 0, False),  # many filters: im2col + GEMM
        (2, 3, 14, 7, 8, 7, 0, False),  # mostly zero pads (gemm_input_gradient)
    ],
)
def test_lane_input_gradient_over_gemm(N, C, H, W, F, k, pad, lanes):
    """Stride-1 dx that no direct or tap kernel takes: on the lane kernel where its rule
    picks it, else on im2col + GEMM (check_input_gradient_rule)."""
    x, w, b = case(N, C, H, W, F, k, np.float32, seed=N + C + F + k)
    check_input_gradient_rule(x, w, b, 1, pad, lanes, seed=C)


def test_set_lane_conv_names_its_modes():
    with pytest.raises(Exception, match="set_lane_conv: mode must be"):
        _C.set_lane_conv("sometimes")


@pytest.mark.parametrize("F", [1, 2, 5, 6, 7, 12, 13, 19, 40])
def test_lane_weight_gradient_every_grid_width_and_filter_group(F):
    """dw on the lane kernel (positions along the lanes, a tile of taps x 1-6 filters in
    registers; filters in even groups of up to 6, 13: 5, 4, 4): output rows of 1-17 pixels
    on planes 1-3 columns wider (the grid's vectors keep 0-16 lanes), taps not a multiple of
    the tile's, strides 1-3, batches of one and of several calls; against the naive loops,
    the same bits on 1, 2 and 3 threads and with each image's order kept (the batch split
    into chunks as the batch size alone fixes). An inf where no window reads it (the
    columns and rows past the last window, which the dropped lanes read) leaves dw finite;
    one where a window reads it makes the taps that read it non-finite, as on the naive
    loops."""
    for Wo in range(1, 18):
        for k, stride, pad in ((3, 2, 1), (7, 2, 1), (5, 2, 0), (3, 3, 0), (4, 1, 0), (2, 3, 0)):
            W = (Wo - 1) * stride + k - 2 * pad + stride - 1
            if W < 1:
                continue
            for N in (1, 9):
                x, w, b = case(N, 2, 9 + stride, W, F, k, np.float32, seed=F + Wo + k + N)
                out, dout = check_weight_gradient("always", x, w, b, stride, pad, Wo)
                if pad == 0 and W > (Wo - 1) * stride + k:
                    Ho = out.shape[2]
                    x[:, :, :, (Wo - 1) * stride + k :] = np.inf
                    x[:, :, (Ho - 1) * stride + k :, :] = np.nan
                    grads = with_lanes("always", _C.conv_backward, dout, x, w, stride, pad)
                    assert np.isfinite(grads[1]).all()
                    x[0, 1, 0, 0] = np.inf  # read by tap (1, 0, 0) of every filter alone
                    dw = with_lanes("always", _C.conv_backward, dout, x, w, stride, pad)[1]
                    assert not np.isfinite(dw[:, 1, 0, 0]).any()
                    assert np.isfinite(np.delete(dw.reshape(F, -1), k * k, axis=1)).all()


@pytest.mark.parametrize("stride, pad", [(2, 1), (3, 0), (1, 2)])
def test_lane_weight_gradient_matches_numerical_gradient(stride, pad):
    """dw of 6 filters from 3 channels on the lane kernel against central differences of
    the float64 loops."""
    x, w, b = case(3, 3, 9, 11, 6, 5, np.float32, seed=stride + pad)
    out = _C.conv_forward(x, w, b, stride, pad)
    dout = np.random.default_rng(3).standard_normal(out.shape).astype(np.float32)
    dw = with_lanes("always", _C.conv_backward, dout, x, w, stride, pad)[1]
    x64, w64, b64, dout64 = (a.astype(np.float64) for a in (x, w, b, dout))
    num_dw = numerical_grad(lambda: conv_forward_ref(x64, w64, b64, stride, pad), w64, dout64)
    np.testing.assert_allclose(dw, num_dw, rtol=1e-4, atol=1e-3)


# The columns run on the tap kernel: without AVX-512 no layer takes them.
needs_columns = pytest.mark.skipif(not _C.avx512_conv_active(), reason="no AVX-512: no columns")


def gradient_paths(setter, mode, x, w, stride, pad):
    """The paths (dx's, dw's) the layer takes with a path's setter at `mode`
    (_C.strided_gradient_paths): 'columns', 'lanes', 'phases' or 'other'."""
    return with_path(setter, mode, _C.strided_gradient_paths, x, w, stride, pad)


# Layers both columns passes are tested on (N, C, H, W, F, k, stride, pad).
COLUMN_EDGE_LAYERS = [
    (1, 64, 8, 8, 128, 3, 2, 1),  # the zoo's 64 -> 128 on 8-pixel images
    (3, 48, 4, 4, 96, 3, 2, 1),
    (2, 16, 9, 7, 40, 3, 2, 0),  # odd sizes, no pad: the last row and column unread
    (3, 32, 5, 6, 17, 5, 2, 2),  # 5x5, most windows clipped at the borders; 17 filters
    (1, 16, 11, 10, 33, 4, 3, 1),  # stride 3, an even window
]


def column_dx(dout, x, w, stride, pad, mode="always", threads=1):
    """dx alone with set_column_dx(mode), on `threads` threads; at "always" the layer's dx
    runs as columns (else the test would check another path)."""
    if mode == "always":
        assert gradient_paths(_C.set_column_dx, mode, x, w, stride, pad)[0] == "columns"
    args = (dout, x, w, stride, pad, True, False)
    return with_path(_C.set_column_dx, mode, _C.conv_backward, *args, threads=threads)[0]


@needs_columns
@pytest.mark.parametrize(
    "N, C, H, W, F, k, stride, pad",
    [
        *COLUMN_EDGE_LAYERS,
        (2, 16, 9, 9, 24, 2, 2, 0),  # 2x2: windows that never overlap
        (2, 16, 6, 6, 16, 7, 2, 3),  # 7x7: windows past 5x5 through loops of their length
        (2, 37, 3, 3, 24, 5, 2, 2),  # 5x5 on 3 pixels: every window clipped on both sides
        (1, 13, 9, 10, 40, 3, 3, 1),  # stride 3, odd channels: the top and left clipped
        (3, 25, 7, 6, 20, 4, 2, 1),  # 4x4 pad 1, odd sizes: windows clipped at all 4 borders
        (1, 16, 2, 2, 16, 3, 2, 2),  # windows mostly in the pad
        (2, 13, 7, 7, 48, 3, 2, 0),  # 117 floats a filter: the rows padded to 128
        (2, 24, 8, 8, 8, 3, 2, 1),  # 216 (224)
        (3, 50, 5, 5, 64, 3, 3, 1),  # 450 (464), stride 3
        (1, 37, 9, 8, 20, 5, 2, 2),  # 925 (928), 5x5
        (2, 9, 7, 7, 16, 2, 2, 0),  # 36 (48), 2x2
        (0, 32, 8, 8, 64, 3, 2, 1),  # no images
    ],
)
def test_column_input_gradient_matches_naive_and_any_thread_count(N, C, H, W, F, k, stride, pad):
    """dx as columns (set_column_dx("always"): dout^T w on the tap kernel with the weights
    as they are, or their rows padded with zeros to whole vectors, then col2im): the naive
    loops within rounding, the same bits on 1-3 threads and for each image alone as in its
    batch."""
    x, w, b = case(N, C, H, W, F, k, np.float32, seed=C + F + k)
    dout, dx = check_column_input_gradient(x, w, b, stride, pad, F, threads=(2, 3))
    for n in range(N):
        alone = column_dx(dout[n : n + 1], x[n : n + 1], w, stride, pad)
        np.testing.assert_array_equal(alone[0], dx[n])


def check_column_input_gradient(x, w, b, stride, pad, seed, threads):
    """dx as columns (set_column_dx("always")) against the naive loops within rounding, the
    same bits on each of `threads`; the dout (of `seed`) and dx."""
    out = _C.conv_forward(x, w, b, stride, pad)
    dout = np.random.default_rng(seed).standard_normal(out.shape).astype(np.float32)
    dx = column_dx(dout, x, w, stride, pad)
    bounds = conv_error_bounds(dout, x, w, b, stride, pad)
    assert_within_rounding(dx, conv_backward_ref(dout, x, w, stride, pad)[0], bounds[1], 1e-5)
    for count in threads:
        np.testing.assert_array_equal(column_dx(dout, x, w, stride, pad, threads=count), dx)
    return dout, dx


@needs_columns
@pytest.mark.parametrize("wrt", ["x", "w"])
@pytest.mark.parametrize(
    "N, C, H, W, F, k, stride, pad",
    [
        (2, 16, 7, 6, 24, 5, 2, 2),  # 5x5, the windows clipped on every side
        (1, 13, 8, 7, 20, 3, 3, 1),  # stride 3, odd channels and sizes
    ],
)
def test_columns_match_numerical_gradient(wrt, N, C, H, W, F, k, stride, pad):
    """dx and dw as columns against central differences of the float64 loops."""
    x, w, b = case(N, C, H, W, F, k, np.float32, seed=3)
    out = _C.conv_forward(x, w, b, stride, pad)
    dout = np.random.default_rng(4).standard_normal(out.shape).astype(np.float32)
    args = (dout, x, w, stride, pad)
    got = column_dx(*args) if wrt == "x" else column_dw(*args)[0]
    x64, w64, b64, dout64 = (a.astype(np.float64) for a in (x, w, b, dout))
    wrt64 = x64 if wrt == "x" else w64
    num = numerical_grad(lambda: conv_forward_ref(x64, w64, b64, stride, pad), wrt64, dout64)
    np.testing.assert_allclose(got, num, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not _C.avx512_conv_active(), reason="no AVX-512: dx runs im2col + GEMM")
@pytest.mark.parametrize(
    "N, C, H, F, pad, columns",
    [
        (1, 64, 8, 128, 1, True),  # 16 output positions for 128 filters
        (1, 128, 4, 32, 1, True),  # 4 for 32, 5 in 6 of the windows' rows and columns inside
        (1, 50, 8, 100, 1, True),  # 16 for 100, rows of 450 floats padded to 464
        (1, 64, 16, 128, 1, True),  # 64 for 128, 23 in 24 of the rows and columns inside
        (1, 64, 32, 128, 1, False),  # 256 for 128
        (4, 32, 12, 64, 1, False),  # 144 for 64, 36 an image
        (2, 32, 16, 64, 1, False),  # 128 for 64, 23 in 24 inside: just past
        (4, 32, 8, 64, 1, True),  # 64 for 64, but 16 an image, at most 25 x 11/12 x 11/12
        (16, 96, 5, 128, 1, True),  # 144 for 128, but 9 an image, at most 25 x 7/9 x 7/9
        (4, 32, 10, 32, 1, False),  # 25 an image, but 14 in 15 inside: just past
        (16, 32, 6, 8, 1, True),  # 144 for 8, but 9 an image, of the fewest filters it takes
        (16, 32, 6, 7, 1, False),  # 9 an image, but 7 filters
        # windows inside the image (pad 0): at most 100 an image, on a filter per 4 channels
        (16, 33, 21, 39, 0, True),  # 100 an image (1600 for 39)
        (16, 33, 23, 39, 0, False),  # 121 an image: past
        (16, 33, 19, 39, 1, False),  # 100 an image, but pad 1
        (16, 64, 21, 16, 0, True),  # 64 channels on 16 filters: at the bound
        (16, 65, 21, 16, 0, False),  # 65 channels on 16 filters: past
    ],
)
def test_column_input_gradient_where_it_pays(N, C, H, F, pad, columns):
    """'auto' takes dx as columns where the batch's output positions are at most twice the
    filters, or an image's at most 25 on 8+ filters, weighed by the share of the windows'
    taps inside the image (to the 4th power for the batch's), or where every window lies
    inside the image (pad 0) an image's at most 100 on at least a filter per 4 channels
    (the bits of the columns forced, and strided_gradient_paths says so), else the phases'
    (the bits with them off); the two differ in their last bits (the terms summed in
    another order)."""
    x, w, b = case(N, C, H, H, F, 3, np.float32, seed=N + C + F)
    out = _C.conv_forward(x, w, b, 2, pad)
    dout = np.random.default_rng(C).standard_normal(out.shape).astype(np.float32)
    on, off = column_dx(dout, x, w, 2, pad, "always"), column_dx(dout, x, w, 2, pad, "off")
    assert not np.array_equal(on, off)
    np.testing.assert_array_equal(column_dx(dout, x, w, 2, pad, "auto"), on if columns else off)
    path = "columns" if columns else "phases"
    assert gradient_paths(_C.set_column_dx, "auto", x, w, 2, pad)[0] == path


@needs_columns
@pytest.mark.parametrize("C", [16, 13])
def test_column_input_gradient_of_nan_and_inf(C):
    """A nan weight and an inf in dout reach the dx pixels the naive loops carry them to
    (nan, +inf and -inf alike), and no other (on 13 channels the inf times the rows' zeros
    past 117 floats too, never read)."""
    x, w, b = case(2, C, 9, 8, 32, 3, np.float32, seed=9)
    out = _C.conv_forward(x, w, b, 2, 1)
    dout = np.random.default_rng(9).standard_normal(out.shape).astype(np.float32)
    w[3, 5, 1, 2] = np.nan
    dout[1, 7, 2, 3] = np.inf
    dx = column_dx(dout, x, w, 2, 1)
    with np.errstate(invalid="ignore"):  # the reference meets inf - inf or inf x 0
        ref = conv_backward_ref(*(a.astype(np.float64) for a in (dout, x, w)), 2, 1)[0]
    assert np.isnan(dx).any() and np.isinf(dx).any()
    assert_same_specials(dx, ref)


def assert_same_specials(got, ref):
    """nan, +inf and -inf where the reference has them, elsewhere within rounding of it."""
    for kind in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(kind(got), kind(ref))
    finite = np.isfinite(ref)
    np.testing.assert_allclose(got[finite], ref[finite], rtol=1e-4, atol=1e-4)


def test_set_column_dx_names_its_modes():
    with pytest.raises(Exception, match="set_column_dx: mode must be"):
        _C.set_column_dx("sometimes")


def column_dw(dout, x, w, stride, pad, mode="always", threads=1):
    """dw and db alone with set_column_dw(mode), on `threads` threads; at "always" the
    layer's dw runs as columns."""
    if mode == "always":
        assert gradient_paths(_C.set_column_dw, mode, x, w, stride, pad)[1] == "columns"
    args = (dout, x, w, stride, pad, False, True)
    return with_path(_C.set_column_dw, mode, _C.conv_backward, *args, threads=threads)[1:]


def check_column_weight_gradient(x, w, b, stride, pad, seed, threads):
    """dw and db as columns (set_column_dw("always")) against the naive loops within
    rounding, the same bits on each of `threads`; the dout (of `seed`), dw and db."""
    out = _C.conv_forward(x, w, b, stride, pad)
    dout = np.random.default_rng(seed).standard_normal(out.shape).astype(np.float32)
    dw, db = column_dw(dout, x, w, stride, pad)
    bounds = conv_error_bounds(dout, x, w, b, stride, pad)
    _, ref_dw, ref_db = conv_backward_ref(dout, x, w, stride, pad)
    assert_within_rounding(dw, ref_dw, bounds[2], 1e-5)
    np.testing.assert_allclose(db, ref_db, rtol=1e-5, atol=1e-4)
    for count in threads:
        again = column_dw(dout, x, w, stride, pad, threads=count)
        for got, same in zip(again, (dw, db), strict=True):
            np.testing.assert_array_equal(got, same)
    return dout, dw, db


@needs_columns
@pytest.mark.parametrize(
    "N, C, H, W, F, k, stride, pad",
    [
        *COLUMN_EDGE_LAYERS,
        (2, 4, 7, 7, 9, 2, 2, 0),  # 2x2 of 4 channels: 16 floats a filter
        (2, 16, 6, 6, 16, 7, 2, 3),  # 7x7: windows of any size through the generic loops
        (1, 16, 2, 2, 16, 3, 2, 2),  # windows mostly in the pad
        (4, 16, 5, 5, 3, 3, 3, 1),  # 3 filters: one tile of rows, 5 past them
        (1, 16, 3, 3, 16, 1, 2, 0),  # 1x1 stride 2
        (2, 16, 8, 8, 200, 3, 2, 1),  # 200 filters: 72 + 72 + 56 on 3 threads
        (1, 32, 4, 4, 100, 3, 2, 1),  # 100: 40 + 40 + 20 on 3 threads, 4 rows past the last
        (2, 24, 8, 8, 48, 3, 2, 1),  # 216 floats a filter: columns padded to 224
        (1, 3, 16, 15, 20, 7, 2, 3),  # 147 floats (160), 20 filters
        (3, 50, 5, 5, 64, 3, 3, 1),  # 450 (464), stride 3
        (0, 32, 8, 8, 64, 3, 2, 1),  # no images
    ],
)
def test_column_weight_gradient_matches_naive_and_any_thread_count(N, C, H, W, F, k, stride, pad):
    """dw and db as columns (set_column_dw("always"): dout^T times im2col's rows on the tap
    kernel, the filters as its positions): the naive loops within rounding, the same bits on
    1-3 threads; at batch 1 the same bits as on the phases (set_column_dw("off"), the tap
    kernel's dw with the lane kernel off: both sum the positions in order)."""
    x, w, b = case(N, C, H, W, F, k, np.float32, seed=C + F + k)
    dout, dw, db = check_column_weight_gradient(x, w, b, stride, pad, F, threads=(2, 3))
    if N == 1 and F > 8:  # (on 1-8 filters the phases sum 2-4 positions a vector)
        phases = with_lanes("off", column_dw, dout, x, w, stride, pad, "off")
        for got, same in zip(phases, (dw, db), strict=True):
            np.testing.assert_array_equal(got, same)


@needs_columns
@settings(max_examples=60, deadline=None)
@given(
    images_channels_filters=st.tuples(st.integers(1, 3), st.integers(1, 20), st.integers(1, 40)),
    size=st.tuples(st.integers(2, 13), st.integers(2, 13)),
    window=st.tuples(st.sampled_from([2, 3, 4, 5]), st.sampled_from([2, 3]), st.integers(0, 2)),
    seed=st.integers(0, 2**16),
)
def test_column_weight_gradient_of_random_layers(images_channels_filters, size, window, seed):
    """dw and db as columns on random layers, whose windows' rows of 3 and 5 taps are
    copied into the columns 4 and 8 floats at a time (the last channel's last row a float
    at a time): the naive loops within rounding, the same bits on 1-3 threads; at batch 1
    the phases' bits (9+ filters)."""
    (N, C, F), (H, W), (k, stride, pad) = images_channels_filters, size, window
    assume(k <= H + 2 * pad and k <= W + 2 * pad)
    assume(k >= stride)  # (narrower kernels take im2col + GEMM)
    x, w, b = case(N, C, H, W, F, k, np.float32, seed)
    dout, dw, db = check_column_weight_gradient(x, w, b, stride, pad, seed, threads=(2, 3))
    if N == 1 and F > 8:
        phases = with_lanes("off", column_dw, dout, x, w, stride, pad, "off")
        for got, same in zip(phases, (dw, db), strict=True):
            np.testing.assert_array_equal(got, same)


@needs_columns
def test_column_weight_gradient_of_nan_and_inf():
    """An inf in x and a nan in dout reach the dw entries the naive loops carry them to
    (nan, +inf and -inf alike) and no other, and db's filter; an inf in the pixels no
    window reads (the last row and column, 3x3 stride 2 without pad on 10 pixels) none."""
    x, w, b = case(2, 16, 10, 10, 32, 3, np.float32, seed=11)
    out = _C.conv_forward(x, w, b, 2, 0)
    dout = np.random.default_rng(11).standard_normal(out.shape).astype(np.float32)
    x[0, 3, 4, 5] = np.inf
    x[1, 7, 2, 2] = -np.inf
    x[:, :, 9, :] = np.inf
    x[:, :, :, 9] = np.nan
    dout[1, 20, 1, 3] = np.nan
    dw, db = column_dw(dout, x, w, 2, 0)
    _, ref_dw, ref_db = conv_backward_ref(*(a.astype(np.float64) for a in (dout, x, w)), 2, 0)
    assert np.isnan(dw).any() and np.isinf(dw).any() and np.isnan(db).any()
    assert_same_specials(dw, ref_dw)
    assert_same_specials(db, ref_db)


def test_set_column_dw_names_its_modes():
    with pytest.raises(Exception, match="set_column_dw: mode must be"):
        _C.set_column_dw("sometimes")


@pytest.mark.skipif(not _C.avx512_conv_active(), reason="no AVX-512: dw runs the phases' GEMM")
@pytest.mark.parametrize(
    "N, C, H, F, k, pad, columns",
    [
        (2, 64, 8, 128, 3, 1, True),  # 32 output positions for 128 filters
        (3, 128, 4, 32, 3, 1, True),  # 12 for 32
        (4, 16, 6, 128, 3, 1, True),  # 36 for 128
        (2, 24, 8, 96, 3, 1, True),  # 32 for 96, columns of 216 floats padded to 224
        (4, 32, 8, 64, 3, 1, True),  # 64 for 64
        (2, 64, 16, 128, 3, 1, True),  # 128 for 128
        (2, 32, 8, 64, 5, 2, True),  # 32 for 64, 5x5
        (3, 64, 16, 64, 3, 1, False),  # 192 for 64: just not under 2 x 64 + 64
        (2, 64, 16, 32, 3, 1, False),  # 128 for 32: just not under 2 x 32 + 64
        (4, 16, 14, 32, 3, 1, False),  # 196 for 32
        # off the layers the rule was fitted on, at least as many positions as filters
        (2, 48, 12, 48, 7, 3, False),  # 7x7: 72 for 48
        (2, 48, 12, 48, 1, 0, False),  # 1x1: 72 for 48
        (2, 2, 12, 64, 5, 2, False),  # 2 channels: 72 for 64
        # at any batch, an image's positions times the window's taps at most 256
        (16, 32, 10, 32, 3, 1, True),  # 25 x 9 = 225 an image (400 in the batch for 32)
        (16, 32, 12, 32, 3, 1, False),  # 36 x 9 = 324
        (16, 32, 8, 32, 4, 1, True),  # 16 x 16 = 256: at the bound
        (64, 32, 16, 32, 2, 0, True),  # 64 x 4 = 256: at the bound
        (64, 32, 18, 32, 2, 0, False),  # 81 x 4 = 324: past it
        (16, 16, 4, 32, 7, 3, True),  # 7x7: 4 x 49 = 196
        (16, 16, 6, 32, 7, 3, False),  # 7x7: 9 x 49 = 441
        (16, 2, 4, 32, 5, 2, False),  # 2 channels: 4 x 25 = 100, but left to the phases
    ],
)
def test_column_weight_gradient_where_it_pays(N, C, H, F, k, pad, columns):
    """'auto' takes dw and db as columns where the batch's output positions are fewer than
    twice the filters and 64 more, on 2x2-5x5 windows of 3+ channels, elsewhere fewer than
    the filters; and at any batch where an image's output positions times the window's
    taps are at most 256, on 2x2+ windows of 3+ channels (the bits of the columns forced,
    and strided_gradient_paths says so), else the phases' (the bits with them off); the
    two differ in their last bits at batches of 2+ (the phases sum chunks of images
    apart)."""
    x, w, b = case(N, C, H, H, F, k, np.float32, seed=N + C + F)
    out = _C.conv_forward(x, w, b, 2, pad)
    dout = np.random.default_rng(C).standard_normal(out.shape).astype(np.float32)
    on, off = column_dw(dout, x, w, 2, pad, "always"), column_dw(dout, x, w, 2, pad, "off")
    assert not np.array_equal(on[0], off[0])
    for got, same in zip(column_dw(dout, x, w, 2, pad, "auto"), on if columns else off):
        np.testing.assert_array_equal(got, same)
    path = "columns" if columns else "phases"
    assert gradient_paths(_C.set_column_dw, "auto", x, w, 2, pad)[1] == path


# Random strided layers for the columns: the channel counts whose filters fill whole
# vectors and those whose columns are padded (3, 13, 24, 37, 50), windows narrower than
# the stride and windows that overlap.
random_strided_layers = given(
    N=st.integers(0, 4),
    C=st.sampled_from([3, 13, 16, 24, 32, 37, 48, 50]),
    H=st.integers(1, 20),
    W=st.integers(1, 20),
    F=st.sampled_from([1, 8, 17, 33, 64, 100]),
    k=st.integers(1, 7),
    stride=st.sampled_from([2, 3, 4]),
    pad=st.integers(0, 3),
    seed=st.integers(0, 2**16),
)


def random_layer_taking(columns_of, N, C, H, W, F, k, stride, pad, seed):
    """x, w, b of the drawn layer; only layers whose dx (columns_of 0) or dw (1) the
    columns take at "always" (the others are drawn again)."""
    assume(k <= H + 2 * pad and k <= W + 2 * pad)
    x, w, b = case(N, C, H, W, F, k, np.float32, seed)
    setter = (_C.set_column_dx, _C.set_column_dw)[columns_of]
    assume(gradient_paths(setter, "always", x, w, stride, pad)[columns_of] == "columns")
    return x, w, b


@needs_columns
@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@random_strided_layers
def test_column_weight_gradient_random_layers(N, C, H, W, F, k, stride, pad, seed):
    """dw as columns on random strided layers: the naive loops within rounding, the same
    bits on one thread as on three; dw as 'auto' picks it the bits of one of the paths."""
    x, w, b = random_layer_taking(1, N, C, H, W, F, k, stride, pad, seed)
    dout, dw, _ = check_column_weight_gradient(x, w, b, stride, pad, seed, threads=(3,))
    auto = column_dw(dout, x, w, stride, pad, "auto", threads=2)
    off = column_dw(dout, x, w, stride, pad, "off")
    assert np.array_equal(auto[0], dw) or np.array_equal(auto[0], off[0])


@needs_columns
@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@random_strided_layers
def test_column_input_gradient_random_layers(N, C, H, W, F, k, stride, pad, seed):
    """dx as columns on random strided layers: the naive loops within rounding, the same
    bits on one thread as on three."""
    x, w, b = random_layer_taking(0, N, C, H, W, F, k, stride, pad, seed)
    check_column_input_gradient(x, w, b, stride, pad, seed, threads=(3,))
