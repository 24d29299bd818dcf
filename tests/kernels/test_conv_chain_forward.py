"""_C.conv_chain_forward: conv -> [eval batchnorm] -> [relu] -> [max pool] in one call,
each array bit for bit as the kernels' own calls make it; bad arguments are ValueErrors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphnet.kernels import _C

pytestmark = pytest.mark.usefixtures("one_kernel_thread")


def separate_calls(x, w, b, stride, pad, norm, eps, add, add_first, relu, pool):
    """What the gates' kernels return, one call each, in conv_chain_forward's order."""
    out = _C.conv_forward(x, w, b, stride, pad)
    results = [out]
    if norm is not None:
        gamma, beta, mean, var = norm
        out, m, _, inv_std = _C.channel_norm_forward(out, gamma, beta, eps, mean, var)
        results += [out, m, inv_std]
    if add is not None:  # the add gate's numpy +
        out = add + out if add_first else out + add
        results.append(out)
    if relu:
        out, keep = _C.relu_forward(out)
        results += [out, keep]
    if pool is not None:
        results += list(_C.max_pool_forward(out, *pool))
    return results


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 3),
    st.integers(1, 6),
    st.integers(2, 12),
    st.integers(1, 24),
    st.sampled_from([1, 3, 5]),
    st.integers(1, 3),
    st.booleans(),
    st.sampled_from([None, True, False]),
    st.booleans(),
    st.booleans(),
    st.sampled_from([np.float32, np.float64]),
    st.integers(0, 2**16),
)
def test_the_kernels_numbers(N, C, side, F, k, stride, normed, added, relu, pooled, dtype, seed):
    pad = (k - 1) // 2
    if (side + 2 * pad - k) // stride + 1 < 2:
        return
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, side, side + 1)).astype(dtype)
    w = rng.standard_normal((F, C, k, k)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    norm = None
    if normed:
        norm = tuple(rng.uniform(-2, 2, F).astype(dtype) for _ in range(3)) + (
            rng.uniform(0, 3, F).astype(dtype),
        )
    pool = (2, 2, 2) if pooled else None
    add = None
    if added is not None:  # with a NaN and an infinity among its entries
        add = rng.standard_normal(_C.conv_forward(x, w, b, stride, pad).shape).astype(dtype)
        add.flat[: add.size // 2 : 7] = np.nan
        add.flat[add.size // 2 :: 5] = np.inf
    args = (x, w, b, stride, pad, norm, 1e-5, add, bool(added), relu, pool)
    got = _C.conv_chain_forward(*args)
    want = separate_calls(*args)
    assert len(got) == len(want)
    for a, e in zip(got, want):
        assert a.dtype == e.dtype and a.shape == e.shape
        assert np.array_equal(a, e, equal_nan=True)


def test_bad_arguments_are_value_errors():
    x = np.ones((1, 3, 8, 8), np.float32)
    w, b = np.ones((4, 3, 3, 3), np.float32), np.zeros(4, np.float32)
    params = [np.ones(4, np.float32)] * 4
    with pytest.raises(ValueError, match="gamma"):
        _C.conv_chain_forward(x, w, b, 1, 1, (np.ones(5, np.float32), *params[1:]))
    with pytest.raises(ValueError, match="running_var"):
        _C.conv_chain_forward(x, w, b, 1, 1, (*params[:3], np.ones(4)))
    with pytest.raises(ValueError, match="channels"):
        _C.conv_chain_forward(x, np.ones((4, 2, 3, 3), np.float32), b, 1, 1)
    with pytest.raises(ValueError, match="add"):
        _C.conv_chain_forward(x, w, b, 1, 1, None, 1e-5, np.ones((1, 4, 1, 1), np.float32))
    with pytest.raises(ValueError, match="add"):
        _C.conv_chain_forward(x, w, b, 1, 1, None, 1e-5, np.ones((1, 4, 8, 8)))
    with pytest.raises(ValueError):
        _C.conv_chain_forward(x, w, b, 1, 1, None, 1e-5, None, False, True, (16, 16, 1))
    with pytest.raises(ValueError):
        _C.conv_chain_forward(x, w, b, 1, 1, None, 1e-5, None, False, False, (2, 2, 0))
    with pytest.raises(ValueError):
        _C.conv_chain_forward(x, w, b, 1, 2**62)  # the padded size overflows
