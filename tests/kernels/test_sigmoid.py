"""The float32 sigmoid kernel of the sigmoid gate: within 3 units in the last place of the
exact value on AVX2 and on the C library's exp (below 1.2e-38, where AVX2's e^x
saturates, within 2.4e-38 of it), never nan for a number, NaN passing through, any shape
(empty too), the same for any number of threads."""

import numpy as np
import pytest

from graphnet.kernels import _C


def exact(x):
    x = x.astype(np.float64)
    return 1 / (1 + np.exp(-x))


@pytest.mark.parametrize("avx2", [True, False])
def test_sigmoid_within_a_few_ulp(avx2):
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            rng.standard_normal(100_003) * 8,
            [0, -0.0, 1e-30, -87, -88, -104, -200, 17, 88, 200, np.inf, -np.inf],
        ]
    ).astype(np.float32)
    before = _C.avx2_activations_active()
    _C.set_avx2_activations(avx2)
    try:
        out = _C.sigmoid(x)
    finally:
        _C.set_avx2_activations(before)
    want = exact(x)
    tiny = np.finfo(np.float32).tiny  # below it AVX2's e^x saturates; the limit is 0 anyway
    ulp = np.spacing(want.astype(np.float32)).astype(np.float64)
    close = (np.abs(out - want) <= 3 * ulp) | ((want < tiny) & (out < 2 * tiny))
    assert out.dtype == np.float32 and close.all(), x[~close][:5]
    assert np.isnan(_C.sigmoid(np.array([np.nan], np.float32)))[0]


def test_sigmoid_shapes_threads_and_dtypes():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 70_000)).astype(np.float32)
    before = _C.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 5):
            _C.set_num_threads(threads)
            results.append(_C.sigmoid(x))
    finally:
        _C.set_num_threads(before)
    for other in results[1:]:
        np.testing.assert_array_equal(results[0], other)
    assert _C.sigmoid(np.zeros((0, 4), np.float32)).shape == (0, 4)
    np.testing.assert_array_equal(_C.sigmoid(x.T), _C.sigmoid(np.ascontiguousarray(x.T)))
    with pytest.raises(ValueError, match="float32"):
        _C.sigmoid(x.astype(np.float64))
