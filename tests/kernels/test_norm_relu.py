"""The norm kernels with their relu (graphnet.kernels.norm, relu=True; the fused norm ->
relu steps of passes/norm_relu.py) and with a skip added before it (its norm -> add -> relu
steps): bit for bit the kernel without them followed by the add's and the relu gate's
arithmetic, forward and backward, on hypothesis shapes (C not a multiple of a vector
width, H = W = 1, N = 1, eval mode), against numerical gradients in float64 and PyTorch;
bitwise equal for any thread count."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphnet.gradient_check import eval_numerical_gradient_array, rel_error
from graphnet.kernels import _C, fast, norm

from .test_avx2 import assert_same_bits_on_any_thread_count

EPS = 1e-5


def arrays(kind, shape, dtype, seed, train=True):
    """x, gamma, beta, dout and the running averages (eval mode) for `kind`."""
    rng = np.random.default_rng(seed)
    C = shape[-1] if kind == "layernorm" else shape[1]
    x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
    gamma = rng.uniform(-1.5, 1.5, C).astype(dtype)  # negative too: the relu's side flips
    beta = rng.standard_normal(C).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    running = (None, None)
    if not train:
        running = (rng.standard_normal(C).astype(dtype), rng.uniform(0.5, 2, C).astype(dtype))
    return x, gamma, beta, dout, running


def forward(kind, x, gamma, beta, running=(None, None), train=True, relu=False):
    if kind == "layernorm":
        return norm.layernorm_forward(x, gamma, beta, EPS, relu)
    out, cache, *_ = norm.batchnorm_forward(x, gamma, beta, EPS, 0.9, *running, train, relu)
    return out, cache


def backward(kind, dout, cache, relu=False):
    return (norm.layernorm_backward if kind == "layernorm" else norm.batchnorm_backward)(
        dout, cache, relu
    )


def assert_as_the_two_gates(kind, shape, dtype, seed, train=True):
    x, gamma, beta, dout, running = arrays(kind, shape, dtype, seed, train)
    out, cache = forward(kind, x, gamma, beta, running, train)
    fused, fused_cache = forward(kind, x, gamma, beta, running, train, relu=True)
    assert isinstance(fused_cache, norm.ReluNormCache)
    np.testing.assert_array_equal(fused, np.maximum(out, 0))
    # The relu gate's backward: dout times its mask, a product.
    want = backward(kind, dout * (out > 0), cache)
    for got, ref in zip(backward(kind, dout, fused_cache, relu=True), want):
        assert got.dtype == ref.dtype
        np.testing.assert_array_equal(got, ref)


@settings(max_examples=80, deadline=None)
@given(
    N=st.integers(1, 40),
    C=st.integers(1, 70),
    H=st.integers(1, 7),
    W=st.integers(1, 7),
    spatial=st.booleans(),
    train=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_batchnorm_and_spatial_batchnorm(N, C, H, W, spatial, train, dtype, seed):
    shape = (N, C, H, W) if spatial else (N, C)
    assert_as_the_two_gates("batchnorm", shape, dtype, seed, train)
    assert_from_the_relu_gates_output(shape, dtype, seed, train)


@settings(max_examples=60, deadline=None)
@given(
    N=st.integers(1, 40),
    D=st.integers(1, 140),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_layernorm(N, D, dtype, seed):
    assert_as_the_two_gates("layernorm", (N, D), dtype, seed)


@pytest.mark.parametrize(
    "kind, shape", [("batchnorm", (3, 70)), ("batchnorm", (2, 3, 5, 5)), ("layernorm", (4, 9))]
)
def test_a_nan_upstream_gradient_where_the_relu_blocks_stays_nan(kind, shape):
    """As in the relu gate: dout * mask, and NaN * 0 is NaN (no silent zero)."""
    x, gamma, beta, dout, _ = arrays(kind, shape, np.float64, 1)
    out, cache = forward(kind, x, gamma, beta, relu=True)
    dout[out == 0] = np.nan
    _, plain = forward(kind, x, gamma, beta)
    want = backward(kind, dout * (out > 0), plain)
    for got, ref in zip(backward(kind, dout, cache, relu=True), want):
        np.testing.assert_array_equal(got, ref)  # NaN where the reference has them
    assert np.isnan(want[0]).any()


@pytest.mark.parametrize(
    "kind, shape", [("batchnorm", (5, 6)), ("batchnorm", (3, 2, 3, 4)), ("layernorm", (3, 7))]
)
@pytest.mark.parametrize("train", [True, False])
def test_numerical_gradients(kind, shape, train):
    if kind == "layernorm" and not train:
        return  # no eval mode
    x, gamma, beta, dout, running = arrays(kind, shape, np.float64, 2, train)

    def out(x, gamma, beta):
        return forward(kind, x, gamma, beta, running, train, relu=True)[0]

    _, cache = forward(kind, x, gamma, beta, running, train, relu=True)
    dx, dgamma, dbeta = backward(kind, dout, cache, relu=True)
    checks = (
        (dx, lambda v: out(v, gamma, beta), x),
        (dgamma, lambda v: out(x, v, beta), gamma),
        (dbeta, lambda v: out(x, gamma, v), beta),
    )
    for grad, f, at in checks:
        assert rel_error(grad, eval_numerical_gradient_array(f, at, dout)) < 1e-7


def test_bitwise_the_same_for_any_number_of_threads():
    cases = [("batchnorm", (300, 200)), ("batchnorm", (32, 16, 20, 20)), ("layernorm", (300, 500))]
    for kind, shape in cases:
        x, gamma, beta, dout, _ = arrays(kind, shape, np.float32, 4)
        assert_same_bits_on_any_thread_count(relu_step, kind, x, gamma, beta, dout)


def relu_step(kind, x, gamma, beta, dout):
    out, cache = forward(kind, x, gamma, beta, relu=True)
    return (out, *backward(kind, dout, cache, relu=True))


def test_a_backward_through_a_relu_needs_a_forward_with_it():
    x, gamma, beta, dout, _ = arrays("batchnorm", (4, 3), np.float64, 5)
    _, cache = forward("batchnorm", x, gamma, beta)
    with pytest.raises(ValueError, match="forward with relu"):
        backward("batchnorm", dout, cache, relu=True)
    with pytest.raises(ValueError, match="beta"):
        _C.layer_norm_backward(dout, x, gamma[:3], np.zeros(4), np.ones(4), np.ones(2))


def assert_from_the_relu_gates_output(shape, dtype, seed, train=True, hostile=False):
    """batchnorm_relu_output_backward on the cache of a forward without a relu, from the
    relu gate's output of it: the relu gate's backward (dout times its mask) and the norm's
    own, bit for bit, the masked dout as the relu gate's gradient. hostile: NaN, infinite
    and -0.0 upstream gradients, some where the relu blocks."""
    x, gamma, beta, dout, running = arrays("batchnorm", shape, dtype, seed, train)
    if hostile:
        dout.flat[::5], dout.flat[1::7], dout.flat[2::3] = np.nan, -np.inf, -0.0
    out, cache = forward("batchnorm", x, gamma, beta, running, train)
    assert type(cache) is norm.NormCache
    relu_out, mask = _C.relu_forward(out)  # the relu gate's kernel
    through = _C.relu_backward(dout, mask)
    want = (*backward("batchnorm", through, cache), through)
    got = norm.batchnorm_relu_output_backward(dout, cache, relu_out)
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
        assert np.array_equal(np.signbit(a), np.signbit(b))  # -0.0 where the gates have it


@pytest.mark.parametrize("shape", [(1, 100), (3, 70), (2, 3, 5, 5)])
@pytest.mark.parametrize("train", [True, False])
def test_from_the_relu_gates_output_nan_infinite_and_negative_zero(shape, train):
    for dtype in (np.float32, np.float64):
        assert_from_the_relu_gates_output(shape, dtype, 9, train, hostile=True)


def test_from_the_relu_gates_output_bitwise_the_same_for_any_number_of_threads():
    for shape in [(300, 200), (8, 40, 33, 33)]:
        x, gamma, beta, dout, _ = arrays("batchnorm", shape, np.float32, 4)
        assert_same_bits_on_any_thread_count(relu_output_step, x, gamma, beta, dout)


def relu_output_step(x, gamma, beta, dout):
    out, cache = forward("batchnorm", x, gamma, beta)
    relu_out = np.maximum(out, 0)
    return (relu_out, *norm.batchnorm_relu_output_backward(dout, cache, relu_out))


def test_from_the_relu_gates_output_refuses_other_caches():
    """A layernorm's, or one of a forward with its own relu or activation."""
    x, gamma, beta, dout, _ = arrays("batchnorm", (4, 3), np.float64, 5)
    out, cache = forward("batchnorm", x, gamma, beta)
    for other in (
        forward("batchnorm", x, gamma, beta, relu=True)[1],
        forward("layernorm", x, gamma[:3], beta[:3])[1],
        norm.batchnorm_forward(
            x, gamma, beta, EPS, 0.9, None, None, True, False, activation=("leaky_relu", 0.1)
        )[1],
    ):
        with pytest.raises(ValueError, match="without a relu or activation of its own"):
            norm.batchnorm_relu_output_backward(dout, other, out)
    with pytest.raises(ValueError, match="relu_out"):
        norm.batchnorm_relu_output_backward(dout, cache, out[:2])


@pytest.mark.torch
@pytest.mark.parametrize("dtype, tol", [(np.float32, 2e-5), (np.float64, 1e-12)])
def test_against_torch(dtype, tol):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    for kind, shape in [
        ("batchnorm", (16, 40)),
        ("batchnorm", (6, 5, 7, 3)),
        ("layernorm", (9, 33)),
    ]:
        x, gamma, beta, dout, _ = arrays(kind, shape, dtype, 6)
        xt, gt, bt = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
        if kind == "batchnorm":
            out_t = F.relu(F.batch_norm(xt, None, None, gt, bt, training=True, eps=EPS))
        else:
            out_t = F.layer_norm(xt, (shape[-1],), gt, bt, eps=EPS).relu()
        out_t.backward(torch.from_numpy(dout))
        out, cache = forward(kind, x, gamma, beta, relu=True)
        got = (out, *backward(kind, dout, cache, relu=True))
        for ours, theirs in zip(got, (out_t, xt.grad, gt.grad, bt.grad)):
            theirs = theirs.detach().numpy()
            np.testing.assert_allclose(
                ours, theirs, rtol=tol, atol=tol * max(1.0, np.abs(theirs).max())
            )


# ----- with a skip added before the relu (a residual block's norm -> add -> relu) --------


def skip_forward(x, gamma, beta, skip, skip_first=False, running=(None, None), train=True):
    out, cache, *_ = norm.batchnorm_forward(
        x, gamma, beta, EPS, 0.9, *running, train, True, skip, skip_first
    )
    return out, cache


def assert_skip_as_the_three_gates(shape, dtype, seed, train=True, skip_first=False):
    """The norm kernel, numpy's add in the add gate's order, the relu gate's arithmetic;
    backward the relu's product, the add's gradient to both operands, the norm kernel."""
    x, gamma, beta, dout, running = arrays("batchnorm", shape, dtype, seed, train)
    skip = np.random.default_rng(seed + 1).standard_normal(shape).astype(dtype)
    out, cache = forward("batchnorm", x, gamma, beta, running, train)
    total = skip + out if skip_first else out + skip
    fused, fused_cache = skip_forward(x, gamma, beta, skip, skip_first, running, train)
    assert isinstance(fused_cache, norm.SkipReluNormCache)
    np.testing.assert_array_equal(fused, np.maximum(total, 0))
    through = dout * (total > 0)
    want = (*backward("batchnorm", through, cache), through)
    got = norm.batchnorm_relu_output_backward(dout, fused_cache, fused)
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    # The cache read by the norm's own backward, as a plain one.
    for a, b in zip(backward("batchnorm", through, fused_cache), want):
        np.testing.assert_array_equal(a, b)


@settings(max_examples=80, deadline=None)
@given(
    N=st.integers(1, 40),
    C=st.integers(1, 70),
    H=st.integers(1, 33),
    W=st.integers(1, 9),
    spatial=st.booleans(),
    train=st.booleans(),
    skip_first=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_with_a_skip(N, C, H, W, spatial, train, skip_first, dtype, seed):
    shape = (N, C, H, W) if spatial else (N, C * W)
    assert_skip_as_the_three_gates(shape, dtype, seed, train, skip_first)


@pytest.mark.parametrize("shape", [(2, 3, 33, 33), (1, 5, 1, 1), (64, 16, 32, 32), (3, 70)])
@pytest.mark.parametrize("skip_first", [False, True])
def test_with_a_skip_on_planes_of_every_path(shape, skip_first):
    """33 x 33 (a plane over the AVX2 threshold, over kBlock), 1 x 1 and (N, D) layouts."""
    for dtype in (np.float32, np.float64):
        assert_skip_as_the_three_gates(shape, dtype, 3, True, skip_first)


@pytest.mark.parametrize("shape", [(3, 70), (2, 3, 5, 5)])
def test_with_a_skip_nan_and_infinite_entries_propagate_as_in_the_gates(shape):
    x, gamma, beta, dout, _ = arrays("batchnorm", shape, np.float64, 1)
    skip = np.random.default_rng(2).standard_normal(shape)
    skip.flat[::7], skip.flat[3::11] = np.nan, -np.inf
    out, cache = forward("batchnorm", x, gamma, beta)
    fused, fused_cache = skip_forward(x, gamma, beta, skip)
    np.testing.assert_array_equal(fused, np.maximum(out + skip, 0))  # NaN passes the relu
    dout[fused == 0] = np.nan  # NaN * 0 stays NaN, as in the relu gate
    through = dout * ((out + skip) > 0)
    want = (*backward("batchnorm", through, cache), through)
    for a, b in zip(norm.batchnorm_relu_output_backward(dout, fused_cache, fused), want):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shape", [(5, 6), (3, 2, 3, 4)])
@pytest.mark.parametrize("train", [True, False])
def test_with_a_skip_numerical_gradients(shape, train):
    x, gamma, beta, dout, running = arrays("batchnorm", shape, np.float64, 2, train)
    skip = np.random.default_rng(3).standard_normal(shape)

    def out(x, gamma, beta, skip):
        return skip_forward(x, gamma, beta, skip, True, running, train)[0]

    fused, cache = skip_forward(x, gamma, beta, skip, True, running, train)
    dx, dgamma, dbeta, dskip = norm.batchnorm_relu_output_backward(dout, cache, fused)
    checks = (
        (dx, lambda v: out(v, gamma, beta, skip), x),
        (dgamma, lambda v: out(x, v, beta, skip), gamma),
        (dbeta, lambda v: out(x, gamma, v, skip), beta),
        (dskip, lambda v: out(x, gamma, beta, v), skip),
    )
    for grad, f, at in checks:
        assert rel_error(grad, eval_numerical_gradient_array(f, at, dout)) < 1e-7


def test_with_a_skip_bitwise_the_same_for_any_number_of_threads():
    for shape in [(300, 200), (32, 16, 20, 20), (8, 40, 33, 33)]:
        x, gamma, beta, dout, _ = arrays("batchnorm", shape, np.float32, 4)
        skip = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
        assert_same_bits_on_any_thread_count(skip_step, x, gamma, beta, skip, dout)


def skip_step(x, gamma, beta, skip, dout):
    out, cache = skip_forward(x, gamma, beta, skip)
    return (out, *norm.batchnorm_relu_output_backward(dout, cache, out))


def test_with_a_skip_bad_inputs():
    x, gamma, beta, dout, _ = arrays("batchnorm", (4, 3, 2, 2), np.float64, 5)
    with pytest.raises(ValueError, match="skip"):
        _C.channel_norm_forward(x, gamma, beta, EPS, relu=True, skip=x[:, :2])
    with pytest.raises(ValueError, match="skip"):
        _C.channel_norm_forward(x, gamma, beta, EPS, relu=True, skip=x.astype(np.float32))
    with pytest.raises(ValueError, match="before a relu"):
        _C.channel_norm_forward(x, gamma, beta, EPS, skip=x)
    out, cache = forward("batchnorm", x, gamma, beta, relu=True)
    with pytest.raises(ValueError, match="without a relu or activation of its own"):
        norm.batchnorm_relu_output_backward(dout, cache, out)
    _, cache = skip_forward(x, gamma, beta, x)
    with pytest.raises(ValueError, match="relu_out"):
        norm.batchnorm_relu_output_backward(dout, cache, out[:2])


@pytest.mark.torch
@pytest.mark.parametrize("dtype, tol", [(np.float32, 2e-5), (np.float64, 1e-12)])
def test_with_a_skip_against_torch(dtype, tol):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    for shape in [(16, 40), (6, 5, 7, 3)]:
        x, gamma, beta, dout, _ = arrays("batchnorm", shape, dtype, 6)
        skip = np.random.default_rng(7).standard_normal(shape).astype(dtype)
        xt, gt, bt, st_ = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta, skip))
        out_t = F.relu(F.batch_norm(xt, None, None, gt, bt, training=True, eps=EPS) + st_)
        out_t.backward(torch.from_numpy(dout))
        out, cache = skip_forward(x, gamma, beta, skip)
        got = (out, *norm.batchnorm_relu_output_backward(dout, cache, out))
        for ours, theirs in zip(got, (out_t, xt.grad, gt.grad, bt.grad, st_.grad)):
            theirs = theirs.detach().numpy()
            np.testing.assert_allclose(
                ours, theirs, rtol=tol, atol=tol * max(1.0, np.abs(theirs).max())
            )


# ----- and a max pool of that relu (a residual block's end followed by a pool; without a
# skip, a VGG unit's end) ----------------------------------------------------------------


def pooled_forward(x, gamma, beta, skip, window, keep, skip_first=False, running=(None, None)):
    train = running[0] is None
    outs, cache, *_ = norm.batchnorm_forward(
        x, gamma, beta, EPS, 0.9, *running, train, True, skip, skip_first, window, keep
    )
    return (*outs, cache)


def assert_pooled_as_the_gates(
    shape, window, dtype, seed, train=True, skip_first=False, with_skip=True
):
    """The pooled values and winners max_pool_forward's of the unpooled kernel's output;
    that output written only when kept; the statistics and the cache alike."""
    x, gamma, beta, _, running = arrays("batchnorm", shape, dtype, seed, train)
    skip = np.random.default_rng(seed + 1).standard_normal(shape).astype(dtype)
    skip = skip if with_skip else None
    out, cache = skip_forward(x, gamma, beta, skip, skip_first, running, train)
    want = fast.max_pool_forward_fast(
        out, dict(zip(("pool_height", "pool_width", "stride"), window))
    )
    for keep in (True, False):
        kept, pooled, winners, got_cache = pooled_forward(
            x, gamma, beta, skip, window, keep, skip_first, running
        )
        np.testing.assert_array_equal(pooled, want[0])
        np.testing.assert_array_equal(winners, want[1][1])
        assert pooled.dtype == out.dtype and winners.dtype == np.int32
        if keep:
            np.testing.assert_array_equal(kept, out)
            assert type(got_cache) is (norm.SkipReluNormCache if with_skip else norm.ReluNormCache)
        else:
            assert kept is None and type(got_cache) is norm.NormCache
        for name in ("mean", "inv_std"):
            np.testing.assert_array_equal(getattr(got_cache, name), getattr(cache, name))


@settings(max_examples=80, deadline=None)
@given(
    N=st.integers(1, 9),
    C=st.integers(1, 20),
    H=st.integers(1, 40),
    W=st.integers(1, 40),
    height=st.integers(1, 4),
    width=st.integers(1, 4),
    stride=st.integers(1, 4),
    train=st.booleans(),
    skip_first=st.booleans(),
    with_skip=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_with_a_skip_and_a_pool(
    N, C, H, W, height, width, stride, train, skip_first, with_skip, dtype, seed
):
    window = (min(height, H), min(width, W), stride)
    assert_pooled_as_the_gates((N, C, H, W), window, dtype, seed, train, skip_first, with_skip)


@pytest.mark.parametrize("shape", [(2, 3, 33, 33), (3, 5, 1, 1), (64, 16, 32, 32), (4, 8, 64, 64)])
@pytest.mark.parametrize("window", [(2, 2, 2), (3, 3, 2), (1, 1, 1)])
def test_with_a_skip_and_a_pool_on_planes_of_every_path(shape, window):
    """33 x 33 (odd, over kBlock), 1 x 1 (the column loops, pooled after them), 64 x 64
    (planes over kBlock); eval mode's loops in memory order too."""
    window = (min(window[0], shape[2]), min(window[1], shape[3]), window[2])
    for dtype in (np.float32, np.float64):
        for train in (True, False):
            for with_skip in (True, False):
                assert_pooled_as_the_gates(shape, window, dtype, 3, train, with_skip=with_skip)


def test_with_a_skip_and_a_pool_nan_entries_win_as_in_the_pool_gate():
    x, gamma, beta, _, _ = arrays("batchnorm", (2, 3, 6, 6), np.float64, 1)
    skip = np.random.default_rng(2).standard_normal(x.shape)
    skip.flat[::7], skip.flat[3::11] = np.nan, -np.inf
    _, pooled, winners, _ = pooled_forward(x, gamma, beta, skip, (2, 2, 2), False)
    out, _ = skip_forward(x, gamma, beta, skip)
    want = fast.max_pool_forward_fast(out, {"pool_height": 2, "pool_width": 2, "stride": 2})
    np.testing.assert_array_equal(pooled, want[0])
    np.testing.assert_array_equal(winners, want[1][1])


@pytest.mark.parametrize("train", [True, False])
def test_a_pool_without_a_skip_nan_and_infinite_entries_as_in_the_gates(train):
    """Eval mode keeps a NaN or an infinity where it is (a NaN wins its window as in the
    pool gate); train mode makes its channel's statistics NaN."""
    x, gamma, beta, _, running = arrays("batchnorm", (2, 3, 7, 7), np.float64, 1, train)
    x.flat[::17], x.flat[5::23], x.flat[9::29] = np.nan, -np.inf, np.inf
    window = {"pool_height": 3, "pool_width": 3, "stride": 2}
    _, pooled, winners, _ = pooled_forward(x, gamma, beta, None, (3, 3, 2), False, running=running)
    out, _ = skip_forward(x, gamma, beta, None, running=running, train=train)
    want = fast.max_pool_forward_fast(out, window)
    np.testing.assert_array_equal(pooled, want[0])
    np.testing.assert_array_equal(winners, want[1][1])


@pytest.mark.parametrize("window", [(2, 2, 2), (2, 2, 1)])
def test_with_a_skip_and_a_pool_bitwise_the_same_for_any_number_of_threads(window):
    """Also on small planes, pooled in blocks of several (norm_pool_block): 96 planes of 88
    entries (two whole blocks and part of one), 15 of 63 (fewer than a block)."""
    shapes = [((32, 16, 20, 20), True), ((8, 40, 33, 33), False), ((16, 6, 11, 8), True)]
    for shape, train in shapes + [((3, 5, 9, 7), False)]:
        x, gamma, beta, _, running = arrays("batchnorm", shape, np.float32, 4, train)
        skip = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
        for with_skip in (skip, None):
            assert_same_bits_on_any_thread_count(
                pooled_step, x, gamma, beta, with_skip, running, window
            )
        assert_pooled_as_the_gates(shape, window, np.float32, 4, train, with_skip=False)


def pooled_step(x, gamma, beta, skip, running, window):
    got = pooled_forward(x, gamma, beta, skip, window, False, running=running)
    return got[1:3] + (got[3].mean, got[3].inv_std)


def test_with_a_skip_and_a_pool_bad_inputs():
    x, gamma, beta, _, _ = arrays("batchnorm", (4, 3, 4, 4), np.float64, 5)
    with pytest.raises(ValueError, match="follows a relu"):
        _C.channel_norm_forward(x, gamma, beta, EPS, pool=(2, 2, 2))
    with pytest.raises(ValueError, match=r"max_pool window 5x5 is larger"):
        _C.channel_norm_forward(x, gamma, beta, EPS, relu=True, skip=x, pool=(5, 5, 1))
    with pytest.raises(ValueError, match="stride must be >= 1"):
        _C.channel_norm_forward(x, gamma, beta, EPS, relu=True, skip=x, pool=(2, 2, 0))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        flat = x.reshape(4, 48)
        _C.channel_norm_forward(
            flat, gamma.repeat(16), beta.repeat(16), EPS, relu=True, pool=(1, 1, 1)
        )
    with pytest.raises(ValueError, match="unwritten"):
        _C.channel_norm_forward(x, gamma, beta, EPS, relu=True, keep=False)


@pytest.mark.torch
@pytest.mark.parametrize("dtype, tol", [(np.float32, 2e-5), (np.float64, 1e-12)])
def test_with_a_skip_and_a_pool_against_torch(dtype, tol):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    for shape, window in [((6, 5, 8, 7), (2, 2, 2)), ((3, 4, 9, 9), (3, 3, 2))]:
        x, gamma, beta, _, _ = arrays("batchnorm", shape, dtype, 6)
        skip = np.random.default_rng(7).standard_normal(shape).astype(dtype)
        xt, gt, bt, st_ = (torch.tensor(a) for a in (x, gamma, beta, skip))
        summed = F.batch_norm(xt, None, None, gt, bt, training=True, eps=EPS) + st_
        theirs = F.max_pool2d(F.relu(summed), window[:2], window[2]).numpy()
        pooled = pooled_forward(x, gamma, beta, skip, window, False)[1]
        np.testing.assert_allclose(pooled, theirs, rtol=tol, atol=tol * np.abs(theirs).max())
        normalized = F.batch_norm(xt, None, None, gt, bt, training=True, eps=EPS)
        theirs = F.max_pool2d(F.relu(normalized), window[:2], window[2]).numpy()
        pooled = pooled_forward(x, gamma, beta, None, window, False)[1]
        np.testing.assert_allclose(pooled, theirs, rtol=tol, atol=tol * np.abs(theirs).max())
