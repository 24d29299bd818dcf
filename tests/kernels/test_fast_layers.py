"""graphnet.fast_layers (C++ conv and max pool) against independent references: the
naive loops of graphnet.layers and max-pool loops written here, numerical gradients, and
PyTorch when it is installed."""

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphnet import layers
from graphnet.kernels import _C
from graphnet.fast_layers import (
    conv_backward_fast,
    conv_forward_fast,
    max_pool_backward_fast,
    max_pool_forward_fast,
)

# ---- independent references: plain loops ------------------------------------------


def conv_forward_ref(x, w, b, stride, pad):
    """graphnet.layers' naive loops (checked against scipy and PyTorch in test_layers), in
    float64 so that float32 results are compared with exact values."""
    as64 = (np.asarray(a, np.float64) for a in (x, w, b))
    return layers.conv_forward_naive(*as64, {"stride": stride, "pad": pad})[0]


def conv_backward_ref(dout, x, w, stride, pad):
    x, w, dout = (np.asarray(a, np.float64) for a in (x, w, dout))
    _, cache = layers.conv_forward_naive(x, w, np.zeros(w.shape[0]), {"stride": stride, "pad": pad})
    return layers.conv_backward_naive(dout, cache)


def pool_winner(win):
    """(row, col) of the first maximum in row-major order; a NaN counts as the maximum."""
    best = (0, 0)
    for a in range(win.shape[0]):
        for c in range(win.shape[1]):
            v, b = win[a, c], win[best]
            if v > b or (np.isnan(v) and not np.isnan(b)):
                best = (a, c)
    return best


def max_pool_forward_ref(x, ph, pw, stride):
    N, C, H, W = x.shape
    out = np.zeros((N, C, 1 + (H - ph) // stride, 1 + (W - pw) // stride), x.dtype)
    for n, c, i, j in np.ndindex(*out.shape):
        win = x[n, c, i * stride : i * stride + ph, j * stride : j * stride + pw]
        out[n, c, i, j] = win[pool_winner(win)]
    return out


def max_pool_backward_ref(dout, x, ph, pw, stride):
    dx = np.zeros(x.shape)
    for n, c, i, j in np.ndindex(*dout.shape):
        a, b = pool_winner(x[n, c, i * stride : i * stride + ph, j * stride : j * stride + pw])
        dx[n, c, i * stride + a, j * stride + b] += dout[n, c, i, j]
    return dx


def conv_error_bounds(dout, x, w, b, stride, pad):
    """Per element, the sum of the absolute values of the terms each result adds up: the
    reference conv and its backward on |x|, |w|, |b|, |dout|. Rounding error is a multiple
    of it, so a result that cancels to almost nothing is still judged fairly (a relative
    error would flag float32's honest rounding there)."""
    x, w, b, dout = (np.abs(np.asarray(a, np.float64)) for a in (x, w, b, dout))
    return (conv_forward_ref(x, w, b, stride, pad),) + tuple(
        conv_backward_ref(dout, x, w, stride, pad)
    )


def assert_within_rounding(got, ref, bound, tol):
    """|got - ref| <= tol * bound elementwise (bound from conv_error_bounds)."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape
    excess = np.abs(got - ref) - tol * bound
    assert not (excess > 0).any(), f"off by {np.max(np.abs(got - ref))} > {tol} x bound"


def rel_error(a, b):
    """Largest error relative to the reference's scale (robust where entries are ~0)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b)) / max(1e-300, np.max(np.abs(b))))


def numerical_grad(f, x, dout, h=1e-5):
    """Central differences of sum(f() * dout) with respect to every entry of x."""
    grad = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        old = x[idx]
        x[idx] = old + h
        plus = np.sum(f() * dout)
        x[idx] = old - h
        minus = np.sum(f() * dout)
        x[idx] = old
        grad[idx] = (plus - minus) / (2 * h)
    return grad


# (N, C, H, W, F, HH, WW, stride, pad): square and not, overlapping windows, strides
# that do not divide, pad wider than the kernel, 1x1, kernel as large as padded input.
CONV_CASES = [
    (2, 3, 8, 8, 4, 3, 3, 1, 1),
    (2, 3, 7, 6, 4, 3, 2, 2, 1),
    (3, 2, 9, 9, 5, 5, 5, 3, 4),
    (1, 1, 4, 4, 1, 4, 4, 1, 0),
    (2, 4, 5, 7, 3, 1, 1, 1, 0),
    (2, 2, 6, 5, 3, 1, 1, 2, 2),
    (1, 3, 3, 3, 2, 5, 5, 1, 1),
    (3, 3, 11, 10, 2, 7, 7, 1, 3),
    (2, 2, 10, 9, 2, 3, 4, 4, 0),
    (1, 2, 5, 5, 2, 2, 3, 5, 2),
]
# (N, C, H, W, pool_height, pool_width, stride)
POOL_CASES = [
    (2, 3, 8, 8, 2, 2, 2),
    (2, 2, 7, 9, 3, 3, 2),
    (1, 3, 6, 5, 3, 2, 1),
    (2, 1, 5, 5, 5, 5, 1),
    (3, 2, 9, 7, 2, 3, 3),
    (1, 1, 4, 6, 1, 1, 2),
]


def make_conv(case, dtype, seed=0):
    N, C, H, W, F, HH, WW, stride, pad = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((F, C, HH, WW)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    return x, w, b, {"stride": stride, "pad": pad}


# ---- conv ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-9), (np.float32, 1e-5)])
def test_conv_matches_naive(case, dtype, tol):
    x, w, b, cp = make_conv(case, dtype)
    out, cache = conv_forward_fast(x, w, b, cp)
    assert out.dtype == dtype
    assert rel_error(out, conv_forward_ref(x, w, b, cp["stride"], cp["pad"])) < tol
    dout = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
    grads = conv_backward_fast(dout, cache)
    refs = conv_backward_ref(dout, x, w, cp["stride"], cp["pad"])
    for got, ref, like in zip(grads, refs, (x, w, b)):
        assert got.dtype == dtype and got.shape == like.shape
        assert rel_error(got, ref) < tol


@pytest.mark.slow
@pytest.mark.parametrize("case", CONV_CASES[:6])
def test_conv_backward_numerical(case):
    x, w, b, cp = make_conv(case, np.float64, seed=2)
    out, cache = conv_forward_fast(x, w, b, cp)
    dout = np.random.default_rng(3).standard_normal(out.shape)
    dx, dw, db = conv_backward_fast(dout, cache)
    f = lambda: conv_forward_fast(x, w, b, cp)[0]  # noqa: E731  (reads x, w, b as perturbed)
    assert rel_error(dx, numerical_grad(f, x, dout)) < 1e-7
    assert rel_error(dw, numerical_grad(f, w, dout)) < 1e-7
    assert rel_error(db, numerical_grad(f, b, dout)) < 1e-7


def test_conv_backward_skips_unneeded_gradients():
    x, w, b, cp = make_conv(CONV_CASES[1], np.float64)
    out, cache = conv_forward_fast(x, w, b, cp)
    dout = np.ones_like(out)
    dx, dw, db = conv_backward_fast(dout, cache)
    no_dx = conv_backward_fast(dout, cache, need_dx=False)
    assert no_dx[0] is None
    np.testing.assert_array_equal(no_dx[1], dw)
    np.testing.assert_array_equal(no_dx[2], db)
    only_dx = _C.conv_backward(dout, x, w, cp["stride"], cp["pad"], need_dw=False)
    assert only_dx[1] is None
    np.testing.assert_array_equal(only_dx[0], dx)


def test_conv_non_contiguous_inputs():
    x, w, b, cp = make_conv(CONV_CASES[1], np.float64)
    x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    x_view = x_nhwc.transpose(0, 3, 1, 2)  # NCHW view with NHWC strides
    w_f = np.asfortranarray(w)
    b_strided = np.repeat(b, 2)[::2]
    big = np.zeros((x.shape[0], x.shape[1], x.shape[2] * 2, x.shape[3]))
    big[:, :, ::2] = x
    for xv, wv, bv in [(x_view, w, b), (big[:, :, ::2], w_f, b_strided)]:
        assert not xv.flags.c_contiguous
        out, cache = conv_forward_fast(xv, wv, bv, cp)
        assert rel_error(out, conv_forward_ref(x, w, b, 2, 1)) < 1e-12
        dout = np.random.default_rng(0).standard_normal(out.shape[::-1]).T  # F-ordered
        for got, ref in zip(conv_backward_fast(dout, cache), conv_backward_ref(dout, x, w, 2, 1)):
            assert rel_error(got, ref) < 1e-12


def test_conv_empty_batch():
    x, w, b, cp = make_conv((0, 3, 5, 5, 2, 3, 3, 1, 1), np.float64)
    out, cache = conv_forward_fast(x, w, b, cp)
    assert out.shape == (0, 2, 5, 5)
    dx, dw, db = conv_backward_fast(out, cache)
    assert dx.shape == x.shape and not dw.any() and not db.any()


@pytest.mark.slow
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_matches_torch(case, dtype):
    torch = pytest.importorskip("torch")
    x, w, b, cp = make_conv(case, dtype)
    out, cache = conv_forward_fast(x, w, b, cp)
    xt, wt, bt = (torch.from_numpy(a.copy()).requires_grad_() for a in (x, w, b))
    ot = torch.nn.functional.conv2d(xt, wt, bt, stride=cp["stride"], padding=cp["pad"])
    dout = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
    ot.backward(torch.from_numpy(dout))
    tol = 1e-12 if dtype == np.float64 else 1e-5
    assert rel_error(out, ot.detach().numpy()) < tol
    for got, t in zip(conv_backward_fast(dout, cache), (xt, wt, bt)):
        assert rel_error(got, t.grad.numpy()) < tol


# ---- max pool ----------------------------------------------------------------------


def make_pool(case, dtype, seed=0):
    N, C, H, W, ph, pw, stride = case
    x = np.random.default_rng(seed).standard_normal((N, C, H, W)).astype(dtype)
    return x, {"pool_height": ph, "pool_width": pw, "stride": stride}


@pytest.mark.slow
@pytest.mark.parametrize("case", POOL_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_matches_naive(case, dtype):
    x, pp = make_pool(case, dtype)
    args = (pp["pool_height"], pp["pool_width"], pp["stride"])
    out, cache = max_pool_forward_fast(x, pp)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, max_pool_forward_ref(x, *args))
    dout = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
    dx = max_pool_backward_fast(dout, cache)
    assert dx.dtype == dtype
    tol = 1e-12 if dtype == np.float64 else 1e-6  # overlapping windows add in float32
    assert rel_error(dx, max_pool_backward_ref(dout, x, *args)) < tol


@pytest.mark.slow
@pytest.mark.parametrize("case", POOL_CASES[:4])
def test_max_pool_backward_numerical(case):
    x, pp = make_pool(case, np.float64, seed=5)  # continuous values: no ties
    out, cache = max_pool_forward_fast(x, pp)
    dout = np.random.default_rng(6).standard_normal(out.shape)
    num = numerical_grad(lambda: max_pool_forward_fast(x, pp)[0], x, dout)
    assert rel_error(max_pool_backward_fast(dout, cache), num) < 1e-7


def test_max_pool_ties_first_in_row_major_order_wins():
    pp = {"pool_height": 2, "pool_width": 2, "stride": 2}
    x = np.array(
        [
            [
                [
                    [1.0, 3.0, 5.0, 5.0],
                    [3.0, 2.0, 5.0, 5.0],
                    [0.0, 0.0, -1.0, -2.0],
                    [0.0, 0.0, -2.0, -1.0],
                ]
            ]
        ]
    )
    out, cache = max_pool_forward_fast(x, pp)
    np.testing.assert_array_equal(out, [[[[3.0, 5.0], [0.0, -1.0]]]])
    dx = max_pool_backward_fast(np.array([[[[10.0, 20.0], [30.0, 40.0]]]]), cache)
    np.testing.assert_array_equal(
        dx, [[[[0, 10, 20, 0], [0, 0, 0, 0], [30, 0, 40, 0], [0, 0, 0, 0]]]]
    )


def test_max_pool_ties_with_overlapping_windows_are_consistent():
    x = np.ones((1, 1, 3, 3))
    pp = {"pool_height": 2, "pool_width": 2, "stride": 1}
    out, cache = max_pool_forward_fast(x, pp)
    dx = max_pool_backward_fast(np.ones_like(out), cache)
    # every window's first (top-left) element wins
    np.testing.assert_array_equal(dx[0, 0], [[1, 1, 0], [1, 1, 0], [0, 0, 0]])
    for _ in range(3):
        np.testing.assert_array_equal(max_pool_backward_fast(np.ones_like(out), cache), dx)


def test_max_pool_nan_propagates_and_takes_gradient():
    x = np.array([[[[1.0, np.nan], [np.nan, 2.0]]]])
    out, cache = max_pool_forward_fast(x, {"pool_height": 2, "pool_width": 2, "stride": 2})
    assert np.isnan(out).all()
    dx = max_pool_backward_fast(np.ones_like(out), cache)
    np.testing.assert_array_equal(dx, [[[[0, 1], [0, 0]]]])


def test_max_pool_non_contiguous_inputs():
    x, pp = make_pool(POOL_CASES[1], np.float64)
    view = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    out, cache = max_pool_forward_fast(view, pp)
    np.testing.assert_array_equal(out, max_pool_forward_ref(x, 3, 3, 2))
    dout = np.random.default_rng(0).standard_normal(out.shape[::-1]).T
    assert (
        rel_error(max_pool_backward_fast(dout, cache), max_pool_backward_ref(dout, x, 3, 3, 2))
        < 1e-12
    )


@pytest.mark.slow
@pytest.mark.parametrize("case", POOL_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_matches_torch(case, dtype):
    torch = pytest.importorskip("torch")
    x, pp = make_pool(case, dtype)
    out, cache = max_pool_forward_fast(x, pp)
    xt = torch.from_numpy(x.copy()).requires_grad_()
    ot = torch.nn.functional.max_pool2d(xt, (pp["pool_height"], pp["pool_width"]), pp["stride"])
    dout = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
    ot.backward(torch.from_numpy(dout))
    np.testing.assert_array_equal(out, ot.detach().numpy())
    assert rel_error(max_pool_backward_fast(dout, cache), xt.grad.numpy()) < 1e-6


@settings(max_examples=150, deadline=None)
@given(
    N=st.integers(1, 3),
    C=st.integers(1, 4),
    H=st.integers(1, 20),
    W=st.integers(1, 40),
    ph=st.integers(1, 5),
    pw=st.integers(1, 5),
    stride=st.integers(1, 6),
    rounded=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_max_pool_any_window_matches_torch(N, C, H, W, ph, pw, stride, rounded, dtype, seed):
    """Any window and stride (overlapping, stride past the window, windows ending at the
    edge): PyTorch's maxima, its indices (the first maximum in row-major order on ties, as
    ours) and its input gradient (overlapping windows adding at a shared winner)."""
    torch = pytest.importorskip("torch")
    ph, pw = min(ph, H), min(pw, W)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W))
    if rounded:  # ties in most windows
        x = np.round(x)
    x = x.astype(dtype)
    pp = {"pool_height": ph, "pool_width": pw, "stride": stride}
    out, cache = max_pool_forward_fast(x, pp)
    xt = torch.from_numpy(x.copy()).requires_grad_()
    ot, indices = torch.nn.functional.max_pool2d(xt, (ph, pw), stride, return_indices=True)
    np.testing.assert_array_equal(out, ot.detach().numpy())
    np.testing.assert_array_equal(cache[1], indices.numpy())
    dout = rng.standard_normal(out.shape).astype(dtype)
    ot.backward(torch.from_numpy(dout))
    np.testing.assert_allclose(
        max_pool_backward_fast(dout, cache), xt.grad.numpy(), rtol=1e-6, atol=1e-6
    )


# ---- errors ------------------------------------------------------------------------

X = np.zeros((2, 3, 8, 8))
W = np.zeros((4, 3, 3, 3))
B = np.zeros(4)

BAD_CONV = [
    (X, W, B, {"stride": 0, "pad": 1}, "stride"),
    (X, W, B, {"stride": -1, "pad": 1}, "stride"),
    (X, W, B, {"stride": 1, "pad": -1}, "pad"),
    (X, np.zeros((4, 3, 11, 3)), B, {"stride": 1, "pad": 1}, "larger than the padded input"),
    (X, np.zeros((4, 3, 3, 11)), B, {"stride": 1, "pad": 1}, "larger than the padded input"),
    (X[0], W, B, {"stride": 1, "pad": 1}, "4-D"),
    (X, W[0], B, {"stride": 1, "pad": 1}, "4-D"),
    (X, np.zeros((4, 2, 3, 3)), B, {"stride": 1, "pad": 1}, "channels"),
    (X, W, np.zeros(5), {"stride": 1, "pad": 1}, "b must have shape"),
    (X, W, np.zeros((4, 1)), {"stride": 1, "pad": 1}, "b must have shape"),
    (X, W.astype(np.float32), B, {"stride": 1, "pad": 1}, "dtype"),
    (X.astype(np.float32), W, B, {"stride": 1, "pad": 1}, "dtype"),
    (
        X.astype(np.int64),
        W.astype(np.int64),
        B.astype(np.int64),
        {"stride": 1, "pad": 1},
        "float32 or float64",
    ),
    (X, W, B, {"stride": 1.5, "pad": 1}, "integer"),
    (X, W, B, {"pad": 1}, "stride"),
]


@pytest.mark.parametrize("x, w, b, cp, words", BAD_CONV)
def test_conv_bad_parameters_raise_value_error_with_shapes(x, w, b, cp, words):
    with pytest.raises(ValueError) as err:
        conv_forward_fast(x, w, b, cp)
    assert words in str(err.value)
    if "integer" not in words and "stride'" not in str(err.value):
        assert str(x.shape) in str(err.value) or str(w.shape) in str(err.value)


def test_conv_backward_bad_dout():
    out, cache = conv_forward_fast(X, W, B, {"stride": 1, "pad": 1})
    with pytest.raises(
        ValueError, match=r"dout must have shape \(2, 4, 8, 8\), got \(2, 4, 8, 7\)"
    ):
        conv_backward_fast(out[..., :7], cache)
    with pytest.raises(ValueError, match="dtype"):
        conv_backward_fast(out.astype(np.float32), cache)


BAD_POOL = [
    ({"pool_height": 2, "pool_width": 2, "stride": 0}, X, "stride"),
    ({"pool_height": 0, "pool_width": 2, "stride": 1}, X, "window"),
    ({"pool_height": 9, "pool_width": 2, "stride": 1}, X, "larger than the input"),
    ({"pool_height": 2, "pool_width": 9, "stride": 1}, X, "larger than the input"),
    ({"pool_height": 2, "pool_width": 2, "stride": 2}, X[0], "4-D"),
    ({"pool_height": 2, "pool_width": 2, "stride": 2}, X.astype(np.int32), "float32 or float64"),
]


@pytest.mark.parametrize("pp, x, words", BAD_POOL)
def test_max_pool_bad_parameters_raise_value_error_with_shapes(pp, x, words):
    with pytest.raises(ValueError) as err:
        max_pool_forward_fast(x, pp)
    assert words in str(err.value) and str(x.shape) in str(err.value)


def test_max_pool_backward_bad_dout():
    out, cache = max_pool_forward_fast(X, {"pool_height": 2, "pool_width": 2, "stride": 2})
    with pytest.raises(ValueError, match=r"\(2, 3, 4, 4\)"):
        max_pool_backward_fast(out[:1], cache)


def test_direct_C_calls_validate_too():
    with pytest.raises(ValueError, match="stride"):
        _C.conv_forward(X, W, B, 0, 0)
    with pytest.raises(ValueError, match="larger"):
        _C.max_pool_forward(X, 10, 10, 1)
    out, winners = _C.max_pool_forward(X, 2, 2, 2)
    with pytest.raises(ValueError, match="winners must index"):
        _C.max_pool_backward(out, winners + 64, 8, 8)
    for extreme in (np.iinfo(np.int32).min, np.iinfo(np.int32).max, -1):
        hostile = winners.copy()
        hostile.flat[5] = extreme  # no overflow on the way to refusing it (UBSan in CI)
        with pytest.raises(ValueError, match="winners must index"):
            _C.max_pool_backward(out, hostile, 8, 8)
    with pytest.raises(ValueError, match="int32"):
        _C.max_pool_backward(out, winners.astype(np.int64), 8, 8)
    with pytest.raises(ValueError, match="dout"):
        _C.conv_backward(np.zeros((1, 1, 1, 1)), X, W, 1, 1)


# ---- threads -----------------------------------------------------------------------


@pytest.mark.parametrize("batch", [5, 37])
def test_thread_count_is_controllable_and_results_are_bitwise_equal(batch):
    """The batch reduction of dw and db runs in a fixed order whatever the thread count,
    so seeded training gives the same bits on any machine size."""
    x, w, b, cp = make_conv((batch, 3, 9, 9, 4, 3, 3, 1, 1), np.float32)
    before = _C.get_num_threads()
    try:
        results = []
        for n in (1, 2, 3):
            _C.set_num_threads(n)
            assert _C.get_num_threads() == n
            out, cache = conv_forward_fast(x, w, b, cp)
            results.append((out,) + tuple(conv_backward_fast(np.ones_like(out), cache)))
        for other in results[1:]:
            for a, b_ in zip(results[0], other):
                np.testing.assert_array_equal(a, b_)
        with pytest.raises(ValueError):
            _C.set_num_threads(0)
    finally:
        _C.set_num_threads(before)


def test_concurrent_calls_from_python_threads():
    """The GIL is released during compute; concurrent calls must not interfere."""
    x, w, b, cp = make_conv((4, 3, 12, 12, 5, 3, 3, 1, 1), np.float64)
    expected = conv_forward_fast(x, w, b, cp)[0]
    errors = []

    def work():
        for _ in range(20):
            if not np.array_equal(conv_forward_fast(x, w, b, cp)[0], expected):
                errors.append("mismatch")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "shape", [(2, 3, 8, 8), (1, 2, 7, 9), (3, 1, 5, 4), (2, 3, 13, 10), (3, 2, 5, 6), (1, 2, 9, 15)]
)
def test_max_pool_2x2_stride_2_kernel_with_ties_and_nans(dtype, shape):
    """The branch-free 2x2 stride-2 kernel against the loops: small integers make ties
    common, and a few NaNs must win their windows (the first NaN in row-major order). Rows
    of 2 to 7 outputs (13 x 10, 5 x 6, 9 x 15) take the general plane's partial vectors."""
    rng = np.random.default_rng(sum(shape))
    x = rng.integers(0, 3, shape).astype(dtype)
    x[rng.random(shape) < 0.05] = np.nan
    pp = {"pool_height": 2, "pool_width": 2, "stride": 2}
    out, cache = max_pool_forward_fast(x, pp)
    np.testing.assert_array_equal(out, max_pool_forward_ref(x, 2, 2, 2))
    dout = rng.standard_normal(out.shape).astype(dtype)
    np.testing.assert_array_equal(
        max_pool_backward_fast(dout, cache), max_pool_backward_ref(dout, x, 2, 2, 2)
    )


@pytest.mark.slow
@pytest.mark.parametrize("pp", [(2, 2, 2), (1, 1, 2), (3, 3, 2), (2, 2, 1), (3, 2, 3), (1, 2, 2)])
@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 2, 7, 9), (2, 2, 5, 4)])
def test_max_pool_backward_block_writer_and_scatter(pp, shape):
    """Backward writes whole 2x2 blocks when every winner lies in its own block (2x2 stride
    2, and also 1x1 or 1x2 stride 2) and scatters otherwise; some planes of one call may take
    each way. Both must equal the loops, odd sizes (rows and columns no block covers)
    included."""
    ph, pw, stride = pp
    rng = np.random.default_rng(sum(shape) + ph)
    x = rng.integers(0, 4, shape).astype(np.float32)
    params = {"pool_height": ph, "pool_width": pw, "stride": stride}
    out, cache = max_pool_forward_fast(x, params)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    np.testing.assert_allclose(
        max_pool_backward_fast(dout, cache),
        max_pool_backward_ref(dout, x, ph, pw, stride),
        rtol=1e-5,
        atol=1e-6,
    )


def pool_input(shape, dtype, specials, seed):
    """Small integers (ties common) with, by `specials`, some NaNs or many -0.0."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, shape).astype(dtype)
    if specials == "nan":
        x[rng.random(x.shape) < 0.05] = np.nan
    elif specials == "zeros":
        x[rng.random(x.shape) < 0.5] = -0.0
    return x


def relu_of(x):
    """relu_forward's numbers: a NaN passes, x <= 0 (-0.0 too) becomes +0."""
    return np.where(x > 0, x, np.where(np.isnan(x), x, 0.0)).astype(x.dtype)


@settings(max_examples=80, deadline=None)
@given(
    N=st.integers(1, 3),
    C=st.integers(1, 3),
    H=st.integers(1, 12),
    W=st.integers(1, 12),
    rows=st.integers(1, 12),
    stride=st.integers(1, 3),
    dtype=st.sampled_from([np.float32, np.float64]),
    specials=st.sampled_from(["none", "nan", "zeros"]),
    relu_first=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_max_pool_windows_of_whole_rows(
    N, C, H, W, rows, stride, dtype, specials, relu_first, seed
):
    """Windows as wide as the plane (global max pooling among them) take eight running
    maxima over their span: the same winners as the loops, with ties common (small
    integers), NaNs (the first wins), -0.0 against 0.0 (the first wins), and relu first."""
    rows = min(rows, H)
    x = pool_input((N, C, H, W), dtype, specials, seed)
    out, winners = _C.max_pool_forward(x, rows, W, stride, relu_first=relu_first)
    positional = _C.max_pool_forward(x, rows, W, stride, relu_first)  # as the pools pass it
    assert out.tobytes() == positional[0].tobytes()
    np.testing.assert_array_equal(winners, positional[1])
    seen = relu_of(x) if relu_first else x
    Ho = 1 + (H - rows) // stride
    for n, c, i in np.ndindex(N, C, Ho):
        a, b = pool_winner(seen[n, c, i * stride : i * stride + rows])
        assert winners[n, c, i, 0] == (i * stride + a) * W + b
        same = out[n, c, i, 0].tobytes() == seen[n, c, i * stride + a, b].tobytes()
        assert same, (out[n, c, i, 0], seen[n, c, i * stride + a, b])


def assert_pools_as_the_loops(x, ph, pw, stride, relu_first, threads):
    """_C.max_pool_forward on each number of threads: the same bits every time, and each
    window's winner and maximum those of pool_winner on x (on relu(x) with relu_first)."""
    before = _C.get_num_threads()
    try:
        results = []
        for count in threads:
            _C.set_num_threads(count)
            results.append(_C.max_pool_forward(x, ph, pw, stride, relu_first))
    finally:
        _C.set_num_threads(before)
    out, winners = results[0]
    for again in results[1:]:
        assert out.tobytes() == again[0].tobytes()
        np.testing.assert_array_equal(winners, again[1])
    seen = relu_of(x) if relu_first else x
    W = x.shape[3]
    for n, c, i, j in np.ndindex(*out.shape):
        top, left = i * stride, j * stride
        a, b = pool_winner(seen[n, c, top : top + ph, left : left + pw])
        assert winners[n, c, i, j] == (top + a) * W + left + b
        assert out[n, c, i, j].tobytes() == seen[n, c, top + a, left + b].tobytes()


@settings(max_examples=80, deadline=None)
@given(
    N=st.integers(1, 2),
    C=st.integers(1, 3),
    H=st.integers(1, 13),
    W=st.integers(1, 13),
    ph=st.integers(1, 4),
    pw=st.integers(1, 4),
    stride=st.integers(1, 3),
    dtype=st.sampled_from([np.float32, np.float64]),
    specials=st.sampled_from(["none", "nan", "zeros"]),
    relu_first=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_max_pool_any_window_side_by_side_is_the_loops(
    N, C, H, W, ph, pw, stride, dtype, specials, relu_first, seed
):
    """Windows of any size and stride (the windows of an output row advanced side by side)
    against the loops: the same winners and bits with ties common (small integers), NaNs
    (the first wins), -0.0 against 0.0 (the first wins) and relu first; the same on one
    thread and two."""
    ph, pw = min(ph, H), min(pw, W)
    x = pool_input((N, C, H, W), dtype, specials, seed)
    assert_pools_as_the_loops(x, ph, pw, stride, relu_first, threads=(1, 2))


@settings(max_examples=60, deadline=None)
@given(
    planes=st.integers(1, 40),
    H=st.integers(1, 9),
    W=st.integers(12, 70),
    ph=st.integers(1, 5),
    pw=st.integers(1, 5),
    stride=st.integers(1, 4),
    dtype=st.sampled_from([np.float32, np.float64]),
    specials=st.sampled_from(["none", "nan", "zeros"]),
    relu_first=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_max_pool_stacks_of_planes_are_the_loops(
    planes, H, W, ph, pw, stride, dtype, specials, relu_first, seed
):
    """Wide rows of small odd planes, many of them (the stacks of planes: bands of rows
    across planes, rows of 12 and more outputs at stride 1, strides of 3 and more, rows of a
    few outputs) against the loops: the same winners and bits with ties, NaNs and -0.0, and
    the same on one, two and three threads."""
    ph, pw = min(ph, H), min(pw, W)
    x = pool_input((1, planes, H, W), dtype, specials, seed)
    assert_pools_as_the_loops(x, ph, pw, stride, relu_first, threads=(1, 2, 3))


def backward_written_here(dout, winners, H, W):
    """max_pool_backward's dx, plane by plane: where 2 Ho <= H, 2 Wo <= W and every winner
    lies in its window's 2x2 block, each gradient's bits at its winner (the block writer);
    else +0 plus the gradients at each winner in order (the scatter: a -0.0 becomes +0.0)."""
    N, C, Ho, Wo = winners.shape
    rows, columns = np.meshgrid(np.arange(Ho), np.arange(Wo), indexing="ij")
    block = (2 * rows * W + 2 * columns).reshape(-1)
    dx = np.zeros((N * C, H * W), dout.dtype)
    for plane, (win, grad) in enumerate(
        zip(winners.reshape(N * C, -1), dout.reshape(N * C, -1), strict=True)
    ):
        offsets = win - block
        if 2 * Ho <= H and 2 * Wo <= W and np.isin(offsets, [0, 1, W, W + 1]).all():
            dx[plane, win] = grad
        else:
            np.add.at(dx[plane], win, grad)
    return dx.reshape(N, C, H, W)


def assert_backward_is(expected, dout, winners, H, W):
    """_C.max_pool_backward's dx has `expected`'s dtype and bits on one, two and three
    threads."""
    before = _C.get_num_threads()
    try:
        for threads in (1, 2, 3):
            _C.set_num_threads(threads)
            dx = _C.max_pool_backward(dout, winners, H, W)
            assert dx.dtype == expected.dtype
            assert dx.tobytes() == expected.tobytes()
    finally:
        _C.set_num_threads(before)


@settings(max_examples=60, deadline=None)
@given(
    planes=st.integers(1, 5),
    Ho=st.integers(1, 9),
    Wo=st.integers(1, 9),
    extra_rows=st.integers(0, 1),
    extra_columns=st.integers(0, 1),
    elsewhere=st.sampled_from([0.0, 0.05, 1.0]),
    dtype=st.sampled_from([np.float32, np.float64]),
    specials=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_max_pool_backward_on_any_winners_is_the_scatter(
    planes, Ho, Wo, extra_rows, extra_columns, elsewhere, dtype, specials, seed
):
    """The 2x2 block writer against a scatter written here, bit for bit, on winners drawn
    anywhere in each block and, with probability `elsewhere`, anywhere in the plane (the
    writer then leaves the plane to the scatter); odd sizes leave rows and columns no block
    covers. With `specials`, dout holds many -0.0 and a few NaNs: the writer stores a
    gradient's bits (a -0.0 stays -0.0), the scatter adds it to +0 (a -0.0 becomes +0.0).
    The same bits on one, two and three threads."""
    rng = np.random.default_rng(seed)
    H, W = 2 * Ho + extra_rows, 2 * Wo + extra_columns
    rows, columns = np.meshgrid(np.arange(Ho), np.arange(Wo), indexing="ij")
    in_block = (
        (2 * rows + rng.integers(0, 2, (planes, Ho, Wo))) * W
        + 2 * columns
        + rng.integers(0, 2, (planes, Ho, Wo))
    )
    anywhere = rng.integers(0, H * W, (planes, Ho, Wo))
    moved = rng.random((planes, Ho, Wo)) < elsewhere
    winners = np.where(moved, anywhere, in_block)
    winners = winners.astype(np.int32).reshape(1, planes, Ho, Wo)
    dout = rng.standard_normal((1, planes, Ho, Wo)).astype(dtype)
    if specials:
        dout[rng.random(dout.shape) < 0.3] = -0.0
        dout[rng.random(dout.shape) < 0.05] = np.nan
    assert_backward_is(backward_written_here(dout, winners, H, W), dout, winners, H, W)


def moved_winners_and_dout(x, ph, pw, stride, elsewhere, rng):
    """The forward's winners, with probability `elsewhere` each moved anywhere in its plane,
    and a dout of x's dtype with many -0.0 and a few NaNs of either sign."""
    H, W = x.shape[2:]
    _, winners = _C.max_pool_forward(x, ph, pw, stride, False)
    moved = rng.random(winners.shape) < elsewhere
    winners = np.where(moved, rng.integers(0, H * W, winners.shape), winners).astype(np.int32)
    dout = rng.standard_normal(winners.shape).astype(x.dtype)
    dout[rng.random(dout.shape) < 0.3] = -0.0
    dout[rng.random(dout.shape) < 0.05] = np.nan
    dout[rng.random(dout.shape) < 0.05] = -np.nan
    return winners, dout


@settings(max_examples=60, deadline=None)
@given(
    planes=st.sampled_from([1, 3, 90, 250]),
    H=st.integers(1, 11),
    W=st.integers(1, 11),
    ph=st.integers(1, 4),
    pw=st.integers(1, 4),
    stride=st.integers(1, 3),
    elsewhere=st.sampled_from([0.0, 0.05]),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_max_pool_backward_of_many_small_planes_is_the_scatter(
    planes, H, W, ph, pw, stride, elsewhere, dtype, seed
):
    """Small planes, many of them (several to a piece of the stacked writer, pieces across
    threads), any window: the winners of a forward with ties and NaNs, some moved anywhere
    in their plane; dout with many -0.0 and a few NaNs of either sign. The bits of the
    block writer or the scatter (backward_written_here), plane by plane, on one, two and
    three threads."""
    ph, pw = min(ph, H), min(pw, W)
    rng = np.random.default_rng(seed)
    x = pool_input((1, planes, H, W), dtype, "nan", seed)
    winners, dout = moved_winners_and_dout(x, ph, pw, stride, elsewhere, rng)
    assert_backward_is(backward_written_here(dout, winners, H, W), dout, winners, H, W)


@settings(max_examples=80, deadline=None)
@given(
    planes=st.integers(1, 40),
    H=st.integers(1, 70),
    W=st.integers(1, 41),
    ph=st.integers(1, 4),
    pw=st.integers(1, 4),
    stride=st.integers(1, 4),
    dtype=st.sampled_from([np.float32, np.float64]),
    specials=st.sampled_from(["none", "nan", "zeros"]),
    relu_first=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_max_pool_on_avx512_gives_the_bits_of_avx2(
    planes, H, W, ph, pw, stride, dtype, specials, relu_first, seed
):
    """The max pool's AVX-512 stacks (cpp/pool_avx512.h: outputs compressed out of a
    vector of entries, several rows and planes to a vector) against the AVX2 kernels they
    replace, on any window and plane (planes of more than a band's 2,048 entries a row at
    a time): the same bytes and winners with ties, NaNs and -0.0,
    on one, two and three threads. Where the CPU has no AVX-512 both runs are the same
    code."""
    ph, pw = min(ph, H), min(pw, W)
    x = pool_input((1, planes, H, W), dtype, specials, seed)
    before = _C.get_num_threads()
    _C.set_avx512_activations(False)
    try:
        out, winners = _C.max_pool_forward(x, ph, pw, stride, relu_first)
        _C.set_avx512_activations(True)
        for threads in (1, 2, 3):
            _C.set_num_threads(threads)
            again = _C.max_pool_forward(x, ph, pw, stride, relu_first)
            assert again[0].tobytes() == out.tobytes()
            np.testing.assert_array_equal(again[1], winners)
    finally:
        _C.set_avx512_activations(True)
        _C.set_num_threads(before)


@pytest.mark.parametrize("H, W", [(33, 33), (45, 45), (32, 64), (2048, 1), (3, 683), (41, 50)])
@pytest.mark.parametrize("window", [(2, 2), (3, 3), (1, 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_on_avx512_at_stride_1_up_to_a_band(H, W, window, dtype):
    """Stride-1 planes of 1,025 to 2,048 entries on the AVX-512 stacks (a band's whole
    plane; 41 x 50, past a band, on AVX2): the AVX2 kernels' bytes and winners with ties,
    NaNs and -0.0, on one, two and three threads."""
    ph, pw = min(window[0], H), min(window[1], W)
    for specials in ("nan", "zeros"):
        x = pool_input((1, 5, H, W), dtype, specials, H * W)
        before = _C.get_num_threads()
        _C.set_avx512_activations(False)
        try:
            out, winners = _C.max_pool_forward(x, ph, pw, 1, False)
            _C.set_avx512_activations(True)
            for threads in (1, 2, 3):
                _C.set_num_threads(threads)
                again = _C.max_pool_forward(x, ph, pw, 1, False)
                assert again[0].tobytes() == out.tobytes()
                np.testing.assert_array_equal(again[1], winners)
        finally:
            _C.set_avx512_activations(True)
            _C.set_num_threads(before)


@settings(max_examples=120, deadline=None)
@given(
    planes=st.integers(1, 40),
    Ho=st.integers(1, 20),
    Wo=st.one_of(st.integers(1, 40), st.just(4)),
    window=st.sampled_from(
        [(2, 2), (2, 2), (2, 2), (3, 3), (3, 3), (4, 4), (3, 2), (2, 3), (1, 3), (1, 1), (5, 4)]
    ),
    extra_rows=st.integers(0, 1),
    extra_columns=st.integers(0, 1),
    dtype=st.sampled_from([np.float32, np.float64]),
    specials=st.sampled_from(["none", "nan", "zeros"]),
    relu_first=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_max_pool_stride_2_on_avx512_is_avx2_and_the_loops(
    planes, Ho, Wo, window, extra_rows, extra_columns, dtype, specials, relu_first, seed
):
    """Stride-2 pools on AVX-512 against the loops and the AVX2 kernels: any window
    (cpp/pool_avx512.h: two segments of rows or planes to a vector, the rows of 3 to 7
    float32 outputs two to a vector; a window's odd or even width, its last column's loads
    one entry short) and rows of 1 or 2 float32 outputs, 1 float64 (on the stacks of small
    planes: outputs compressed out of vectors of entries). The same winners and bits with
    ties, NaNs and -0.0, odd planes leaving a row or a column out, on one, two and three
    threads. Where the CPU has no AVX-512 both runs are the same code."""
    ph, pw = window
    H, W = 2 * (Ho - 1) + ph + extra_rows, 2 * (Wo - 1) + pw + extra_columns
    x = pool_input((1, planes, H, W), dtype, specials, seed)
    assert_pools_as_the_loops(x, ph, pw, 2, relu_first, threads=(1, 2, 3))
    before = _C.avx512_activations_active()
    _C.set_avx512_activations(False)
    try:
        out, winners = _C.max_pool_forward(x, ph, pw, 2, relu_first)
    finally:
        _C.set_avx512_activations(before)
    again = _C.max_pool_forward(x, ph, pw, 2, relu_first)
    assert again[0].shape == (1, planes, Ho, Wo)
    assert again[0].tobytes() == out.tobytes()
    np.testing.assert_array_equal(again[1], winners)


@settings(max_examples=80, deadline=None)
@given(
    planes=st.integers(1, 20),
    H=st.integers(1, 36),
    W=st.integers(1, 36),
    window=st.sampled_from([(2, 2), (3, 3), (2, 2), (3, 3), (2, 3), (1, 2), (4, 4)]),
    elsewhere=st.sampled_from([0.0, 0.0, 0.02, 1.0]),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_max_pool_backward_of_stride_1_windows_is_the_scatter(
    planes, H, W, window, elsewhere, dtype, seed
):
    """Overlapping stride-1 windows (on AVX-512 each entry of dx gathered from the windows
    that cover it, cpp/pool_avx512.cpp) against the scatter written here, bit for bit: the
    winners of a forward with ties and NaNs, with probability `elsewhere` some moved
    anywhere in their plane (those planes scattered, the others still gathered); dout with
    many -0.0 (the scatter's +0 + -0 is +0) and NaNs of either sign (the first of two
    kept, as the scatter's adds keep it). Rows of one to three vectors, odd sizes; 2x2 and
    3x3 windows (gathered where they pay), others (scattered). The same bits on one, two
    and three threads, and with AVX-512 off (the scatter)."""
    ph, pw = min(window[0], H), min(window[1], W)
    rng = np.random.default_rng(seed)
    x = pool_input((1, planes, H, W), dtype, "nan", seed)
    winners, dout = moved_winners_and_dout(x, ph, pw, 1, elsewhere, rng)
    expected = backward_written_here(dout, winners, H, W)
    assert_backward_is(expected, dout, winners, H, W)
    before = _C.avx512_activations_active()
    _C.set_avx512_activations(False)
    try:
        assert _C.max_pool_backward(dout, winners, H, W).tobytes() == expected.tobytes()
    finally:
        _C.set_avx512_activations(before)
