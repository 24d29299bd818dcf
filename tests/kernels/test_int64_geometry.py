"""Hostile integers for the kernels' geometry: strides, pads, window and plane sizes over the
whole int64 range, and Python integers beyond it.

Every call either returns what exact (Python integer) arithmetic says it must, or raises
ValueError, exactly when the parameters are invalid or exceed the kernels' documented
limits (int64 sizes, 32-bit BLAS, int32 pool indices). .ci/sanitize runs this file under
AddressSanitizer and UndefinedBehaviorSanitizer, where a wrapped size that sent a kernel
out of bounds, or a signed overflow anywhere in the arithmetic, aborts the run.
"""

import re

import numpy as np
import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from graphnet.fast_layers import conv_forward_fast, max_pool_forward_fast
from graphnet.kernels import _C
from graphnet.kernels import fast
from graphnet.kernels.geometry import INT64_MAX, INT64_MIN, element_count, window_count
from isolation import assert_survived, run_in_child

from .test_fast_layers import conv_forward_ref, max_pool_backward_ref, max_pool_forward_ref

INT32_MAX = 2**31 - 1
FUZZ = settings(max_examples=300, deadline=None)
# Values where arithmetic wraps: the ends of int64, powers of two, and pads just below
# INT64_MAX, for which size + 2 * pad wraps around to a small positive size.
EXTREMES = sorted(
    {
        INT64_MIN,
        INT64_MIN + 1,
        -(2**62),
        -(2**31),
        -1,
        0,
        1,
        2,
        3,
        2**31 - 1,
        2**31,
        2**32,
        2**32 + 1,
        2**61,
        2**62 - 1,
        2**62,
        2**62 + 1,
        *(INT64_MAX - k for k in range(9)),
    }
)
any_int64 = st.one_of(
    st.sampled_from(EXTREMES), st.integers(INT64_MIN, INT64_MAX), st.integers(-3, 40)
)
# Strides and pads that keep the output small although both are huge: the interesting
# case for the arithmetic inside the kernels (a huge pad, one or two windows). The padded
# image, C x (H + 2 pad) x (W + 2 pad), must fit in int64, so pads stay below 2^30.
huge_stride = st.one_of(st.integers(2**31, INT64_MAX), st.integers(INT64_MAX - 2**32, INT64_MAX))
huge_pad = st.integers(2**20, 2**30)
# Budgets for one call, so that a valid but enormous geometry is not run.
MAX_OUTPUT, MAX_COLUMNS = 4096, 1 << 20


def no_negative_number(message):
    return re.search(r"-\d", message) is None


# ---- the Python rule -------------------------------------------------------------------


@given(
    size=st.integers(0, 50),
    kernel=st.integers(1, 50),
    stride=st.integers(1, 9),
    pad=st.integers(0, 20),
)
def test_window_count_is_the_course_formula(size, kernel, stride, pad):
    if kernel > size + 2 * pad:
        with pytest.raises(ValueError, match="larger than the"):
            window_count(size, kernel, stride, pad)
    else:
        assert window_count(size, kernel, stride, pad) == 1 + (size + 2 * pad - kernel) // stride


@pytest.mark.parametrize(
    "args, message",
    [
        (
            (5, 3, 1, INT64_MAX),
            r"padded input height 5 \+ 2 \* pad 9223372036854775807 does not fit",
        ),
        ((5, 3, 1, 2**62), "does not fit in 64 bits"),
        ((2**63, 3, 1, 0), "input height 9223372036854775808 does not fit in 64 bits"),
        ((5, 2**64, 1, 0), "window height 18446744073709551616 does not fit"),
        ((5, 3, 10**30, 0), "stride 1000000000000000000000000000000 does not fit"),
        ((5, 3, 1, 10**5000), "pad a 16610-bit number does not fit"),
        ((5, 3, 0, 0), "stride must be >= 1, got 0"),
        ((5, 0, 1, 0), "window height must be >= 1, got 0"),
        ((5, 3, 1, -1), "pad must be >= 0, got -1"),
        ((5, 3, 1.0, 0), "stride must be an integer"),
        ((5, 3, True, 0), "stride must be an integer"),
        ((5, 9, 1, 1), r"window height 9 is larger than the \(padded\) input height 7"),
    ],
)
def test_window_count_refuses(args, message):
    with pytest.raises(ValueError, match=message) as info:
        window_count(*args)
    if min(a for a in args if isinstance(a, int)) >= 0:
        assert no_negative_number(str(info.value))


def test_window_count_of_unknown_sizes_is_unknown_but_parameters_are_checked():
    assert window_count(None, 3, 1, 1) is None and window_count(5, None) is None
    with pytest.raises(ValueError, match="pad .* does not fit"):
        window_count(None, 3, 1, 2**63)


def test_element_count_follows_numpy():
    assert element_count((2, 3, 4)) == 24 and element_count((0, 2**62)) == 0
    assert element_count(()) == 1
    with pytest.raises(ValueError, match="multiply to more than fits in 64 bits"):
        element_count((0, 2**62, 4))  # numpy refuses np.empty((0, 2**62, 4)) too
    with pytest.raises(ValueError, match="size 1 of the x shape must be >= 0, got -3"):
        element_count((2, -3), "x")
    with pytest.raises(ValueError, match="does not fit in 64 bits"):
        element_count((2**64,))


@pytest.mark.parametrize(
    "param",
    [
        {"stride": 2**63, "pad": 0},
        {"stride": 1, "pad": 2**64},
        {"stride": 1, "pad": -(2**63) - 1},
        {"stride": 10**30, "pad": 10**30},
    ],
)
def test_fast_layers_refuse_numbers_beyond_int64_with_value_error(param):
    x, w, b = np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3)), np.ones(1)
    with pytest.raises(ValueError, match="does not fit in 64 bits|must be >= "):
        conv_forward_fast(x, w, b, param)
    with pytest.raises(ValueError, match="does not fit in 64 bits|must be >= "):
        max_pool_forward_fast(
            x, {"pool_height": param["pad"], "pool_width": 2, "stride": param["stride"]}
        )
    with pytest.raises(ValueError, match="does not fit in 64 bits|must be >= "):
        fast.conv_relu_pool_forward_fast(
            x, w, b, param, {"pool_height": 1, "pool_width": 1, "stride": 1}
        )


# ---- the C++ kernels: exact references -------------------------------------------------


def conv_outcome(x_shape, w_shape, stride, pad):
    """What exact arithmetic says conv_forward must do: ('error', why) for parameters that
    are invalid or beyond the kernels' limits, else ('ok', (Ho, Wo))."""
    (_, C, H, W), (F, _, HH, WW) = x_shape, w_shape
    if stride < 1 or pad < 0:
        return "error", "invalid"
    Hp, Wp = H + 2 * pad, W + 2 * pad
    if Hp > INT64_MAX or Wp > INT64_MAX or C * Hp * Wp > INT64_MAX:
        return "error", "int64"
    if HH > Hp or WW > Wp:
        return "error", "window"
    Ho, Wo = 1 + (Hp - HH) // stride, 1 + (Wp - WW) // stride
    if C * HH * WW * Ho * Wo > INT32_MAX or F * Ho * Wo > INT32_MAX:
        return "error", "blas"
    return "ok", (Ho, Wo)


def input_index(o, stride, pad, k):
    return o * stride - pad + k  # exact: Python integers


def conv_exact(x, w, b, stride, pad, Ho, Wo):
    """The convolution from its definition, one output position at a time with exact
    indices: usable for pads and strides near 2^63 as long as the output is small."""
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    out = np.empty((N, F, Ho, Wo))
    for oh in range(Ho):
        for ow in range(Wo):
            patch = np.zeros((N, C, HH, WW))
            for kh in range(HH):
                ih = input_index(oh, stride, pad, kh)
                for kw in range(WW):
                    iw = input_index(ow, stride, pad, kw)
                    if 0 <= ih < H and 0 <= iw < W:
                        patch[:, :, kh, kw] = x[:, :, ih, iw]
            out[:, :, oh, ow] = np.tensordot(patch, w, axes=([1, 2, 3], [1, 2, 3])) + b
    return out


def conv_reference(x, w, b, stride, pad, Ho, Wo):
    if pad <= 64:  # the naive loops of graphnet.layers pad the image for real
        return conv_forward_ref(x, w, b, stride, pad)
    return conv_exact(np.float64(x), np.float64(w), np.float64(b), stride, pad, Ho, Wo)


def small_enough(x_shape, w_shape, Ho, Wo):
    N, C = x_shape[:2]
    F, _, HH, WW = w_shape
    return N * F * Ho * Wo <= MAX_OUTPUT and C * HH * WW * Ho * Wo <= MAX_COLUMNS


shapes = dict(
    N=st.integers(0, 2),
    C=st.integers(1, 2),
    H=st.integers(0, 6),
    W=st.integers(0, 6),
    F=st.integers(1, 2),
    HH=st.integers(1, 4),
    WW=st.integers(1, 4),
)


def conv_arrays(N, C, H, W, F, HH, WW, dtype, seed):
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((N, C, H, W)).astype(dtype),
        rng.standard_normal((F, C, HH, WW)).astype(dtype),
        rng.standard_normal(F).astype(dtype),
    )


def check_conv(x, w, b, stride, pad):
    """Run conv forward and backward on this geometry and compare with the outcome exact
    arithmetic predicts. Returns what happened, for the statistics."""
    outcome, detail = conv_outcome(x.shape, w.shape, stride, pad)
    if outcome == "error":
        with pytest.raises(ValueError) as info:
            _C.conv_forward(x, w, b, stride, pad)
        if detail in ("int64", "window") and stride >= 1 and pad >= 0:
            assert no_negative_number(str(info.value)), info.value
        with pytest.raises(ValueError):
            _C.conv_backward(np.zeros((1, 1, 1, 1), x.dtype), x, w, stride, pad)
        return f"refused ({detail})"
    Ho, Wo = detail
    if not small_enough(x.shape, w.shape, Ho, Wo):
        return "valid, too large to run"
    out = _C.conv_forward(x, w, b, stride, pad)
    assert out.shape == (x.shape[0], w.shape[0], Ho, Wo)
    ref = conv_reference(x, w, b, stride, pad, Ho, Wo)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
    dout = np.ones_like(out)
    dx, dw, db = _C.conv_backward(dout, x, w, stride, pad)
    assert dx.shape == x.shape and dw.shape == w.shape
    np.testing.assert_allclose(db, np.full(w.shape[0], x.shape[0] * Ho * Wo), rtol=1e-6)
    if pad > 64 and x.shape[0]:
        # d(sum of out)/dw[f, c, kh, kw] = the sum of the input pixels that tap sees
        expected = np.zeros(w.shape[1:])
        for c, kh, kw in np.ndindex(*w.shape[1:]):
            tap = np.zeros((1, *w.shape[1:]))
            tap[0, c, kh, kw] = 1
            expected[c, kh, kw] = conv_exact(
                np.float64(x), tap, np.zeros(1), stride, pad, Ho, Wo
            ).sum()
        np.testing.assert_allclose(dw, np.broadcast_to(expected, dw.shape), rtol=1e-4, atol=1e-4)
    return "computed"


@FUZZ
@given(
    **shapes,
    stride=any_int64,
    pad=any_int64,
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
@example(
    N=1, C=1, H=5, W=5, F=1, HH=3, WW=3, stride=1, pad=INT64_MAX, dtype=np.float32, seed=0
)  # 5 + 2 * pad wrapped to 3: a 1x1 output, silently 0, before the checks
@example(
    N=2, C=1, H=40, W=40, F=1, HH=3, WW=3, stride=1, pad=INT64_MAX - 18, dtype=np.float32, seed=0
)
@example(
    N=1, C=1, H=5, W=5, F=1, HH=1, WW=1, stride=INT64_MAX - 1, pad=2**61, dtype=np.float64, seed=0
)  # ceil((pad - kw) / stride) once overflowed in im2col
@pytest.mark.slow
def test_conv_over_the_int64_range(N, C, H, W, F, HH, WW, stride, pad, dtype, seed):
    event(check_conv(*conv_arrays(N, C, H, W, F, HH, WW, dtype, seed), stride, pad))


@pytest.mark.slow
@FUZZ
@given(**shapes, stride=huge_stride, pad=huge_pad, seed=st.integers(0, 2**16))
def test_conv_with_a_huge_pad_and_stride_computes_the_few_windows_exactly(
    N, C, H, W, F, HH, WW, stride, pad, seed
):
    event(check_conv(*conv_arrays(N, C, H, W, F, HH, WW, np.float64, seed), stride, pad))


@FUZZ
@given(
    **shapes,
    stride=any_int64,
    pad=any_int64,
    ph=any_int64,
    pw=any_int64,
    pool_stride=any_int64,
    seed=st.integers(0, 2**16),
)
@pytest.mark.slow
def test_fused_conv_relu_pool_over_the_int64_range(
    N, C, H, W, F, HH, WW, stride, pad, ph, pw, pool_stride, seed
):
    x, w, b = conv_arrays(N, C, H, W, F, HH, WW, np.float32, seed)
    outcome, detail = conv_outcome(x.shape, w.shape, stride, pad)
    pool_ok = outcome == "ok" and pool_stride >= 1 and 1 <= ph <= detail[0] and 1 <= pw <= detail[1]
    if not pool_ok:
        with pytest.raises(ValueError):
            _C.conv_relu_pool_forward(x, w, b, stride, pad, ph, pw, pool_stride)
        return
    if not small_enough(x.shape, w.shape, *detail):
        return
    conv = _C.conv_forward(x, w, b, stride, pad)
    pooled, winners = _C.conv_relu_pool_forward(x, w, b, stride, pad, ph, pw, pool_stride)
    np.testing.assert_array_equal(
        pooled, max_pool_forward_ref(np.maximum(conv, 0), ph, pw, pool_stride)
    )
    dw, db = _C.conv_pooled_backward(np.ones_like(pooled), pooled, winners, x, w, stride, pad)
    assert dw.shape == w.shape and db.shape == b.shape
    np.testing.assert_allclose(db, (pooled > 0).sum(axis=(0, 2, 3)), rtol=1e-6)


@FUZZ
@given(
    N=st.integers(0, 2),
    C=st.integers(1, 2),
    H=st.integers(0, 7),
    W=st.integers(0, 7),
    ph=any_int64,
    pw=any_int64,
    stride=any_int64,
    seed=st.integers(0, 2**16),
)
@pytest.mark.slow
def test_max_pool_forward_over_the_int64_range(N, C, H, W, ph, pw, stride, seed):
    x = np.random.default_rng(seed).standard_normal((N, C, H, W))
    if not (stride >= 1 and 1 <= ph <= H and 1 <= pw <= W):
        with pytest.raises(ValueError) as info:
            _C.max_pool_forward(x, ph, pw, stride)
        if min(ph, pw, stride) >= 1:
            assert no_negative_number(str(info.value))
        return
    out, winners = _C.max_pool_forward(x, ph, pw, stride)
    np.testing.assert_array_equal(out, max_pool_forward_ref(x, ph, pw, stride))
    dx = _C.max_pool_backward(np.ones_like(out), winners, H, W)
    np.testing.assert_array_equal(dx, max_pool_backward_ref(np.ones_like(out), x, ph, pw, stride))


@FUZZ
@given(
    planes=st.tuples(st.integers(0, 2), st.integers(1, 2)),
    Ho=st.integers(1, 4),
    Wo=st.integers(1, 4),
    H=any_int64,
    W=any_int64,
    winners=st.lists(
        st.sampled_from([INT32_MAX, -(2**31), -1, 0, 1, 5, 17]) | st.integers(-(2**31), INT32_MAX),
        min_size=32,
        max_size=32,
    ),
)
@pytest.mark.slow
def test_max_pool_backward_with_any_input_size_and_any_winners(planes, Ho, Wo, H, W, winners):
    """max_pool_backward takes the input's size and the winners from its caller: neither may
    send it out of bounds."""
    N, C = planes
    win = np.array(winners[: N * C * Ho * Wo] or [0], np.int32)
    win = np.resize(win, (N, C, Ho, Wo))
    dout = np.ones(win.shape)
    fits = H >= 1 and W >= 1 and Ho <= H and Wo <= W and H * W <= INT32_MAX
    if not fits or (win.size and not ((0 <= win) & (win < H * W)).all()):
        with pytest.raises(ValueError):
            _C.max_pool_backward(dout, win, H, W)
        return
    if N * C * H * W > MAX_COLUMNS:
        return
    dx = _C.max_pool_backward(dout, win, H, W)
    expected = np.zeros((N * C, H * W))
    for plane, indices in enumerate(win.reshape(N * C, Ho * Wo)):
        np.add.at(expected[plane], indices, 1.0)
    np.testing.assert_array_equal(dx, expected.reshape(N, C, H, W))


@pytest.mark.slow
@FUZZ
@given(m=any_int64, n=any_int64, empty_inner=st.booleans())
@example(m=2**60 - 3, n=0, empty_inner=True)  # no output, a row count of 2**60: no loop over it
def test_matmul_of_empty_operands_with_any_sizes(m, n, empty_inner):
    """An operand may have a zero size beside a huge one (numpy allows (0, 2**62)); the
    output's size is then checked, not wrapped. Either the inner size is 0 (the output
    m x n is zeros) or both outer sizes are (an empty output, over an inner size of m)."""
    m, n = abs(m) % 2**60, abs(n) % 2**60  # numpy refuses sizes of 2**61 float32s
    m, n, k = (m, n, 0) if empty_inner else (0, 0, m)
    a, b = np.empty((m, k), np.float32), np.empty((k, n), np.float32)
    if m * n > INT32_MAX or m * k > INT32_MAX or k * n > INT32_MAX:
        with pytest.raises(ValueError):
            _C.matmul(a, b)
        return
    if m * n > MAX_COLUMNS:
        return
    c = _C.matmul(a, b)
    assert c.shape == (m, n) and not c.any()


# ---- memory bounded by the input -------------------------------------------------------


def test_an_empty_batch_of_huge_images_allocates_nothing_per_thread():
    """A (0, 1, 40000, 40000) batch holds nothing, so no kernel may size a per-thread buffer
    by its images (once: gigabytes for the padded image or the im2col matrix). Peak memory
    of a child process, before and after."""
    result = run_in_child("""
        import resource
        import numpy as np
        from graphnet.kernels import _C

        def peak_mb():
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        _C.set_num_threads(2)
        before = peak_mb()
        for dtype in (np.float32, np.float64):
            x = np.empty((0, 1, 40000, 40000), dtype)
            w, b = np.ones((1, 1, 1, 1), dtype), np.ones(1, dtype)
            out = _C.conv_forward(x, w, b, 1, 0)
            assert out.shape == (0, 1, 40000, 40000), out.shape
            dx, dw, db = _C.conv_backward(out, x, w, 1, 0)
            assert dx.shape == x.shape and not dw.any() and not db.any()
            pooled, winners = _C.conv_relu_pool_forward(x, w, b, 1, 0, 2, 2, 2)
            assert pooled.shape == (0, 1, 20000, 20000)
            dw, db = _C.conv_pooled_backward(pooled, pooled, winners, x, w, 1, 0)
            assert not dw.any() and not db.any()
            x = np.empty((0, 2, 10000, 10000), dtype)
            w3, b3 = np.ones((2, 2, 3, 3), dtype), np.ones(2, dtype)
            out = _C.conv_forward(x, w3, b3, 1, 1)
            _C.conv_backward(out, x, w3, 1, 1)
        print(f"grew {peak_mb() - before:.0f} MB")
        assert peak_mb() - before < 200, peak_mb() - before
    """)
    assert_survived(result)


def test_fused_conv_backward_of_an_empty_batch_with_a_huge_pad():
    """The forward takes it (nothing to convolve), so the backward must too: the padded
    image's int32 limit concerns images that exist."""
    x, w, b = (
        np.zeros((0, 1, 0, 0), np.float32),
        np.ones((1, 1, 1, 1), np.float32),
        np.zeros(1, np.float32),
    )
    stride, pad = 2147483647, 23171
    pooled, winners = _C.conv_relu_pool_forward(x, w, b, stride, pad, 1, 1, 1)
    dw, db = _C.conv_pooled_backward(np.ones_like(pooled), pooled, winners, x, w, stride, pad)
    assert pooled.shape[0] == 0 and not dw.any() and not db.any()


@pytest.mark.parametrize("sysconf", ["missing", "refusing"])
def test_the_memory_bound_without_os_sysconf_is_the_address_space(monkeypatch, sysconf):
    """Where the OS does not say its memory (no os.sysconf on Windows; a name it does not
    know), the bound is the 2**47-byte address space, beyond which nothing can be
    allocated (before: 2**63 - 1, no bound at all)."""
    import os

    from graphnet.kernels import geometry

    if sysconf == "missing":
        monkeypatch.delattr(os, "sysconf")
    else:
        monkeypatch.setattr(os, "sysconf", lambda name: int("unknown name"))
    assert geometry._physical_memory() == geometry.ADDRESS_SPACE_BYTES == 2**47
    monkeypatch.undo()
    assert geometry._physical_memory() == geometry.MEMORY_BYTES < 2**47
