"""graphnet._C.batched_matmul, the matmul gate's product of stacks, against np.matmul, naive
loops and the per-matrix _C.matmul calls it replaced (the same bits, on 1-3 threads), and
its sums over broadcast batch axes (a broadcast operand's gradient) against the stack's."""

import functools
import tracemalloc

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from graphnet.kernels import _C

from .test_matmul import on_threads


def op(x, transpose):
    return np.swapaxes(x, -1, -2) if transpose else x


def per_matrix(a, b, transpose_a, transpose_b):
    """What the gate ran before: _C.matmul on each matrix of the broadcast stacks."""
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a, b = np.broadcast_to(a, batch + a.shape[-2:]), np.broadcast_to(b, batch + b.shape[-2:])
    out = np.empty(batch + (op(a, transpose_a).shape[-2], op(b, transpose_b).shape[-1]), a.dtype)
    for index in np.ndindex(*batch):
        out[index] = _C.matmul(a[index], b[index], transpose_a, transpose_b)
    return out


def naive(a, b):
    """np.matmul by loops over the batch and the three indices, in float64."""
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a, b = np.broadcast_to(a, batch + a.shape[-2:]), np.broadcast_to(b, batch + b.shape[-2:])
    out = np.zeros(batch + (a.shape[-2], b.shape[-1]))
    for index in np.ndindex(*batch):
        for i in range(a.shape[-2]):
            for j in range(b.shape[-1]):
                for p in range(a.shape[-1]):
                    out[index + (i, j)] += float(a[index + (i, p)]) * float(b[index + (p, j)])
    return out


def stored(rng, shape, dtype, transpose, layout):
    """An operand whose op() has `shape`: C-contiguous, or a strided or Fortran-ordered view."""
    shape = shape[:-2] + shape[-2:][::-1] if transpose else shape
    if layout == "strided":
        return rng.standard_normal(shape[:-1] + (2 * shape[-1],)).astype(dtype)[..., ::2]
    x = rng.standard_normal(shape).astype(dtype)
    return np.asfortranarray(x) if layout == "fortran" else x


@st.composite
def stacks(draw):
    """Shapes of a and b: batch axes that broadcast (either side may lack some or hold 1),
    matrices of 0-40 rows, columns and inner indices."""
    batch = draw(st.lists(st.integers(0, 5), max_size=3))
    a_batch = [draw(st.sampled_from([1, n])) for n in batch][draw(st.integers(0, len(batch))) :]
    b_batch = [draw(st.sampled_from([1, n])) for n in batch][draw(st.integers(0, len(batch))) :]
    size = st.sampled_from([0, 1, 2, 3, 7, 16, 17, 32, 40])
    m, k, n = draw(size), draw(size), draw(size)
    return tuple(a_batch) + (m, k), tuple(b_batch) + (k, n)


@settings(max_examples=80, deadline=None)
@given(
    stacks(),
    st.booleans(),
    st.booleans(),
    st.sampled_from([np.float32, np.float64]),
    st.sampled_from(["contiguous", "strided", "fortran"]),
    st.integers(0, 2**16),
)
@example(((4, 16, 32), (4, 32, 16)), False, True, np.float32, "contiguous", 0)
@example(((2, 1, 3, 1, 5), (4, 1, 5, 1)), True, False, np.float64, "strided", 1)
def test_the_same_bits_as_the_per_matrix_products_on_any_thread_count(
    shapes, transpose_a, transpose_b, dtype, layout, seed
):
    rng = np.random.default_rng(seed)
    a = stored(rng, shapes[0], dtype, transpose_a, layout)
    b = stored(rng, shapes[1], dtype, transpose_b, "contiguous")
    results = on_threads(lambda: _C.batched_matmul(a, b, transpose_a, transpose_b))
    expected = np.matmul(op(a, transpose_a).astype(np.float64), op(b, transpose_b))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert results[0].dtype == dtype and results[0].shape == expected.shape
    np.testing.assert_allclose(results[0], expected, rtol=tol, atol=tol * 40)
    before = per_matrix(a, b, transpose_a, transpose_b)
    for result in results:
        np.testing.assert_array_equal(result, before)


def summed_in_order(products, summed_to):
    """The documented sum: for each result, its products (per_matrix's) added one at a
    time in the batch's row-major order, from +0."""
    batch = products.shape[:-2]
    aligned = (1,) * (len(batch) - len(summed_to)) + tuple(summed_to)
    out = np.zeros(aligned + products.shape[-2:], products.dtype)
    for index in np.ndindex(*batch):
        target = tuple(i if size != 1 else 0 for i, size in zip(index, aligned))
        out[target] = out[target] + products[index]
    return out.reshape(tuple(summed_to) + products.shape[-2:])


@st.composite
def summed_stacks(draw):
    """stacks() and the batch shape of one operand broadcast along some of the product's
    axes (its gradient's): each axis kept or 1, leading axes kept or dropped."""
    shapes = draw(stacks())
    batch = np.broadcast_shapes(shapes[0][:-2], shapes[1][:-2])
    kept = [draw(st.sampled_from([1, n])) for n in batch]
    return shapes, tuple(kept[draw(st.integers(0, len(batch))) :])


@settings(max_examples=80, deadline=None)
@given(
    summed_stacks(),
    st.booleans(),
    st.booleans(),
    st.sampled_from([np.float32, np.float64]),
    st.sampled_from(["contiguous", "strided", "fortran"]),
    st.integers(0, 2**16),
)
@example((((6, 16, 32), (6, 32, 16)), ()), False, True, np.float32, "contiguous", 0)
@example((((4, 3, 5, 2), (1, 3, 2, 7)), (1, 3)), True, False, np.float64, "strided", 1)
def test_summed_to_adds_the_products_in_the_batch_order_on_any_thread_count(
    shapes_summed, transpose_a, transpose_b, dtype, layout, seed
):
    """A broadcast operand's gradient: the per-matrix products summed over the axes it was
    broadcast along, in the batch's order from +0, the same bits on 1-3 threads; np.sum's
    bits over the stack too (but for 1 x 1 matrices, which numpy sums pairwise)."""
    shapes, summed_to = shapes_summed
    rng = np.random.default_rng(seed)
    a = stored(rng, shapes[0], dtype, transpose_a, layout)
    b = stored(rng, shapes[1], dtype, transpose_b, "contiguous")
    results = on_threads(lambda: _C.batched_matmul(a, b, transpose_a, transpose_b, summed_to))
    products = per_matrix(a, b, transpose_a, transpose_b)
    expected = summed_in_order(products, summed_to)
    assert results[0].dtype == dtype and results[0].shape == expected.shape
    for result in results:
        np.testing.assert_array_equal(result, expected)
    summed_axes = len(products.shape) - 2 - len(summed_to)
    by_numpy = products.sum(axis=tuple(range(summed_axes))) if summed_axes else products
    stretched = tuple(i for i, n in enumerate(summed_to) if n == 1 and by_numpy.shape[i] != 1)
    by_numpy = by_numpy.sum(axis=stretched, keepdims=True) if stretched else by_numpy
    if expected.shape[-2:] != (1, 1) and not (summed_axes and stretched):  # numpy's one pass
        np.testing.assert_array_equal(results[0], by_numpy)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    exact = np.matmul(op(a, transpose_a).astype(np.float64), op(b, transpose_b))
    aligned = (1,) * summed_axes + summed_to
    exact = exact.sum(axis=tuple(i for i, n in enumerate(aligned) if n == 1), keepdims=True)
    np.testing.assert_allclose(results[0], exact.reshape(expected.shape), rtol=tol, atol=tol * 200)


def test_summed_to_sums_an_axis_of_no_matrices_to_zeros():
    empty = _C.batched_matmul(np.ones((0, 2, 3)), np.ones((3, 4)), False, False, (1,))
    assert empty.shape == (1, 2, 4) and not empty.any() and not np.signbit(empty).any()
    none = _C.batched_matmul(np.ones((5, 0, 3)), np.ones((3, 4)), False, False, ())
    assert none.shape == (0, 4)


def test_summed_to_adds_infinities_and_nans_as_np_sum():
    a = np.array([[[np.inf, 1.0]], [[-np.inf, 0.0]], [[np.nan, 2.0]], [[1.0, -0.0]]])
    b = np.array([[[1.0], [1.0]]])
    products = per_matrix(a, b, False, False)
    for summed_to in [(), (1,)]:
        with np.errstate(invalid="ignore"):  # inf - inf
            by_numpy = products.sum(axis=0).reshape(summed_to + (1, 1))
        np.testing.assert_array_equal(_C.batched_matmul(a, b, False, False, summed_to), by_numpy)
    np.testing.assert_array_equal(_C.batched_matmul(a[:2], b, False, False, ()), [[np.nan]])


def test_summed_to_holds_one_product_per_thread_not_the_stack():
    """x (64, 4, 16, 64) @ w (4, 64, 64) broadcast over 64 samples: w's gradient x^T dout
    summed to (4, 64, 64) allocates that (64 KB) and one product, not the 4 MB stack."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((64, 4, 16, 64)).astype(np.float32)
    dout = rng.standard_normal((64, 4, 16, 64)).astype(np.float32)
    tracemalloc.start()
    try:
        dw = _C.batched_matmul(x, dout, True, False, (4,))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert dw.shape == (4, 64, 64) and peak < 2 * dw.nbytes
    np.testing.assert_array_equal(dw, summed_in_order(per_matrix(x, dout, True, False), (4,)))


@pytest.mark.parametrize("transpose_a,transpose_b", [(False, False), (True, False), (False, True)])
def test_against_naive_loops_with_broadcast_batch_axes(transpose_a, transpose_b):
    rng = np.random.default_rng(3)
    a = rng.standard_normal((2, 1, 5, 3))
    b = rng.standard_normal((3, 3, 4))
    a_stored, b_stored = op(a, transpose_a).copy(), op(b, transpose_b).copy()
    out = _C.batched_matmul(a_stored, b_stored, transpose_a, transpose_b)
    np.testing.assert_allclose(out, naive(a, b), rtol=1e-13, atol=1e-13)


def test_a_broadcast_operand_is_read_in_place():
    """k broadcast over 64 heads (4 MB if copied) times 64 single columns: the result
    (64 x 256 x 1) is all the call allocates."""
    rng = np.random.default_rng(4)
    k = np.broadcast_to(rng.standard_normal((256, 64)).astype(np.float32), (64, 256, 64))
    q = rng.standard_normal((64, 64, 1)).astype(np.float32)
    tracemalloc.start()
    try:
        out = _C.batched_matmul(k, q)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * out.nbytes
    np.testing.assert_array_equal(out, per_matrix(k, q, False, False))


def test_many_threads_split_whole_matrices_and_a_few_split_each_product():
    """3 products of 300 x 300 (fewer than 4 threads: each split across them) and 256 of 16
    x 16 (split by matrix): the same bits on 1-4 threads, and as the per-matrix calls."""
    rng = np.random.default_rng(5)
    for shapes in [((3, 300, 40), (40, 300)), ((256, 16, 32), (256, 32, 16))]:
        a, b = (rng.standard_normal(s).astype(np.float32) for s in shapes)
        before = per_matrix(a, b, False, False)
        for result in on_threads(functools.partial(_C.batched_matmul, a, b), (1, 2, 3, 4)):
            np.testing.assert_array_equal(result, before)


def test_empty_batches_and_no_inner_indices():
    a, b = np.ones((0, 3, 4), np.float32), np.ones((2, 1, 4, 5), np.float32)
    assert _C.batched_matmul(a, b).shape == (2, 0, 3, 5)
    out = _C.batched_matmul(np.ones((2, 3, 0)), np.ones((1, 0, 4)))
    assert out.shape == (2, 3, 4) and not out.any() and not np.signbit(out).any()
    # Matrices past the 32-bit BLAS in an empty batch: nothing to multiply, no error.
    huge = np.broadcast_to(np.float32(1), (0, 2**20, 2**20))
    assert _C.batched_matmul(huge, np.ones((2**20, 1), np.float32)).shape == (0, 2**20, 1)


def test_infinities_and_nans_as_the_per_matrix_products():
    a = np.array([[[np.inf, 1.0], [np.nan, -0.0]], [[-np.inf, 0.0], [2.0, -0.0]]])
    b = np.array([[[0.0, 1.0], [-0.0, -1.0]]])
    np.testing.assert_array_equal(_C.batched_matmul(a, b), per_matrix(a, b, False, False))


def test_an_unaligned_operand_is_copied_and_multiplied():
    raw = np.zeros(2 * 3 * 4 * 8 + 1, np.uint8)[1:]
    a = np.frombuffer(raw.data, np.float64).reshape(2, 3, 4)  # off its items' alignment
    a[...] = np.arange(24).reshape(2, 3, 4)
    assert not a.flags.aligned
    b = np.ones((4, 2))
    np.testing.assert_array_equal(_C.batched_matmul(a, b[np.newaxis]), np.matmul(a, b))


HUGE = np.broadcast_to(np.float32(0), (1, 2**16, 2**16))
HOSTILE = [
    (np.ones(3), np.ones((3, 2)), "rank >= 2"),
    (np.ones((2, 3, 4)), np.ones((3, 4, 2)), "batch axes do not broadcast"),
    (np.ones((2, 3, 4)), np.ones((2, 5, 2)), r"op\(a\) is 3 x 4 but op\(b\) is 5 x 2"),
    (np.ones((2, 3), np.float32), np.ones((3, 2)), "has dtype float64 but a has float32"),
    (np.ones((2, 3), int), np.ones((3, 2), int), "must be float32 or float64"),
    (HUGE, HUGE[..., :1], "too large for the 32-bit BLAS"),
]


@pytest.mark.parametrize("a,b,words", HOSTILE)
def test_hostile_arguments_are_refused_before_any_allocation(a, b, words):
    with pytest.raises(ValueError, match=words):
        _C.batched_matmul(a, b)


@pytest.mark.parametrize(
    "summed_to,words",
    [
        ((1, 2, 3), "more than the product's batch"),
        ((2,), "not the batch"),
        ((-1,), "not the batch"),
        ((0, 3), "not the batch"),
        ((2**63 - 1,), "not the batch"),
        ((2**64,), "does not fit in 64 bits"),
        ((1.0,), "must be an int"),
        (3, "must be a tuple"),
    ],
)
def test_a_summed_to_that_is_not_the_batch_summed_is_refused(summed_to, words):
    a, b = np.ones((4, 3, 2, 5)), np.ones((3, 5, 2))  # the batch (4, 3)
    with pytest.raises(ValueError, match=words):
        _C.batched_matmul(a, b, False, False, summed_to)


def test_a_sum_of_more_products_than_memory_holds_is_refused_not_run():
    """Broadcast views ask for 3 * 2**40 products summed into 3 small results: refused at
    once (the stack of them would not fit in memory), not multiplied for hours."""
    a = np.broadcast_to(np.float32(1), (2**40, 1, 4, 5))
    b = np.ones((3, 5, 2), np.float32)
    with pytest.raises(ValueError, match="more than this machine's memory"):
        _C.batched_matmul(a, b, False, False, (3,))


def test_an_output_beyond_memory_is_an_error_not_a_crash():
    lots = np.broadcast_to(np.float32(0), (2**30, 2**30, 1, 1))
    with pytest.raises((ValueError, MemoryError)):
        _C.batched_matmul(lots, lots)
