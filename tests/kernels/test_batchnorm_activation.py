"""The batchnorm kernels with a leaky relu in the same loops (cpp/norm.h, NormTail::act; used
by the fused (spatial) batchnorm -> leaky relu step): bit for bit the batchnorm kernel
followed by the leaky relu gate, both ways, in train and eval mode, on every loop of the
kernel (rows of columns, small and large planes), for slopes of either sign; against the
course's batchnorm with the leaky relu's numpy formula, float64 numerical gradients and
PyTorch; hypothesis over shapes down to N = C = H = W = 1; the same bits for any thread
count."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphnet import layers
from graphnet.gates.pointwise import LeakyRelu
from graphnet.gradient_check import eval_numerical_gradient_array
from graphnet.kernels import _C, fast, norm

from .test_avx2 import assert_same_bits_on_any_thread_count
from .test_group_norm_activation import arrays as group_norm_arrays

EPS, MOMENTUM = 1e-5, 0.9
ACTIVATIONS = {"leaky_relu": LeakyRelu(0.1), "steep": LeakyRelu(1.5), "negative": LeakyRelu(-0.2)}
# (N, D) rows of columns; planes below and above the AVX2 loops' smallest, and of one entry.
SHAPES = [(7, 5), (130, 67), (3, 4, 5, 6), (4, 3, 1, 1), (16, 8, 12, 12), (2, 5, 45, 50)]


def arrays(shape, dtype, seed, train=True):
    """x, gamma, beta, dout as the groupnorm tests make them, and in eval mode the running
    averages."""
    rng = np.random.default_rng(seed + 1)
    C = shape[1]
    running = None if train else (rng.standard_normal(C), rng.uniform(0.5, 2, C))
    return (*group_norm_arrays(shape, dtype, seed), running)


def _forward(x, gamma, beta, running, activation=None):
    mean, var = (None, None) if running is None else (a.astype(x.dtype) for a in running)
    out, cache, *_ = norm.batchnorm_forward(
        x, gamma, beta, EPS, MOMENTUM, mean, var, running is None, activation=activation
    )
    return out, cache


def fused(x, gamma, beta, dout, running, activation):
    gate = ACTIVATIONS[activation]
    out, cache = _forward(x, gamma, beta, running, gate.kernel)
    return (out, *norm.batchnorm_backward(dout, cache, activation=gate.kernel))


def one_after_the_other(x, gamma, beta, dout, running, activation):
    """The batchnorm kernel, then the activation's gate on these float arrays."""
    gate = ACTIVATIONS[activation]
    y, cache = _forward(x, gamma, beta, running)
    out, saved = gate.forward(y)
    (dy,) = gate.backward(dout, saved, (True,))
    return (out, *norm.batchnorm_backward(dy, cache))


def numpy_gates(x, gamma, beta, dout, running, activation):
    """The course's (spatial) batchnorm and the activation's formula, in float64."""
    x, gamma, beta, dout = (a.astype(np.float64) for a in (x, gamma, beta, dout))
    param = {"mode": "train" if running is None else "test", "eps": EPS, "momentum": MOMENTUM}
    if running is not None:
        param["running_mean"], param["running_var"] = running
    spatial = x.ndim == 4
    forward = layers.spatial_batchnorm_forward if spatial else layers.batchnorm_forward
    y, cache = forward(x, gamma, beta, param)
    alpha = ACTIVATIONS[activation].alpha
    out, dy = np.where(y > 0, y, alpha * y), np.where(y > 0, dout, alpha * dout)
    if running is not None:  # eval mode: constants, dx = dy * gamma / std
        scale = gamma / np.sqrt(running[1] + EPS)
        axes = (0, 2, 3) if spatial else (0,)
        stats = (1, -1, 1, 1) if spatial else (1, -1)
        x_hat = (x - running[0].reshape(stats)) / np.sqrt(running[1] + EPS).reshape(stats)
        return out, dy * scale.reshape(stats), (dy * x_hat).sum(axes), dy.sum(axes)
    backward = layers.spatial_batchnorm_backward if spatial else layers.batchnorm_backward_alt
    return (out, *backward(dy, cache))


def assert_bit_for_bit_and_near_numpy(shape, dtype, seed, train, activation):
    x, gamma, beta, dout, running = arrays(shape, dtype, seed, train)
    got = fused(x, gamma, beta, dout, running, activation)
    for ours, theirs in zip(got, one_after_the_other(x, gamma, beta, dout, running, activation)):
        np.testing.assert_array_equal(ours, theirs)
    tol = 2e-5 if dtype == np.float32 else 1e-10
    for ours, theirs in zip(got, numpy_gates(x, gamma, beta, dout, running, activation)):
        np.testing.assert_allclose(ours, theirs, rtol=tol, atol=tol * max(1, np.abs(theirs).max()))


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("train", [True, False])
def test_the_kernel_and_the_gate_bit_for_bit_and_the_numpy_gates(activation, dtype, shape, train):
    assert_bit_for_bit_and_near_numpy(shape, dtype, 1, train, activation)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 5),
    st.integers(1, 9),
    st.integers(0, 7),
    st.integers(1, 40),
    st.booleans(),
    st.sampled_from(sorted(ACTIVATIONS)),
    st.sampled_from([np.float32, np.float64]),
    st.integers(0, 2**16),
)
def test_random_shapes(N, C, H, W, train, activation, dtype, seed):
    shape = (N + train, C) if H == 0 else (N + train, C, H, W)  # train: two samples at least
    assert_bit_for_bit_and_near_numpy(shape, dtype, seed, train, activation)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("shape", [(5, 6), (3, 2, 3, 4)])
@pytest.mark.parametrize("train", [True, False])
def test_numerical_gradients(activation, shape, train):
    x, gamma, beta, dout, running = arrays(shape, np.float64, 2, train)
    kernel = ACTIVATIONS[activation].kernel

    def out(x, gamma, beta):
        return _forward(x, gamma, beta, running, kernel)[0]

    _, dx, dgamma, dbeta = fused(x, gamma, beta, dout, running, activation)
    checks = ((dx, lambda v: out(v, gamma, beta), x), (dgamma, lambda v: out(x, v, beta), gamma))
    for grad, f, at in checks + ((dbeta, lambda v: out(x, gamma, v), beta),):
        numeric = eval_numerical_gradient_array(f, at, dout)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 4, 5, 6), (4, 3, 1, 1), (2, 5, 45, 50)])
@pytest.mark.parametrize("window", [(2, 2, 2), (3, 3, 1), (3, 2, 3), (1, 1, 1)])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("keep", [True, False])
def test_pooled_the_pool_gate_of_the_activation_bit_for_bit(
    activation, dtype, shape, window, train, keep
):
    """pool: each plane of the leaky relu's output max-pooled as it is written, the pool
    kernel's values and winners of the unpooled output; the cache an ActivationNormCache
    whether or not the output is kept (a backward through the activation recomputes it)."""
    if window[0] > shape[2] or window[1] > shape[3]:
        window = (1, 1, 1)
    x, gamma, beta, _, running = arrays(shape, dtype, 3, train)
    gate = ACTIVATIONS[activation]
    mean, var = (None, None) if running is None else (a.astype(dtype) for a in running)
    (out, pooled, winners), cache, *_ = norm.batchnorm_forward(
        x,
        gamma,
        beta,
        EPS,
        MOMENTUM,
        mean,
        var,
        train,
        pool=window,
        keep=keep,
        activation=gate.kernel,
    )
    alone, _ = _forward(x, gamma, beta, running, gate.kernel)
    height, width, stride = window
    param = {"pool_height": height, "pool_width": width, "stride": stride}
    expected, (_, expected_winners, _) = fast.max_pool_forward_fast(alone, param)
    np.testing.assert_array_equal(pooled, expected)
    np.testing.assert_array_equal(winners, expected_winners)
    assert out is None if not keep else np.array_equal(out, alone, equal_nan=True)
    assert type(cache) is norm.ActivationNormCache


def test_bitwise_the_same_for_any_number_of_threads():
    for shape in [(300, 200), (32, 16, 20, 20)]:
        for activation in ("leaky_relu", "negative"):
            x, gamma, beta, dout, _ = arrays(shape, np.float32, 4)
            assert_same_bits_on_any_thread_count(fused, x, gamma, beta, dout, None, activation)


def test_bad_activations_and_caches():
    x, gamma, beta, dout, _ = arrays((4, 3), np.float64, 5)
    for other in ("gelu", "sigmoid", "tanh", "relu"):
        with pytest.raises(ValueError, match="not one it can apply"):
            _C.channel_norm_forward(x, gamma, beta, EPS, activation=other)
    with pytest.raises(ValueError, match="unknown pointwise op"):
        _C.channel_norm_forward(x, gamma, beta, EPS, activation="swish")
    with pytest.raises(ValueError, match="not both"):
        _C.channel_norm_forward(x, gamma, beta, EPS, relu=True, activation="leaky_relu")
    _, cache = _forward(x, gamma, beta, None)
    with pytest.raises(ValueError, match="forward with it"):
        norm.batchnorm_backward(dout, cache, activation=("leaky_relu", 0.1))
    args = (dout, x, gamma, cache.mean, cache.inv_std, True)
    with pytest.raises(ValueError, match="needs beta"):
        _C.channel_norm_backward(*args, activation="leaky_relu")


@pytest.mark.torch
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-4), (np.float64, 1e-11)])
@pytest.mark.parametrize("shape", [(16, 40), (6, 5, 7, 3)])
def test_against_torch(activation, dtype, tol, shape):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, gamma, beta, dout, _ = arrays(shape, dtype, 2)
    xt, gt, bt = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    normalized = F.batch_norm(xt, None, None, gt, bt, training=True, eps=EPS)
    out_t = F.leaky_relu(normalized, ACTIVATIONS[activation].alpha)
    out_t.backward(torch.from_numpy(dout))
    got = fused(x, gamma, beta, dout, None, activation)
    for ours, theirs in zip(got, (out_t, xt.grad, gt.grad, bt.grad)):
        theirs = theirs.detach().numpy()
        np.testing.assert_allclose(
            ours, theirs, rtol=tol, atol=tol * max(1.0, np.abs(theirs).max())
        )
