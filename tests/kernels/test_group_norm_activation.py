"""The groupnorm kernel with an activation in the same pass (cpp/group_norm.h, used by the
fused groupnorm -> gelu / leaky relu / relu / softplus step): bit for bit the groupnorm kernel
followed by the activation's kernel, both ways; against the numpy gates and PyTorch;
hypothesis over shapes down to N = C = H = W = 1; the same bits for any thread count."""

import functools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphnet import layers
from graphnet.gates.elementwise import Relu
from graphnet.gates.pointwise import Gelu, LeakyRelu, Softplus
from graphnet.kernels import _C, norm

EPS = 1e-5
ACTIVATIONS = {
    "gelu": Gelu(),
    "gelu_tanh": Gelu("tanh"),
    "leaky_relu": LeakyRelu(0.1),
    "relu": Relu(),
    "softplus": Softplus(),
}


def arrays(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    C = shape[1]
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(dtype)
    gamma = rng.uniform(-1.5, 1.5, C).astype(dtype)
    beta = rng.standard_normal(C).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    return x, gamma, beta, dout


def fused(x, gamma, beta, dout, G, activation):
    gate = ACTIVATIONS[activation]
    out, cache = norm.groupnorm_forward(x, gamma, beta, G, EPS, gate.kernel)
    return (out, *norm.groupnorm_backward(dout, cache, gate.kernel))


def one_after_the_other(x, gamma, beta, dout, G, activation):
    """The groupnorm kernel, then the activation's (its gate on these float arrays)."""
    gate = ACTIVATIONS[activation]
    y, cache = norm.groupnorm_forward(x, gamma, beta, G, EPS)
    out, saved = gate.forward(y)
    (dy,) = gate.backward(dout, saved, (True,))
    return (out, *norm.groupnorm_backward(dy, cache))


def numpy_gates(x, gamma, beta, dout, G, activation):
    """The course's groupnorm and the activation's numpy formula, in float64."""
    gate = ACTIVATIONS[activation]
    x, gamma, beta, dout = (a.astype(np.float64) for a in (x, gamma, beta, dout))
    g4, b4 = gamma.reshape(1, -1, 1, 1), beta.reshape(1, -1, 1, 1)
    y, cache = layers.spatial_groupnorm_forward(x, g4, b4, G, {"eps": EPS})
    out, dy = _numpy_activation(gate, y, dout)
    dx, dgamma, dbeta = layers.spatial_groupnorm_backward(dy, cache)
    return out, dx, dgamma.reshape(-1), dbeta.reshape(-1)


def _numpy_activation(gate, y, dout):
    """The gate's numpy path (what it runs on arrays the C++ kernels do not take)."""
    if isinstance(gate, LeakyRelu):
        return np.where(y > 0, y, gate.alpha * y), np.where(y > 0, dout, gate.alpha * dout)
    if isinstance(gate, Relu):
        return np.maximum(y, 0), np.where(y > 0, dout, 0)
    if isinstance(gate, Softplus):
        return np.logaddexp(0, y), dout / (1 + np.exp(-y))
    if gate.approximate == "tanh":
        t = Gelu._tanh(y)
        slope = 0.5 * (1 + t) + 0.5 * y * (1 - t * t) * np.sqrt(2 / np.pi) * (
            1 + 3 * 0.044715 * y * y
        )
        return 0.5 * y * (1 + t), dout * slope
    cdf = Gelu._cdf(y)
    return y * cdf, dout * (cdf + y * np.exp(-0.5 * y * y) / np.sqrt(2 * np.pi))


def assert_bitwise(got, want):
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def assert_close(got, want, dtype):
    tol = 2e-4 if dtype == np.float32 else 1e-10
    for a, b in zip(got, want):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, np.abs(b).max()))


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
# Groups of 70, 1, 1024, 429 and 4440 entries: one or several of the chunks the activation
# runs in between prefetches (cpp/group_norm_loops.h), the last one partial or not.
@pytest.mark.parametrize(
    "shape, G",
    [
        ((3, 6, 5, 7), 3),
        ((1, 4, 1, 1), 2),
        ((2, 8, 16, 16), 2),
        ((2, 6, 13, 11), 2),
        ((1, 3, 40, 37), 1),
    ],
)
def test_the_two_kernels_bit_for_bit_and_the_numpy_gates(activation, dtype, shape, G):
    args = arrays(shape, dtype, 0)
    got = fused(*args, G, activation)
    assert_bitwise(got, one_after_the_other(*args, G, activation))
    assert_close(got, numpy_gates(*args, G, activation), dtype)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 4),
    st.integers(1, 4),
    st.integers(1, 3),
    st.integers(1, 24),
    st.integers(1, 24),
    st.sampled_from(sorted(ACTIVATIONS)),
    st.sampled_from([np.float32, np.float64]),
    st.integers(0, 2**31),
)
def test_random_shapes(N, G, per_group, H, W, activation, dtype, seed):
    args = arrays((N, G * per_group, H, W), dtype, seed)
    got = fused(*args, G, activation)
    assert_bitwise(got, one_after_the_other(*args, G, activation))
    assert_close(got, numpy_gates(*args, G, activation), dtype)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pool", [None, (2, 2, 2)])
def test_bitwise_the_same_for_any_number_of_threads(activation, dtype, pool):
    if pool is None:
        args, run = arrays((16, 12, 20, 20), dtype, 3), fused
    else:
        args = pooled_arrays((16, 12, 20, 20), pool, dtype, 3)
        run = functools.partial(pooled, pool=pool)
    before = _C.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            _C.set_num_threads(threads)
            results.append(run(*args, 4, activation))
    finally:
        _C.set_num_threads(before)
    for other in results[1:]:
        assert_bitwise(other, results[0])


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 4),
    st.integers(1, 70),
    st.integers(1, 70),
    st.sampled_from([0.0, 3.0, 100.0]),
    st.sampled_from([1e-3, 1.0, 1e3]),
    st.integers(0, 2**31),
)
def test_float32_statistics_and_sums_within_their_bounds(
    N, G, per_group, H, W, offset, scale, seed
):
    """float32 groups are summed in float32 blocks of 8 terms a lane, then in float64
    (cpp/group_norm_loops.h): the mean within its rounding plus 8 units of 2^-24 of the mean
    |x| (measured 0.07), inv_std within 4 units in its last place (measured 1.6, as with
    float64 sums), the weight gradients within 16 units of 2^-24 of their terms' absolute
    sums (measured 0.5; their terms at the kernel's mean and inv_std), against float64 on
    the same float32 inputs."""
    rng = np.random.default_rng(seed)
    shape = (N, G * per_group, H, W)
    x = ((rng.standard_normal(shape) + offset) * scale).astype(np.float32)
    gamma = rng.uniform(-1.5, 1.5, shape[1]).astype(np.float32)
    beta = rng.standard_normal(shape[1]).astype(np.float32)
    dout = rng.standard_normal(shape).astype(np.float32)
    _, cache = norm.groupnorm_forward(x, gamma, beta, G, EPS)
    _, dgamma, dbeta = norm.groupnorm_backward(dout, cache)
    groups = x.astype(np.float64).reshape(N * G, -1)
    mean = groups.mean(1)
    inv_std = 1 / np.sqrt(((groups - mean[:, None]) ** 2).mean(1) + EPS)

    def spacing(v):
        return np.spacing(np.abs(v).astype(np.float32)).astype(np.float64)

    unit = 2.0**-24
    mean_bound = spacing(mean) + 8 * unit * np.abs(groups).mean(1)
    assert np.all(np.abs(cache.mean.reshape(-1) - mean) <= mean_bound)
    assert np.all(np.abs(cache.inv_std.reshape(-1) - inv_std) <= 4 * spacing(inv_std))
    # The sums' own error: x_hat from the kernel's float32 statistics, in float64.
    got_mean, got_inv_std = (
        a.reshape(-1, 1).astype(np.float64) for a in (cache.mean, cache.inv_std)
    )
    x_hat = ((groups - got_mean) * got_inv_std).reshape(shape)
    terms = dout.astype(np.float64) * x_hat
    for got, want, size in (
        (dgamma, terms.sum((0, 2, 3)), np.abs(terms).sum((0, 2, 3))),
        (dbeta, dout.astype(np.float64).sum((0, 2, 3)), np.abs(dout).sum((0, 2, 3))),
    ):
        assert np.all(np.abs(got - want) <= 16 * unit * size)


def test_bad_activations_and_caches():
    x, gamma, beta, dout = arrays((2, 4, 3, 3), np.float64, 1)
    with pytest.raises(ValueError, match="sigmoid"):
        _C.group_norm_forward(x, gamma, beta, 2, EPS, "sigmoid")
    with pytest.raises(ValueError, match="unknown pointwise op"):
        _C.group_norm_forward(x, gamma, beta, 2, EPS, "elu")
    _, mean, inv_std = _C.group_norm_forward(x, gamma, beta, 2, EPS)
    with pytest.raises(ValueError, match="needs beta"):
        _C.group_norm_backward(dout, x, gamma, 2, mean, inv_std, None, "gelu")
    _, plain = norm.groupnorm_forward(x, gamma, beta, 2, EPS)
    with pytest.raises(ValueError, match="the cache of a forward with it"):
        norm.groupnorm_backward(dout, plain, ("gelu", 0.0))


@pytest.mark.torch
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-4), (np.float64, 1e-11)])
def test_against_torch(activation, dtype, tol):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    functions = {
        "gelu": F.gelu,
        "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
        "leaky_relu": lambda t: F.leaky_relu(t, 0.1),
        "relu": F.relu,
        "softplus": F.softplus,
    }
    G = 3
    x, gamma, beta, dout = arrays((4, 6, 5, 3), dtype, 2)
    xt, gt, bt = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    out_t = functions[activation](F.group_norm(xt, G, gt, bt, eps=EPS))
    out_t.backward(torch.from_numpy(dout))
    got = fused(x, gamma, beta, dout, G, activation)
    for ours, theirs in zip(got, (out_t, xt.grad, gt.grad, bt.grad)):
        theirs = theirs.detach().numpy()
        np.testing.assert_allclose(
            ours, theirs, rtol=tol, atol=tol * max(1.0, np.abs(theirs).max())
        )


# ----- with an average pool after the activation ---------------------------------------


def pooled(x, gamma, beta, dpool, G, activation, pool):
    gate = ACTIVATIONS[activation]
    out, cache = norm.groupnorm_forward(x, gamma, beta, G, EPS, gate.kernel, pool)
    return (out, *norm.groupnorm_backward(dpool, cache, gate.kernel, pool))


def pooled_one_after_the_other(x, gamma, beta, dpool, G, activation, pool):
    """The fused groupnorm -> activation kernels, then the average pool's."""
    out, cache = norm.groupnorm_forward(x, gamma, beta, G, EPS, ACTIVATIONS[activation].kernel)
    H, W = x.shape[2:]
    dout = _C.avg_pool_backward(dpool, H, W, *pool)
    return (_C.avg_pool_forward(out, *pool), *fused(x, gamma, beta, dout, G, activation)[1:])


def pooled_numpy_gates(x, gamma, beta, dpool, G, activation, pool):
    """numpy_gates followed by the pool gate's numpy windows, in float64."""
    pool_height, pool_width, stride = pool
    N, C, H, W = x.shape
    Ho, Wo = (H - pool_height) // stride + 1, (W - pool_width) // stride + 1
    dout = np.zeros(x.shape)
    for i in range(pool_height):
        for j in range(pool_width):
            rows, cols = slice(i, i + stride * Ho, stride), slice(j, j + stride * Wo, stride)
            dout[:, :, rows, cols] += dpool / (pool_height * pool_width)
    out, *grads = numpy_gates(x, gamma, beta, dout, G, activation)
    windows = np.lib.stride_tricks.sliding_window_view(out, (pool_height, pool_width), (2, 3))
    return (windows[:, :, ::stride, ::stride].mean(axis=(4, 5)), *grads)


def pooled_arrays(shape, pool, dtype, seed):
    x, gamma, beta, _ = arrays(shape, dtype, seed)
    pool_height, pool_width, stride = pool
    H, W = shape[2:]
    out_shape = (*shape[:2], (H - pool_height) // stride + 1, (W - pool_width) // stride + 1)
    dpool = np.random.default_rng(seed + 1).standard_normal(out_shape).astype(dtype)
    return x, gamma, beta, dpool


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "shape, G, pool",
    [
        ((2, 8, 16, 16), 2, (2, 2, 2)),  # the modern net's 2x2 windows
        ((3, 6, 5, 7), 3, (2, 2, 2)),  # an odd row and column no window covers
        ((2, 6, 13, 11), 2, (3, 3, 3)),
        ((1, 4, 9, 9), 4, (3, 3, 2)),  # overlapping windows
        ((2, 3, 6, 10), 1, (2, 3, 1)),
        ((1, 2, 1, 1), 1, (1, 1, 1)),
    ],
)
def test_pooled_bit_for_bit_the_kernels_and_the_numpy_gates(activation, dtype, shape, G, pool):
    args = pooled_arrays(shape, pool, dtype, 0)
    got = pooled(*args, G, activation, pool)
    assert_bitwise(got, pooled_one_after_the_other(*args, G, activation, pool))
    assert_close(got, pooled_numpy_gates(*args, G, activation, pool), dtype)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 20),
    st.integers(1, 20),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 3),
    st.sampled_from(sorted(ACTIVATIONS)),
    st.sampled_from([np.float32, np.float64]),
    st.integers(0, 2**31),
    st.booleans(),
)
def test_pooled_random_shapes(
    N, G, per_group, H, W, pool_height, pool_width, stride, activation, dtype, seed, max_pool
):
    """An average pool: the kernels one after the other, and the numpy gates. A max pool:
    the pool kernel's values, winners and scatter (its 2x2 blocks keeping a -0 gradient,
    overlapping windows summing at a shared winner), the groupnorm -> activation kernel's
    backward after it."""
    pool = (min(pool_height, H), min(pool_width, W), stride)
    args = pooled_arrays((N, G * per_group, H, W), pool, dtype, seed)
    if not max_pool:
        got = pooled(*args, G, activation, pool)
        assert_bitwise(got, pooled_one_after_the_other(*args, G, activation, pool))
        assert_close(got, pooled_numpy_gates(*args, G, activation, pool), dtype)
        return
    args[0].flat[:: 7 + seed % 5] = 0.25  # ties inside windows
    args[3].flat[:: 3 + seed % 4] = -0.0
    got = max_pooled_both_ways(*args, G, activation, pool)
    want = max_pooled_both_ways_one_after_the_other(*args, G, activation, pool)
    assert_bitwise(got, want)
    for a, b in zip(got, want):
        assert np.array_equal(np.signbit(a), np.signbit(b))


@settings(max_examples=30, deadline=None)
@given(
    N=st.integers(1, 2),
    G=st.integers(1, 2),
    per_group=st.integers(32, 140),
    H=st.integers(2, 12),
    W=st.integers(2, 12),
    window=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)),
    activation=st.sampled_from(["gelu", "leaky_relu"]),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**31),
)
def test_pooled_groups_of_many_small_planes(N, G, per_group, H, W, window, activation, dtype, seed):
    """Groups of 32 planes and more of up to 12 x 12 entries, which the pool gate's AVX-512
    kernels take in the groupnorm kernels too (the tiny planes' backward, the 2x2 stride-2
    forward: cpp/pool.cpp's avg_pool_planes_*_on_avx512): the kernels one after the other
    bit for bit (a pooled gradient with -0.0s), on one, two and three threads, and the
    numpy gates."""
    pool = (min(window[0], H), min(window[1], W), window[2])
    args = pooled_arrays((N, G * per_group, H, W), pool, dtype, seed)
    args[3].flat[:: 3 + seed % 4] = -0.0
    want = pooled_one_after_the_other(*args, G, activation, pool)
    before = _C.get_num_threads()
    try:
        for threads in (1, 2, 3):
            _C.set_num_threads(threads)
            got = pooled(*args, G, activation, pool)
            assert [a.tobytes() for a in got] == [b.tobytes() for b in want]
    finally:
        _C.set_num_threads(before)
    assert_close(want, pooled_numpy_gates(*args, G, activation, pool), dtype)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(2, 40),
    st.integers(2, 40),
    st.sampled_from([None, *sorted(ACTIVATIONS)]),
    st.booleans(),
    st.sampled_from([np.float32, np.float64]),
    st.integers(0, 2**31),
)
def test_avx512_loops_give_the_bits_of_avx2(N, G, per_group, H, W, activation, pool, dtype, seed):
    """The groupnorm loops compiled for AVX-512 (cpp/group_norm_avx512.cpp) against their
    AVX2 copy (the AVX-512 kernels switched off), plain, with an activation, pooled; where
    the CPU has no AVX-512 both runs are AVX2's."""
    kernel = ACTIVATIONS[activation].kernel if activation else None
    window = (2, 2, 2) if pool and activation else None
    x, gamma, beta, _ = arrays((N, G * per_group, H, W), dtype, seed)

    def run():
        out, cache = norm.groupnorm_forward(x, gamma, beta, G, EPS, kernel, window)
        dout = np.random.default_rng(seed).standard_normal(out.shape).astype(dtype)
        return (out, *norm.groupnorm_backward(dout, cache, kernel, window))

    with_avx512 = run()
    _C.set_avx512_activations(False)
    try:
        assert_bitwise(with_avx512, run())
    finally:
        _C.set_avx512_activations(True)


def test_bad_pools():
    x, gamma, beta, dout = arrays((2, 4, 3, 3), np.float64, 1)
    with pytest.raises(ValueError, match="larger than the input"):
        _C.group_norm_forward(x, gamma, beta, 2, EPS, "gelu", 0.0, (4, 2, 2))
    with pytest.raises(ValueError, match="stride must be >= 1"):
        _C.group_norm_forward(x, gamma, beta, 2, EPS, "gelu", 0.0, (2, 2, 0))
    with pytest.raises(ValueError, match="window must be at least 1x1"):
        _C.group_norm_forward(x, gamma, beta, 2, EPS, "gelu", 0.0, (0, 2, 2))
    with pytest.raises(ValueError, match="a pool follows an activation"):
        norm.groupnorm_forward(x, gamma, beta, 2, EPS, None, (2, 2, 2))
    _, mean, inv_std = _C.group_norm_forward(x, gamma, beta, 2, EPS, "gelu", 0.0, (2, 2, 2))
    with pytest.raises(ValueError, match="dout"):  # the pooled shape, (2, 4, 1, 1), expected
        _C.group_norm_backward(dout, x, gamma, 2, mean, inv_std, beta, "gelu", 0.0, (2, 2, 2))
    # Without the activation and the pool, a pooled forward's cache gives the groupnorm's
    # own gradient.
    _, cache = norm.groupnorm_forward(x, gamma, beta, 2, EPS, ("gelu", 0.0), (2, 2, 2))
    _, plain = norm.groupnorm_forward(x, gamma, beta, 2, EPS)
    assert_bitwise(norm.groupnorm_backward(dout, cache), norm.groupnorm_backward(dout, plain))
    _, unpooled = norm.groupnorm_forward(x, gamma, beta, 2, EPS, ("gelu", 0.0))
    with pytest.raises(ValueError, match="needs its activation and a pooled forward"):
        norm.groupnorm_backward(dout, unpooled, ("gelu", 0.0), (2, 2, 2))


@pytest.mark.torch
@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-4), (np.float64, 1e-11)])
def test_pooled_against_torch(dtype, tol):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    G, pool = 3, (2, 2, 2)
    x, gamma, beta, dpool = pooled_arrays((4, 6, 9, 8), pool, dtype, 2)
    xt, gt, bt = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    out_t = F.avg_pool2d(F.gelu(F.group_norm(xt, G, gt, bt, eps=EPS)), 2, 2)
    out_t.backward(torch.from_numpy(dpool))
    got = pooled(x, gamma, beta, dpool, G, "gelu", pool)
    for ours, theirs in zip(got, (out_t, xt.grad, gt.grad, bt.grad)):
        theirs = theirs.detach().numpy()
        np.testing.assert_allclose(
            ours, theirs, rtol=tol, atol=tol * max(1.0, np.abs(theirs).max())
        )


# ----- with a max pool after the activation ---------------------------------------------


def max_pooled_both_ways(x, gamma, beta, dpool, G, activation, pool):
    """The fused groupnorm -> activation -> max pool kernels' values, winners and
    gradients."""
    gate = ACTIVATIONS[activation]
    (out, winners), cache = norm.groupnorm_forward(
        x, gamma, beta, G, EPS, gate.kernel, pool, max_pool=True
    )
    assert type(cache) is norm.PooledNormCache
    grads = norm.groupnorm_backward(dpool, cache, gate.kernel, pool, winners)
    return (out, winners, *grads)


def max_pooled_both_ways_one_after_the_other(x, gamma, beta, dpool, G, activation, pool):
    """The fused groupnorm -> activation kernels, then the max pool's, both ways."""
    gate = ACTIVATIONS[activation]
    out, _ = norm.groupnorm_forward(x, gamma, beta, G, EPS, gate.kernel)
    out, winners = _C.max_pool_forward(out, *pool)
    dout = _C.max_pool_backward(dpool, winners, *x.shape[2:])
    return (out, winners, *fused(x, gamma, beta, dout, G, activation)[1:])


@pytest.mark.parametrize("avx512", [True, False])
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize(
    "shape, pool",
    [
        ((16, 12, 20, 20), (3, 3, 2)),  # overlapping windows: the scatter
        ((16, 12, 13, 10), (2, 2, 2)),  # 2x2 blocks, an odd row left: the AVX-512 pairs
        ((16, 12, 8, 8), (2, 2, 2)),  # small planes, zeroed a stack at a time
        ((4, 12, 14, 14), (2, 2, 1)),  # stride 1: the AVX-512 gather
    ],
)
def test_max_pooled_bitwise_the_same_for_any_number_of_threads(activation, avx512, shape, pool):
    """On AVX-512 and AVX2 alike, for the pool gate's unpooling paths the groupnorm kernels
    take (pool.cpp's max_unpool_planes): the kernels one after the other's bits, and the
    pooled gradient scattered to the winners by numpy."""
    args = pooled_arrays(shape, pool, np.float32, 3)
    before = _C.get_num_threads()
    results = []
    try:
        _C.set_avx512_activations(avx512)
        for threads in (1, 2, 3):
            _C.set_num_threads(threads)
            results.append(max_pooled_both_ways(*args, 4, activation, pool))
    finally:
        _C.set_num_threads(before)
        _C.set_avx512_activations(True)
    for other in results:
        assert_bitwise(other, results[0])
    want = max_pooled_both_ways_one_after_the_other(*args, 4, activation, pool)
    assert_bitwise(results[0], want)
    x, gamma, beta, dpool = args
    winners = results[0][1]
    unpooled = np.zeros(x.shape, x.dtype)
    planes = unpooled.reshape(-1, shape[2] * shape[3])
    for plane, (wins, grads) in enumerate(
        zip(winners.reshape(len(planes), -1), dpool.reshape(len(planes), -1))
    ):
        np.add.at(planes[plane], wins, grads)
    assert_bitwise(results[0][2:], fused(x, gamma, beta, unpooled, 4, activation)[1:])


def test_bad_max_pools_and_winners():
    x, gamma, beta, _ = arrays((2, 4, 6, 6), np.float64, 1)
    with pytest.raises(ValueError, match="max_pool needs the pool's windows"):
        _C.group_norm_forward(x, gamma, beta, 2, EPS, "gelu", 0.0, None, True)
    with pytest.raises(ValueError, match="larger than the input"):
        _C.group_norm_forward(x, gamma, beta, 2, EPS, "gelu", 0.0, (7, 2, 2), True)
    (out, winners), cache = norm.groupnorm_forward(
        x, gamma, beta, 2, EPS, ("gelu", 0.0), (2, 2, 2), max_pool=True
    )
    args = (out, x, gamma, 2, cache.mean, cache.inv_std, beta, "gelu", 0.0, (2, 2, 2))
    with pytest.raises(ValueError, match="winners"):
        _C.group_norm_backward(*args, winners.astype(np.int64))
    with pytest.raises(ValueError, match="winners"):
        _C.group_norm_backward(*args, winners[:1])
    bad = winners.copy()
    bad.flat[3] = 36
    with pytest.raises(ValueError, match="winner"):
        _C.group_norm_backward(*args, bad)
    with pytest.raises(ValueError, match="winners need the pool's windows"):
        _C.group_norm_backward(*args[:-1], None, winners)
