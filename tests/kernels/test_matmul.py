"""graphnet._C.matmul, the product under the affine gate, against numpy."""

import contextlib
import functools
import operator

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from graphnet.kernels import _C


def on_threads(product, counts=(1, 2, 3)):
    """[product() on each thread count], graphnet's count restored after."""
    before = _C.get_num_threads()
    try:
        results = []
        for threads in counts:
            _C.set_num_threads(threads)
            results.append(product())
    finally:
        _C.set_num_threads(before)
    return results


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize("transpose_b", [False, True])
@pytest.mark.parametrize(
    "m,n,k", [(50, 100, 8192 // 16), (1, 1, 1), (300, 7, 33), (5, 200, 3), (0, 4, 3), (4, 3, 0)]
)
def test_matmul_matches_numpy(dtype, tol, transpose_a, transpose_b, m, n, k):
    rng = np.random.default_rng(m * 1000 + n * 10 + k)
    a = rng.standard_normal((k, m) if transpose_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if transpose_b else (k, n)).astype(dtype)
    expected = (a.T if transpose_a else a).astype(np.float64) @ (b.T if transpose_b else b)
    out = _C.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b)
    assert out.dtype == dtype and out.shape == (m, n)
    np.testing.assert_allclose(out, expected, rtol=tol, atol=tol * max(1, k))


def test_matmul_takes_views_and_is_bitwise_equal_on_any_thread_count():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((64, 300)).astype(np.float32)[:, ::2]  # not contiguous
    b = np.asfortranarray(rng.standard_normal((150, 90)).astype(np.float32))
    results = on_threads(lambda: _C.matmul(a, b))
    np.testing.assert_allclose(results[0], a.astype(np.float64) @ b, rtol=1e-5, atol=1e-4)
    for other in results[1:]:
        np.testing.assert_array_equal(results[0], other)


@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize("m,n", [(2100, 30), (30, 2100), (6000, 20)])  # 4, 4 and 6 blocks
def test_large_products_are_bitwise_equal_on_any_thread_count(transpose_a, m, n):
    rng = np.random.default_rng(m + n)
    a = rng.standard_normal((40, m) if transpose_a else (m, 40)).astype(np.float32)
    b = rng.standard_normal((40, n)).astype(np.float32)
    results = on_threads(lambda: _C.matmul(a, b, transpose_a=transpose_a))
    expected = (a.T if transpose_a else a).astype(np.float64) @ b
    np.testing.assert_allclose(results[0], expected, rtol=1e-5, atol=1e-4)
    for other in results[1:]:
        np.testing.assert_array_equal(results[0], other)


@pytest.mark.parametrize(
    "a,b,kwargs,words",
    [
        (np.ones((2, 3)), np.ones((4, 5)), {}, r"op\(a\) is 2 x 3 but op\(b\) is 4 x 5"),
        (np.ones((2, 3)), np.ones((3,)), {}, r"matmul b must be 2-D"),
        (np.ones((2, 3), np.float32), np.ones((3, 2)), {}, "has dtype float64 but a has float32"),
        (np.ones((2, 3), int), np.ones((3, 2), int), {}, "must be float32 or float64"),
    ],
)
def test_matmul_errors_name_the_shapes(a, b, kwargs, words):
    with pytest.raises(ValueError, match=words):
        _C.matmul(a, b, **kwargs)


# ---- the AVX-512 kernel (gemm_avx512.h): any batch times any B over k >= 32 ----


def avx512_cpu():
    with open("/proc/cpuinfo") as info:
        return " avx512f" in info.read() and _C.x86_kernels_built


@contextlib.contextmanager
def avx512_matmul(enabled):
    _C.set_avx512_matmul(enabled)
    try:
        yield
    finally:
        _C.set_avx512_matmul(True)


def test_the_avx512_kernel_runs_on_this_cpu():
    """Otherwise the tests below would only exercise OpenBLAS and the AVX2 kernel."""
    assert _C.avx512_matmul_active() == avx512_cpu()
    with avx512_matmul(False):
        assert not _C.avx512_matmul_active()


# Up to this many rows an untransposed product may take gemm_few_rows_avx512 (below),
# whose sums run in an order of their own: the tiles' properties are checked past it.
FEW_ROWS = 4


def rows_a_pass(k, n, dtype):
    """The rows of A that gemm_few_rows_avx512 serves in one pass over B (k x n); a B
    within L1 (32 KB) goes to the tiles."""
    if k * n * np.dtype(dtype).itemsize < 32 * 1024:
        return 1
    vectors = -(-n // (16 if dtype == np.float32 else 8))
    if vectors > 16:
        return FEW_ROWS
    return 1 if vectors == 1 else min(FEW_ROWS, 28 // (-(-8 // vectors) * vectors))


def assert_product(out, a, b, dtype):
    """Within the rounding of a k-term sum: |error| <= k * eps * sum |a_ik b_kj|."""
    k = a.shape[1]
    exact = a.astype(np.float64) @ b.astype(np.float64)
    bound = 2 * k * np.finfo(dtype).eps * (np.abs(a).astype(np.float64) @ np.abs(b))
    assert out.dtype == dtype and out.shape == exact.shape
    assert np.all(np.abs(out - exact) <= bound + np.finfo(dtype).tiny)


# Rows 7..12 and 17 cover the 8-row tile's remainders with B read in place (up to 4 rows
# run gemm_few_rows_avx512 instead: below), 64, 71 and 263
# (past one 256-row chunk) with B's panels copied; columns the 16-float / 8-double
# vectors' and the 3-vector panel's edges, 256 and 512 the rows 2 KB apart (copied at any
# batch); k the 256-deep blocks' edges.
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m", [1, 2, 7, 8, 9, 10, 11, 12, 17, 64, 71, 263])
@pytest.mark.parametrize("n", [1, 7, 8, 9, 15, 16, 17, 24, 25, 33, 47, 48, 49, 100, 256, 512])
def test_avx512_matmul_every_tile_remainder(dtype, m, n):
    rng = np.random.default_rng(m * 1000 + n)
    a = rng.standard_normal((m, 257)).astype(dtype)
    b = rng.standard_normal((257, n)).astype(dtype)
    out = _C.matmul(a, b)
    assert_product(out, a, b, dtype)
    with avx512_matmul(False):  # OpenBLAS / AVX2: the same numbers within rounding
        np.testing.assert_allclose(out, _C.matmul(a, b), rtol=1e-4, atol=1e-4)


@settings(max_examples=60, deadline=None)
@given(
    m=st.integers(0, 90),
    n=st.integers(1, 600),
    k=st.integers(32, 700),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_avx512_matmul_random_shapes_and_views(m, n, k, dtype, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, 2 * k)).astype(dtype)[:, ::2]  # a view, not contiguous
    b = np.asfortranarray(rng.standard_normal((k, n)).astype(dtype))
    out = _C.matmul(a, b)
    assert_product(out, a, b, dtype)
    np.testing.assert_array_equal(out, _C.matmul(np.ascontiguousarray(a), np.ascontiguousarray(b)))


# B's panels are copied side by side for 64 rows or more of a thread's block, or when B's
# rows are a multiple of 2 KB apart (512 float32 or 256 float64 columns); they are read in
# place otherwise. Rows 100 on 1 thread (copied) against 2 (50 each, read in place), 3
# columns' blocks for 5 rows on 2 or more threads: the same bits either way.
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "m,n,k",
    [
        (61, 100, 3072),
        (100, 100, 300),
        (100, 512, 257),
        (300, 256, 40),
        (5, 130, 600),
        (9, 1000, 33),
    ],
)
def test_avx512_matmul_is_bitwise_equal_on_any_thread_count(dtype, m, n, k):
    rng = np.random.default_rng(m + n + k)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    before = _C.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3, 7):
            _C.set_num_threads(threads)
            results.append(_C.matmul(a, b))
    finally:
        _C.set_num_threads(before)
    assert_product(results[0], a, b, dtype)
    for other in results[1:]:
        np.testing.assert_array_equal(results[0], other)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize("transpose_b", [False, True])
@pytest.mark.parametrize("n,k", [(100, 3072), (1, 7), (513, 2), (24, 4096)])
def test_one_row_takes_the_vector_path(dtype, tol, transpose_a, transpose_b, n, k):
    """m = 1 (one sample through an affine layer) runs BLAS's gemv: the same product, and
    the same bits on any thread count."""
    rng = np.random.default_rng(n + k)
    a = rng.standard_normal((k, 1) if transpose_a else (1, k)).astype(dtype)
    b = rng.standard_normal((n, k) if transpose_b else (k, n)).astype(dtype)
    expected = (a.T if transpose_a else a).astype(np.float64) @ (b.T if transpose_b else b)
    before = _C.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            _C.set_num_threads(threads)
            results.append(_C.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b))
    finally:
        _C.set_num_threads(before)
    assert results[0].dtype == dtype and results[0].shape == (1, n)
    np.testing.assert_allclose(results[0], expected, rtol=tol, atol=tol * max(1, k))
    np.testing.assert_array_equal(results[0], results[1])


# One row times B runs the AVX-512 row kernel (gemm_few_rows_avx512): rows of up to 16
# vectors summed whole in registers (n up to 256 float32, 128 float64) in blocks of rows,
# with as many sums over rows apart as eight FMA chains need; wider rows eight at a time,
# then one at a time; k and n across those, the vectors' edges, the blocks' (64 rows, or
# k / 32) and the narrow/wide boundary. The same B read again is read the other way (its
# rows last read first): the calls below alternate, and each gives the same bits. A few
# rows (2 to 4, as many as one pass over B serves) times a B past L1 (32 KB) take it too,
# B read once for them all: each row of the product is then the row's own, bit for bit,
# whatever the rows beside it; rows past one pass take the tiles.
@settings(max_examples=250, deadline=None)
@given(
    m=st.integers(1, 6),
    n=st.integers(0, 600),
    k=st.integers(0, 2500),
    dtype=st.sampled_from([np.float32, np.float64]),
    view=st.booleans(),
    seed=st.integers(0, 2**16),
)
@example(m=1, n=1, k=1, dtype=np.float64, view=False, seed=0)
@example(m=1, n=512, k=3072, dtype=np.float64, view=True, seed=1)
@example(m=1, n=100, k=3072, dtype=np.float32, view=False, seed=2)
@example(m=1, n=10, k=8192, dtype=np.float32, view=True, seed=3)
@example(m=1, n=256, k=9, dtype=np.float32, view=False, seed=4)
@example(m=1, n=257, k=17, dtype=np.float32, view=False, seed=5)
@example(m=1, n=129, k=7, dtype=np.float64, view=False, seed=6)
@example(m=1, n=16, k=2049, dtype=np.float32, view=False, seed=7)
@example(m=2, n=512, k=3072, dtype=np.float32, view=False, seed=8)
@example(m=4, n=512, k=3072, dtype=np.float64, view=True, seed=9)
@example(m=2, n=100, k=3072, dtype=np.float64, view=False, seed=10)
@example(m=3, n=64, k=513, dtype=np.float32, view=False, seed=11)
@example(m=2, n=10, k=4096, dtype=np.float64, view=False, seed=12)
@example(m=3, n=257, k=40, dtype=np.float32, view=True, seed=13)
def test_few_rows_random_shapes_against_numpy_and_openblas(m, n, k, dtype, view, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, 2 * n))[:, ::2] if view else rng.standard_normal((k, n))
    b = b.astype(dtype, copy=False)
    bias = rng.standard_normal(n).astype(dtype)
    product = _C.matmul(a, b)
    assert_product(product, a, b, dtype)
    out = _C.matmul(a, b, bias=bias)
    np.testing.assert_array_equal(out, product + bias)  # the bias added after, as numpy does
    for result in on_threads(lambda: _C.matmul(a, b, bias=bias)):
        np.testing.assert_array_equal(result, out)
    if avx512_cpu() and 1 < m <= rows_a_pass(k, n, dtype):
        alone = np.concatenate([_C.matmul(a[i : i + 1], b, bias=bias) for i in range(m)])
        np.testing.assert_array_equal(out, alone)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    with avx512_matmul(False):  # OpenBLAS's gemv and gemm: the same numbers within rounding
        np.testing.assert_allclose(out, _C.matmul(a, b, bias=bias), rtol=tol, atol=tol * k)


# ---- the AVX-512 kernel with a transposed operand: dout w^T and x^T dout ----


def stored(rng, shape, transposed, dtype):
    """A (rows, columns) operand, stored transposed when asked (its op is then the view)."""
    rows, columns = shape
    array = rng.standard_normal((columns, rows) if transposed else shape).astype(dtype)
    return array, (array.T if transposed else array)


# Rows past one 8-row tile and one 256-row chunk (one row is gemv's: above); columns the
# vectors' and panels' edges (96: the last in-place A^T, 97 and up: A^T's rows copied);
# k the 16 / 8-wide square blocks of the transposed B and the 256-deep blocks' edges.
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("transposes", [(True, False), (False, True), (True, True)])
@pytest.mark.parametrize("m", [2, 7, 9, 64, 263])
@pytest.mark.parametrize("n", [1, 15, 17, 48, 96, 97, 150])
@pytest.mark.parametrize("k", [32, 45, 257])
def test_avx512_transposed_products_every_edge(dtype, transposes, m, n, k):
    rng = np.random.default_rng(m * 10_000 + n * 10 + k)
    a, op_a = stored(rng, (m, k), transposes[0], dtype)
    b, op_b = stored(rng, (k, n), transposes[1], dtype)
    out = _C.matmul(a, b, transpose_a=transposes[0], transpose_b=transposes[1])
    assert_product(out, op_a, op_b, dtype)
    if _C.avx512_matmul_active() and m > FEW_ROWS:
        # the same product as on the operands copied untransposed, bit for bit: each sum
        # runs over k in the same order whichever way its operands were stored (OpenBLAS,
        # elsewhere, multiplies each layout with kernels of its own; see FEW_ROWS)
        plain = _C.matmul(np.ascontiguousarray(op_a), np.ascontiguousarray(op_b))
        np.testing.assert_array_equal(out, plain)


@settings(max_examples=60, deadline=None)
@given(
    m=st.integers(2, 300),
    n=st.integers(1, 300),
    k=st.integers(32, 600),
    transposes=st.sampled_from([(True, False), (False, True), (True, True)]),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
# A^T's rows copied a row of A at a time, past several 256-row chunks (an FC net's first
# weight gradient, x^T dout, at a batch of 64), and float64's one tile a vector
@example(m=1000, n=100, k=64, transposes=(True, False), dtype=np.float32, seed=0)
@example(m=531, n=130, k=300, transposes=(True, True), dtype=np.float64, seed=1)
def test_avx512_transposed_products_random_shapes(m, n, k, transposes, dtype, seed):
    rng = np.random.default_rng(seed)
    a, op_a = stored(rng, (m, k), transposes[0], dtype)
    b, op_b = stored(rng, (k, n), transposes[1], dtype)
    results = on_threads(
        lambda: _C.matmul(a, b, transpose_a=transposes[0], transpose_b=transposes[1])
    )
    assert_product(results[0], op_a, op_b, dtype)
    for other in results[1:]:
        np.testing.assert_array_equal(results[0], other)


# dout w^T at a batch of up to 64 rows and more columns than rows runs as C^T = w dout^T, a
# block of C^T's rows at a time (65536 // m // W * W of them: 1024 at 64 rows) transposed
# into C: past several blocks and their ragged ends, on any thread count (blocks of 256
# columns a thread), the same bits as the product of the operands copied untransposed.
@settings(max_examples=60, deadline=None)
@given(
    m=st.integers(2, 64),
    n=st.integers(3, 2600),
    k=st.integers(32, 600),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
@example(m=64, n=2100, k=257, dtype=np.float32, seed=0)
@example(m=63, n=2081, k=33, dtype=np.float64, seed=1)
@example(m=16, n=4096, k=256, dtype=np.float32, seed=2)
@example(m=2, n=3, k=32, dtype=np.float64, seed=3)
def test_wide_input_gradient_through_the_transpose(m, n, k, dtype, seed):
    rng = np.random.default_rng(seed)
    dout = rng.standard_normal((m, k)).astype(dtype)
    w = rng.standard_normal((n, k)).astype(dtype)  # stored as the layer's (inputs, outputs)
    results = on_threads(lambda: _C.matmul(dout, w, transpose_b=True))
    assert_product(results[0], dout, w.T, dtype)
    for other in results[1:]:
        np.testing.assert_array_equal(results[0], other)
    if _C.avx512_matmul_active() and m > FEW_ROWS:
        plain = _C.matmul(dout, np.ascontiguousarray(w.T))
        np.testing.assert_array_equal(results[0], plain)


# The last panel's columns past its whole vectors (at most 8 float32, 4 float64) are
# summed along the rows, a vector of rows at a time: each element's sum over k in the same
# order as in a vector of columns, so the product is the same, bit for bit, as the first n
# columns of the product with B padded to whole vectors (where no column is lone); every
# layout, rows past one 48-row pass and one 256-row chunk, k past one 256-deep block (the
# lone columns then added to), on any thread count.
@settings(max_examples=80, deadline=None)
@given(
    m=st.integers(2, 300),
    full=st.integers(0, 6),
    lone=st.integers(1, 8),
    k=st.integers(32, 600),
    transposes=st.sampled_from([(False, False), (True, False), (False, True), (True, True)]),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
@example(m=3200, full=4, lone=1, k=128, transposes=(False, False), dtype=np.float32, seed=0)
@example(m=128, full=4, lone=1, k=3200, transposes=(True, False), dtype=np.float32, seed=1)
@example(m=50, full=8, lone=1, k=128, transposes=(False, True), dtype=np.float64, seed=2)
@example(m=263, full=0, lone=4, k=257, transposes=(False, False), dtype=np.float64, seed=3)
def test_lone_columns_are_the_padded_products_bits(m, full, lone, k, transposes, dtype, seed):
    width = 16 if dtype == np.float32 else 8
    n = full * width + min(lone, width - 1)
    rng = np.random.default_rng(seed)
    a, op_a = stored(rng, (m, k), transposes[0], dtype)
    b, op_b = stored(rng, (k, n), transposes[1], dtype)
    kwargs = dict(transpose_a=transposes[0], transpose_b=transposes[1])
    results = on_threads(lambda: _C.matmul(a, b, **kwargs))
    assert_product(results[0], op_a, op_b, dtype)
    for other in results[1:]:
        np.testing.assert_array_equal(results[0], other)
    if _C.avx512_matmul_active() and m > FEW_ROWS:
        padded = np.zeros((k, (full + 1) * width), dtype)
        padded[:, :n] = op_b
        np.testing.assert_array_equal(results[0], _C.matmul(op_a, padded)[:, :n])


# ---- the bias added to the AVX-512 kernel's tiles as they are stored ----


# The bias on the last block of the inner indices only (k past 256), on the lone columns
# past the last panel's vectors (65 columns; A transposed: up to 8 float32 / 4 float64),
# across the threads' splits of rows and (few rows) of columns; every path: the kernel,
# OpenBLAS, gemv for one row.
@settings(max_examples=80, deadline=None)
@given(
    m=st.integers(1, 1100),
    n=st.integers(1, 300),
    k=st.integers(0, 300),
    transposes=st.sampled_from([(False, False), (True, False), (False, True), (True, True)]),
    dtype=st.sampled_from([np.float32, np.float64]),
    avx512=st.booleans(),
    seed=st.integers(0, 2**16),
)
@example(m=2048, n=256, k=64, transposes=(False, False), dtype=np.float32, avx512=True, seed=0)
@example(m=300, n=4096, k=33, transposes=(False, False), dtype=np.float64, avx512=True, seed=1)
@example(m=3, n=5, k=0, transposes=(False, False), dtype=np.float32, avx512=True, seed=2)
@example(m=70, n=100, k=600, transposes=(False, True), dtype=np.float32, avx512=True, seed=3)
@example(m=100, n=65, k=40, transposes=(False, False), dtype=np.float32, avx512=True, seed=4)
@example(m=100, n=71, k=300, transposes=(True, False), dtype=np.float32, avx512=True, seed=5)
@example(m=50, n=67, k=520, transposes=(True, True), dtype=np.float64, avx512=True, seed=6)
@example(m=9, n=300, k=64, transposes=(False, False), dtype=np.float32, avx512=True, seed=7)
def test_biased_product_is_the_product_then_numpys_bias_add(
    m, n, k, transposes, dtype, avx512, seed
):
    rng = np.random.default_rng(seed)
    a, op_a = stored(rng, (m, k), transposes[0], dtype)
    b, op_b = stored(rng, (k, n), transposes[1], dtype)
    bias = rng.standard_normal(n).astype(dtype)
    bias[0] = -0.0  # 0 + -0 is +0, as numpy's add after a product of no terms gives
    kwargs = dict(transpose_a=transposes[0], transpose_b=transposes[1])
    before = _C.get_num_threads()
    try:
        with avx512_matmul(avx512):
            expected = _C.matmul(a, b, **kwargs)
            expected += bias  # numpy: each element's product rounded, then the bias added
            for threads in (1, 2, 3):
                _C.set_num_threads(threads)
                np.testing.assert_array_equal(_C.matmul(a, b, bias=bias, **kwargs), expected)
                # by position, as the gates pass them
                np.testing.assert_array_equal(_C.matmul(a, b, *transposes, bias), expected)
    finally:
        _C.set_num_threads(before)
    reference = op_a.astype(np.float64) @ op_b.astype(np.float64) + bias
    tol = 1e-12 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(expected, reference, rtol=tol, atol=tol * max(1, k))


# ---- column_sums: an affine's bias gradient ----


@settings(max_examples=80, deadline=None)
@given(
    m=st.integers(0, 700),
    n=st.integers(0, 1200),
    dtype=st.sampled_from([np.float32, np.float64]),
    view=st.booleans(),
    seed=st.integers(0, 2**16),
    avx512=st.booleans(),
)
@example(m=2048, n=256, dtype=np.float32, view=False, seed=0, avx512=True)
@example(m=2048, n=256, dtype=np.float32, view=False, seed=0, avx512=False)
@example(m=513, n=64 + 17, dtype=np.float64, view=False, seed=2, avx512=True)
@example(m=1, n=1, dtype=np.float64, view=False, seed=1, avx512=True)
@example(m=9, n=1, dtype=np.float32, view=False, seed=0, avx512=True)
def test_column_sums_are_numpys_bits_on_any_thread_count(m, n, dtype, view, seed, avx512):
    """Both paths (float32 on the AVX-512 kernel, and the portable loop that holds its
    sums in registers) in whole blocks of columns and the ragged last one."""
    rng = np.random.default_rng(seed)
    a = (rng.standard_normal((m, 2 * n)) * 10 ** rng.uniform(-3, 3, 2 * n)).astype(dtype)
    a = a[:, ::2] if view else a[:, :n]  # a strided view is copied to rows first
    if m and n > 1:
        a[:, 0] = -0.0  # a column of -0s sums to +0, as numpy's sum from 0 does
    if m and n > 3:  # an inf and a NaN go through the sums as through numpy's
        a[m // 2, 1], a[0, 2] = np.inf, np.nan
    expected = np.ascontiguousarray(a).sum(axis=0)
    if n == 1:  # numpy sums a lone column pairwise; the kernel, row by row as any other
        expected = np.array([functools.reduce(operator.add, a[:, 0], dtype(0))], dtype)
    before = _C.get_num_threads()
    try:
        with avx512_matmul(avx512):
            for threads in (1, 2, 3):
                _C.set_num_threads(threads)
                out = _C.column_sums(a)
                assert out.dtype == dtype and out.shape == (n,)
                np.testing.assert_array_equal(out, expected)
                assert np.array_equal(np.signbit(out), np.signbit(expected))
    finally:
        _C.set_num_threads(before)
    reference = a.astype(np.float64).sum(axis=0)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    scale = np.abs(a).astype(np.float64).sum(axis=0)
    finite = np.isfinite(reference)
    error = np.abs(out[finite] - reference[finite])
    assert np.all(error <= tol * max(1, m) * scale[finite] + np.finfo(dtype).tiny)


@pytest.mark.parametrize(
    "a,words",
    [
        (np.ones(3), "column_sums a"),
        (np.ones((2, 2, 2)), "column_sums a"),
        (np.ones((2, 3), np.int64), "float"),
    ],
)
def test_column_sums_refuses_what_it_cannot_sum(a, words):
    with pytest.raises(ValueError, match=words):
        _C.column_sums(a)
