"""The attention kernels (cpp/attention.h, behind rnn_layers.attention_forward/backward)
against the numpy implementation they replaced and PyTorch, on hypothesis shapes: batch
axes that broadcast, S != L, dv != d, head sizes that are no multiple of a vector width,
masks (random, causal, broadcast over queries or keys, rows with no allowed key), the
heads' transposed views read in place, operands whose last axis is strided (copied),
float32 and float64; numerical gradients in
float64; the same bits for any thread count."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphnet.gradient_check import eval_numerical_gradient_array, rel_error
from graphnet.kernels import _C
from graphnet.kernels import rnn_layers as R

from .test_avx2 import kernel_threads


pytestmark = pytest.mark.usefixtures("one_kernel_thread")

TOLERANCE = {np.float32: 2e-5, np.float64: 1e-12}


def reference(q, k, v, mask, dout):
    """The numpy forward and backward: out, weights, (dq, dk, dv) in the shapes of q, k, v."""
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    scores = batch + (q.shape[-2], k.shape[-2])
    full = None if mask is None else np.broadcast_to(mask, scores)
    scale = np.result_type(q, k).type(1 / np.sqrt(q.shape[-1]) if q.shape[-1] else 1)
    out, cache = R._attention_forward_numpy(q, k, v, full, scale)
    grads = R._attention_backward_numpy(dout, q, k, v, cache.weights, scale)
    return out, cache.weights, [R._sum_to(g, a.shape) for g, a in zip(grads, (q, k, v))]


def heads(x, H):
    """(N, T, H * d) -> the (N, H, T, d) view a head split makes: not contiguous."""
    N, T, D = x.shape
    return x.reshape(N, T, H, D // H).transpose(0, 2, 1, 3)


@st.composite
def problems(draw):
    """q, k, v (views or broadcast batch shapes), a mask (or None) and dout."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    S, L = draw(st.integers(1, 19)), draw(st.integers(1, 19))
    d, dv = draw(st.sampled_from([1, 3, 8, 16, 17, 33])), draw(st.sampled_from([1, 5, 8, 16, 24]))
    N, H = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))

    def operand(rows, cols):
        layout = draw(
            st.sampled_from(["full", "heads", "shared", "no batch", "strided", "transposed"])
        )
        if layout == "heads":
            return heads(rng.standard_normal((N, rows, H * cols)).astype(dtype), H)
        if layout == "strided":  # every other column: no contiguous axis
            return rng.standard_normal((N, H, rows, 2 * cols)).astype(dtype)[..., ::2]
        if layout == "transposed":
            return rng.standard_normal((N, H, cols, rows)).astype(dtype).swapaxes(-1, -2)
        lead = {"full": (N, H), "shared": (N, 1), "no batch": ()}[layout]
        return rng.standard_normal(lead + (rows, cols)).astype(dtype)

    q, k, v = operand(S, d), operand(L, d), operand(L, dv)
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    kind = draw(st.sampled_from([None, "random", "causal", "keys", "empty rows"]))
    mask = {
        None: None,
        "random": rng.random(batch + (S, L)) < 0.6,
        "causal": np.tril(np.ones((S, L), bool)),
        # a padding mask: per sequence, broadcast over heads and queries
        "keys": rng.random(batch[:1] + (1,) * len(batch[1:]) + (1, L)) < 0.7,
        "empty rows": (rng.random((S, L)) < 0.5) & (rng.random((S, 1)) < 0.6),
    }[kind]
    dout = rng.standard_normal(batch + (S, dv)).astype(dtype)
    return q, k, v, mask, dout


@settings(max_examples=150, deadline=None)
@given(problems())
def test_kernel_matches_numpy(problem):
    q, k, v, mask, dout = problem
    out, cache = R.attention_forward(q, k, v, mask)
    grads = R.attention_backward(dout, cache)
    want_out, want_weights, want_grads = reference(q, k, v, mask, dout)
    tol = TOLERANCE[q.dtype.type]
    assert out.dtype == q.dtype and out.shape == want_out.shape
    # weights over the whole batch (numpy's q kᵀ left out the axes only v has)
    want_weights = np.broadcast_to(want_weights, cache.weights.shape)
    np.testing.assert_allclose(cache.weights, want_weights, rtol=tol, atol=tol)
    np.testing.assert_allclose(out, want_out, rtol=tol, atol=tol)
    for got, want, a in zip(grads, want_grads, (q, k, v)):
        assert got.shape == a.shape and got.dtype == a.dtype
        np.testing.assert_allclose(got, want, rtol=tol * 10, atol=tol * 10)


@settings(max_examples=30, deadline=None)
@given(problems())
def test_same_bits_on_any_number_of_threads(problem):
    q, k, v, mask, dout = problem
    results = []
    for threads in (1, 2, 3):
        with kernel_threads(threads):
            out, cache = R.attention_forward(q, k, v, mask)
            results.append((out, cache.weights) + R.attention_backward(dout, cache))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "N, H, T, d, dtype",
    [
        (5, 3, 64, 32, np.float64),  # 16 KB a pair: staged two heads at a time, then one
        (2, 4, 32, 16, np.float32),  # the zoo transformer's heads: all four at once
        (3, 2, 128, 40, np.float64),  # 40 KB a pair: too large to stage, read in place
        # odd sizes: rows of 15 floats (T = 33: pairs of 9 x 9 are too little work to
        # split across threads, attention.cpp's kProductsPerThread)
        (7, 5, 33, 3, np.float32),
    ],
)
def test_heads_staged_together_give_the_bits_of_contiguous_operands(N, H, T, d, dtype):
    """A head split's pairs side by side in the same rows are staged a run at a time (cut by
    the staging budget and by the threads' ranges of pairs): the same bits as the operands
    made contiguous, for any number of threads, and numpy's values."""
    rng = np.random.default_rng(9)
    q, k, v, dout = (heads(rng.standard_normal((N, T, H * d)).astype(dtype), H) for _ in "qkvd")
    runs = []
    for threads in (1, 2, 3):
        with kernel_threads(threads):
            for operands in ((q, k, v, dout), [np.ascontiguousarray(a) for a in (q, k, v, dout)]):
                out, cache = R.attention_forward(*operands[:3])
                runs.append((out, cache.weights) + R.attention_backward(operands[3], cache))
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)
    want_out, want_weights, want_grads = reference(q, k, v, None, dout)
    tol = TOLERANCE[dtype]
    np.testing.assert_allclose(runs[0][0], want_out, rtol=tol, atol=tol)
    for got, want in zip(runs[0][2:], want_grads):
        np.testing.assert_allclose(got, want, rtol=tol * 10, atol=tol * 10)


@pytest.mark.parametrize(
    "switch",
    [
        (_C.set_avx512_matmul, _C.avx512_matmul_active),  # the AVX2 products instead
        (_C.set_avx512_activations, _C.avx512_activations_active),  # the AVX2 exps
        (_C.set_avx2_activations, _C.avx2_activations_active),  # the C library's exps
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_other_vector_paths_agree(switch, dtype):
    set_on, active = switch
    rng = np.random.default_rng(6)
    q, k, v = (heads(rng.standard_normal((3, 21, 2 * 40)).astype(dtype), 2) for _ in "qkv")
    mask = np.tril(np.ones((21, 21), bool))
    dout = rng.standard_normal(q.shape[:-1] + (40,)).astype(dtype)
    results = []
    was = active()
    try:
        for on in (True, False):
            set_on(on)
            out, cache = R.attention_forward(q, k, v, mask)
            results.append((out, cache.weights) + R.attention_backward(dout, cache))
    finally:
        set_on(was)
    tol = TOLERANCE[dtype]
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("mask_kind", ["causal", "empty rows", "keys"])
def test_gradients_numerically_with_masks(mask_kind):
    rng = np.random.default_rng(3)
    q = heads(rng.standard_normal((2, 5, 3 * 4)), 3)  # views, as a head split makes them
    k, v = heads(rng.standard_normal((2, 6, 3 * 4)), 3), rng.standard_normal((2, 1, 6, 7))
    mask = {
        "causal": np.tril(np.ones((5, 6), bool)),
        "empty rows": np.tril(np.ones((5, 6), bool), -1),  # query 0 sees no key
        "keys": np.array([[1, 1, 0, 1, 0, 1], [0, 0, 0, 0, 0, 0]], bool)[:, None, None],
    }[mask_kind]
    out, cache = R.attention_forward(q, k, v, mask)
    dout = rng.standard_normal(out.shape)
    grads = R.attention_backward(dout, cache)
    args = [q.copy(), k.copy(), v.copy()]
    for grad, i in zip(grads, range(3)):
        numeric = eval_numerical_gradient_array(
            lambda _: R.attention_forward(*args, mask)[0], args[i], dout
        )
        assert rel_error(grad, numeric) < 1e-6, (i, rel_error(grad, numeric))


def test_output_is_laid_out_like_the_queries():
    """A head split's (N, H, T, d) view in, an (N, H, T, dv) result whose transpose back
    to (N, T, H, dv) is contiguous: the heads' merge after attention copies nothing."""
    rng = np.random.default_rng(4)
    q, k, v = (heads(rng.standard_normal((3, 7, 4 * 8)).astype(np.float32), 4) for _ in "qkv")
    out, cache = R.attention_forward(q, k, v)
    assert out.transpose(0, 2, 1, 3).flags.c_contiguous
    dq, dk, dv = R.attention_backward(np.ones_like(out), cache)
    for grad in (dq, dk, dv):
        assert grad.transpose(0, 2, 1, 3).flags.c_contiguous


@pytest.mark.parametrize(
    "layout", ["heads", "reversed heads", "broadcast heads", "contiguous", "one head"]
)
def test_outputs_the_binding_makes_are_laid_out_as_numpy_would_and_hold_the_same_bits(layout):
    """Outputs left to the binding (None) are np.empty_like(operand, shape=...)'s layout,
    or C order where that is a broadcast's or its rows would not be contiguous; the numbers
    are those written into outputs given."""
    rng = np.random.default_rng(6)
    N, H, T, d = 2, 3, 5, 4
    if layout == "heads":
        q = heads(rng.standard_normal((N, T, H * d)), H)
    elif layout == "reversed heads":
        q = rng.standard_normal((N, H, T, d))[:, ::-1]
    elif layout == "broadcast heads":
        q = np.broadcast_to(rng.standard_normal((N, 1, T, d)), (N, H, T, d))
    elif layout == "one head":
        q = heads(rng.standard_normal((1, T, d)), 1)
    else:
        q = rng.standard_normal((N, H, T, d))
    k, v = q.copy(), rng.standard_normal(q.shape)

    def like(a):  # the layout the wrapper's empty_like gave before the binding made it
        if 0 not in a.strides[:-2]:
            made = np.empty_like(a, shape=a.shape)
            if made.strides[-1] == made.itemsize:
                return made
        return np.empty(a.shape, a.dtype)

    out, weights = _C.attention_forward(q, k, v, None, 0.5, None, None)
    given_out, given_weights = like(q), np.empty(q.shape[:-1] + (T,))
    _C.attention_forward(q, k, v, None, 0.5, given_weights, given_out)
    assert out.strides == given_out.strides and weights.strides == given_weights.strides
    assert out.tobytes("A") == given_out.tobytes("A")
    assert weights.tobytes() == given_weights.tobytes()
    dout = rng.standard_normal(q.shape)
    grads = _C.attention_backward(q, k, v, weights, dout, 0.5, None, None, None)
    given = [like(a) for a in (q, k, v)]
    _C.attention_backward(q, k, v, weights, dout, 0.5, *given)
    for made, want in zip(grads, given):
        assert made.strides == want.strides and made.tobytes("A") == want.tobytes("A")


def test_the_kernel_refuses_arrays_it_cannot_take():
    """The binding checks what the wrapper arranges: shapes, dtypes, outputs of their own."""
    q = np.ones((2, 3, 4), np.float32)
    weights, out = np.empty((2, 3, 3), np.float32), np.empty((2, 3, 4), np.float32)
    _C.attention_forward(q, q, q, None, 0.5, weights, out)
    bad = [
        (q, q, q[:1], None, weights, out),  # another batch shape
        (q, q, q.astype(np.float64), None, weights, out),
        (q, q, q, np.ones((2, 3, 3), bool), weights, out),  # mask not as bytes
        (q, q, q, None, weights[:, :, :2], out),
        (q, q[:, :2], q[:, :2], None, np.empty((2, 3, 2), np.float32), out),  # (S, L): not (L, S)
        (q, q, q, None, weights, np.broadcast_to(out[:1], out.shape)),  # writes overlap
        (q[..., 0], q[..., 0], q[..., 0], None, weights, out),
    ]
    for q_, k_, v_, mask, w_, out_ in bad:
        with pytest.raises(ValueError):
            _C.attention_forward(q_, k_, v_, mask, 0.5, w_, out_)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_nan_or_infinite_score_makes_its_query_nan_as_numpy(dtype):
    """The softmax down a column of the transposed scores: a NaN or +inf score makes that
    query's weights and output NaN (inf - inf), as in numpy's softmax; the other queries,
    in the same vector of columns or in the last, partial one, are untouched."""
    rng = np.random.default_rng(7)
    q, k, v = (rng.standard_normal((2, 21, 8)).astype(dtype) for _ in "qkv")
    q[0, 3, 2], q[1, 17, 0], q[1, 20, 5] = np.nan, np.inf, np.nan
    out, cache = R.attention_forward(q, k, v)
    with np.errstate(invalid="ignore"):  # numpy's NaN (inf / inf) warns
        want_out, want_weights, _ = reference(q, k, v, None, np.ones_like(out))
    np.testing.assert_array_equal(np.isnan(cache.weights), np.isnan(want_weights))
    np.testing.assert_array_equal(np.isnan(out), np.isnan(want_out))
    tol = TOLERANCE[dtype]
    finite = ~np.isnan(want_out)
    np.testing.assert_allclose(out[finite], want_out[finite], rtol=tol, atol=tol)


def test_the_weights_are_a_view_of_the_kernels_transposed_array():
    """cache.weights reads (..., S, L), as the numpy forward's; the kernel's own array is
    (..., L, S) per pair and C-contiguous, and a cache holding the numpy forward's weights
    (float16 in, then float32 gradients) still goes back through the kernel."""
    rng = np.random.default_rng(8)
    q, k, v = (rng.standard_normal(shape) for shape in ((2, 5, 4), (2, 7, 4), (2, 7, 3)))
    out, cache = R.attention_forward(q, k, v)
    assert cache.weights.shape == (2, 5, 7)
    assert np.swapaxes(cache.weights, -1, -2).flags.c_contiguous
    np.testing.assert_allclose(cache.weights.sum(axis=-1), 1.0)
    dout = rng.standard_normal(out.shape)
    numpy_cache = R._AttentionCache(q, k, v, np.ascontiguousarray(cache.weights), cache.scale)
    for a, b in zip(R.attention_backward(dout, cache), R.attention_backward(dout, numpy_cache)):
        np.testing.assert_array_equal(a, b)


def test_empty_batch_and_no_keys():
    out, cache = R.attention_forward(np.ones((0, 2, 3)), np.ones((0, 4, 3)), np.ones((0, 4, 5)))
    assert out.shape == (0, 2, 5)
    assert all(g.shape[0] == 0 for g in R.attention_backward(out, cache))
    out, cache = R.attention_forward(np.ones((2, 3)), np.ones((0, 3)), np.ones((0, 4)))
    assert out.shape == (2, 4) and not out.any()
    dq, dk, dv = R.attention_backward(np.ones((2, 4)), cache)
    assert not dq.any() and dk.shape == (0, 3) and dv.shape == (0, 4)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("causal", [False, True])
def test_heads_match_torch(dtype, causal):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(5)
    q, k, v = (heads(rng.standard_normal((4, 9, 4 * 16)).astype(dtype), 4) for _ in "qkv")
    mask = np.tril(np.ones((9, 9), bool)) if causal else None
    out, cache = R.attention_forward(q, k, v, mask)
    dout = rng.standard_normal(out.shape).astype(dtype)
    grads = R.attention_backward(dout, cache)
    tq, tk, tv = (torch.from_numpy(a.copy()).requires_grad_() for a in (q, k, v))
    t_out = F.scaled_dot_product_attention(tq, tk, tv, is_causal=causal)
    t_out.backward(torch.from_numpy(dout))
    tol = TOLERANCE[dtype] * 10
    np.testing.assert_allclose(out, t_out.detach().numpy(), rtol=tol, atol=tol)
    for mine, theirs in zip(grads, (tq, tk, tv)):
        np.testing.assert_allclose(mine, theirs.grad.numpy(), rtol=tol, atol=tol)
