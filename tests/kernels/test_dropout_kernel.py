"""The dropout kernel of the unseeded dropout gate (cpp/dropout.h): its masks are those of a
numpy implementation of the same hash (SplitMix64, itself checked against the generator's
published outputs) bit for bit, on the AVX-512, AVX2 and portable loops, for any shape
(empty, odd, strided), dtype, keep and thread count; the kept fraction is binomial; the
uniforms behind it are uniform (a chi-square of their histogram, read from the kernel's
masks at 32 thresholds) and uncorrelated between neighbouring units and between calls; the
gate's gradient is the numerical one; a checkpoint's resume draws the same masks."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphnet as gn
from graphnet import gates
from graphnet.gradient_check import eval_numerical_gradient_array, rel_error
from graphnet.kernels import _C, layers

from .test_avx2 import kernel_threads

GAMMA, MIX1, MIX2 = (
    np.uint64(c) for c in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)
)


def splitmix64(key, count):
    """SplitMix64's first `count` outputs from state `key` (numpy's uint64 arithmetic wraps
    modulo 2**64, as the C++ does)."""
    z = np.uint64(key) + np.arange(1, count + 1, dtype=np.uint64) * GAMMA
    z = (z ^ (z >> np.uint64(30))) * MIX1
    z = (z ^ (z >> np.uint64(27))) * MIX2
    return z ^ (z >> np.uint64(31))


def uniforms(key, count):
    """The units' uniforms in [0, 1): the top 53 bits of their hash, over 2**53."""
    return (splitmix64(key, count) >> np.uint64(11)).astype(np.float64) / 2.0**53


def reference(x, key, keep):
    """(out, mask) as the kernel computes them, in numpy: kept where the uniform < keep."""
    x = np.asarray(x)
    kept = (splitmix64(key, x.size) >> np.uint64(11)) < np.uint64(math.ceil(keep * 2**53))
    mask = np.where(kept, x.dtype.type(1 / keep), x.dtype.type(0)).reshape(x.shape)
    with np.errstate(invalid="ignore"):  # a dropped infinity is NaN, as x * mask
        return x * mask, mask


PATHS = {"avx512": (True, True), "avx2": (True, False), "portable": (False, False)}


def on_path(path, fn, *args):
    """fn(*args) with the vectorised activations' switches set to `path` (on a CPU without
    AVX-512 or AVX2 the kernel takes the next path down: the same bits anyway)."""
    before = _C.avx2_activations_active(), _C.avx512_activations_active()
    avx2, avx512 = PATHS[path]
    _C.set_avx2_activations(avx2)
    _C.set_avx512_activations(avx512)
    try:
        return fn(*args)
    finally:
        _C.set_avx2_activations(before[0])
        _C.set_avx512_activations(before[1])


def test_the_hash_is_splitmix64():
    # SplitMix64's first outputs from state 0 (Vigna's splitmix64.c, the xoshiro seeder) and
    # from state 1234567 (Rosetta Code's "Pseudo-random numbers/Splitmix64" test values).
    assert [hex(v) for v in splitmix64(0, 3)] == [
        "0xe220a8397b1dcdaf",
        "0x6e789e6aa1b965f4",
        "0x6c45d188009454f",
    ]
    assert [int(v) for v in splitmix64(1234567, 2)] == [6457827717110365317, 3203168211198807973]


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 63, 65, 4099, 2 * 65536 + 13])
def test_masks_are_the_references_bit_for_bit_on_every_path(path, dtype, n):
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n).astype(dtype)
    x[: min(n, 4)] = [np.nan, np.inf, -0.0, -np.inf][: min(n, 4)]  # NaN where dropped, too
    key = int(rng.integers(2**64, dtype=np.uint64))
    out, mask = on_path(path, _C.dropout_forward, x, key, 0.7)
    want_out, want_mask = reference(x, key, 0.7)
    assert out.dtype == mask.dtype == dtype and out.shape == mask.shape == (n,)
    bits = f"u{x.itemsize}"
    np.testing.assert_array_equal(mask.view(bits), want_mask.view(bits))
    np.testing.assert_array_equal(out.view(bits), want_out.view(bits))


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(0, 9), min_size=0, max_size=4),
    dtype=st.sampled_from([np.float32, np.float64]),
    keep=st.one_of(st.floats(1e-6, 1.0), st.sampled_from([1.0, 0.5, 2**-53, 1 - 2**-53])),
    key=st.integers(0, 2**64 - 1),
    order=st.sampled_from(["C", "F", "reversed"]),
)
def test_any_shape_layout_and_keep(shape, dtype, keep, key, order):
    x = np.random.default_rng(len(shape)).standard_normal(shape).astype(dtype)
    if order == "F":
        x = np.asfortranarray(x)
    elif order == "reversed" and x.ndim:
        x = x[::-1]
    want_out, want_mask = reference(np.ascontiguousarray(x), key, keep)  # units in C order
    for path in PATHS:
        out, mask = on_path(path, _C.dropout_forward, x, key, keep)
        np.testing.assert_array_equal(mask, want_mask)
        np.testing.assert_array_equal(out, want_out)


@settings(max_examples=40, deadline=None)
@given(
    keep=st.floats(0.001, 0.999),
    n=st.integers(1, 300_000),
    dtype=st.sampled_from([np.float32, np.float64]),
    key=st.integers(0, 2**64 - 1),
)
def test_the_kept_fraction_is_binomial(keep, n, dtype, key):
    _, mask = _C.dropout_forward(np.ones(n, dtype), key, keep)
    kept = int(np.count_nonzero(mask))
    assert abs(kept - n * keep) <= 6 * math.sqrt(n * keep * (1 - keep)) + 1
    assert set(np.unique(mask)) <= {dtype(0), dtype(1 / keep)}


def test_float32_and_float64_keep_the_same_units():
    x = np.ones(10_001)
    masks = [
        _C.dropout_forward(x.astype(dtype), 99, 0.3)[1] != 0 for dtype in (np.float32, x.dtype)
    ]
    np.testing.assert_array_equal(*masks)


def test_the_uniforms_are_uniform():
    """The kernel's masks at keep = b / 32 say which of 32 bins each unit's uniform falls
    in: a chi-square of the counts (31 degrees of freedom, 99.99th percentile 66.6)."""
    n, bins = 1_000_000, 32
    x = np.ones(n, np.float32)
    kept = [np.count_nonzero(_C.dropout_forward(x, 2024, b / bins)[1]) for b in range(1, bins + 1)]
    counts = np.diff([0] + kept)
    assert kept[-1] == n
    chi2 = float(((counts - n / bins) ** 2 / (n / bins)).sum())
    assert chi2 < 66.6, counts
    # and the reference's uniforms, finer: 1024 bins (1023 degrees of freedom, 99.99th
    # percentile 1206)
    hist = np.bincount((uniforms(2024, n) * 1024).astype(np.int64), minlength=1024)
    assert float(((hist - n / 1024) ** 2 / (n / 1024)).sum()) < 1206


def correlation(a, b):
    return float(np.corrcoef(a.astype(np.float64), b.astype(np.float64))[0, 1])


def test_neighbouring_units_are_uncorrelated():
    n = 1_000_000
    bound = 5 / math.sqrt(n)  # five standard errors of a correlation of independent draws
    u = uniforms(7, n)
    for lag in (1, 2, 3, 8, 16, 64):
        assert abs(correlation(u[:-lag], u[lag:])) < bound, lag
    kept = _C.dropout_forward(np.ones(n, np.float32), 7, 0.5)[1] != 0
    assert abs(correlation(kept[:-1], kept[1:])) < bound
    rows = kept.reshape(1000, 1000)  # a unit and the same feature of the next sample
    assert abs(correlation(rows[:-1].ravel(), rows[1:].ravel())) < bound


def test_calls_are_uncorrelated():
    """Consecutive calls of the gate (keys from its stream), and even adjacent keys."""
    n = 1_000_000
    bound = 5 / math.sqrt(n)
    x = np.ones((1000, 1000), np.float32)
    dropout, state = gates.norm.Dropout(0.5), {"rng": np.random.default_rng(5)}
    first, second = (dropout.forward(state, True, x)[1][1] != 0 for _ in range(2))
    assert abs(correlation(first.ravel(), second.ravel())) < bound
    assert abs(correlation(uniforms(2**40, n), uniforms(2**40 + 1, n))) < bound
    assert abs(correlation(uniforms(0, n), uniforms(2**63, n))) < bound


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_same_masks_for_any_thread_count(dtype):
    x = np.random.default_rng(3).standard_normal((5, 70_001)).astype(dtype)
    want = reference(x, 2**64 - 1, 0.6)
    for threads in (1, 2, 3):
        with kernel_threads(threads):
            out, mask = _C.dropout_forward(x, 2**64 - 1, 0.6)
        np.testing.assert_array_equal(mask, want[1])
        np.testing.assert_array_equal(out, want[0])


@pytest.mark.parametrize("keep", [0.0, -0.5, 1.5, float("nan"), float("inf")])
def test_a_keep_out_of_range_is_refused(keep):
    with pytest.raises(ValueError, match=r"keep .* must be in \(0, 1\]"):
        _C.dropout_forward(np.ones(3), 1, keep)


def test_other_dtypes_are_refused():
    for x in (np.ones(3, np.int64), np.ones(3, np.float16)):
        with pytest.raises(ValueError, match="dropout x must be float32 or float64"):
            _C.dropout_forward(x, 1, 0.5)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(0, 7), min_size=1, max_size=3),
    st.lists(st.integers(0, 9), min_size=0, max_size=2),
    st.sampled_from([np.float32, np.float64]),
    st.integers(1, 3),
)
def test_backward_rows_is_the_spread_gradient_through_the_mask(rows, cols, dtype, threads):
    """dropout_backward_rows(dout, mask): the dropout's backward of dout spread along the
    mask's trailing axes (numpy's product), bit for bit, non-finite douts included."""
    rng = np.random.default_rng(len(rows) + 10 * len(cols))
    dout = rng.standard_normal(rows).astype(dtype)
    dout.flat[:3] = [np.nan, np.inf, -np.inf][: min(dout.size, 3)]
    _, mask = reference(np.ones(rows + cols, dtype), 7, 0.6)
    spread = np.broadcast_to(dout.reshape(rows + [1] * len(cols)), mask.shape)
    with kernel_threads(threads), np.errstate(invalid="ignore"):
        got = _C.dropout_backward_rows(dout, mask)
        want = layers.dropout_backward(spread, (None, mask))
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_backward_rows_refuses_what_is_not_rows_of_dout():
    with pytest.raises(ValueError, match="not rows of dout's 4 entries"):
        _C.dropout_backward_rows(np.ones(4), np.ones((3, 5)))
    with pytest.raises(ValueError, match="not rows of dout's 0 entries"):
        _C.dropout_backward_rows(np.ones(0), np.ones(3))
    with pytest.raises(ValueError, match="dtype"):
        _C.dropout_backward_rows(np.ones(3, np.float32), np.ones((3, 2)))


def test_the_gates_gradient_is_the_numerical_one():
    """Under one key the forward is a function of x: its numerical gradient against the
    backward of the gate's cache (float64)."""
    rng = np.random.default_rng(4)
    x, dout = rng.standard_normal((6, 7)), rng.standard_normal((6, 7))
    dropout = gates.norm.Dropout(0.4)
    state = {"rng": np.random.default_rng(8)}
    key = int(np.random.default_rng(8).integers(2**64, dtype=np.uint64))
    _, cache = dropout.forward(state, True, x)
    (dx,) = dropout.backward(dout, cache, (True,))
    numeric = eval_numerical_gradient_array(lambda v: _C.dropout_forward(v, key, 0.6)[0], x, dout)
    assert rel_error(dx, numeric) < 1e-9
    np.testing.assert_array_equal(dx, layers.dropout_backward(dout, cache))


def graph_with_dropout(dtype):
    g = gn.Graph(dtype=dtype)
    x = g.input("x")
    w = g.param("w", np.random.default_rng(1).standard_normal((40, 30)))
    g.sum(g.dropout(g.matmul(x, w), 0.3, name="drop"))
    return g


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_resumed_checkpoint_draws_the_same_masks(tmp_path, dtype):
    X = np.random.default_rng(2).standard_normal((50, 40)).astype(dtype)
    np.random.seed(6)
    g = graph_with_dropout(dtype)
    g.forward(x=X)  # the node's stream starts
    path = gn.save(g, tmp_path / "graph.npz")
    masks = []
    for _ in range(2):
        g.forward(x=X)
        masks.append(g["drop"].value.copy())
    np.random.seed(99)  # the resumed stream comes from the file, not the global state
    resumed = gn.load(path, into=graph_with_dropout(dtype))
    for mask in masks:
        resumed.forward(x=X)
        np.testing.assert_array_equal(resumed["drop"].value, mask)
