"""The kernels behind the conv -> relu -> max_pool fusion (graphnet/passes/conv_relu_pool.py):
max_pool_forward(relu_first=True), conv_relu_pool_forward and conv_pooled_backward.
The forwards must equal the separate kernels bit for bit; the backward is checked against
the naive float64 loops, on the direct (AVX2) and the portable paths, and for thread-count
independence."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphnet.kernels import _C, fast
from .test_avx2 import direct_conv, kernel_threads
from .test_fast_layers import (
    CONV_CASES,
    POOL_CASES,
    assert_within_rounding,
    conv_backward_ref,
    conv_error_bounds,
    make_conv,
)

# (N, C, H, W, F, HH, WW, stride, pad, pool_height, pool_width, pool_stride): the CIFAR
# layer (direct path, 7x7), stride 2, overlapping pool windows that share winners, pool
# stride 1, a kernel wider than 8 (the portable rows), 1x1, rows too narrow for the
# direct kernels, an empty batch.
FUSED_CASES = [
    (4, 3, 32, 32, 32, 7, 7, 1, 3, 2, 2, 2),
    (3, 2, 9, 11, 5, 3, 3, 2, 1, 2, 2, 2),
    (2, 3, 12, 10, 4, 3, 3, 1, 1, 3, 3, 2),
    (2, 2, 8, 8, 3, 3, 2, 1, 1, 2, 2, 1),
    (2, 2, 20, 19, 3, 9, 10, 1, 4, 2, 2, 2),
    (3, 4, 6, 7, 5, 1, 1, 1, 0, 2, 3, 2),
    (2, 3, 18, 18, 6, 5, 5, 1, 2, 2, 2, 2),
    (0, 3, 16, 16, 4, 3, 3, 1, 1, 2, 2, 2),
]


def fused_case(case, dtype, seed=0):
    N, C, H, W, F, HH, WW, stride, pad, ph, pw, ps = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((F, C, HH, WW)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    return x, w, b, (stride, pad), (ph, pw, ps)


def chain_forward(x, w, b, conv, pool):
    """conv -> relu -> max_pool, kernel by kernel: (conv output, pooled, winners)."""
    out = _C.conv_forward(x, w, b, *conv)
    pooled, winners = _C.max_pool_forward(_C.relu_forward(out)[0], *pool)
    return out, pooled, winners


def dense_conv_gradient(dpool, pooled, winners, conv_shape):
    """The conv output's gradient the chain implies: each window's gradient at its winner
    where the pooled value passed the relu (> 0), added up where windows share a winner."""
    N, F, Ho, Wo = conv_shape
    dconv = np.zeros((N, F, Ho * Wo))
    for n, f, q in np.ndindex(N, F, winners.shape[2] * winners.shape[3]):
        if pooled[n, f].flat[q] > 0:
            dconv[n, f, winners[n, f].flat[q]] += dpool[n, f].flat[q]
    return dconv.reshape(conv_shape)


@pytest.mark.slow
@pytest.mark.parametrize("case", POOL_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_first_pooling_equals_relu_then_pooling(case, dtype):
    N, C, H, W, ph, pw, stride = case
    x = np.random.default_rng(1).standard_normal((N, C, H, W)).astype(dtype)
    x.flat[::7] = np.nan
    x.flat[1::5] = -0.0
    x.flat[2::9] = 0.0
    x.flat[3::11] = -np.inf
    relu = _C.relu_forward(x)[0]
    want, want_winners = _C.max_pool_forward(relu, ph, pw, stride)
    got, got_winners = _C.max_pool_forward(x, ph, pw, stride, relu_first=True)
    np.testing.assert_array_equal(got_winners, want_winners)
    assert got.tobytes() == want.tobytes()  # bit for bit: +0, not -0, and the same NaNs


@given(
    shape=st.tuples(*(st.integers(1, n) for n in (3, 19, 11, 11))),
    window=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)),
    dtype=st.sampled_from([np.float32, np.float64]),
    shift=st.sampled_from([-2.0, 0.0, 1.0]),
)
@settings(max_examples=60, deadline=None)
def test_relu_max_pool_forward_fast_is_max_pool_forward_fast_of_the_relu(
    shape, window, dtype, shift
):
    """The fused relu -> max_pool's forward (passes/relu_pool.py): values and cache bit for
    bit those of the gates one after the other, on one thread and on two; shift < 0 leaves
    windows the relu blocks whole."""
    ph, pw, stride = window
    if ph > shape[2] or pw > shape[3]:
        return
    x = (np.random.default_rng(sum(shape)).standard_normal(shape) + shift).astype(dtype)
    x.flat[::13] = -0.0
    pool_param = {"pool_height": ph, "pool_width": pw, "stride": stride}
    want, (want_shape, want_winners, _) = fast.max_pool_forward_fast(
        _C.relu_forward(x)[0], pool_param
    )
    for threads in (1, 2):
        with kernel_threads(threads):
            got, (got_shape, got_winners, got_param) = fast.relu_max_pool_forward_fast(
                x, pool_param
            )
        assert got.tobytes() == want.tobytes() and got.dtype == dtype
        np.testing.assert_array_equal(got_winners, want_winners)
        assert got_shape == want_shape and got_param is pool_param


@pytest.mark.slow
@pytest.mark.parametrize("direct", [True, False])
@pytest.mark.parametrize("case", FUSED_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_relu_pool_forward_equals_the_chain(case, dtype, direct):
    x, w, b, conv, pool = fused_case(case, dtype)
    if x.size:
        x.flat[::97] = np.nan
    with direct_conv(direct):
        _, want, want_winners = chain_forward(x, w, b, conv, pool)
        got, got_winners = _C.conv_relu_pool_forward(x, w, b, *conv, *pool)
    np.testing.assert_array_equal(got_winners, want_winners)
    assert got.tobytes() == want.tobytes()


@pytest.mark.slow
@pytest.mark.parametrize("direct", [True, False])
@pytest.mark.parametrize("case", FUSED_CASES)
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_pooled_backward_matches_the_naive_loops(case, dtype, tol, direct):
    x, w, b, conv, pool = fused_case(case, dtype)
    out, pooled, winners = chain_forward(x, w, b, conv, pool)
    dpool = np.random.default_rng(2).standard_normal(pooled.shape).astype(dtype)
    with direct_conv(direct):
        dw, db = _C.conv_pooled_backward(dpool, pooled, winners, x, w, *conv)
    assert dw.dtype == db.dtype == dtype and dw.shape == w.shape and db.shape == b.shape
    dconv = dense_conv_gradient(dpool, pooled, winners, out.shape)
    _, dw_ref, db_ref = conv_backward_ref(dconv, x, w, *conv)
    _, _, dw_bound, db_bound = conv_error_bounds(dconv, x, w, b, *conv)
    assert_within_rounding(dw, dw_ref, dw_bound, tol)
    assert_within_rounding(db, db_ref, db_bound, tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pooled_backward_with_a_padded_image_beyond_int32_offsets(dtype):
    """A pad of tens of thousands of pixels, which the conv takes (a stride as wide puts its
    middle window on the image): too wide for the kernel's int32 offsets into the padded
    image, the weight gradient comes from the conv's own backward of the dense gradient
    the chain implies."""
    x, w, b, conv, pool = fused_case((2, 2, 3, 4, 3, 3, 3, 23171, 23171, 2, 2, 1), dtype)
    assert 2 * (3 + 2 * 23171) * (4 + 2 * 23171) > np.iinfo(np.int32).max
    out, pooled, winners = chain_forward(x, w, b, conv, pool)
    pooled[0, 0, 0, 0] = -1.0  # a window the relu blocks: its gradient stops there
    dpool = np.random.default_rng(4).standard_normal(pooled.shape).astype(dtype)
    dw, db = _C.conv_pooled_backward(dpool, pooled, winners, x, w, *conv)
    dconv = dense_conv_gradient(dpool, pooled, winners, out.shape).astype(dtype)
    assert np.count_nonzero(dconv[:, :, 1, 1]) >= 3  # the image's window passes gradients
    _, dw_ref, db_ref = _C.conv_backward(dconv, x, w, *conv)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(db, db_ref, rtol=1e-5, atol=1e-6)


def test_pooled_backward_uses_only_winners_that_passed_the_relu():
    """The gradient of a window whose pooled value is <= 0 or NaN stops at the relu, even
    when it is NaN or infinite itself."""
    x, w, b, conv, pool = fused_case(FUSED_CASES[1], np.float64)
    _, pooled, winners = chain_forward(x, w, b, conv, pool)
    pooled.flat[::3] = np.nan
    dpool = np.ones_like(pooled)
    dpool[~(pooled > 0)] = np.inf
    dw, db = _C.conv_pooled_backward(dpool, pooled, winners, x, w, *conv)
    assert np.isfinite(dw).all() and db.tolist() == (pooled > 0).sum(axis=(0, 2, 3)).tolist()


@pytest.mark.parametrize("case", [FUSED_CASES[0], FUSED_CASES[4]])
def test_pooled_backward_is_the_same_on_any_number_of_threads(case):
    x, w, b, conv, pool = fused_case(case, np.float32)
    _, pooled, winners = chain_forward(x, w, b, conv, pool)
    dpool = np.random.default_rng(3).standard_normal(pooled.shape).astype(np.float32)
    results = []
    for threads in (1, 2, 3, 7):
        with kernel_threads(threads):
            results.append(_C.conv_pooled_backward(dpool, pooled, winners, x, w, *conv))
    for dw, db in results[1:]:
        assert dw.tobytes() == results[0][0].tobytes() and db.tobytes() == results[0][1].tobytes()


def test_pooled_backward_refuses_winners_outside_the_conv_output():
    x, w, b, conv, pool = fused_case(FUSED_CASES[1], np.float32)
    out, pooled, winners = chain_forward(x, w, b, conv, pool)
    for bad in (-1, out.shape[2] * out.shape[3], np.iinfo(np.int32).min, np.iinfo(np.int32).max):
        hostile = winners.copy()
        hostile.flat[5] = bad
        with pytest.raises(ValueError, match=f"found {bad}"):
            _C.conv_pooled_backward(np.ones_like(pooled), pooled, hostile, x, w, *conv)


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda a: {**a, "winners": a["winners"].astype(np.int64)}, ["int32", "int64"]),
        (lambda a: {**a, "dpool": a["dpool"][:, :, :1]}, ["dpool", "(3, 5, 1, 3)", "(3, 5, 2, 3)"]),
        (
            lambda a: {**a, "pooled": a["pooled"].astype(np.float64)},
            ["pooled", "float64", "float32"],
        ),
        (
            lambda a: {**a, "winners": a["winners"][:, :4]},
            ["winners", "(3, 4, 2, 3)", "(3, 5, 5, 6)"],
        ),
        (lambda a: {**a, "w": a["w"][:, :1]}, ["channels", "C=2", "C=1"]),
    ],
)
def test_pooled_backward_bad_arguments_name_the_shapes(change, words):
    x, w, b, conv, pool = fused_case(FUSED_CASES[1], np.float32)
    _, pooled, winners = chain_forward(x, w, b, conv, pool)
    args = change(
        {"dpool": np.ones_like(pooled), "pooled": pooled, "winners": winners, "x": x, "w": w}
    )
    with pytest.raises(ValueError) as err:
        _C.conv_pooled_backward(
            args["dpool"], args["pooled"], args["winners"], args["x"], args["w"], *conv
        )
    for word in words:
        assert word in str(err.value)


def test_conv_relu_pool_forward_bad_pool_names_the_shapes():
    x, w, b, conv, _ = fused_case(FUSED_CASES[1], np.float32)
    with pytest.raises(ValueError, match=r"larger than the input 5x6"):
        _C.conv_relu_pool_forward(x, w, b, *conv, 6, 2, 2)


def test_conv_cases_are_covered_by_the_chain_too():
    """Every geometry of the plain conv tests, fused with a 2x2 pool where it fits."""
    for case in CONV_CASES:
        x, w, b, conv_param = make_conv(case, np.float32)
        conv = (conv_param["stride"], conv_param["pad"])
        out = _C.conv_forward(x, w, b, *conv)
        if min(out.shape[2:]) < 2:
            continue
        _, want, want_winners = chain_forward(x, w, b, conv, (2, 2, 2))
        got, got_winners = _C.conv_relu_pool_forward(x, w, b, *conv, 2, 2, 2)
        assert got.tobytes() == want.tobytes()
        np.testing.assert_array_equal(got_winners, want_winners)
