"""The norm kernels with their relu (graphnet.kernels.norm, relu=True; the fused norm ->
relu steps of passes/norm_relu.py): bit for bit the kernel without it followed by the relu
gate's arithmetic, forward and backward, on hypothesis shapes (C not a multiple of a vector
width, H = W = 1, N = 1, eval mode), against numerical gradients in float64 and PyTorch;
bitwise equal for any thread count."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphnet.gradient_check import eval_numerical_gradient_array, rel_error
from graphnet.kernels import _C, norm

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
    before = _C.get_num_threads()
    try:
        for kind, shape in cases:
            x, gamma, beta, dout, _ = arrays(kind, shape, np.float32, 4)
            results = []
            for threads in (1, 2, 3):
                _C.set_num_threads(threads)
                out, cache = forward(kind, x, gamma, beta, relu=True)
                results.append((out, *backward(kind, dout, cache, relu=True)))
            for other in results[1:]:
                for a, b in zip(results[0], other):
                    np.testing.assert_array_equal(a, b)
    finally:
        _C.set_num_threads(before)


def test_a_backward_through_a_relu_needs_a_forward_with_it():
    x, gamma, beta, dout, _ = arrays("batchnorm", (4, 3), np.float64, 5)
    _, cache = forward("batchnorm", x, gamma, beta)
    with pytest.raises(ValueError, match="forward with relu"):
        backward("batchnorm", dout, cache, relu=True)
    with pytest.raises(ValueError, match="beta"):
        _C.layer_norm_backward(dout, x, gamma[:3], np.zeros(4), np.ones(4), np.ones(2))


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
