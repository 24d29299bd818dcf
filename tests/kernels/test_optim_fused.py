"""The C++ Adam step gives the same numbers, bit for bit, as the numpy formulas."""

import numpy as np
import pytest

from graphnet import optim


def numpy_adam(w, dw, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    m = beta1 * m + (1 - beta1) * dw
    v = beta2 * v + (1 - beta2) * dw**2
    m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)
    return w - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(8192, 100), (3, 5), (7,), ()])
def test_fused_adam_matches_numpy_bitwise(dtype, shape):
    rng = np.random.default_rng(3)
    w = rng.standard_normal(shape).astype(dtype)
    ref_w, ref_m, ref_v = w.copy(), np.zeros_like(w), np.zeros_like(w)
    config = {"learning_rate": 5e-3}
    for t in range(1, 6):
        dw = rng.standard_normal(shape).astype(dtype)
        next_w, config = optim.adam(w, dw, config)
        ref_w, ref_m, ref_v = numpy_adam(ref_w, dw, ref_m, ref_v, t, lr=5e-3)
        assert next_w is w and config["t"] == t
        np.testing.assert_array_equal(w, ref_w)
        np.testing.assert_array_equal(config["m"], ref_m)
        np.testing.assert_array_equal(config["v"], ref_v)
        assert w.dtype == config["m"].dtype == dtype


def test_arrays_the_kernel_cannot_take_go_through_numpy():
    rng = np.random.default_rng(4)
    base = rng.standard_normal((6, 4))
    w = base.T  # not C-contiguous: updated in place by the numpy path
    dw = rng.standard_normal((4, 6))
    expected, _, _ = numpy_adam(w.copy(), dw, 0, 0, 1)
    next_w, _ = optim.adam(w, dw, {})
    assert next_w is w
    np.testing.assert_array_equal(w, expected)
    w32, dw64 = np.ones(3, np.float32), np.full(3, 0.5)  # mixed dtypes
    next_w, _ = optim.adam(w32, dw64, {})
    assert next_w.dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_subnormal_moments_are_flushed_to_zero(dtype):
    # A network that fits its batch: gradients of 1e-30 whose squares underflow, and a first
    # moment with no more gradient decaying in the subnormals (0.9 times the smallest one
    # rounds back to it, so in numpy it stays there, and each step pays x86's slow path).
    tiny = np.finfo(dtype).tiny
    smallest = np.nextafter(dtype(0), dtype(1))
    w = np.linspace(-1, 1, 40000).astype(dtype)
    dw = np.where(np.arange(w.size) % 2 == 0, 0, 1e-30).astype(dtype)
    m = np.where(np.arange(w.size) % 2 == 0, 3 * smallest, tiny).astype(dtype)
    v = np.full_like(w, 1e-6)
    config = {"learning_rate": 1e-3, "m": m.copy(), "v": v.copy(), "t": 500}
    ref_w, ref_m, ref_v = numpy_adam(w.copy(), dw, m, v, 501)
    next_w, config = optim.adam(w, dw, config)
    for ours, ref in ((next_w, ref_w), (config["m"], ref_m), (config["v"], ref_v)):
        assert not np.any((ours != 0) & (np.abs(ours) < tiny))  # nothing subnormal
        np.testing.assert_allclose(ours, ref, rtol=0, atol=tiny)  # the rest unchanged
    np.testing.assert_array_equal(next_w, ref_w)
