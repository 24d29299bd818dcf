"""_C.affine_chain_forward: affine -> [eval batchnorm or layernorm] -> [relu] in one call,
each array bit for bit as the kernels' own calls make it; bad arguments are ValueErrors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphnet.kernels import _C

pytestmark = pytest.mark.usefixtures("one_kernel_thread")


def separate_calls(x, w, b, norm, eps, layer, relu):
    """What the gates' kernels return, one call each, in affine_chain_forward's order."""
    out = _C.matmul(x, w, bias=b)
    results = [out]
    if norm is not None and layer:
        out, mean, inv_std = _C.layer_norm_forward(out, *norm, eps, False)
        results += [out, mean, inv_std]
    elif norm is not None:
        out, mean, _, inv_std = _C.channel_norm_forward(out, *norm[:2], eps, *norm[2:])
        results += [out, mean, inv_std]
    if relu:
        results += list(_C.relu_forward(out))
    return results


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 5),
    st.integers(0, 80),
    st.integers(0, 70),
    st.sampled_from([None, "batchnorm", "layernorm"]),
    st.booleans(),
    st.booleans(),
    st.sampled_from([np.float32, np.float64]),
    st.integers(0, 2**16),
)
def test_the_kernels_numbers(N, D, M, norm_kind, relu, strided, dtype, seed):
    if norm_kind == "layernorm" and M == 0:
        return
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, 2 * D if strided else D)).astype(dtype)
    if strided:  # a view: the call reads it as it is
        x = x[:, ::2]
    x.flat[::11] = np.nan if seed % 3 == 0 else x.flat[::11]
    w = rng.standard_normal((D, M)).astype(dtype)
    b = rng.standard_normal(M).astype(dtype)
    norm = None
    if norm_kind is not None:
        norm = tuple(rng.uniform(-2, 2, M).astype(dtype) for _ in range(2))
        if norm_kind == "batchnorm":
            norm += (rng.standard_normal(M).astype(dtype), rng.uniform(0, 3, M).astype(dtype))
    layer = norm_kind == "layernorm"
    got = _C.affine_chain_forward(x, w, b, norm, 1e-5, layer, relu)
    want = separate_calls(x, w, b, norm, 1e-5, layer, relu)
    assert len(got) == len(want)
    for a, e in zip(got, want):
        assert a.dtype == e.dtype and a.shape == e.shape
        assert np.array_equal(a, e, equal_nan=True)


def test_bad_arguments_are_value_errors():
    x = np.ones((2, 3), np.float32)
    w, b = np.ones((3, 4), np.float32), np.zeros(4, np.float32)
    params = [np.ones(4, np.float32)] * 4
    chain = _C.affine_chain_forward
    with pytest.raises(ValueError, match="w"):
        chain(x, np.ones((2, 4), np.float32), b)
    with pytest.raises(ValueError, match="b"):
        chain(x, w, np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="b"):
        chain(x, w, np.zeros(4))
    with pytest.raises(ValueError, match="x"):
        chain(np.ones(3, np.float32), w, b)
    with pytest.raises(ValueError, match="x"):
        chain(np.ones((2, 3), np.int64), w.astype(np.int64), b.astype(np.int64))
    with pytest.raises(ValueError, match="gamma"):
        chain(x, w, b, (np.ones(5, np.float32), *params[1:]))
    with pytest.raises(ValueError, match="running_var"):
        chain(x, w, b, (*params[:3], np.ones(4)))
    with pytest.raises(ValueError, match="norm"):
        chain(x, w, b, tuple(params[:3]))
    with pytest.raises(ValueError, match="norm"):
        chain(x, w, b, tuple(params), layer=True)
    with pytest.raises(ValueError, match="feature"):
        chain(
            x,
            np.ones((3, 0), np.float32),
            np.zeros(0, np.float32),
            (params[0][:0],) * 2,
            layer=True,
        )
