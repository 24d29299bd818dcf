"""_C.all_finite (the feed check of every walk) against np.isfinite on arbitrary bits: every
exponent, both signs, NaN payloads, subnormals."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from graphnet.kernels import _C

BITS = {np.dtype(np.float32): np.uint32, np.dtype(np.float64): np.uint64}


@settings(max_examples=80, deadline=None)
@given(
    st.sampled_from([np.float32, np.float64]),
    st.integers(0, 3000),
    st.integers(0, 2**32 - 1),
    st.floats(0, 1),
)
def test_all_finite_matches_isfinite_on_random_bits(dtype, n, seed, share_special):
    rng = np.random.default_rng(seed)
    bits = BITS[np.dtype(dtype)]
    x = rng.integers(0, np.iinfo(bits).max, n, dtype=bits, endpoint=True).view(dtype)
    # Random bits are rarely inf or NaN in float64: set a share of exponents to all ones
    # (inf or NaN) and to all ones but the lowest bit (the largest finite binade).
    exponent = bits(0x7F800000 if dtype == np.float32 else 0x7FF0000000000000)
    lowest = exponent & (~exponent + bits(1))
    for value in (exponent, exponent - lowest):
        hit = rng.random(n) < share_special / max(n, 1)
        x.view(bits)[hit] |= value
        x.view(bits)[hit] &= ~(exponent - value) if value != exponent else ~bits(0)
    assert _C.all_finite(x) == bool(np.isfinite(x).all())
