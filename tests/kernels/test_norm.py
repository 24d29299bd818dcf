"""The C++ normalization kernels (graphnet.kernels.norm): batchnorm (N, D), spatial
batchnorm, layernorm, groupnorm, against a float64 reference written per slice, the numpy
layers of the course, numerical gradients and PyTorch; hypothesis over shapes down to
N = C = H = W = 1 and empty batches; bitwise equal for any thread count; bad input is a
ValueError."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphnet import layers
from graphnet.gradient_check import eval_numerical_gradient_array, rel_error
from graphnet.kernels import _C, norm
from .test_avx2 import kernel_threads

FUZZ = settings(max_examples=120, deadline=None)
dtypes = st.sampled_from([np.float32, np.float64])
EPS = 1e-5


def slices(a, kind, G=1):
    """a viewed as (outer, K, inner): one normalized slice per k."""
    if kind == "batchnorm":
        return a.reshape(a.shape[0], a.shape[1], int(np.prod(a.shape[2:])))
    if kind == "layernorm":
        return a.reshape(1, a.shape[0], a.shape[1])
    return a.reshape(1, a.shape[0] * G, int(np.prod(a.shape[1:])) // G)


def gamma_of(p, x, kind, G=1):
    """gamma or beta broadcast to x's slices view."""
    if kind == "batchnorm":
        return p.reshape(1, -1, 1)
    if kind == "layernorm":
        return np.broadcast_to(p.reshape(1, 1, -1), (1,) + x.shape)
    return slices(np.broadcast_to(p.reshape(1, -1, 1, 1), x.shape), kind, G)


def reference(kind, x, gamma, beta, dout, G=1, stats=None):
    """out, dx, dgamma, dbeta in float64, slice by slice; stats = (mean, var) per slice for
    batchnorm's eval mode (then they are constants)."""
    x64, d64 = slices(x.astype(np.float64), kind, G), slices(dout.astype(np.float64), kind, G)
    g64 = gamma_of(gamma.astype(np.float64), x, kind, G)
    b64 = gamma_of(beta.astype(np.float64), x, kind, G)
    out, dx = np.empty_like(x64), np.empty_like(x64)
    for k in range(x64.shape[1]):
        s, d, g = x64[:, k], d64[:, k], (g64[:, k] if kind != "batchnorm" else g64[0, k, 0])
        mean, var = (s.mean(), s.var()) if stats is None else (stats[0][k], stats[1][k])
        inv = 1 / np.sqrt(var + EPS)
        x_hat = (s - mean) * inv
        out[:, k] = x_hat * g + (b64[:, k] if kind != "batchnorm" else b64[0, k, 0])
        dxh = d * g
        dx[:, k] = (
            inv * dxh
            if stats is not None
            else inv * (dxh - dxh.mean() - x_hat * (dxh * x_hat).mean())
        )
        if kind == "batchnorm":
            x64[:, k] = x_hat  # kept for the gamma gradient below
    if kind != "batchnorm":
        x_hat = np.empty_like(x64)
        for k in range(x64.shape[1]):
            x_hat[:, k] = (x64[:, k] - x64[:, k].mean()) / np.sqrt(x64[:, k].var() + EPS)
    else:
        x_hat = x64
    dgamma, dbeta = d64 * x_hat, d64
    if kind == "batchnorm":
        dgamma, dbeta = dgamma.sum(axis=(0, 2)), dbeta.sum(axis=(0, 2))
    elif kind == "layernorm":
        dgamma, dbeta = dgamma.sum(axis=(0, 1)), dbeta.sum(axis=(0, 1))
    else:
        dgamma = dgamma.reshape(x.shape).sum(axis=(0, 2, 3))
        dbeta = dbeta.reshape(x.shape).sum(axis=(0, 2, 3))
    return out.reshape(x.shape), dx.reshape(x.shape), dgamma, dbeta


def run(kind, x, gamma, beta, dout, G=1, train=True, running=(None, None)):
    if kind == "batchnorm":
        out, cache, *_ = norm.batchnorm_forward(x, gamma, beta, EPS, 0.9, *running, train)
        return (out, *norm.batchnorm_backward(dout, cache))
    if kind == "layernorm":
        out, cache = norm.layernorm_forward(x, gamma, beta, EPS)
        return (out, *norm.layernorm_backward(dout, cache))
    out, cache = norm.groupnorm_forward(x, gamma, beta, G, EPS)
    return (out, *norm.groupnorm_backward(dout, cache))


def assert_close(got, want, dtype, scale):
    """Within rounding: ~1e-12 of `scale` in float64, ~1e-5 of it in float32."""
    assert got.dtype == dtype and got.shape == want.shape
    tol = (1e-11 if dtype == np.float64 else 3e-5) * scale
    np.testing.assert_allclose(got, want, rtol=0, atol=tol)


def check_all(kind, shape, dtype, seed, G=1, train=True, offset=1.0):
    rng = np.random.default_rng(seed)
    C = shape[1] if kind != "layernorm" else shape[-1]
    x = (rng.standard_normal(shape) * 2 + offset).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    gamma = rng.uniform(0.5, 1.5, C).astype(dtype)
    beta = rng.standard_normal(C).astype(dtype)
    running, stats = (None, None), None
    if not train:
        running = (rng.standard_normal(C).astype(dtype), rng.uniform(0.5, 2, C).astype(dtype))
        stats = running
    got = run(kind, x, gamma, beta, dout, G, train, running)
    want = reference(kind, x, gamma, beta, dout, G, stats)
    # dx is inv_std * (terms of dout's size): a tiny variance makes inv_std up to 1/sqrt(eps)
    inv = 1 / np.sqrt(EPS) if x.size else 1
    size = max(1, x.size)
    scales = (
        1 + np.abs(beta).max(initial=0) + 10,
        inv * (1 + np.abs(dout).max(initial=0)),
        size * (1 + np.abs(dout).max(initial=0)),
        size,
    )
    for g, w, s in zip(got, want, scales):
        assert_close(g, w, dtype, s)
    return got


@pytest.mark.slow
@FUZZ
@given(
    N=st.integers(1, 70),
    D=st.integers(1, 140),
    dtype=dtypes,
    train=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_batchnorm_fuzz(N, D, dtype, train, seed):
    check_all("batchnorm", (N, D), dtype, seed, train=train)


@pytest.mark.slow
@FUZZ
@given(
    N=st.integers(1, 6),
    C=st.integers(1, 5),
    H=st.integers(1, 9),
    W=st.integers(1, 9),
    dtype=dtypes,
    train=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_spatial_batchnorm_fuzz(N, C, H, W, dtype, train, seed):
    check_all("batchnorm", (N, C, H, W), dtype, seed, train=train)


@pytest.mark.slow
@FUZZ
@given(N=st.integers(0, 40), D=st.integers(1, 90), dtype=dtypes, seed=st.integers(0, 2**16))
def test_layernorm_fuzz(N, D, dtype, seed):
    check_all("layernorm", (N, D), dtype, seed)


@pytest.mark.parametrize("D", [15, 16, 17, 64, 100, 257])
def test_layernorm_rows_around_a_vector_width(D):
    # 75 rows: blocks of 32 rows and groups of 8 with a remainder of each; widths on both
    # sides of the AVX-512 kernel's sixteen lanes
    check_all("layernorm", (75, D), np.float32, D)


@pytest.mark.slow
@FUZZ
@given(
    N=st.integers(0, 4),
    groups=st.integers(1, 4),
    per_group=st.integers(1, 3),
    H=st.integers(1, 6),
    W=st.integers(1, 6),
    dtype=dtypes,
    seed=st.integers(0, 2**16),
)
def test_groupnorm_fuzz(N, groups, per_group, H, W, dtype, seed):
    check_all("groupnorm", (N, groups * per_group, H, W), dtype, seed, G=groups)


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(3, 2, 50, 50), (70, 3, 20, 20), (5, 2, 1, 3000)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_slices_longer_than_a_statistics_block(shape, dtype):
    check_all("batchnorm", shape, dtype, 3)
    check_all("groupnorm", shape, dtype, 4, G=shape[1])
    check_all("layernorm", (shape[0], int(np.prod(shape[1:]))), dtype, 5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_course_layers_agree(dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 5, 3, 4)).astype(dtype)
    dout = rng.standard_normal(x.shape).astype(dtype)
    gamma, beta = rng.uniform(0.5, 1.5, 5).astype(dtype), rng.standard_normal(5).astype(dtype)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for mode in ("train", "test"):
        bn_param = {"mode": "train"}
        layers.spatial_batchnorm_forward(x, gamma, beta, bn_param)  # running stats
        running = (bn_param["running_mean"], bn_param["running_var"])
        bn_param["mode"] = mode
        want, cache = layers.spatial_batchnorm_forward(x, gamma, beta, bn_param)
        out, ours, rm, rv = norm.batchnorm_forward(
            x, gamma, beta, EPS, 0.9, *running, mode == "train"
        )
        np.testing.assert_allclose(out, want, rtol=tol, atol=tol)
        np.testing.assert_allclose(rm, bn_param["running_mean"], rtol=tol, atol=tol)
        np.testing.assert_allclose(rv, bn_param["running_var"], rtol=tol, atol=tol)
        np.testing.assert_allclose(
            ours.x_hat, cache[0].x_hat.reshape(8, 3, 4, 5).transpose(0, 3, 1, 2), rtol=tol, atol=tol
        )
        for got, ref in zip(
            norm.batchnorm_backward(dout, ours), layers.spatial_batchnorm_backward(dout, cache)
        ):
            np.testing.assert_allclose(got, ref, rtol=10 * tol, atol=100 * tol)
    x2 = x.reshape(8, -1)
    g2, b2 = np.tile(gamma, 12), np.tile(beta, 12)
    want, cache = layers.layernorm_forward(x2, g2, b2, {})
    out, ours = norm.layernorm_forward(x2, g2, b2, EPS)
    np.testing.assert_allclose(out, want, rtol=tol, atol=tol)
    np.testing.assert_allclose(ours.x_hat, cache.x_hat, rtol=tol, atol=tol)
    for got, ref in zip(
        norm.layernorm_backward(dout.reshape(8, -1), ours),
        layers.layernorm_backward(dout.reshape(8, -1), cache),
    ):
        np.testing.assert_allclose(got, ref, rtol=10 * tol, atol=100 * tol)
    gamma4, beta4 = gamma.reshape(1, 5, 1, 1), beta.reshape(1, 5, 1, 1)
    want, cache = layers.spatial_groupnorm_forward(x, gamma4, beta4, 5, {})
    out, ours = norm.groupnorm_forward(x, gamma4, beta4, 5, EPS)
    np.testing.assert_allclose(out, want, rtol=tol, atol=tol)
    np.testing.assert_allclose(ours.x_hat, cache.x_hat, rtol=tol, atol=tol)
    for got, ref in zip(
        norm.groupnorm_backward(dout, ours), layers.spatial_groupnorm_backward(dout, cache)
    ):
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=10 * tol, atol=100 * tol)


@pytest.mark.parametrize(
    "kind, shape, G",
    [
        ("batchnorm", (4, 6), 1),
        ("batchnorm", (3, 2, 3, 4), 1),
        ("layernorm", (3, 7), 1),
        ("groupnorm", (2, 6, 3, 2), 3),
    ],
)
@pytest.mark.parametrize("train", [True, False])
def test_numerical_gradients(kind, shape, G, train):
    if kind != "batchnorm" and not train:
        return  # layernorm and groupnorm have no eval mode
    rng = np.random.default_rng(2)
    C = shape[1] if kind != "layernorm" else shape[-1]
    x = rng.standard_normal(shape) * 3 + 1
    gamma, beta = rng.uniform(0.5, 1.5, C), rng.standard_normal(C)
    dout = rng.standard_normal(shape)
    running = (rng.standard_normal(C), rng.uniform(0.5, 2, C)) if not train else (None, None)

    def forward(x, gamma, beta):
        return run(kind, x, gamma, beta, dout, G, train, running)[0]

    dx, dgamma, dbeta = run(kind, x, gamma, beta, dout, G, train, running)[1:]
    assert (
        rel_error(dx, eval_numerical_gradient_array(lambda v: forward(v, gamma, beta), x, dout))
        < 1e-7
    )
    assert (
        rel_error(dgamma, eval_numerical_gradient_array(lambda v: forward(x, v, beta), gamma, dout))
        < 1e-7
    )
    assert (
        rel_error(dbeta, eval_numerical_gradient_array(lambda v: forward(x, gamma, v), beta, dout))
        < 1e-7
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("length", [1, 31, 32, 33, 255, 256, 257, 287, 289, 511, 513, 800])
def test_groupnorm_statistics_of_groups_around_a_block(length, dtype):
    # The groupnorm's sums add a block of 8 rows of 32 lanes in the entries' type, then
    # into float64 (cpp/group_norm_loops.h); a group's entries after its last full block
    # make a shorter block. Groups of one channel of `length` entries (1 x length planes),
    # their mean 1e4 away from zero: against float64.
    rng = np.random.default_rng(length)
    x = (1e4 + rng.standard_normal((3, 2, 1, length))).astype(dtype)
    ones, zeros = np.ones(2, dtype), np.zeros(2, dtype)
    _, mean, inv_std = _C.group_norm_forward(x, ones, zeros, 2, EPS)
    x64 = x.astype(np.float64).reshape(6, length)
    np.testing.assert_allclose(mean, x64.mean(axis=1), rtol=1e-7)
    want = 1 / np.sqrt(x64.var(axis=1) + EPS)
    np.testing.assert_allclose(inv_std, want, rtol=2e-6 if dtype == np.float32 else 1e-12)
    check_all("groupnorm", (2, 4, 1, length), dtype, length, G=2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_mean_far_from_zero_costs_no_precision(dtype):
    # Sum of squares minus squared mean would lose everything here in float32.
    rng = np.random.default_rng(3)
    x = (1e4 + rng.standard_normal((512, 3, 8, 8))).astype(dtype)
    _, mean, var, _ = _C.channel_norm_forward(x, np.ones(3, dtype), np.zeros(3, dtype), EPS)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(var, x64.var(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(mean, x64.mean(axis=(0, 2, 3)), rtol=1e-7)


def test_empty_batches():
    x = np.zeros((0, 3, 2, 2), np.float32)
    ones, zeros = np.ones(3, np.float32), np.zeros(3, np.float32)
    out, cache, rm, rv = norm.batchnorm_forward(x, ones, zeros, EPS, 0.9, None, None, False)
    assert out.shape == x.shape
    dx, dgamma, dbeta = norm.batchnorm_backward(x, cache)
    assert dx.shape == x.shape and not dgamma.any() and not dbeta.any()
    with pytest.raises(ValueError, match="non-empty batch"):
        norm.batchnorm_forward(x, ones, zeros, EPS, 0.9, None, None, True)
    with pytest.raises(ValueError, match="non-empty batch"):
        norm.batchnorm_forward(
            np.zeros((2, 3, 0, 2), np.float32), ones, zeros, EPS, 0.9, None, None, True
        )
    with pytest.raises(ValueError, match="at least one feature"):
        norm.layernorm_forward(np.zeros((2, 0)), np.ones(0), np.zeros(0), EPS)
    with pytest.raises(ValueError, match="at least one pixel"):
        norm.groupnorm_forward(np.zeros((2, 3, 0, 2)), np.ones(3), np.zeros(3), 1, EPS)


def test_bitwise_the_same_for_any_number_of_threads():
    rng = np.random.default_rng(4)
    cases = [
        ("batchnorm", (300, 200), 1),
        ("batchnorm", (32, 16, 20, 20), 1),
        ("layernorm", (300, 500), 1),
        ("groupnorm", (16, 12, 20, 20), 4),
    ]
    before = _C.get_num_threads()
    try:
        for kind, shape, G in cases:
            C = shape[1] if kind != "layernorm" else shape[-1]
            args = (
                rng.standard_normal(shape).astype(np.float32),
                rng.uniform(0.5, 1.5, C).astype(np.float32),
                rng.standard_normal(C).astype(np.float32),
                rng.standard_normal(shape).astype(np.float32),
            )
            results = []
            for threads in (1, 2, 3, 7):
                _C.set_num_threads(threads)
                results.append(run(kind, *args, G=G))
            for other in results[1:]:
                for a, b in zip(results[0], other):
                    np.testing.assert_array_equal(a, b)
    finally:
        _C.set_num_threads(before)


def _bits(a):
    return np.ascontiguousarray(a).tobytes()


@FUZZ
@given(
    shape=st.tuples(*(st.integers(*r) for r in ((60, 150), (1, 7), (2, 8), (2, 8)))),
    dtype=dtypes,
    train=st.booleans(),
    threads=st.integers(2, 3),
    seed=st.integers(0, 2**16),
)
def test_spatial_batchnorm_of_many_small_planes(shape, dtype, train, threads, seed):
    """Hundreds of planes of 4 to 64 entries, which the passes over planes take in blocks
    of up to 4096 entries, each block's planes one after another with their channel counted
    (cpp/norm_loops.h), a block starting anywhere in a row of channels: forward and
    backward give the float64 reference's values, and the same bits on 2 or 3 threads as
    on one."""
    with kernel_threads(1):
        alone = check_all("batchnorm", shape, dtype, seed, train=train)
    with kernel_threads(threads):
        together = check_all("batchnorm", shape, dtype, seed, train=train)
    for a, b in zip(alone, together):
        assert _bits(a) == _bits(b)


@FUZZ
@given(
    N=st.integers(1, 12),
    C=st.integers(1, 11),
    H=st.integers(1, 40),
    W=st.integers(1, 40),
    dtype=dtypes,
    threads=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_a_channels_statistics_in_a_batch_are_its_own_alone(N, C, H, W, dtype, threads, seed):
    """The train forward gathers several channels' sums side by side: each channel's mean,
    variance and output are the bits of that channel normalized on its own (where nothing
    runs beside it), whatever the channels beside it and the thread count."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)) * rng.uniform(0.1, 100) + rng.uniform(-50, 50)
    x = x.astype(dtype)
    gamma, beta = rng.standard_normal(C).astype(dtype), rng.standard_normal(C).astype(dtype)
    before = _C.get_num_threads()
    try:
        _C.set_num_threads(threads)
        out, mean, var, inv_std = _C.channel_norm_forward(x, gamma, beta, EPS)
        for k in range(C):
            alone = _C.channel_norm_forward(
                np.ascontiguousarray(x[:, k : k + 1]), gamma[k : k + 1], beta[k : k + 1], EPS
            )
            assert _bits(out[:, k : k + 1]) == _bits(alone[0])
            for together, single in zip((mean, var, inv_std), alone[1:]):
                assert _bits(together[k : k + 1]) == _bits(single)
    finally:
        _C.set_num_threads(before)


@FUZZ
@given(
    N=st.integers(1, 20),
    D=st.sampled_from([1, 7, 8, 9, 31, 32, 33, 65, 79, 100, 257]),
    dtype=dtypes,
    relu=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_a_layernorm_row_in_a_batch_is_the_row_alone(N, D, dtype, relu, seed):
    """Layernorm sums several rows side by side: each row's output and statistics are the
    bits of that row normalized on its own."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((N, D)) * rng.uniform(0.1, 100) + rng.uniform(-50, 50)).astype(dtype)
    gamma, beta = rng.standard_normal(D).astype(dtype), rng.standard_normal(D).astype(dtype)
    together = _C.layer_norm_forward(x, gamma, beta, EPS, relu)
    for n in range(N):
        alone = _C.layer_norm_forward(x[n : n + 1].copy(), gamma, beta, EPS, relu)
        for a, b in zip(together, alone):
            assert _bits(a[n : n + 1]) == _bits(b)


@FUZZ
@given(
    lead=st.lists(st.integers(0, 5), min_size=1, max_size=3),
    D=st.sampled_from([1, 7, 16, 33, 64]),
    dtype=dtypes,
    relu=st.booleans(),
    layout=st.sampled_from(["C", "transposed", "strided"]),
    threads=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_a_layernorm_over_leading_axes_is_the_layernorm_of_its_rows(
    lead, D, dtype, relu, layout, threads, seed
):
    """x (N, ..., D) in the bindings, as the layernorm gate passes it: the bits of the rows
    x.reshape(-1, D), forward and backward, out and dx in x's shape, whatever x's layout."""
    rng = np.random.default_rng(seed)
    shape = (*lead, D)
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    if layout == "transposed" and len(lead) > 1:
        x = np.swapaxes(np.ascontiguousarray(np.swapaxes(x, 0, 1)), 0, 1)
    elif layout == "strided":
        x = np.repeat(x, 2, axis=-1)[..., ::2]
    gamma, beta = rng.standard_normal(D).astype(dtype), rng.standard_normal(D).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    rows = np.ascontiguousarray(x).reshape(-1, D)
    with kernel_threads(threads):
        out, mean, inv_std = _C.layer_norm_forward(x, gamma, beta, EPS, relu)
        grads = _C.layer_norm_backward(dout, x, gamma, mean, inv_std, beta if relu else None)
    want = _C.layer_norm_forward(rows, gamma, beta, EPS, relu)
    want_grads = _C.layer_norm_backward(
        dout.reshape(-1, D), rows, gamma, want[1], want[2], beta if relu else None
    )
    assert out.shape == shape and grads[0].shape == shape
    assert _bits(out) == _bits(want[0].reshape(shape))
    assert _bits(mean) == _bits(want[1]) and _bits(inv_std) == _bits(want[2])
    assert _bits(grads[0]) == _bits(want_grads[0].reshape(shape))
    assert _bits(grads[1]) == _bits(want_grads[1]) and _bits(grads[2]) == _bits(want_grads[2])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: _C.channel_norm_forward(np.ones((2, 3)), np.ones(4), np.ones(3), EPS), "gamma"),
        (
            lambda: _C.channel_norm_forward(
                np.ones((2, 3), np.float32), np.ones(3), np.ones(3), EPS
            ),
            "dtype",
        ),
        (lambda: _C.channel_norm_forward(np.ones(3), np.ones(3), np.ones(3), EPS), r"\(N, C"),
        (
            lambda: _C.channel_norm_forward(
                np.ones((2, 3), np.int64), np.ones(3, np.int64), np.ones(3, np.int64), EPS
            ),
            "float32 or float64",
        ),
        (
            lambda: _C.channel_norm_forward(
                np.ones((2, 3)), np.ones(3), np.ones(3), EPS, np.ones(2), np.ones(3)
            ),
            "running_mean",
        ),
        (
            lambda: _C.channel_norm_backward(
                np.ones((2, 4)), np.ones((2, 3)), np.ones(3), np.ones(3), np.ones(3), True
            ),
            "dout",
        ),
        (lambda: _C.layer_norm_forward(np.ones(4), np.ones(4), np.ones(4), EPS), r"\(N, D\) or"),
        (lambda: _C.layer_norm_forward(np.ones((2, 3, 0)), np.ones(0), np.ones(0), EPS), "feature"),
        (
            lambda: _C.layer_norm_backward(
                np.ones((2, 3, 4)), np.ones((2, 3, 4)), np.ones(4), np.ones(2), np.ones(2)
            ),
            "mean",
        ),
        (
            lambda: _C.layer_norm_backward(
                np.ones((2, 3)), np.ones((2, 3)), np.ones(3), np.ones(3), np.ones(2)
            ),
            "mean",
        ),
        (
            lambda: _C.group_norm_forward(np.ones((2, 6, 2, 2)), np.ones(6), np.ones(6), 4, EPS),
            "divide",
        ),
        (
            lambda: _C.group_norm_forward(np.ones((2, 6, 2, 2)), np.ones(6), np.ones(6), 0, EPS),
            "divide",
        ),
        (
            lambda: _C.group_norm_forward(
                np.ones((2, 6, 2, 2)), np.ones(6), np.ones(6), -(2**63), EPS
            ),
            "divide",
        ),
        (
            lambda: _C.group_norm_forward(
                np.ones((3, 0, 2, 2)), np.ones(0), np.ones(0), 2**62, EPS
            ),
            "64 bits",
        ),
        (
            lambda: _C.group_norm_backward(
                np.ones((2, 6, 2, 2)), np.ones((2, 6, 2, 2)), np.ones(6), 3, np.ones(6), np.ones(5)
            ),
            "inv_std",
        ),
    ],
)
def test_bad_input_is_a_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.parametrize("dtype, tol", [(np.float32, 2e-5), (np.float64, 1e-12)])
def test_against_torch(dtype, tol):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(6)
    cases = [
        ("batchnorm", (16, 40), 1),
        ("batchnorm", (6, 5, 7, 3), 1),
        ("layernorm", (9, 33), 1),
        ("groupnorm", (4, 6, 5, 3), 2),
    ]
    for kind, shape, G in cases:
        C = shape[1] if kind != "layernorm" else shape[-1]
        x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
        dout = rng.standard_normal(shape).astype(dtype)
        gamma = rng.uniform(0.5, 1.5, C).astype(dtype)
        beta = rng.standard_normal(C).astype(dtype)
        xt, gt, bt = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
        if kind == "batchnorm":
            out_t = F.batch_norm(xt, None, None, gt, bt, training=True, eps=EPS)
        elif kind == "layernorm":
            out_t = F.layer_norm(xt, (C,), gt, bt, eps=EPS)
        else:
            out_t = F.group_norm(xt, G, gt, bt, eps=EPS)
        out_t.backward(torch.from_numpy(dout))
        got = run(kind, x, gamma, beta, dout, G)
        for ours, theirs in zip(got, (out_t, xt.grad, gt.grad, bt.grad)):
            theirs = theirs.detach().numpy()
            np.testing.assert_allclose(
                ours, theirs, rtol=tol, atol=tol * max(1.0, np.abs(theirs).max())
            )


@FUZZ
@given(
    N=st.one_of(st.integers(0, 4), st.integers(100, 200)),
    C=st.integers(1, 6),
    H=st.integers(1, 9),
    W=st.integers(1, 9),
    dtype=dtypes,
    tail=st.sampled_from(["none", "relu", "skip", "skip_first"]),
    seed=st.integers(0, 2**16),
)
def test_spatial_batchnorm_eval_is_the_formula_per_element(N, C, H, W, dtype, tail, seed):
    """Eval mode (the planes in memory order, in blocks of up to 4096 entries, which a
    batch of 100 or more starts anywhere in a row of channels): (x - mean) * (gamma *
    inv_std) + beta with the running averages, then the fused steps' relu (of + skip, in
    either order) per element, bit for bit in x's dtype, for 1 and 2 threads."""
    rng = np.random.default_rng(seed)
    x, skip = (rng.standard_normal((N, C, H, W)).astype(dtype) for _ in range(2))
    gamma, beta, mean = (rng.standard_normal(C).astype(dtype) for _ in range(3))
    var = rng.uniform(0.1, 2, C).astype(dtype)
    inv_std = dtype(1) / np.sqrt(var + dtype(EPS))
    want = (x - mean[:, None, None]) * (gamma * inv_std)[:, None, None] + beta[:, None, None]
    kwargs = {"relu": tail != "none"}
    if tail.startswith("skip"):
        kwargs.update(skip=skip, skip_first=tail == "skip_first")
        want = skip + want if tail == "skip_first" else want + skip
    if tail != "none":
        want = np.maximum(want, 0)
    outs, before = [], _C.get_num_threads()
    try:
        for threads in (1, 2):
            _C.set_num_threads(threads)
            out = norm.batchnorm_forward(x, gamma, beta, EPS, 0.9, mean, var, False, **kwargs)
            outs.append(out[0])
    finally:
        _C.set_num_threads(before)
    np.testing.assert_array_equal(outs[0], want)
    np.testing.assert_array_equal(outs[1], outs[0])


@FUZZ
@given(
    C=st.integers(1, 70),
    dtype=dtypes,
    momentum=st.one_of(st.sampled_from([0.0, 1.0, 0.9, 0.99]), st.floats(0, 1)),
    specials=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_running_averages_are_numpys_bit_for_bit(C, dtype, momentum, specials, seed):
    """The train-mode running averages (updated in the batchnorm's C++ call) against the
    numpy expression the course writes, on any channel count, both dtypes, NaN, infinities
    and subnormals."""
    gen = np.random.default_rng(seed)
    with np.errstate(over="ignore"):  # float32 takes the largest as infinities
        x, running_mean, running_var = [
            (gen.standard_normal(shape) * 10.0 ** gen.integers(-40, 40, shape)).astype(dtype)
            for shape in ((2, C), C, C)
        ]
    if specials:
        for a in (x[0], running_mean, running_var):
            a[gen.integers(0, C)] = gen.choice([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40])
    gamma, beta = np.ones(C, dtype), np.zeros(C, dtype)
    with np.errstate(all="ignore"):
        _, mean, var, _ = _C.channel_norm_forward(x, gamma, beta, EPS)
        want = (
            momentum * running_mean + (1 - momentum) * mean,
            momentum * running_var + (1 - momentum) * var,
        )
        step = (x, gamma, beta, EPS, momentum)
        got = _C.batchnorm_forward(*step, running_mean, running_var, True)[3:]
        # Strided running averages are read as they are
        wide = _C.batchnorm_forward(*step, np.repeat(running_mean, 2)[::2], running_var, True)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype == dtype
        np.testing.assert_array_equal(
            g.view(f"u{g.itemsize}")[~np.isnan(w)], w.view(f"u{w.itemsize}")[~np.isnan(w)]
        )
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
    np.testing.assert_array_equal(wide[3], got[0])


@pytest.mark.parametrize("momentum", [0.9, 1, np.float32(0.9)])
@pytest.mark.parametrize("running_dtype", [np.float32, np.float64])
def test_batchnorm_running_averages_promote_as_numpy_does(momentum, running_dtype):
    """A train-mode batchnorm's running averages: the same values and dtype as the numpy
    expression, also for running averages of another dtype and a momentum that is no
    Python float (numpy's promotions then)."""
    gen = np.random.default_rng(4)
    x = gen.standard_normal((6, 5)).astype(np.float32)
    gamma, beta = np.ones(5, np.float32), np.zeros(5, np.float32)
    running = (
        gen.standard_normal(5).astype(running_dtype),
        gen.uniform(0.5, 2, 5).astype(running_dtype),
    )
    _, _, got_mean, got_var = norm.batchnorm_forward(x, gamma, beta, EPS, momentum, *running, True)
    _, mean, var, _ = _C.channel_norm_forward(
        x, gamma, beta, EPS, None, None, False, None, False, None, True, "", 0.0
    )
    for got, run, batch in ((got_mean, running[0], mean), (got_var, running[1], var)):
        want = momentum * run + (1 - momentum) * batch
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_running_averages_of_the_wrong_shape_or_kind_are_refused():
    x, a = np.ones((2, 3), np.float32), np.ones(3, np.float32)
    for train in (True, False):
        with pytest.raises(ValueError, match=r"running_mean must have shape \(3,\), got \(4,\)"):
            _C.batchnorm_forward(x, a, a, EPS, 0.9, np.ones(4, np.float32), a, train)
        with pytest.raises(ValueError, match=r"running_var must have shape \(3,\), got \(3, 1\)"):
            _C.batchnorm_forward(x, a, a, EPS, 0.9, a, np.ones((3, 1)), train)
        with pytest.raises(ValueError, match=r"running_var must have shape \(3,\), got \(\)"):
            _C.batchnorm_forward(x, a, a, EPS, 0.9, a, object(), train)
    with pytest.raises(TypeError):  # numpy's error for the average it cannot take
        _C.batchnorm_forward(x, a, a, EPS, 0.9, a, np.array([None] * 3), True)
    with pytest.raises(ValueError, match=r"needs a non-empty batch, got x of shape \(0, 3\)"):
        _C.batchnorm_forward(x[:0], a, a, EPS, 0.9, None, None, True)
