"""graphnet.rnn_layers (assignment 3's functions and attention) against numerical
gradients in float64, sums written out by hand, and PyTorch's RNN, LSTM and
scaled_dot_product_attention. The whole-sequence kernels against loops of the step
functions: tests/kernels/test_recurrent_kernels.py; the course's own check values:
tests/course/test_rnn_check_values.py."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphnet import rnn_layers as R
from graphnet.kernels import _C
from graphnet.gradient_check import (
    eval_numerical_gradient,
    eval_numerical_gradient_array,
    rel_error,
)
from .test_avx2 import kernel_threads

pytestmark = pytest.mark.usefixtures("one_kernel_thread")


def rng(seed=0):
    return np.random.default_rng(seed)


def assert_numeric_grads(forward, args, dout, grads, wrt, tol=1e-6):
    """grads[j] is the analytic gradient of sum(forward(*args)[0] * dout) wrt args[wrt[j]]."""
    for j, i in enumerate(wrt):
        numeric = eval_numerical_gradient_array(lambda _: forward(*args)[0], args[i], dout)
        assert grads[j].shape == args[i].shape
        assert rel_error(grads[j], numeric) < tol, (i, rel_error(grads[j], numeric))


def recurrent_args(r, N, T, D, H, gates):
    x = r.standard_normal((N, T, D)) if T is not None else r.standard_normal((N, D))
    return [
        x,
        r.standard_normal((N, H)),
        0.5 * r.standard_normal((D, gates * H)),
        0.5 * r.standard_normal((H, gates * H)),
        r.standard_normal(gates * H),
    ]


# ------------------------------------------------------------------ numerical gradients


def test_rnn_step_backward_numerically():
    r = rng(1)
    args = recurrent_args(r, 4, None, 5, 6, 1)
    out, cache = R.rnn_step_forward(*args)
    dout = r.standard_normal(out.shape)
    grads = R.rnn_step_backward(dout, cache)
    assert_numeric_grads(R.rnn_step_forward, args, dout, grads, range(5))


@pytest.mark.parametrize("cell,gates", [("rnn", 1), ("lstm", 4)])
@pytest.mark.parametrize("T", [1, 7])
def test_sequence_backward_numerically(cell, gates, T):
    forward, backward = getattr(R, f"{cell}_forward"), getattr(R, f"{cell}_backward")
    r = rng(2)
    args = recurrent_args(r, 3, T, 4, 5, gates)
    out, cache = forward(*args)
    dout = r.standard_normal(out.shape)
    assert_numeric_grads(forward, args, dout, backward(dout, cache), range(5))


def test_lstm_step_backward_numerically():
    r = rng(3)
    x, prev_h, Wx, Wh, b = recurrent_args(r, 3, None, 4, 5, 4)
    args = [x, prev_h, r.standard_normal(prev_h.shape), Wx, Wh, b]
    next_h, next_c, cache = R.lstm_step_forward(*args)
    dnext_h, dnext_c = r.standard_normal(next_h.shape), r.standard_normal(next_c.shape)
    grads = R.lstm_step_backward(dnext_h, dnext_c, cache)

    def both(*a):  # one output whose gradient is dnext_h and dnext_c side by side
        h, c, _ = R.lstm_step_forward(*a)
        return np.concatenate([h, c], axis=1), None

    assert_numeric_grads(both, args, np.concatenate([dnext_h, dnext_c], axis=1), grads, range(6))


def test_word_embedding_backward_adds_repeated_words():
    r = rng(5)
    x = np.array([[0, 3, 3, 1], [3, 1, 0, 0]])  # word 2 never appears, 3 three times
    W = r.standard_normal((5, 6))
    out, cache = R.word_embedding_forward(x, W)
    dout = r.standard_normal(out.shape)
    dW = R.word_embedding_backward(dout, cache)
    numeric = eval_numerical_gradient_array(lambda _: R.word_embedding_forward(x, W)[0], W, dout)
    assert rel_error(dW, numeric) < 1e-9
    assert not dW[2].any() and not dW[4].any()
    np.testing.assert_allclose(dW[3], dout[0, 1] + dout[0, 2] + dout[1, 0])


@settings(max_examples=40, deadline=None)
@given(
    N=st.integers(0, 9),
    T=st.integers(1, 40),
    V=st.integers(1, 70),
    D=st.integers(1, 40),
    dtype=st.sampled_from([np.float32, np.float64]),
    index_dtype=st.sampled_from([np.int64, np.int32, np.uint8]),
    seed=st.integers(0, 2**16),
)
def test_word_embedding_backward_sums_in_position_order(N, T, V, D, dtype, index_dtype, seed):
    """The C++ scatter-add's sums are np.add.at's, bit for bit, for any index dtype."""
    r = rng(seed)
    x = r.integers(0, V, (N, T)).astype(index_dtype)
    W = r.standard_normal((V, D)).astype(dtype)
    out, cache = R.word_embedding_forward(x, W)
    dout = r.standard_normal(out.shape).astype(dtype)
    expected = np.zeros_like(W)
    np.add.at(expected, x.ravel().astype(np.int64), dout.reshape(-1, D))
    dW = R.word_embedding_backward(dout, cache)
    assert dW.dtype == dtype
    np.testing.assert_array_equal(dW, expected)


@settings(max_examples=40, deadline=None)
@given(
    N=st.integers(0, 5),
    T=st.integers(0, 30),
    V=st.integers(1, 70),
    D=st.integers(1, 20),
    index_dtype=st.sampled_from([np.int64, np.int32, np.int8, np.uint8, np.uint64]),
    W_dtype=st.sampled_from([np.float32, np.float64, np.int64]),
    bad=st.sampled_from([None, "negative", "V", "huge"]),
    seed=st.integers(0, 2**16),
)
def test_word_embedding_forward_is_fancy_indexing_and_refuses_any_index_outside(
    N, T, V, D, index_dtype, W_dtype, bad, seed
):
    """The lookup is W[x], bit for bit, for any integer dtype (int64 indices into float
    vectors through _C.gather_rows, the rest through numpy); an index below 0 (which take
    and W[x] would count from the end), from V on, or an unsigned one from 2**63 on
    (negative as intp) is a ValueError."""
    r = rng(seed)
    x = r.integers(0, min(V, 127), (N, T)).astype(index_dtype)
    W = (r.standard_normal((V, D)) * 10).astype(W_dtype)
    if bad is None or x.size == 0:
        out, cache = R.word_embedding_forward(x, W)
        assert out.shape == (N, T, D) and out.flags.c_contiguous
        assert out.dtype == (W.dtype if W.dtype.kind == "f" else np.float64)
        np.testing.assert_array_equal(out, W[x])
        assert cache[0] is x and cache[1:] == (W.shape, out.dtype)
        return
    unsigned = np.dtype(index_dtype).kind == "u"
    worst = {
        "negative": 0 if unsigned else -1,
        "V": V if np.iinfo(index_dtype).max >= V else 0,
        "huge": np.iinfo(index_dtype).max if unsigned else np.iinfo(index_dtype).min,
    }[bad]
    x.flat[r.integers(x.size)] = worst
    if x.min() >= 0 and x.max() < V:
        return
    with pytest.raises(ValueError, match=r"word indices must lie in \[0, "):
        R.word_embedding_forward(x, W)


@pytest.mark.parametrize("index", [-1, 5, 2**62])
@pytest.mark.parametrize(
    "binding, call",
    [
        ("scatter_add_rows", lambda i: _C.scatter_add_rows(i, np.ones((2, 3), np.float32), 5)),
        ("gather_rows", lambda i: _C.gather_rows(i, np.ones((5, 3), np.float32))),
    ],
)
def test_the_row_bindings_refuse_indices_outside_the_rows(binding, call, index):
    message = f"{binding}: index {index} at position 1 is outside \\[0, 5\\)"
    with pytest.raises(ValueError, match=message):
        call(np.array([0, index]))


def test_temporal_affine_backward_numerically():
    r = rng(6)
    args = [r.standard_normal((2, 3, 4)), r.standard_normal((4, 5)), r.standard_normal(5)]
    out, cache = R.temporal_affine_forward(*args)
    dout = r.standard_normal(out.shape)
    assert_numeric_grads(
        R.temporal_affine_forward, args, dout, R.temporal_affine_backward(dout, cache), range(3)
    )


@pytest.mark.parametrize(
    "dtypes", [("float32",) * 3, ("float64",) * 3, ("float32", "float64", "float32")]
)
def test_temporal_affine_is_the_product_plus_the_bias(dtypes):
    """One float dtype: the bias added by the product's kernel, the numbers of numpy's
    x @ w + b to rounding and of out += b bit for bit; mixed: numpy's promotion."""
    r = rng(8)
    x, w, b = (
        r.standard_normal(shape).astype(dtype)
        for shape, dtype in zip(((3, 5, 7), (7, 9), (9,)), dtypes)
    )
    out, cache = R.temporal_affine_forward(x, w, b)
    assert out.shape == (3, 5, 9) and out.dtype == np.result_type(*dtypes)
    product = _C.matmul(x.reshape(15, 7), w.astype(x.dtype)) if len(set(dtypes)) == 1 else None
    if product is not None:
        product += b
        assert out.reshape(15, 9).tobytes() == product.tobytes()
    np.testing.assert_allclose(out, x @ w + b, rtol=1e-5)
    assert cache[3] is out


@settings(max_examples=60, deadline=None)
@given(
    N=st.integers(0, 3),
    T=st.integers(1, 5),
    D=st.integers(1, 40),
    M=st.integers(1, 40),
    dtype=st.sampled_from(["float32", "float64"]),
    x_view=st.booleans(),
    dout_view=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_temporal_affine_is_the_products_it_was(N, T, D, M, dtype, x_view, dout_view, seed):
    """Arrays of one float dtype go to the products' bindings without the checks: the same
    bits as the checked path's calls (matmul, then the column sums), numpy's formulas to
    rounding, for contiguous inputs and transposed views alike."""
    r = rng(seed)
    x = r.standard_normal((T, N, D) if x_view else (N, T, D)).astype(dtype)
    x = x.transpose(1, 0, 2) if x_view else x
    w, b = r.standard_normal((D, M)).astype(dtype), r.standard_normal(M).astype(dtype)
    out, cache = R.temporal_affine_forward(x, w, b)
    rows = np.ascontiguousarray(x).reshape(N * T, D)
    expected = _C.matmul(rows, w)
    expected += b
    assert out.dtype == np.dtype(dtype) and out.shape == (N, T, M)
    assert out.reshape(N * T, M).tobytes() == expected.tobytes()
    dout = r.standard_normal((T, N, M) if dout_view else (N, T, M)).astype(dtype)
    dout = dout.transpose(1, 0, 2) if dout_view else dout
    dx, dw, db = R.temporal_affine_backward(dout, cache)
    dout_rows = np.ascontiguousarray(dout).reshape(N * T, M)
    assert dx.shape == x.shape and dw.shape == w.shape and db.shape == b.shape
    assert dx.dtype == dw.dtype == db.dtype == np.dtype(dtype)
    assert dx.reshape(N * T, D).tobytes() == _C.matmul(dout_rows, w, False, True).tobytes()
    assert dw.tobytes() == _C.matmul(rows, dout_rows, True, False).tobytes()
    assert db.tobytes() == dout_rows.sum(axis=0).tobytes()
    tol = 1e-4 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(out, x.astype(np.float64) @ w + b, rtol=tol, atol=tol)
    np.testing.assert_allclose(dx, dout.astype(np.float64) @ w.T, rtol=tol, atol=tol)
    np.testing.assert_allclose(dw, rows.T.astype(np.float64) @ dout_rows, rtol=tol, atol=tol)


def test_temporal_affine_backward_names_what_it_refuses_and_promotes_a_mix():
    """An upstream gradient of another shape: the checked path's error; of another dtype:
    the checked path's promotion to the output's dtype, as before."""
    r = rng(9)
    x, w, b = r.standard_normal((2, 3, 4)), r.standard_normal((4, 5)), r.standard_normal(5)
    out, cache = R.temporal_affine_forward(x, w, b)
    with pytest.raises(ValueError, match=r"temporal_affine_backward: dout has shape \(2, 5, 3\)"):
        R.temporal_affine_backward(np.zeros((2, 5, 3)), cache)
    grads = R.temporal_affine_backward(np.ones((2, 3, 5), np.float32), cache)
    assert all(g.dtype == np.float64 for g in grads)
    np.testing.assert_allclose(grads[0], np.ones((2, 3, 5)) @ w.T)
    with pytest.raises(ValueError, match="has 4 features but w has shape"):
        R.temporal_affine_forward(
            x.astype(np.float32), np.zeros((5, 6), np.float32), np.zeros(6, np.float32)
        )
    with pytest.raises(ValueError, match=r"b has shape \(4,\), expected \(5,\)"):
        R.temporal_affine_forward(x, w, np.zeros(4))


def test_temporal_softmax_loss_numerically_and_by_hand():
    r = rng(7)
    x = r.standard_normal((4, 5, 6))
    y = r.integers(6, size=(4, 5))
    mask = r.random((4, 5)) > 0.4
    loss, dx = R.temporal_softmax_loss(x, y, mask)
    numeric = eval_numerical_gradient(
        lambda _: R.temporal_softmax_loss(x, y, mask)[0], x, verbose=False
    )
    assert rel_error(dx, numeric) < 1e-7
    by_hand = (
        sum(
            -np.log(np.exp(x[n, t, y[n, t]]) / np.exp(x[n, t]).sum())
            for n in range(4)
            for t in range(5)
            if mask[n, t]
        )
        / 4
    )
    assert loss == pytest.approx(by_hand, rel=1e-12)
    assert not dx[~mask].any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_masked_step_has_no_loss_and_no_gradient_whatever_its_scores(dtype, bad):
    """A padded step counts for nothing: an inf or a NaN among its scores changes neither
    the loss nor any gradient (its own is 0; it was NaN, which a backward carries into
    every weight before it)."""
    r = rng(20)
    x = r.standard_normal((3, 4, 5)).astype(dtype)
    y = r.integers(5, size=(3, 4))
    mask = r.random((3, 4)) < 0.6
    mask[0, 1] = mask[2] = False  # a padded step, a sequence of padding only
    clean_loss, clean_dx = R.temporal_softmax_loss(x, y, mask)
    x[0, 1, :2] = x[2, :, 3] = bad
    loss, dx = R.temporal_softmax_loss(x, y, mask)
    assert loss == clean_loss
    assert dx.tobytes() == clean_dx.tobytes()
    assert not dx[~mask].any()


def test_temporal_softmax_loss_verbose_prints_shapes(capsys):
    R.temporal_softmax_loss(
        np.zeros((2, 3, 4)), np.zeros((2, 3), int), np.ones((2, 3), bool), verbose=True
    )
    assert "(6, 4)" in capsys.readouterr().out


def attention_args(r, lead=(2, 3), S=4, L=5, d=6, dv=3):
    return (
        r.standard_normal(lead + (S, d)),
        r.standard_normal(lead + (L, d)),
        r.standard_normal(lead + (L, dv)),
    )


@pytest.mark.parametrize("masked", [False, True])
def test_attention_backward_numerically(masked):
    r = rng(8)
    q, k, v = attention_args(r)
    mask = r.random((4, 5)) > 0.3 if masked else None
    out, cache = R.attention_forward(q, k, v, mask)
    dout = r.standard_normal(out.shape)
    assert_numeric_grads(
        lambda *a: R.attention_forward(*a, mask),
        [q, k, v],
        dout,
        R.attention_backward(dout, cache),
        range(3),
    )


def test_attention_sums_broadcast_gradients():
    """One set of keys and values shared by every head (fan-out through broadcasting)."""
    r = rng(9)
    q = r.standard_normal((2, 3, 4, 6))
    k, v = r.standard_normal((2, 1, 5, 6)), r.standard_normal((5, 3))
    out, cache = R.attention_forward(q, k, v)
    assert out.shape == (2, 3, 4, 3)
    dout = r.standard_normal(out.shape)
    assert_numeric_grads(
        R.attention_forward, [q, k, v], dout, R.attention_backward(dout, cache), range(3)
    )


def test_attention_weights_rows_sum_to_one_and_respect_the_mask():
    r = rng(10)
    q, k, v = attention_args(r)
    mask = np.tril(np.ones((4, 5), bool))
    mask[0] = False  # query 0 may attend to nothing
    out, cache = R.attention_forward(q, k, v, mask)
    np.testing.assert_allclose(cache.weights[..., 1:, :].sum(axis=-1), 1.0)
    assert not cache.weights[..., ~mask].any()
    assert not out[..., 0, :].any() and np.isfinite(out).all()
    dq, dk, dv = R.attention_backward(np.ones_like(out), cache)
    assert np.isfinite(dq).all() and not dq[..., 0, :].any()


# ------------------------------------------------------------------ dtypes and edge cases


@pytest.mark.parametrize("cell,gates", [("rnn", 1), ("lstm", 4)])
def test_float32_in_float32_out_close_to_float64(cell, gates):
    forward, backward = getattr(R, f"{cell}_forward"), getattr(R, f"{cell}_backward")
    r = rng(13)
    args = recurrent_args(r, 4, 9, 5, 6, gates)
    dh = r.standard_normal((4, 9, 6))
    h64, cache64 = forward(*args)
    h32, cache32 = forward(*[a.astype(np.float32) for a in args])
    assert h32.dtype == np.float32
    np.testing.assert_allclose(h32, h64, rtol=1e-4, atol=1e-5)
    for g32, g64 in zip(backward(dh.astype(np.float32), cache32), backward(dh, cache64)):
        assert g32.dtype == np.float32
        np.testing.assert_allclose(g32, g64, rtol=1e-3, atol=1e-4)


def test_mixed_precision_computes_in_float64():
    r = rng(14)
    x, h0, Wx, Wh, b = recurrent_args(r, 2, 3, 4, 5, 1)
    h, _ = R.rnn_forward(x.astype(np.float32), h0, Wx, Wh, b)
    assert h.dtype == np.float64


@pytest.mark.parametrize("cell,gates", [("rnn", 1), ("lstm", 4)])
@pytest.mark.parametrize("N,T", [(0, 4), (3, 0), (0, 0)])
def test_empty_batches_and_sequences(cell, gates, N, T):
    forward, backward = getattr(R, f"{cell}_forward"), getattr(R, f"{cell}_backward")
    x, h0, Wx, Wh, b = recurrent_args(rng(15), N, T, 3, 2, gates)
    h, cache = forward(x, h0, Wx, Wh, b)
    assert h.shape == (N, T, 2)
    dx, dh0, dWx, dWh, db = backward(np.ones_like(h), cache)
    assert dx.shape == x.shape and dh0.shape == h0.shape
    assert not (dh0.any() or dWx.any() or dWh.any() or db.any())
    assert (dWx.shape, dWh.shape, db.shape) == (Wx.shape, Wh.shape, b.shape)


def test_empty_caption_batch_has_zero_loss():
    loss, dx = R.temporal_softmax_loss(
        np.zeros((0, 3, 4)), np.zeros((0, 3), int), np.zeros((0, 3), bool)
    )
    assert loss == 0.0 and dx.shape == (0, 3, 4)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: R.rnn_forward(
                np.zeros((2, 3, 4)),
                np.zeros((3, 5)),
                np.zeros((4, 5)),
                np.zeros((5, 5)),
                np.zeros(5),
            ),
            r"rnn_forward: x of shape \(2, 3, 4\)",
        ),
        (
            lambda: R.rnn_forward(
                np.zeros((2, 4)), np.zeros((2, 5)), np.zeros((4, 5)), np.zeros((5, 5)), np.zeros(5)
            ),
            r"x must be 3-D \(N, T, D\)",
        ),
        (
            lambda: R.lstm_forward(
                np.zeros((2, 3, 4)),
                np.zeros((2, 5)),
                np.zeros((4, 5)),
                np.zeros((5, 20)),
                np.zeros(20),
            ),
            r"Wx has shape \(4, 5\), expected \(4, 20\)",
        ),
        (
            lambda: R.lstm_step_forward(
                np.zeros((2, 4)),
                np.zeros((2, 5)),
                np.zeros((3, 5)),
                np.zeros((4, 20)),
                np.zeros((5, 20)),
                np.zeros(20),
            ),
            r"lstm_step_forward: prev_c has shape \(3, 5\)",
        ),
        (
            lambda: R.word_embedding_forward(np.array([[0, 5]]), np.zeros((5, 2))),
            r"word indices must lie in \[0, 5\)",
        ),
        (
            lambda: R.word_embedding_forward(np.array([[0.0, 1.0]]), np.zeros((5, 2))),
            "integer word indices",
        ),
        (
            lambda: R.temporal_softmax_loss(
                np.zeros((2, 3, 4)), np.zeros((2, 3), int), np.zeros((3, 2), bool)
            ),
            r"mask has shape \(3, 2\)",
        ),
        (
            lambda: R.temporal_softmax_loss(
                np.zeros((2, 3, 4)), np.full((2, 3), 4), np.ones((2, 3), bool)
            ),
            r"labels must lie in \[0, 4\)",
        ),
        (
            lambda: R.temporal_affine_forward(np.zeros((2, 3, 4)), np.zeros((5, 6)), np.zeros(6)),
            "has 4 features",
        ),
        (
            lambda: R.attention_forward(np.zeros((3, 4)), np.zeros((5, 3)), np.zeros((5, 2))),
            "same feature size",
        ),
        (
            lambda: R.attention_forward(
                np.zeros((3, 4)), np.zeros((5, 4)), np.zeros((5, 2)), np.ones((3, 4), bool)
            ),
            r"mask of shape \(3, 4\)",
        ),
        (
            lambda: R.attention_forward(
                np.zeros((3, 4)), np.zeros((5, 4)), np.zeros((5, 2)), np.ones((3, 5))
            ),
            "mask must be boolean",
        ),
    ],
)
def test_bad_input_names_the_function_and_shapes(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_attention_names_a_bad_upstream_gradient(dtype):
    q = np.zeros((2, 3, 5, 4), dtype)
    _, cache = R.attention_forward(q, q, q)
    with pytest.raises(ValueError, match=r"attention_backward: dout has shape \(2, 3, 4, 4\)"):
        R.attention_backward(np.zeros((2, 3, 4, 4), dtype), cache)


def test_bad_upstream_gradient_shape():
    _, cache = R.lstm_forward(
        np.zeros((2, 3, 4)), np.zeros((2, 5)), np.zeros((4, 20)), np.zeros((5, 20)), np.zeros(20)
    )
    with pytest.raises(ValueError, match=r"lstm_backward: dh has shape \(2, 5\)"):
        R.lstm_backward(np.zeros((2, 5)), cache)


# ------------------------------------------------------------------ PyTorch


def lstm_to_torch_order(w):
    """Our gate blocks (i, f, o, g) along the last axis -> PyTorch's (i, f, g, o)."""
    i, f, o, g = np.split(w, 4, axis=-1)
    return np.concatenate([i, f, g, o], axis=-1)


@pytest.mark.torch
@pytest.mark.parametrize("cell,gates", [("rnn", 1), ("lstm", 4)])
def test_sequence_layers_match_torch(cell, gates):
    torch = pytest.importorskip("torch")
    r = rng(16)
    x, h0, Wx, Wh, b = recurrent_args(r, 3, 7, 4, 5, gates)
    dh = r.standard_normal((3, 7, 5))
    h, cache = getattr(R, f"{cell}_forward")(x, h0, Wx, Wh, b)
    dx, dh0, dWx, dWh, db = getattr(R, f"{cell}_backward")(dh, cache)

    to_torch = lstm_to_torch_order if cell == "lstm" else (lambda w: w)
    layer = (torch.nn.LSTM if cell == "lstm" else torch.nn.RNN)(4, 5, batch_first=True)
    layer = layer.double()
    with torch.no_grad():
        layer.weight_ih_l0.copy_(torch.from_numpy(to_torch(Wx).T.copy()))
        layer.weight_hh_l0.copy_(torch.from_numpy(to_torch(Wh).T.copy()))
        layer.bias_ih_l0.copy_(torch.from_numpy(to_torch(b)))
        layer.bias_hh_l0.zero_()
    tx = torch.from_numpy(x).requires_grad_()
    th0 = torch.from_numpy(h0[None].copy()).requires_grad_()
    state = (th0, torch.zeros_like(th0)) if cell == "lstm" else th0
    th, _ = layer(tx, state)
    th.backward(torch.from_numpy(dh))

    np.testing.assert_allclose(h, th.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dh0, th0.grad.numpy()[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(to_torch(dWx).T, layer.weight_ih_l0.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(to_torch(dWh).T, layer.weight_hh_l0.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(to_torch(db), layer.bias_ih_l0.grad.numpy(), rtol=1e-10)


@pytest.mark.torch
@settings(max_examples=30, deadline=None)
@given(
    N=st.integers(1, 3),
    T=st.integers(1, 12),
    D=st.integers(1, 40),
    H=st.integers(1, 140),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_lstm_inference_on_one_thread_matches_two_and_torch(N, T, D, H, dtype, seed):
    """Few sequences, as at batch 1: one thread runs the steps outside a parallel region,
    two inside one; the same bits either way, lstm_forward's h, and nn.LSTM's."""
    torch = pytest.importorskip("torch")
    x, h0, Wx, Wh, b = [a.astype(dtype) for a in recurrent_args(rng(seed), N, T, D, H, 4)]
    with kernel_threads(1):
        one = R.lstm_inference(x, h0, Wx, Wh, b)
        kept, _ = R.lstm_forward(x, h0, Wx, Wh, b)
    with kernel_threads(2):
        two = R.lstm_inference(x, h0, Wx, Wh, b)
    assert one.tobytes() == two.tobytes() == kept.tobytes()

    layer = torch.nn.LSTM(D, H, batch_first=True).double()
    with torch.no_grad():
        layer.weight_ih_l0.copy_(torch.from_numpy(lstm_to_torch_order(Wx).T.astype(np.float64)))
        layer.weight_hh_l0.copy_(torch.from_numpy(lstm_to_torch_order(Wh).T.astype(np.float64)))
        layer.bias_ih_l0.copy_(torch.from_numpy(lstm_to_torch_order(b).astype(np.float64)))
        layer.bias_hh_l0.zero_()
        th0 = torch.from_numpy(h0[None].astype(np.float64))
        th, _ = layer(torch.from_numpy(x.astype(np.float64)), (th0, torch.zeros_like(th0)))
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(one, th.numpy(), rtol=tol, atol=tol)


def _step_reference(cell, x, prev_h, prev_c, Wx, Wh, b, dnext_h, dnext_c):
    """One step and its gradients written out in float64 numpy (the products as einsum
    sums): (next_h, next_c, dx, dprev_h, dprev_c, dWx, dWh, db), the c's None for 'rnn'."""
    x, prev_h, Wx, Wh, b, dnext_h = (a.astype(np.float64) for a in (x, prev_h, Wx, Wh, b, dnext_h))
    a = np.einsum("nd,dk->nk", x, Wx) + np.einsum("nh,hk->nk", prev_h, Wh) + b
    if cell == "rnn":
        next_h = np.tanh(a)
        da, next_c, dprev_c = dnext_h * (1 - next_h**2), None, None
    else:
        H = prev_h.shape[1]
        prev_c, dnext_c = prev_c.astype(np.float64), dnext_c.astype(np.float64)
        i, f, o = (1 / (1 + np.exp(-a[:, k * H : (k + 1) * H])) for k in range(3))
        g = np.tanh(a[:, 3 * H :])
        next_c = f * prev_c + i * g
        next_h = o * np.tanh(next_c)
        dc = dnext_c + dnext_h * o * (1 - np.tanh(next_c) ** 2)
        da = np.concatenate(
            [
                dc * g * i * (1 - i),
                dc * prev_c * f * (1 - f),
                dnext_h * np.tanh(next_c) * o * (1 - o),
                dc * i * (1 - g**2),
            ],
            axis=1,
        )
        dprev_c = dc * f
    dx, dprev_h = np.einsum("nk,dk->nd", da, Wx), np.einsum("nk,hk->nh", da, Wh)
    dWx, dWh = np.einsum("nd,nk->dk", x, da), np.einsum("nh,nk->hk", prev_h, da)
    return next_h, next_c, dx, dprev_h, dprev_c, dWx, dWh, da.sum(axis=0)


@settings(max_examples=40, deadline=None)
@given(
    cell=st.sampled_from(["rnn", "lstm"]),
    N=st.integers(1, 40),
    D=st.integers(1, 70),
    H=st.integers(1, 140),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_step_layers_on_random_shapes_match_the_sums_and_any_thread_count(
    cell, N, D, H, dtype, seed
):
    """The step functions (the rnn_step and lstm_step gates' kernels, a sampling loop's
    every word) against their sums in float64, and the same bits on one thread and two:
    their products run on graphnet's threads."""
    gates = 4 if cell == "lstm" else 1
    r = rng(seed)
    x, prev_h, Wx, Wh, b = [a.astype(dtype) for a in recurrent_args(r, N, None, D, H, gates)]
    prev_c, dnext_h, dnext_c = (r.standard_normal((N, H)).astype(dtype) for _ in range(3))

    def step():
        if cell == "rnn":
            next_h, cache = R.rnn_step_forward(x, prev_h, Wx, Wh, b)
            dx, dprev_h, dWx, dWh, db = R.rnn_step_backward(dnext_h, cache)
            return next_h, None, dx, dprev_h, None, dWx, dWh, db
        next_h, next_c, cache = R.lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b)
        dx, dprev_h, dprev_c, dWx, dWh, db = R.lstm_step_backward(dnext_h, dnext_c, cache)
        return next_h, next_c, dx, dprev_h, dprev_c, dWx, dWh, db

    with kernel_threads(1):
        one = step()
    with kernel_threads(2):
        two = step()
    expected = _step_reference(cell, x, prev_h, prev_c, Wx, Wh, b, dnext_h, dnext_c)
    tol = 2e-4 if dtype == np.float32 else 1e-10
    for ours, again, sums in zip(one, two, expected):
        if sums is None:
            continue
        assert ours.dtype == dtype and ours.tobytes() == again.tobytes()
        scale = max(1.0, float(np.abs(sums).max()))
        np.testing.assert_allclose(ours, sums, rtol=tol, atol=tol * scale)


@pytest.mark.torch
def test_step_layers_match_torch_cells():
    torch = pytest.importorskip("torch")
    r = rng(17)
    x, prev_h, Wx, Wh, b = recurrent_args(r, 3, None, 4, 5, 4)
    prev_c = r.standard_normal(prev_h.shape)
    next_h, next_c, _ = R.lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b)
    cell = torch.nn.LSTMCell(4, 5).double()
    with torch.no_grad():
        cell.weight_ih.copy_(torch.from_numpy(lstm_to_torch_order(Wx).T.copy()))
        cell.weight_hh.copy_(torch.from_numpy(lstm_to_torch_order(Wh).T.copy()))
        cell.bias_ih.copy_(torch.from_numpy(lstm_to_torch_order(b)))
        cell.bias_hh.zero_()
        th, tc = cell(torch.from_numpy(x), (torch.from_numpy(prev_h), torch.from_numpy(prev_c)))
    np.testing.assert_allclose(next_h, th.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(next_c, tc.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.torch
@pytest.mark.parametrize("masked", [False, True])
def test_attention_matches_torch(masked):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    r = rng(18)
    q, k, v = attention_args(r)
    mask = r.random((4, 5)) > 0.3 if masked else None
    mask = None if mask is None else mask | np.eye(4, 5, dtype=bool)  # no empty rows
    out, cache = R.attention_forward(q, k, v, mask)
    dout = r.standard_normal(out.shape)
    dq, dk, dv = R.attention_backward(dout, cache)
    tq, tk, tv = (torch.from_numpy(a).requires_grad_() for a in (q, k, v))
    t_out = F.scaled_dot_product_attention(
        tq, tk, tv, attn_mask=None if mask is None else torch.from_numpy(mask)
    )
    t_out.backward(torch.from_numpy(dout))
    np.testing.assert_allclose(out, t_out.detach().numpy(), rtol=1e-10, atol=1e-12)
    for mine, theirs in zip((dq, dk, dv), (tq, tk, tv)):
        np.testing.assert_allclose(mine, theirs.grad.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.torch
def test_embedding_and_loss_match_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    r = rng(19)
    words = r.integers(7, size=(3, 4))
    W = r.standard_normal((7, 5))
    scores = r.standard_normal((3, 4, 7))
    mask = r.random((3, 4)) > 0.3
    out, cache = R.word_embedding_forward(words, W)
    dout = r.standard_normal(out.shape)
    tW = torch.from_numpy(W).requires_grad_()
    t_out = F.embedding(torch.from_numpy(words), tW)
    t_out.backward(torch.from_numpy(dout))
    np.testing.assert_allclose(out, t_out.detach().numpy())
    np.testing.assert_allclose(R.word_embedding_backward(dout, cache), tW.grad.numpy(), rtol=1e-12)

    loss, dx = R.temporal_softmax_loss(scores, words, mask)
    ts = torch.from_numpy(scores).requires_grad_()
    per_step = F.cross_entropy(ts.reshape(12, 7), torch.from_numpy(words.ravel()), reduction="none")
    t_loss = (per_step * torch.from_numpy(mask.ravel())).sum() / 3
    t_loss.backward()
    assert loss == pytest.approx(t_loss.item(), rel=1e-12)
    np.testing.assert_allclose(dx, ts.grad.numpy(), rtol=1e-10, atol=1e-15)
