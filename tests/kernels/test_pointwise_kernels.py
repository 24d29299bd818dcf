"""The general gates' C++ kernels (cpp/pointwise.cpp, pool.cpp's average pooling): erf and
GELU measured in units in the last place against float64 math.erf / math.erfc, every op
against its numpy formula in float32 and float64 on both paths (AVX2 and the C library's),
gradients against central differences in float64, NaN and inf passing through, any shape
(empty too), the same bits for any number of threads. PyTorch's numbers: tests/gates."""

import contextlib
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphnet.kernels import _C

from .test_avx2 import assert_same_bits_on_any_thread_count, kernel_threads

OPS = ("gelu", "gelu_tanh", "leaky_relu", "relu", "softplus", "sigmoid")
SAVES_INPUT = ("gelu", "gelu_tanh", "leaky_relu", "relu", "softplus")
K = math.sqrt(2 / math.pi)


@contextlib.contextmanager
def avx2(enabled):
    before = _C.avx2_activations_active()
    _C.set_avx2_activations(enabled)
    try:
        yield
    finally:
        _C.set_avx2_activations(before)


@contextlib.contextmanager
def avx512(enabled):
    before = _C.avx512_activations_active()
    _C.set_avx512_activations(enabled)
    try:
        yield
    finally:
        _C.set_avx512_activations(before)


def normal_cdf(x):
    values = np.ravel(x).astype(np.float64).tolist()  # float32 arithmetic would round -x/√2
    return np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in values]).reshape(np.shape(x))


def reference(op, x, alpha=0.1):
    """(f(x), f'(x)) by numpy's formulas in float64."""
    x = x.astype(np.float64)
    with np.errstate(all="ignore"):
        if op == "gelu":
            cdf = normal_cdf(x)
            return x * cdf, cdf + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
        if op == "gelu_tanh":
            t = np.tanh(K * (x + 0.044715 * x**3))
            return 0.5 * x * (1 + t), 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * K * (
                1 + 3 * 0.044715 * x * x
            )
        if op == "leaky_relu":
            return np.where(x > 0, x, alpha * x), np.where(x > 0, 1.0, alpha)
        if op == "relu":
            return np.maximum(x, 0), np.where(x > 0, 1.0, 0.0)
        sig = np.exp(-np.logaddexp(0, -x))
        if op == "softplus":
            return np.logaddexp(0, x), sig
        return sig, sig * (1 - sig)  # sigmoid


def backward(op, dout, x, out, alpha=0.1):
    return _C.pointwise_backward(op, dout, x if op in SAVES_INPUT else out, alpha)


def ulps(got, want):
    """|got - want| in units in the last place of want rounded to got's dtype."""
    spacing = np.spacing(np.abs(want).astype(got.dtype)).astype(np.float64)
    return np.abs(got.astype(np.float64) - want) / spacing


def sweep(low, high):
    return np.linspace(low, high, 400_001).astype(np.float32)


def test_erf_within_two_ulp_of_math_erf():
    """The AVX2 erf: 1.2 units in the last place at most (measured 1.19 near 0.93, where the
    two branches meet); the C library's (the portable path) is within 1."""
    x = np.concatenate([sweep(-6, 6), np.float32([1e-30, -1e-30, 1e-8, 3.9, 4.5, 10, -11])])
    want = np.array([math.erf(v) for v in x.astype(np.float64)])
    for path in (True, False):
        with avx2(path):
            got = _C.erf(x)
        assert got.dtype == np.float32
        assert ulps(got, want).max() <= (1.5 if path else 1), path
    np.testing.assert_array_equal(
        _C.erf(np.float32([np.inf, -np.inf, 0.0])), np.float32([1, -1, 0])
    )
    assert np.isnan(_C.erf(np.float32([np.nan])))[0]
    x64 = np.linspace(-6, 6, 1001)
    np.testing.assert_array_equal(_C.erf(x64), [math.erf(v) for v in x64])


def test_gelu_relative_error_also_in_the_left_tail():
    """AVX2 GELU: x Phi(x) within 8 units in the last place of the exact value (measured
    6.3) wherever Phi(x) is a normal float (x > -12.9), including the left tail, where the
    textbook 0.5 (1 + erf(x / sqrt 2)) cancels to nothing."""
    x = sweep(-13, 10)
    cdf = normal_cdf(x)
    want = x.astype(np.float64) * cdf
    normal = cdf > np.finfo(np.float32).tiny
    with avx2(True):
        got = _C.pointwise_forward("gelu", x)
    assert ulps(got[normal], want[normal]).max() <= 8
    with avx2(False):
        got = _C.pointwise_forward("gelu", x)
    assert ulps(got[normal], want[normal]).max() <= 8


def test_gelu_slope_within_eight_ulp_away_from_its_zero():
    """AVX2 GELU's float32 slope Phi(x) + x phi(x) within 8 units in the last place
    (measured 4.9 here) wherever it is a normal float but near its zero at x = -0.75, where it
    cancels (there within 2e-7 absolute), and the C library's path too."""
    x = sweep(-13, 10)
    x64 = x.astype(np.float64)
    slope = normal_cdf(x) + x64 * np.exp(-0.5 * x64 * x64) / math.sqrt(2 * math.pi)
    away = (np.abs(x64 + 0.75) > 0.25) & (np.abs(slope) > np.finfo(np.float32).tiny)
    for path in (True, False):
        with avx2(path):
            got = _C.pointwise_backward("gelu", np.ones_like(x), x)
        assert ulps(got[away], slope[away]).max() <= 8, path
        np.testing.assert_allclose(got, slope, rtol=0, atol=2e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_lane_bits_do_not_depend_on_neighbours(dtype):
    """A vector with a lane far out (|x| past the clamps' range, inf, NaN) takes the clamped
    Phi(x); one without, the unclamped: the other lanes' values and slopes are the same bits
    either way."""
    rng = np.random.default_rng(3)
    x = rng.uniform(-13.9, 13.9, 4099).astype(dtype)
    dout = rng.standard_normal(x.size).astype(dtype)
    far = x.copy()
    far[::5] = np.resize(
        np.array([20, -30, np.nan, np.inf, -np.inf, 14.5, -40, 1e30], dtype), far[::5].size
    )
    rest = np.ones(x.size, bool)
    rest[::5] = False
    with avx2(True):
        for got, want in (
            (_C.pointwise_forward("gelu", far), _C.pointwise_forward("gelu", x)),
            (_C.pointwise_backward("gelu", dout, far), _C.pointwise_backward("gelu", dout, x)),
        ):
            np.testing.assert_array_equal(got[rest], want[rest])


def exact_normal_cdf(x):
    """Phi(x) for float64 x within about 1 ulp: erfc at t = -x / sqrt 2 split as hi + lo (lo
    from x87 extended precision) with erfc's first-order term for lo, since a rounded t is
    off by t^2 2^-53 relative in erfc (1500 ulp at x = -35)."""
    wide = -np.asarray(x, np.longdouble) / np.sqrt(np.longdouble(2))
    hi = wide.astype(np.float64)
    lo = (wide - hi).astype(np.float64)
    return np.array(
        [
            0.5 * (math.erfc(h) - 2 / math.sqrt(math.pi) * math.exp(-h * h) * dl)
            for h, dl in zip(hi.tolist(), lo.tolist())
        ]
    )


def test_gelu_float64_within_eight_ulp_on_avx2():
    """AVX2 float64 GELU, x Phi(x) with erfc_scaled4d's polynomial and e^(-x^2/2) from the
    exact x^2: within 8 units in the last place (6 measured here, against a reference good
    to about 1; 4.0 against mpmath on 6500 points) wherever Phi(x) is a normal float
    (x > -37.5). The C library's path is accurate only to 1e-13 relative in the left tail
    (its -x / sqrt 2 is rounded), which the formula test checks."""
    if np.finfo(np.longdouble).nmant < 60:
        pytest.skip("needs an extended-precision long double for the reference")
    if not _C.avx2_activations_active():
        pytest.skip("no AVX2 + FMA: the C library's path")
    x = np.concatenate([np.linspace(-38, 10, 200_001), [1e-300, -1e-300, 5e-324]])
    cdf = exact_normal_cdf(x)
    want = x * cdf
    slope = cdf + x * np.exp(-x * x / 2) / math.sqrt(2 * math.pi)
    with avx2(True):
        got = _C.pointwise_forward("gelu", x)
        dgot = _C.pointwise_backward("gelu", np.ones_like(x), x)
        special = _C.pointwise_forward("gelu", np.array([np.nan, np.inf, 0.0, -40.0, 40.0]))
    normal = cdf > np.finfo(np.float64).tiny
    assert ulps(got[normal], want[normal]).max() <= 8
    # the slope crosses 0 near x = -0.75: there only an absolute error is meaningful
    np.testing.assert_allclose(dgot, slope, rtol=1e-13, atol=1e-15)
    np.testing.assert_array_equal(special, [np.nan, np.inf, 0.0, -0.0, 40.0])


@pytest.mark.parametrize("path", [True, False], ids=["avx2", "portable"])
def test_softplus_float64_within_three_ulp(path):
    """float64 softplus, max(x, 0) + log1p(e^-|x|): on AVX2 (exp_full and log1p_unit of
    cpp/simd_math.h) within 3 units in the last place (2.73 measured, near x = -2), against
    the same formula in x87 extended precision (11 more bits); the C library's within 2."""
    if np.finfo(np.longdouble).nmant < 60:
        pytest.skip("needs an extended-precision long double for the reference")
    rng = np.random.default_rng(3)
    x = np.concatenate(
        [rng.standard_normal(100_000) * 4, np.linspace(-40, 40, 200_001), [0.0, -0.0, 5e-324]]
    )
    x = np.concatenate([x, [-745.0, -746.0, -800.0, 700.0, 1e300, -1e300]])
    wide = x.astype(np.longdouble)
    want = np.maximum(wide, 0) + np.log1p(np.exp(-np.abs(wide)))
    with avx2(path):
        got = _C.pointwise_forward("softplus", x)
        special = _C.pointwise_forward("softplus", np.array([np.nan, np.inf, -np.inf]))
    error = np.abs(got - want) / np.spacing(want.astype(np.float64))
    assert error.max() <= (3 if path else 2), x[np.argmax(error)]
    np.testing.assert_array_equal(special, [np.nan, np.inf, 0.0])


@pytest.mark.parametrize("path", [True, False], ids=["avx2", "portable"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", OPS)
def test_forward_and_backward_match_numpy_formulas(op, dtype, path):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(50_003) * 4, sweep(-30, 30)[::7]]).astype(dtype)
    dout = rng.standard_normal(x.shape).astype(dtype)
    want, slope = reference(op, x)
    with avx2(path), np.errstate(over="ignore"):
        out = _C.pointwise_forward(op, x, 0.1)
        dx = backward(op, dout, x, out)
    tol = {np.float32: 3e-6, np.float64: 1e-13}[dtype]
    if op == "gelu_tanh" and dtype == np.float32:
        tol = 2e-5  # 1 + tanh(u) cancels for x << 0 in any float32 evaluation, numpy's too
    finite = np.isfinite(want)
    np.testing.assert_allclose(out[finite], want[finite], rtol=tol, atol=tol * 1e-2)
    # the slopes cross 0 (gelu near x = -0.75): there only an absolute error is meaningful
    np.testing.assert_allclose(dx, dout * slope, rtol=tol, atol=tol)


@pytest.mark.parametrize("op", OPS)
def test_gradient_equals_central_differences_float64(op):
    x = np.random.default_rng(1).standard_normal(1000) * 3
    x = x[np.abs(x) > 1e-3]  # leaky relu's kink
    h = 1e-6
    numeric = (_C.pointwise_forward(op, x + h, 0.1) - _C.pointwise_forward(op, x - h, 0.1)) / (
        2 * h
    )
    out = _C.pointwise_forward(op, x, 0.1)
    dx = backward(op, np.ones_like(x), x, out)
    np.testing.assert_allclose(dx, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("path", [True, False], ids=["avx2", "portable"])
@pytest.mark.parametrize("op", OPS)
def test_nan_and_inf_pass_through_like_numpy(op, path):
    special = np.float32([np.nan, np.inf, -np.inf, 0.0, -0.0, 100, -100, 1e-40, -1e-40])
    want, slope = reference(op, special)
    with avx2(path), np.errstate(all="ignore"):
        out = _C.pointwise_forward(op, special, 0.1)
        dx = backward(op, np.ones_like(special), special, out)
    np.testing.assert_allclose(out, want.astype(np.float32), rtol=1e-6, atol=1e-38)
    np.testing.assert_allclose(dx, slope.astype(np.float32), rtol=1e-6, atol=1e-38)


@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(0, 40), min_size=1, max_size=3),
    op=st.sampled_from(OPS + ("tanh",)),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_any_shape_any_threads_same_bits(shape, op, dtype):
    x = np.random.default_rng(len(shape)).standard_normal(shape).astype(dtype)
    big = np.resize(x, 70_001 * 3) if x.size else x  # several chunks of work
    saved = x if op in SAVES_INPUT else np.tanh(x) if op == "tanh" else None
    results = []
    for threads in (1, 2):
        with kernel_threads(threads):
            if op != "tanh":
                out = _C.pointwise_forward(op, x, 0.2)
                saved = x if op in SAVES_INPUT else out
                results.append((out, _C.pointwise_forward(op, big, 0.2)))
            results.append((_C.pointwise_backward(op, x, saved, 0.2),))
    for a, b in zip(results[: len(results) // 2], results[len(results) // 2 :]):
        for u, v in zip(a, b):
            assert u.shape == v.shape and u.dtype == dtype
            np.testing.assert_array_equal(u, v)


def test_errors_name_the_problem():
    x = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="unknown pointwise op 'swish'"):
        _C.pointwise_forward("swish", x)
    with pytest.raises(ValueError, match="float32 or float64"):
        _C.pointwise_forward("gelu", x.astype(np.int64))
    with pytest.raises(ValueError, match="shape"):
        _C.pointwise_backward("gelu", x, np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="dtype"):
        _C.pointwise_backward("gelu", x, x.astype(np.float64))


SLOPED = ("gelu", "gelu_tanh")


@pytest.mark.parametrize("op", SLOPED)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("path", ["avx512", "avx2", "portable"])
def test_forward_slope_gives_the_forward_and_the_backwards_factor(op, dtype, path):
    """pointwise_forward_slope's out is pointwise_forward's bits, and dout * slope is
    pointwise_backward's dx bit for bit (the kernel's last operation is that product), on
    each path, at the odd sizes whose tails go to the narrower lanes, with NaN, inf, -0.0
    and arguments past the clamps; the slope is f' (float64's reference)."""
    x, dout = _gelu_probe(dtype)
    switches = {"avx512": (True, True), "avx2": (True, False), "portable": (False, False)}
    use_avx2, use_avx512 = switches[path]
    with avx2(use_avx2), avx512(use_avx512):
        for size in (1, 7, 15, 16, 17, 31, 33, x.size):  # the whole probe last
            part, d = x[-size:], dout[-size:]
            out, slope = _C.pointwise_forward_slope(op, part)
            assert out.dtype == slope.dtype == dtype and out.shape == slope.shape == part.shape
            assert_bitwise_nan(out, _C.pointwise_forward(op, part))
            assert_bitwise_nan(d * slope, _C.pointwise_backward(op, d, part))
    finite = np.isfinite(x) & (np.abs(x) < 30)
    tol = {np.float32: 2e-6, np.float64: 1e-13}[dtype]
    np.testing.assert_allclose(slope[finite], reference(op, x[finite])[1], rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_slope_same_bits_on_any_thread_count(dtype):
    """Chunks of 2^16 entries on each thread: 1-3 threads give the same bits."""
    x = np.random.default_rng(5).standard_normal((3, 50_001)).astype(dtype)
    for op in SLOPED:
        assert_same_bits_on_any_thread_count(lambda op=op: _C.pointwise_forward_slope(op, x))


def test_forward_slope_refuses_what_it_has_no_slope_for():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="gelu or gelu_tanh, not 'softplus'"):
        _C.pointwise_forward_slope("softplus", x)
    with pytest.raises(ValueError, match="unknown pointwise op 'swish'"):
        _C.pointwise_forward_slope("swish", x)
    with pytest.raises(ValueError, match="float32 or float64"):
        _C.pointwise_forward_slope("gelu", x.astype(np.int32))
    out, slope = _C.pointwise_forward_slope("gelu", np.zeros((0, 3), np.float64))
    assert out.shape == slope.shape == (0, 3)


# ----- softmax rows ----------------------------------------------------------------------


def softmax_reference(x, log):
    x = x.astype(np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return logp if log else np.exp(logp)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(0, 9),
    cols=st.integers(1, 300),
    log=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
    path=st.booleans(),
)
def test_softmax_rows_match_float64_and_gradients(rows, cols, log, dtype, path):
    rng = np.random.default_rng(rows * 1000 + cols)
    x = (rng.standard_normal((rows, cols)) * 5).astype(dtype)
    dout = rng.standard_normal((rows, cols)).astype(dtype)
    with avx2(path):
        out = _C.softmax_forward(x, log=log)
        dx = _C.softmax_backward(dout, out, log=log)
    want = softmax_reference(x, log)
    tol = {np.float32: 2e-6, np.float64: 1e-13}[dtype]
    np.testing.assert_allclose(out, want, rtol=tol * 4, atol=tol)
    d = dout.astype(np.float64)
    if log:
        want_dx = d - np.exp(want) * d.sum(axis=-1, keepdims=True)
    else:
        want_dx = want * (d - (d * want).sum(axis=-1, keepdims=True))
    np.testing.assert_allclose(dx, want_dx, rtol=tol * 50, atol=tol * 10)
    with kernel_threads(2), avx2(path):
        np.testing.assert_array_equal(_C.softmax_forward(x, log=log), out)
        np.testing.assert_array_equal(_C.softmax_backward(dout, out, log=log), dx)
    # by position, as the gates pass the flag
    np.testing.assert_array_equal(_C.softmax_forward(x, log), _C.softmax_forward(x, log=log))
    np.testing.assert_array_equal(
        _C.softmax_backward(dout, out, log), _C.softmax_backward(dout, out, log=log)
    )


def test_softmax_rows_gradient_central_differences_and_specials():
    rng = np.random.default_rng(2)
    x, dout = rng.standard_normal((3, 7)), rng.standard_normal((3, 7))
    for log in (False, True):
        out = _C.softmax_forward(x, log=log)
        dx = _C.softmax_backward(dout, out, log=log)
        h, numeric = 1e-6, np.zeros_like(x)
        for i in np.ndindex(x.shape):
            e = np.zeros_like(x)
            e[i] = h
            numeric[i] = (
                (_C.softmax_forward(x + e, log=log) - _C.softmax_forward(x - e, log=log)) * dout
            ).sum() / (2 * h)
        np.testing.assert_allclose(dx, numeric, rtol=1e-6, atol=1e-9)
    rows = np.float32([[0, np.nan, 1], [1000, 0, -np.inf], [np.inf, 0, 0]])
    with np.errstate(invalid="ignore"):
        for log in (False, True):
            got = _C.softmax_forward(rows, log=log)
            assert np.isnan(got[0]).all() and np.isnan(got[2]).all()
            np.testing.assert_allclose(got[1], softmax_reference(rows[1:2], log)[0], atol=1e-6)
    assert _C.softmax_forward(np.zeros((0, 5), np.float32)).shape == (0, 5)
    assert _C.softmax_forward(np.zeros((4, 0))).shape == (4, 0)
    with pytest.raises(ValueError, match="scalar"):
        _C.softmax_forward(np.array(1.0))


# ----- average pooling -------------------------------------------------------------------


def window_within(H, W, ph, pw, stride):
    """A drawn window clipped to the plane, and the output plane's size."""
    ph, pw = min(ph, H), min(pw, W)
    return ph, pw, 1 + (H - ph) // stride, 1 + (W - pw) // stride


def small_integers_and_specials(rng, shape, dtype, minus_inf=False):
    """Integers -2..2 (sums exact in any order) with many -0.0, some inf (and -inf) and
    NaN: where kernels that add in different orders may still differ in bits."""
    a = rng.integers(-2, 3, shape).astype(dtype)
    a[rng.random(shape) < 0.4] = -0.0
    a[rng.random(shape) < 0.02] = np.inf
    if minus_inf:
        a[rng.random(shape) < 0.02] = -np.inf
    a[rng.random(shape) < 0.02] = np.nan
    return a


def avg_pool_naive(x, ph, pw, stride):
    N, C, H, W = x.shape
    Ho, Wo = 1 + (H - ph) // stride, 1 + (W - pw) // stride
    out = np.zeros((N, C, Ho, Wo))
    for i in range(Ho):
        for j in range(Wo):
            out[:, :, i, j] = x[
                :, :, i * stride : i * stride + ph, j * stride : j * stride + pw
            ].mean(axis=(2, 3))
    return out


def avg_unpool_naive(dout, H, W, ph, pw, stride):
    N, C, Ho, Wo = dout.shape
    dx = np.zeros((N, C, H, W))
    for i in range(Ho):
        for j in range(Wo):
            dx[:, :, i * stride : i * stride + ph, j * stride : j * stride + pw] += dout[
                :, :, i, j, None, None
            ] / (ph * pw)
    return dx


def check_avg_pool_against_naive_loops(x, ph, pw, stride):
    """Forward and backward against the naive loops, the same bits on two threads."""
    H, W = x.shape[2:]
    out = _C.avg_pool_forward(x, ph, pw, stride)
    tol = {np.float32: 1e-6, np.float64: 1e-14}[x.dtype.type]
    np.testing.assert_allclose(out, avg_pool_naive(x, ph, pw, stride), rtol=tol, atol=tol)
    dout = np.random.default_rng(1).standard_normal(out.shape).astype(x.dtype)
    dx = _C.avg_pool_backward(dout, H, W, ph, pw, stride)
    want = avg_unpool_naive(dout, H, W, ph, pw, stride)
    np.testing.assert_allclose(dx, want, rtol=tol * 10, atol=tol)
    with kernel_threads(2):
        np.testing.assert_array_equal(_C.avg_pool_forward(x, ph, pw, stride), out)
        np.testing.assert_array_equal(_C.avg_pool_backward(dout, H, W, ph, pw, stride), dx)


@pytest.mark.slow
@settings(max_examples=80, deadline=None)
@given(
    N=st.integers(0, 3),
    C=st.integers(1, 3),
    H=st.integers(1, 9),
    W=st.integers(1, 9),
    ph=st.integers(1, 4),
    pw=st.integers(1, 4),
    stride=st.integers(1, 4),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_avg_pool_matches_naive_loops(N, C, H, W, ph, pw, stride, dtype):
    x = np.random.default_rng(H * W).standard_normal((N, C, H, W)).astype(dtype)
    if ph > H or pw > W:
        with pytest.raises(ValueError, match="avg_pool window .* is larger than the input"):
            _C.avg_pool_forward(x, ph, pw, stride)
        return
    check_avg_pool_against_naive_loops(x, ph, pw, stride)


def test_avg_pool_refuses_bad_geometry():
    x = np.zeros((1, 1, 4, 4), np.float32)
    with pytest.raises(ValueError, match="avg_pool stride must be >= 1"):
        _C.avg_pool_forward(x, 2, 2, 0)
    with pytest.raises(ValueError, match=r"avg_pool dout must have shape \(1, 1, 2, 2\)"):
        _C.avg_pool_backward(np.zeros((1, 1, 3, 3), np.float32), 4, 4, 2, 2, 2)
    with pytest.raises(ValueError):
        _C.avg_pool_backward(np.zeros((1, 1, 1, 1), np.float32), 2**62, 2**62, 2, 2, 2)


@pytest.mark.parametrize("stride", [2**31, 2**62, 2**63 - 1])
def test_avg_pool_of_a_huge_stride(stride):
    """A stride past any row: one window, at the corner (no overflow in the row padding)."""
    x = np.arange(2 * 3 * 5 * 7, dtype=np.float64).reshape(2, 3, 5, 7)
    check_avg_pool_against_naive_loops(x, 2, 3, stride)
    dout = np.ones((2, 3, 1, 1))
    want = np.zeros_like(x)
    want[:, :, :2, :3] = 1 / 6
    np.testing.assert_array_equal(_C.avg_pool_backward(dout, 5, 7, 2, 3, stride), want)


@settings(max_examples=40, deadline=None)
@given(
    N=st.integers(0, 3),
    C=st.integers(1, 3),
    H=st.integers(1, 11),
    W=st.integers(1, 11),
    size=st.integers(1, 4),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_avg_pool_backward_of_tiling_windows(N, C, H, W, size, dtype):
    """Windows that tile the plane (size x size, stride size; 2 x 2 has its own loop):
    each entry its window's share, the uncovered rows and columns 0, for any thread count."""
    H, W = max(H, size), max(W, size)
    Ho, Wo = H // size, W // size
    dout = np.random.default_rng(H * W).standard_normal((N, C, Ho, Wo)).astype(dtype)
    dx = _C.avg_pool_backward(dout, H, W, size, size, size)
    want = avg_unpool_naive(dout.astype(np.float64), H, W, size, size, size)
    tol = {np.float32: 1e-7, np.float64: 1e-16}[dtype]
    np.testing.assert_allclose(dx, want, rtol=tol, atol=0)
    with kernel_threads(2):
        np.testing.assert_array_equal(_C.avg_pool_backward(dout, H, W, size, size, size), dx)


@settings(max_examples=40, deadline=None)
@given(
    N=st.integers(0, 3),
    C=st.integers(1, 40),
    H=st.integers(2, 40),
    W=st.integers(2, 40),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_avg_pool_of_2x2_windows_bit_for_bit(N, C, H, W, dtype):
    """2 x 2 windows, stride 2 (their own loops; planes of even height one plane of all
    their rows, across pieces of several planes). The forward: (0 + the window's four
    entries in order) / 4. The backward (each share times 1/4): numpy's dout / 4 in its
    window's four entries, NaN, infinities, signed zeros and subnormals included, and 0 in
    the row and column no window covers. Bit for bit, 1-2 threads."""
    Ho, Wo = H // 2, W // 2
    x = np.random.default_rng(H * W + C).standard_normal((N, C, H, W)).astype(dtype)
    tops, bottoms = x[:, :, 0 : 2 * Ho : 2, : 2 * Wo], x[:, :, 1 : 2 * Ho : 2, : 2 * Wo]
    terms = [tops[..., 0::2], tops[..., 1::2], bottoms[..., 0::2], bottoms[..., 1::2]]
    want_out = in_order([np.zeros_like(terms[0]), *terms]) / dtype(4)
    dout = np.random.default_rng(H * W).standard_normal((N, C, Ho, Wo)).astype(dtype)
    tiny = np.finfo(dtype).tiny
    specials = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, tiny / 3, -tiny * 5], dtype)
    flat = dout.reshape(-1)
    flat[: specials.size] = specials[: flat.size]
    want = np.zeros((N, C, H, W), dtype)
    want[:, :, : 2 * Ho, : 2 * Wo] = np.repeat(np.repeat(dout / dtype(4), 2, axis=2), 2, axis=3)
    bits = np.uint32 if dtype == np.float32 else np.uint64
    for threads in (1, 2):
        with kernel_threads(threads):
            np.testing.assert_array_equal(_C.avg_pool_forward(x, 2, 2, 2), want_out)
            got = _C.avg_pool_backward(dout, H, W, 2, 2, 2)
        np.testing.assert_array_equal(got.view(bits), want.view(bits))


@settings(max_examples=60, deadline=None)
@given(
    N=st.integers(0, 3),
    C=st.integers(1, 3),
    H=st.integers(1, 40),
    W=st.integers(1, 40),
    global_pool=st.booleans(),
    data=st.data(),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_avg_pool_of_wide_windows(N, C, H, W, global_pool, data, dtype):
    """Windows wider than the output row is long (past 3 x 3, each summed on its own, in
    lanes), up to the whole plane (a global pooling): the naive loops' numbers, for any
    thread count."""
    if global_pool:
        ph, pw, stride = H, W, 1
    else:
        pw = data.draw(st.integers(max(1, W // 2), W))
        ph = data.draw(st.integers(1, H))
        stride = data.draw(st.integers(1, 4))
    x = np.random.default_rng(H * W).standard_normal((N, C, H, W)).astype(dtype)
    check_avg_pool_against_naive_loops(x, ph, pw, stride)


def in_order(terms):
    """The sum of the arrays of terms, added one after another (numpy's own order)."""
    total = terms[0].copy()
    for term in terms[1:]:
        total += term
    return total


def separable_window_sums(plane, ph, pw, rows, cols):
    """The sums of the ph x pw windows of the stacked loops (cpp/avg_pool_plane.h) at
    stride 1: each column's over the window's rows, then the window's columns'."""
    columns = in_order([plane[:, :, i : i + rows, :] for i in range(ph)])
    return in_order([columns[:, :, :, j : j + cols] for j in range(pw)])


@settings(max_examples=60, deadline=None)
@given(
    N=st.integers(1, 3),
    C=st.integers(1, 5),
    H=st.integers(1, 40),
    W=st.integers(1, 300),
    ph=st.integers(1, 5),
    pw=st.integers(1, 5),
    stride=st.integers(1, 3),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_avg_pool_stacked_loops_bit_for_bit(N, C, H, W, ph, pw, stride, dtype):
    """Windows not wider than the output row (but the 2x2 stride-2 loop's): the stacked
    loops' sums, bit for bit, across the bands of rows (up to 300 columns: bands of a few
    rows), the planes stacked in them and any number of threads. The forward: the stride-1
    window sums / their size, every stride-th; the backward (not of tiling windows): the
    stride-1 window sums of the gradients spread out with the full correlation's pad, / the
    window's size (signs of zeros too)."""
    ph, pw, Ho, Wo = window_within(H, W, ph, pw, stride)
    if pw > Wo:
        return  # the wide windows' loops
    rng = np.random.default_rng(H * W + ph)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    dout = rng.standard_normal((N, C, Ho, Wo)).astype(dtype)
    dout[rng.random(dout.shape) < 0.3] = -0.0  # sums of -0 and 0: +0, as P's zeros give
    count = dtype(ph * pw)
    sums = separable_window_sums(x, ph, pw, H - ph + 1, W - pw + 1)
    want_out = sums[:, :, ::stride, ::stride] / count
    spread = np.zeros((N, C, H + ph - 1, W + pw - 1), dtype)
    spread[:, :, ph - 1 :: stride, pw - 1 :: stride][:, :, :Ho, :Wo] = dout
    want_dx = separable_window_sums(spread, ph, pw, H, W) / count
    for threads in (1, 2):
        with kernel_threads(threads):
            if (ph, pw, stride) != (2, 2, 2):
                np.testing.assert_array_equal(_C.avg_pool_forward(x, ph, pw, stride), want_out)
            if not (stride == ph and stride == pw):
                dx = _C.avg_pool_backward(dout, H, W, ph, pw, stride)
                np.testing.assert_array_equal(np.signbit(dx), np.signbit(want_dx))
                np.testing.assert_array_equal(dx, want_dx)


@settings(max_examples=60, deadline=None)
@given(
    planes=st.integers(1, 70),
    H=st.integers(1, 20),
    W=st.integers(1, 40),
    ph=st.integers(1, 4),
    pw=st.integers(1, 4),
    stride=st.integers(1, 4),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_avg_pool_on_avx2_gives_the_bits_of_the_portable_loops(
    planes, H, W, ph, pw, stride, dtype, seed
):
    """The average pool's loops compiled for AVX2 (cpp/pool_avx2.h: the stride-1 forward,
    the backward of windows that do not tile the plane) against the same loops compiled
    for the baseline: the same bytes forward and backward on any window, stride and plane,
    with -0.0, infinities and NaNs in x and dout, on one, two and three threads. Where the
    CPU has no AVX2 both runs are the same code."""
    ph, pw, Ho, Wo = window_within(H, W, ph, pw, stride)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, planes, H, W)).astype(dtype)
    dout = rng.standard_normal((1, planes, Ho, Wo)).astype(dtype)
    for a in (x, dout):
        a[rng.random(a.shape) < 0.2] = -0.0
        a[rng.random(a.shape) < 0.02] = np.inf
        a[rng.random(a.shape) < 0.02] = np.nan
    with avx2(False):
        out = _C.avg_pool_forward(x, ph, pw, stride)
        dx = _C.avg_pool_backward(dout, H, W, ph, pw, stride)
    for threads in (1, 2, 3):
        with kernel_threads(threads):
            assert _C.avg_pool_forward(x, ph, pw, stride).tobytes() == out.tobytes()
            assert _C.avg_pool_backward(dout, H, W, ph, pw, stride).tobytes() == dx.tobytes()


@settings(max_examples=80, deadline=None)
@given(
    planes=st.integers(1, 40),
    H=st.integers(1, 24),
    W=st.integers(1, 70),
    ph=st.integers(1, 5),
    pw=st.integers(1, 5),
    stride=st.integers(1, 2),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_avg_pool_backward_on_avx512_gives_the_bits_of_avx2(
    planes, H, W, ph, pw, stride, dtype, seed
):
    """The average pool's backward at stride 1 or 2 on AVX-512 (cpp/pool_avx512.h: a row
    of dx at a time from the gradient's rows, masked loads for the zeros off a row, both
    column phases interleaved at stride 2) against the AVX2 stacked loops it replaces: the
    same bytes on any window, plane and row length, with many -0.0 (a sum of -0s stays -0
    only where no spread zero is in its window), infinities and NaNs, on one, two and three
    threads. Where the CPU has no AVX-512 both runs are the same code."""
    ph, pw, Ho, Wo = window_within(H, W, ph, pw, stride)
    rng = np.random.default_rng(seed)
    dout = small_integers_and_specials(rng, (1, planes, Ho, Wo), dtype)
    before = _C.avx512_activations_active()
    _C.set_avx512_activations(False)
    try:
        want = _C.avg_pool_backward(dout, H, W, ph, pw, stride)
    finally:
        _C.set_avx512_activations(before)
    for threads in (1, 2, 3):
        with kernel_threads(threads):
            assert _C.avg_pool_backward(dout, H, W, ph, pw, stride).tobytes() == want.tobytes()


@settings(max_examples=80, deadline=None)
@given(
    planes=st.integers(1, 140),  # the kernel from 32 planes a call (128 where rows would take them)
    H=st.integers(1, 12),
    W=st.integers(1, 12),
    ph=st.integers(1, 4),
    pw=st.integers(1, 4),
    stride=st.integers(1, 4),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_avg_pool_backward_of_tiny_planes_on_avx512_gives_the_bits_of_avx2(
    planes, H, W, ph, pw, stride, dtype, seed
):
    """The average pool's backward of tiny planes on AVX-512 (cpp/pool_avx512.h: each
    vector of dx across rows taken from the gradient's two vectors, a permute a window
    tap) against the stacked loops it replaces (AVX2) and the portable build's: the same
    bytes on any window, stride and plane up to 12 x 12, with many -0.0, infinities of both
    signs and NaNs, on one, two and three threads, but which of two NaNs of different
    signs a sum keeps. Where the CPU has no AVX-512 all runs are the same code."""
    ph, pw, Ho, Wo = window_within(H, W, ph, pw, stride)
    rng = np.random.default_rng(seed)
    dout = small_integers_and_specials(rng, (1, planes, Ho, Wo), dtype, minus_inf=True)
    assert_avx512_gives_the_bits_of_avx2_and_portable(
        lambda: _C.avg_pool_backward(dout, H, W, ph, pw, stride)
    )


@settings(max_examples=80, deadline=None)
@given(
    planes=st.integers(1, 80),  # 2x2 stride-2 windows on the kernel from 32 planes a call
    H=st.integers(1, 40),
    W=st.integers(1, 60),
    ph=st.integers(1, 5),
    pw=st.integers(1, 5),
    stride=st.integers(1, 4),
    two_by_two=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_avg_pool_forward_on_avx512_gives_the_bits_of_avx2(
    planes, H, W, ph, pw, stride, two_by_two, dtype, seed
):
    """The average pool's forward of planes of up to 2,048 entries on AVX-512
    (cpp/pool_avx512.h: each window's sum in registers, in the vectors of a plane's entries
    that hold windows' top left entries, compressed out) against the loops it replaces (the
    AVX2 stacked loops at stride 1, the strided and 2x2 stride-2 loops elsewhere) and the
    portable build's: the same bytes on any window, stride and plane, with many -0.0 (a
    window of -0s sums to -0), infinities of both signs and NaNs, on one, two and three
    threads, but which of two NaNs of different signs a sum keeps (the compiler orders an
    add's operands as it likes; inf + -inf is a -NaN). Half the draws are 2x2 stride-2
    windows (0 + the four entries, their own loops). Where the CPU has no AVX-512 all runs
    are the same code."""
    if two_by_two:
        ph, pw, stride = 2, 2, 2
    ph, pw = min(ph, H), min(pw, W)
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, (1, planes, H, W)).astype(dtype)
    x[rng.random(x.shape) < 0.5] = -0.0
    x[rng.random(x.shape) < 0.02] = np.inf
    x[rng.random(x.shape) < 0.01] = -np.inf
    x[rng.random(x.shape) < 0.01] = np.nan
    assert_avx512_gives_the_bits_of_avx2_and_portable(
        lambda: _C.avg_pool_forward(x, ph, pw, stride)
    )


def assert_avx512_gives_the_bits_of_avx2_and_portable(call):
    """call()'s array on AVX-512, on one, two and three threads, and without AVX2: the
    bytes of call() without AVX-512 but which of two NaNs a sum kept."""
    with avx512(False):
        want = call()
        with avx2(False):
            assert_same_bits_but_nan_signs(call(), want)
    for threads in (1, 2, 3):
        with kernel_threads(threads):
            assert_same_bits_but_nan_signs(call(), want)


def assert_same_bits_but_nan_signs(got, want):
    """The same bytes where want is a number, a NaN where it is one."""
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    numbers = ~np.isnan(want)
    assert got[numbers].tobytes() == want[numbers].tobytes()


@pytest.mark.parametrize(
    "shape, ph, pw, stride",
    [
        ((2, 3, 32, 64), 3, 3, 1),  # 2,048 entries: the largest planes the AVX-512 forward takes
        ((2, 3, 41, 50), 3, 3, 1),  # 2,050: the loops before it
        ((2, 3, 2048, 1), 5, 1, 3),
        ((1, 2, 1, 2048), 1, 7, 2),
        ((1, 2, 1, 2049), 1, 7, 2),
    ],
)
def test_avg_pool_forward_on_avx512_at_the_plane_limit(shape, ph, pw, stride):
    """Planes at the AVX-512 forward's limit and past it: the bits of the loops without
    AVX-512 and the naive loops' values."""
    x = np.random.default_rng(shape[3]).standard_normal(shape).astype(np.float32)
    with avx512(False):
        want = _C.avg_pool_forward(x, ph, pw, stride)
    assert _C.avg_pool_forward(x, ph, pw, stride).tobytes() == want.tobytes()
    check_avg_pool_against_naive_loops(x, ph, pw, stride)


@pytest.mark.parametrize(
    "shape, ph, pw, stride",
    [
        ((1, 2, 3, 1100), 2, 3, 1),  # a band's rows cannot hold the window's: the plane loops
        ((1, 1, 2, 700), 1, 300, 1),  # windows of 300 columns
        ((2, 3, 5, 2047), 1, 2, 1),  # a row of 2047 columns, one to a band
        ((1, 1, 9, 1000), 3, 3, 2),  # bands of two rows
        ((1, 1, 4, 2047), 3, 3, 2),  # a row padded to 2048 columns: the plane loops
        ((1, 1, 4100, 1), 1, 1, 2),  # full bands of one column, stride 2
        ((2, 3, 700, 3), 2, 1, 2),
    ],
)
def test_avg_pool_long_rows(shape, ph, pw, stride):
    """Rows too long for the stacked loops' bands, and at their limit: the naive loops."""
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    check_avg_pool_against_naive_loops(x, ph, pw, stride)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_avg_pool_against_torch(dtype):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(5).standard_normal((3, 4, 9, 7)).astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    out_t = torch.nn.functional.avg_pool2d(xt, 2, 2)
    dout = np.random.default_rng(6).standard_normal(tuple(out_t.shape)).astype(dtype)
    out_t.backward(torch.from_numpy(dout))
    tol = {np.float32: 1e-6, np.float64: 1e-15}[dtype]
    np.testing.assert_allclose(_C.avg_pool_forward(x, 2, 2, 2), out_t.detach().numpy(), rtol=tol)
    np.testing.assert_array_equal(_C.avg_pool_backward(dout, 9, 7, 2, 2, 2), xt.grad.numpy())


def _gelu_probe(dtype):
    """Normal, wide and special arguments of the transcendental kernels, in dtype."""
    rng = np.random.default_rng(7)
    specials = [np.nan, np.inf, -np.inf, 0.0, -0.0, -40, 40, 1e20, -1e20, 1e-30, 3e38, -13.0]
    if dtype == np.float64:
        specials += [-38.5, -37.0, 1e200, -1e200, 1e-310, -1e-310, 1e160, -27.6, 39.0]
    x = np.concatenate([rng.standard_normal(2000) * 4, np.linspace(-40, 40, 2003), specials])
    return x.astype(dtype), rng.standard_normal(x.size + 1).astype(dtype)[1:]


# The ops AVX-512 has (float32 and float64; sigmoid's float64 forward); where the CPU has
# no AVX-512 both sides are AVX2's or the portable loops.
TRANSCENDENTAL = ["gelu", "gelu_tanh", "softplus", "sigmoid"]


@pytest.mark.parametrize("op", TRANSCENDENTAL)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blocks_of_64_bytes_give_the_bits_of_one_entry_at_a_time(op, dtype):
    """Where the CPU has AVX-512 the kernel takes blocks of sixteen float32 or eight
    float64 there, the rest (an array of one entry: all of it) on AVX2: the same
    operations (2^n in one scalef there, two exact factors here), so the same bits."""
    x, dout = _gelu_probe(dtype)
    blocks = _C.pointwise_forward(op, x), _C.pointwise_backward(op, dout, x)
    for k in range(x.size):
        one = slice(k, k + 1)
        assert_bitwise_nan(blocks[0][one], _C.pointwise_forward(op, x[one]))
        assert_bitwise_nan(blocks[1][one], _C.pointwise_backward(op, dout[one], x[one]))


@pytest.mark.parametrize("op", TRANSCENDENTAL)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_avx512_gives_the_bits_of_avx2(op, dtype):
    """Whole arrays with the AVX-512 kernels switched off give the same bits (where the
    CPU has no AVX-512 both runs are AVX2's)."""
    x, dout = _gelu_probe(dtype)
    with_avx512 = _C.pointwise_forward(op, x), _C.pointwise_backward(op, dout, x)
    _C.set_avx512_activations(False)
    try:
        assert_bitwise_nan(with_avx512[0], _C.pointwise_forward(op, x))
        assert_bitwise_nan(with_avx512[1], _C.pointwise_backward(op, dout, x))
    finally:
        _C.set_avx512_activations(True)


def assert_bitwise_nan(got, want):
    bits = np.uint32 if got.dtype == np.float32 else np.uint64
    np.testing.assert_array_equal(got.view(bits), want.view(bits))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_kernel_gives_the_relu_gates_bits(dtype):
    """The relu a fused kernel applies (passes/norm_activation.py): the relu gate's values
    (a NaN passes, as in np.maximum) and its gradient dout * (x > 0), a NaN where an
    infinite or NaN dout meets a blocked entry, as the gate's product gives."""
    from graphnet.gates.elementwise import Relu

    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 2.5, -1.5, 1e-40, -1e-40] * 3, dtype)
    dout = np.resize(np.array([1.0, np.inf, -np.inf, np.nan, -2.0, 3.0, -0.0], dtype), x.size)
    for values in (x, np.resize(x, 70_001)):  # numpy's path and the gate's C++ one
        grads = np.resize(dout, values.size)
        out, mask = Relu().forward(values)
        (dx,) = Relu().backward(grads, mask, (True,))
        with np.errstate(invalid="ignore"):
            np.testing.assert_array_equal(_C.pointwise_forward("relu", values), out)
            np.testing.assert_array_equal(_C.pointwise_backward("relu", grads, values), dx)
