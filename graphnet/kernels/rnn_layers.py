"""Recurrent layers with the calling conventions of Stanford CS231n, assignment 3.

Every ``*_forward`` returns ``(out, cache)`` and every ``*_backward(dout, cache)`` returns
the gradients of its inputs in the order the forward pass took them (integer inputs get
none). Shapes follow the course: N is the batch size, T the number of time steps, D the
input size, H the hidden size, V the vocabulary size, M an output size. An LSTM stacks
its four gates in the course's order input, forget, output, block (i, f, o, g): Wx is
(D, 4H), Wh (H, 4H), b (4H,). The initial cell state of ``lstm_forward`` is zero.

The single-step functions are numpy, one screen each: the reference a student reads.
Their products run on graphnet's threads (matmul), never numpy's BLAS: the rnn_step and
lstm_step gates call them, a sampling loop once per word, and numpy's BLAS threads would
take the cores from the kernels' (a greedy caption of 16 words on one thread took 10-44x
PyTorch's time with them). The whole-sequence functions compute the same in one C++ kernel each
(cpp/recurrent.h), threaded over blocks of hidden units, with the same result for any
number of threads.

Floating inputs keep their precision (float32 in, float32 out; a mix computes in the
wider type; float16 in float32); integer inputs are promoted to float64.

``attention_forward/backward`` are scaled dot-product attention, softmax(q k^T / sqrt(d))
v over the last two axes, for the attention gate.
"""

import collections
import functools
import math
from typing import Optional, Tuple, cast

import numpy as np

from . import _C
from .geometry import MEMORY_BYTES, refuse_beyond_memory
from .layers import _check_ndim, _check_shape, _column_sums, _float_array, _upstream, matmul

__all__ = [
    "rnn_step_forward",
    "rnn_step_backward",
    "rnn_forward",
    "rnn_backward",
    "word_embedding_forward",
    "word_embedding_backward",
    "lstm_step_forward",
    "lstm_step_backward",
    "lstm_forward",
    "lstm_inference",
    "lstm_backward",
    "temporal_affine_forward",
    "temporal_affine_backward",
    "temporal_softmax_loss",
    "attention_forward",
    "attention_backward",
    "hidden_state_gradients",
]


# --------------------------------------------------------------------------- validation

_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))  # dtypes: a faster `in`


def _recurrent_inputs(fn, x, h, Wx, Wh, b, gates, x_layout, h_name):
    """Validate and cast a recurrent layer's inputs to one float dtype.

    x: x_layout ("(N, D)" or "(N, T, D)"); h: (N, H); Wx: (D, gates*H); Wh: (H, gates*H);
    b: (gates*H,). Returns the five arrays, all of the widest float dtype among them.
    h_name: the hidden state's argument name (prev_h, h0), as the errors say it.
    """
    arrays = [x, h, Wx, Wh, b]
    same = _one_kernel_dtype(arrays)
    if not same:
        arrays = [
            _float_array(a, fn, name) for a, name in zip(arrays, ("x", h_name, "Wx", "Wh", "b"))
        ]
        x, h, Wx, Wh, b = arrays
    _check_ndim(fn, "x", x, len(x_layout.split(",")), x_layout)
    _check_ndim(fn, h_name, h, 2, "hidden state (N, H)")
    _check_ndim(fn, "Wx", Wx, 2, f"weights (D, {gates}H)" if gates > 1 else "weights (D, H)")
    N, H = h.shape
    if x.shape[0] != N:
        raise ValueError(
            f"{fn}: x of shape {x.shape} holds {x.shape[0]} sequences but the "
            f"hidden state {h_name} of shape {h.shape} holds {N}"
        )
    _check_shape(fn, "Wx", Wx, (x.shape[-1], gates * H))
    _check_shape(fn, "Wh", Wh, (H, gates * H))
    _check_shape(fn, "b", b, (gates * H,))
    if same:
        return arrays
    dtype = np.result_type(np.float32, *arrays)
    return [a.astype(dtype, copy=False) for a in arrays]


def _one_kernel_dtype(arrays):
    """Whether the arrays are ndarrays of one dtype the kernels take: then _float_array
    and the cast to their common dtype would return them as they are."""
    first = arrays[0]
    if type(first) is not np.ndarray or first.dtype not in _KERNEL_DTYPES:
        return False
    for a in arrays:
        if type(a) is not np.ndarray or a.dtype != first.dtype:
            return False
    return True


def _sigmoid(x):
    """1 / (1 + exp(-x)) without overflow: exp only ever sees -|x|."""
    z = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + z), z / (1 + z))


def _affine_grads(da, x, prev_h, Wx, Wh):
    """Gradients of a = x @ Wx + prev_h @ Wh + b given da: dx, dprev_h, dWx, dWh, db."""
    return (
        matmul(da, Wx, transpose_b=True),
        matmul(da, Wh, transpose_b=True),
        matmul(x, da, transpose_a=True),
        matmul(prev_h, da, transpose_a=True),
        _column_sums(da),
    )


# --------------------------------------------------------------------------- vanilla RNN

_RnnStepCache = collections.namedtuple("_RnnStepCache", "x prev_h Wx Wh next_h")


def rnn_step_forward(
    x: np.ndarray, prev_h: np.ndarray, Wx: np.ndarray, Wh: np.ndarray, b: np.ndarray
) -> Tuple[np.ndarray, _RnnStepCache]:
    """One step of a tanh RNN: next_h = tanh(x @ Wx + prev_h @ Wh + b).

    x: (N, D); prev_h: (N, H); Wx: (D, H); Wh: (H, H); b: (H,). Returns next_h (N, H).
    """
    x, prev_h, Wx, Wh, b = _recurrent_inputs(
        "rnn_step_forward", x, prev_h, Wx, Wh, b, 1, "(N, D)", "prev_h"
    )
    next_h = np.tanh(matmul(x, Wx) + matmul(prev_h, Wh) + b)
    return next_h, _RnnStepCache(x, prev_h, Wx, Wh, next_h)


def rnn_step_backward(dnext_h: np.ndarray, cache: _RnnStepCache) -> Tuple[np.ndarray, ...]:
    """dnext_h: (N, H). Returns dx (N, D), dprev_h (N, H), dWx (D, H), dWh (H, H), db (H,)."""
    dnext_h = _upstream("rnn_step_backward", "dnext_h", dnext_h, cache.next_h.shape)
    da = dnext_h * (1 - cache.next_h**2)  # tanh' = 1 - tanh^2
    return _affine_grads(da, cache.x, cache.prev_h, cache.Wx, cache.Wh)


# The whole-sequence layers run in C++ (cpp/recurrent.h): the cache holds what the kernel
# saved, the LSTM's activated gates (i, f, o, g), cell states and their tanh included.
_SequenceCache = collections.namedtuple("_SequenceCache", "cell x h0 Wx Wh h act c tanh_c")


def _sequence_forward(fn, cell, x, h0, Wx, Wh, b):
    x, h0, Wx, Wh, b = _recurrent_inputs(
        fn, x, h0, Wx, Wh, b, 4 if cell == "lstm" else 1, "(N, T, D)", "h0"
    )
    h, act, c, tanh_c = _C.recurrent_forward(cell, x, h0, Wx, Wh, b)
    return h, _SequenceCache(cell, x, h0, Wx, Wh, h, act, c, tanh_c)


def _sequence_backward(fn, cell, dh, cache):
    if not isinstance(cache, _SequenceCache) or cache.cell != cell:
        raise ValueError(f"{fn}: cache must be the one {cell}_forward returned")
    dh = _upstream(fn, "dh", dh, cache.h.shape).astype(cache.h.dtype, copy=False)
    return _C.recurrent_backward(
        cell, dh, cache.x, cache.h0, cache.Wx, cache.Wh, cache.h, cache.act, cache.c, cache.tanh_c
    )


def rnn_forward(
    x: np.ndarray, h0: np.ndarray, Wx: np.ndarray, Wh: np.ndarray, b: np.ndarray
) -> Tuple[np.ndarray, _SequenceCache]:
    """A tanh RNN over whole sequences.

    x: (N, T, D); h0: (N, H); Wx: (D, H); Wh: (H, H); b: (H,). Returns h (N, T, H), the
    hidden state after every step.
    """
    return _sequence_forward("rnn_forward", "rnn", x, h0, Wx, Wh, b)


def rnn_backward(dh: np.ndarray, cache: _SequenceCache) -> Tuple[np.ndarray, ...]:
    """dh: (N, T, H), the upstream gradient of every hidden state.

    Returns dx (N, T, D), dh0 (N, H), dWx (D, H), dWh (H, H), db (H,), in the layer's dtype.
    """
    return _sequence_backward("rnn_backward", "rnn", dh, cache)


# --------------------------------------------------------------------------- LSTM

_LstmStepCache = collections.namedtuple("_LstmStepCache", "x prev_h prev_c Wx Wh i f o g tanh_c")


def lstm_step_forward(
    x: np.ndarray,
    prev_h: np.ndarray,
    prev_c: np.ndarray,
    Wx: np.ndarray,
    Wh: np.ndarray,
    b: np.ndarray,
) -> Tuple[np.ndarray, np.ndarray, _LstmStepCache]:
    """One LSTM step.

    a = x @ Wx + prev_h @ Wh + b split into four (N, H) blocks; i, f, o = sigmoid of the
    first three, g = tanh of the last; next_c = f * prev_c + i * g; next_h = o *
    tanh(next_c). x: (N, D); prev_h, prev_c: (N, H); Wx: (D, 4H); Wh: (H, 4H); b: (4H,).
    Returns next_h (N, H), next_c (N, H) and the cache.
    """
    fn = "lstm_step_forward"
    x, prev_h, Wx, Wh, b = _recurrent_inputs(fn, x, prev_h, Wx, Wh, b, 4, "(N, D)", "prev_h")
    prev_c = _upstream(fn, "prev_c", prev_c, prev_h.shape).astype(prev_h.dtype, copy=False)
    a = matmul(x, Wx) + matmul(prev_h, Wh) + b
    i, f, o = np.split(_sigmoid(a[:, : 3 * prev_h.shape[1]]), 3, axis=1)
    g = np.tanh(a[:, 3 * prev_h.shape[1] :])
    next_c = f * prev_c + i * g
    tanh_c = np.tanh(next_c)
    next_h = o * tanh_c
    return next_h, next_c, _LstmStepCache(x, prev_h, prev_c, Wx, Wh, i, f, o, g, tanh_c)


def _lstm_gate_grads(dnext_h, dnext_c, prev_c, i, f, o, g, tanh_c):
    """Through one LSTM cell: (da (N, 4H), dprev_c (N, H)) from the next h and c's grads."""
    dc = dnext_c + dnext_h * o * (1 - tanh_c**2)  # next_c reaches the loss two ways
    da = np.concatenate(
        [
            dc * g * i * (1 - i),
            dc * prev_c * f * (1 - f),
            dnext_h * tanh_c * o * (1 - o),
            dc * i * (1 - g**2),
        ],
        axis=1,
    )
    return da, dc * f


def lstm_step_backward(
    dnext_h: np.ndarray, dnext_c: np.ndarray, cache: _LstmStepCache
) -> Tuple[np.ndarray, ...]:
    """dnext_h, dnext_c: (N, H).

    Returns dx (N, D), dprev_h (N, H), dprev_c (N, H), dWx (D, 4H), dWh (H, 4H), db (4H,).
    """
    fn = "lstm_step_backward"
    dnext_h = _upstream(fn, "dnext_h", dnext_h, cache.prev_h.shape)
    dnext_c = _upstream(fn, "dnext_c", dnext_c, cache.prev_h.shape)
    da, dprev_c = _lstm_gate_grads(
        dnext_h, dnext_c, cache.prev_c, cache.i, cache.f, cache.o, cache.g, cache.tanh_c
    )
    dx, dprev_h, dWx, dWh, db = _affine_grads(da, cache.x, cache.prev_h, cache.Wx, cache.Wh)
    return dx, dprev_h, dprev_c, dWx, dWh, db


def lstm_forward(
    x: np.ndarray, h0: np.ndarray, Wx: np.ndarray, Wh: np.ndarray, b: np.ndarray
) -> Tuple[np.ndarray, _SequenceCache]:
    """An LSTM over whole sequences, starting from h0 and a zero cell state.

    x: (N, T, D); h0: (N, H); Wx: (D, 4H); Wh: (H, 4H); b: (4H,). Returns h (N, T, H), the
    hidden state after every step (the cell states stay inside).
    """
    return _sequence_forward("lstm_forward", "lstm", x, h0, Wx, Wh, b)


def lstm_inference(
    x: np.ndarray, h0: np.ndarray, Wx: np.ndarray, Wh: np.ndarray, b: np.ndarray
) -> np.ndarray:
    """lstm_forward's h, bit for bit, for a forward no backward follows: the kernel keeps
    only the current step's cell state instead of every step's gates, cell states and
    their tanh (the writes the backward would read)."""
    x, h0, Wx, Wh, b = _recurrent_inputs("lstm_inference", x, h0, Wx, Wh, b, 4, "(N, T, D)", "h0")
    return _C.recurrent_forward("lstm", x, h0, Wx, Wh, b, False)[0]  # keep=False, by position


def lstm_backward(dh: np.ndarray, cache: _SequenceCache) -> Tuple[np.ndarray, ...]:
    """dh: (N, T, H), the upstream gradient of every hidden state.

    Returns dx (N, T, D), dh0 (N, H), dWx (D, 4H), dWh (H, 4H), db (4H,), in the layer's
    dtype.
    """
    return _sequence_backward("lstm_backward", "lstm", dh, cache)


def hidden_state_gradients(dh: np.ndarray, cache: _SequenceCache) -> np.ndarray:
    """dL/dh_t for every step t of an rnn_forward or lstm_forward: the gradient that
    reaches each hidden state, from its own output (dh[:, t]) and through every later step.

    dh: (N, T, H), the upstream gradient of the layer's output h. Returns (N, T, H). The
    kernels' backward sums these into the weights' gradients without keeping them; this
    replays the steps in numpy from the saved states, for plots of backprop through time.
    """
    if not isinstance(cache, _SequenceCache):
        raise ValueError(
            "hidden_state_gradients: cache must be the one rnn_forward or lstm_forward returned"
        )
    dh = _upstream("hidden_state_gradients", "dh", dh, cache.h.shape)
    reached = np.empty(cache.h.shape, dtype=np.result_type(dh, cache.h))
    later = np.zeros_like(reached[:, 0])  # what h_t receives from step t + 1
    later_c = np.zeros_like(later)
    H = cache.h.shape[2]
    for t in reversed(range(cache.h.shape[1])):
        reached[:, t] = dh_t = dh[:, t] + later
        if cache.cell == "rnn":
            da = dh_t * (1 - cache.h[:, t] ** 2)
        else:
            prev_c = cache.c[:, t - 1] if t else np.zeros_like(later)
            i, f, o, g = (cache.act[:, t, k * H : (k + 1) * H] for k in range(4))
            da, later_c = _lstm_gate_grads(dh_t, later_c, prev_c, i, f, o, g, cache.tanh_c[:, t])
        later = matmul(da, cache.Wh, transpose_b=True)
    return reached


# --------------------------------------------------------------------------- embedding


def word_embedding_forward(x: np.ndarray, W: np.ndarray) -> Tuple[np.ndarray, tuple]:
    """Look up word vectors: out[n, t] = W[x[n, t]].

    x: (N, T) integers in [0, V); W: (V, D). Returns out (N, T, D).
    """
    fn = "word_embedding_forward"
    if type(x) is np.ndarray and x.ndim == 2 and type(W) is np.ndarray:
        # int64 indices in range and float32 or float64 vectors: the rows in one binding,
        # which checks the range; what it refuses the checks below convert or name (at one
        # sequence of 32 words they cost four times the lookup).
        if x.nbytes > MEMORY_BYTES or W.nbytes > MEMORY_BYTES:
            refuse_beyond_memory(fn, x=x, W=W)
        try:
            return _C.gather_rows(x, W), (x, W.shape, W.dtype)
        except (ValueError, TypeError):
            pass
    W = _float_array(W, fn, "W")
    _check_ndim(fn, "W", W, 2, "word vectors (V, D)")
    x = np.asarray(x)
    refuse_beyond_memory(fn, x=x)
    if x.dtype.kind not in "iu":
        raise ValueError(
            f"{fn}: x must hold integer word indices, got dtype {x.dtype} with shape {x.shape}"
        )
    _check_ndim(fn, "x", x, 2, "word indices (N, T)")
    V = W.shape[0]
    # As intp, unsigned indices from 2**63 on turn negative; take would count negative
    # indices from the end, and refuses those from V on. For 50 words x.min(), x.max() and
    # W[x] took 4.7 us, this 1.6.
    indices = x.astype(np.intp, copy=False)
    if not (indices.size and indices.min() < 0):
        try:
            return W.take(indices, axis=0), (x, W.shape, W.dtype)
        except IndexError:  # an index from V on
            pass
    raise ValueError(
        f"{fn}: word indices must lie in [0, {V}) for W of shape {W.shape}, "
        f"got min {x.min()} and max {x.max()}"
    )


def word_embedding_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """dout: (N, T, D). Returns dW (V, D): each word's vector collects the gradients of
    every position that looked it up. The indices get no gradient."""
    x, W_shape, dtype = cache
    expected = x.shape + W_shape[1:]
    if not (type(dout) is np.ndarray and dout.dtype == dtype and dout.shape == expected):
        # an array of W's dtype and the expected shape is what these would return as it is
        dout = _upstream("word_embedding_backward", "dout", dout, expected)
        dtype = np.result_type(dtype, dout)
    words = x.ravel()
    if dtype == dout.dtype and dtype in _KERNEL_DTYPES:
        # One C++ pass adding each position's row into its word's, in position order (np.add.at's
        # sums), without the sort and gather below (0.25 ms of a small transformer's step at
        # batch 32, T = 32; 0.1 ms of an LSTM's at batch 1).
        rows = dout.reshape(-1, W_shape[1])
        return _C.scatter_add_rows(words.astype(np.int64, copy=False), rows, W_shape[0])
    dW = np.zeros(W_shape, dtype=dtype)
    # Each word's rows summed by one np.add.reduceat over the rows sorted by word (stable:
    # the same sums on every run); np.add.at, one row at a time, takes 1.5-2x as long.
    order = np.argsort(words, kind="stable")
    sorted_words = words[order]
    starts = np.flatnonzero(np.diff(sorted_words, prepend=-1))
    if starts.size:
        rows = dout.reshape(-1, W_shape[1])[order].astype(dW.dtype, copy=False)
        dW[sorted_words[starts]] = np.add.reduceat(rows, starts, axis=0)
    return dW


# --------------------------------------------------------------------------- outputs


def temporal_affine_forward(
    x: np.ndarray, w: np.ndarray, b: np.ndarray
) -> Tuple[np.ndarray, tuple]:
    """The same affine map at every step: out[n, t] = x[n, t] @ w + b.

    x: (N, T, D); w: (D, M); b: (M,). Returns out (N, T, M); the cache is the course's
    (x, w, b, out).
    """
    if type(x) is np.ndarray and x.ndim == 3:
        # The binding checks the dtypes and w's and b's shapes against x's and makes the
        # product of x's rows; what it refuses, the checks below name (or convert). At one
        # sequence those checks and reshapes cost half of a 32 x 64 x 64 product.
        try:
            out = _C.affine_forward(x, w, b, 2)
        except (ValueError, TypeError):
            pass
        else:
            return out, (x, w, b, out)
    fn = "temporal_affine_forward"
    x, w, b = _float_array(x, fn, "x"), _float_array(w, fn, "w"), _float_array(b, fn, "b")
    _check_ndim(fn, "x", x, 3, "(N, T, D)")
    _check_ndim(fn, "w", w, 2, "weights (D, M)")
    if w.shape[0] != x.shape[2]:
        raise ValueError(
            f"{fn}: x of shape {x.shape} has {x.shape[2]} features but w has shape {w.shape}"
        )
    _check_shape(fn, "b", b, (w.shape[1],))
    N, T, D = x.shape
    if x.dtype == w.dtype == b.dtype and x.dtype in (np.float32, np.float64):
        # the bias added in C++ after the product: out += b's numbers without its call
        out = _C.matmul(x.reshape(N * T, D), w, False, False, b).reshape(N, T, w.shape[1])
        return out, (x, w, b, out)
    out = matmul(x.reshape(N * T, D), w).reshape(N, T, w.shape[1])
    if out.dtype == np.result_type(out, b):
        out += b  # in place: no second (N, T, M) array
    else:
        out = out + b
    return out, (x, w, b, out)


_ALL_GRADIENTS = (True, True, True)


def temporal_affine_backward(dout: np.ndarray, cache: tuple) -> Tuple[np.ndarray, ...]:
    """dout: (N, T, M). Returns dx (N, T, D), dw (D, M), db (M,)."""
    x, w, b, out = cache
    if type(dout) is np.ndarray:
        # The forward's own operands and an upstream gradient of its output's shape and
        # dtype: the three products in one binding (its checks and the rows' reshapes cost
        # a third of a 32 x 64 x 64 backward at one sequence in Python); what it refuses
        # (another shape or dtype) takes the checks below.
        try:
            return _C.affine_backward(dout, x, w, _ALL_GRADIENTS)
        except (ValueError, TypeError):
            pass
    N, T, D = x.shape
    dout = _upstream("temporal_affine_backward", "dout", dout, out.shape)
    dout_rows = dout.reshape(N * T, out.shape[2]).astype(out.dtype, copy=False)
    dx = matmul(dout_rows, w, transpose_b=True).reshape(x.shape)
    dw = matmul(x.reshape(N * T, D), dout_rows, transpose_a=True)
    return dx, dw, _column_sums(dout_rows)


def temporal_softmax_loss(
    x: np.ndarray, y: np.ndarray, mask: np.ndarray, verbose: bool = False
) -> Tuple[float, np.ndarray]:
    """Softmax cross-entropy at every step where mask is true, summed over the steps and
    averaged over the N sequences (the course's normalisation: the loss of a batch grows
    with the caption length).

    x: (N, T, V) scores; y: (N, T) integers in [0, V); mask: (N, T), true where the step
    counts (padding is false). verbose prints the shapes of the flattened arrays.
    Returns (loss, dx (N, T, V)).
    """
    loss, dx, _ = temporal_softmax_loss_value(x, y, mask, gradient=True)
    dx = cast(np.ndarray, dx)  # computed: gradient=True
    if verbose:
        print("dx_flat: ", (math.prod(dx.shape[:2]), dx.shape[2]))
    return loss, dx


def temporal_softmax_loss_value(
    x: np.ndarray, y: np.ndarray, mask: np.ndarray, gradient: bool = False
) -> Tuple[float, Optional[np.ndarray], np.dtype]:
    """temporal_softmax_loss's (loss, dx) and the float dtype it computed in; without
    `gradient` dx is None and not computed (an eval-mode loss: the same loss, bit for bit)."""
    fn = "temporal_softmax_loss"
    if type(x) is np.ndarray and type(y) is np.ndarray and type(mask) is np.ndarray:
        # The numbers below in one binding, for float scores, int64 words and a bool or
        # int64 mask; what it refuses (another dtype, a shape or a label out of range) the
        # checks below convert or name. At one sequence of 50 steps their numpy calls cost
        # more than the kernel.
        if x.nbytes > MEMORY_BYTES or y.nbytes > MEMORY_BYTES or mask.nbytes > MEMORY_BYTES:
            refuse_beyond_memory(fn, x=x, y=y, mask=mask)
        try:
            loss, dx = _C.sequence_softmax_loss(x, y, mask, gradient)
        except (ValueError, TypeError):
            pass
        else:
            return loss, dx, x.dtype
    x = _float_array(x, fn, "x")
    _check_ndim(fn, "x", x, 3, "scores (N, T, V)")
    N, T, V = x.shape
    y, mask = np.asarray(y), np.asarray(mask)
    refuse_beyond_memory(fn, y=y, mask=mask)
    if y.dtype.kind not in "iu":
        raise ValueError(f"{fn}: labels y must be integers, got dtype {y.dtype}")
    _check_shape(fn, "y", y, (N, T))
    _check_shape(fn, "mask", mask, (N, T))
    if mask.dtype.kind not in "biu":
        raise ValueError(f"{fn}: mask must be boolean (or 0/1 integers), got {mask.dtype}")
    if y.size and (y.min() < 0 or y.max() >= V):
        raise ValueError(
            f"{fn}: labels must lie in [0, {V}) for x of shape {x.shape}, "
            f"got min {y.min()} and max {y.max()}"
        )
    # Each step's loss -log softmax(x)[y] weighs mask / N (a batch of no sequences has no
    # loss: 0 rather than 0 / 0); dx = (softmax - one_hot(y)) * mask / N. One C++ pass
    # over each row (cpp/softmax_loss.h), which subtracts the row's maximum first so that
    # exp cannot overflow.
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float32)  # float16
    row_weight = (mask.reshape(N * T).astype(bool) / max(N, 1)).astype(x.dtype)
    loss, dx = _C.softmax_loss(
        x.reshape(N * T, V), y.reshape(N * T).astype(np.int64, copy=False), row_weight, gradient
    )
    return float(loss), None if dx is None else dx.reshape(N, T, V), x.dtype


# --------------------------------------------------------------------------- attention

_AttentionCache = collections.namedtuple("_AttentionCache", "q k v weights scale")


def attention_forward(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: Optional[np.ndarray] = None
) -> Tuple[np.ndarray, _AttentionCache]:
    """Scaled dot-product attention: out = softmax(q @ k^T / sqrt(d) + masking) @ v.

    q: (..., S, d) queries; k: (..., L, d) keys; v: (..., L, dv) values; the leading axes
    (batch, heads) broadcast. mask: booleans broadcastable to (..., S, L), True where query
    s may attend to key l (PyTorch's and the course's convention). A query that may attend
    to no key gets zero weights and a zero output, and no gradient flows back through its
    scores (torch's F.scaled_dot_product_attention does the same; a softmax over
    masked_fill(-inf) gives NaN). Returns out (..., S, dv); the cache's
    `weights` (..., S, L) are the attention weights.

    float32 and float64 run in one C++ call over all (batch, head) pairs (cpp/attention.h),
    reading q, k, v and the mask as the views they are (a head split's transpose is not
    copied) and writing out in q's memory order, so that the transpose back is a view too;
    the weights are the view of an (..., L, S) array, each pair's as the kernel writes them.
    """
    fn = "attention_forward"
    if mask is None and _kernel_operands_as_they_are(q, k, v):
        # The binding checks the shapes; what it refuses, the checks below name (or copy
        # and run). At batch 1 those checks cost as much as the kernel.
        if q.nbytes > MEMORY_BYTES or k.nbytes > MEMORY_BYTES or v.nbytes > MEMORY_BYTES:
            refuse_beyond_memory(fn, q=q, k=k, v=v)
        try:
            return _attention_kernel_forward(q, k, v, None, q.dtype)
        except ValueError:
            pass
    q, k, v = _float_array(q, fn, "q"), _float_array(k, fn, "k"), _float_array(v, fn, "v")
    for name, a in (("q", q), ("k", k), ("v", v)):
        if a.ndim < 2:
            raise ValueError(
                f"{fn}: {name} must be at least 2-D (..., length, features), got shape {a.shape}"
            )
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"{fn}: queries of shape {q.shape} and keys of shape {k.shape} "
            "must have the same feature size"
        )
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"{fn}: keys of shape {k.shape} and values of shape {v.shape} must have the same length"
        )
    # In the inputs' dtype: a float64 scale would turn float32 gradients into float64.
    same_dtype = q.dtype == k.dtype == v.dtype
    scale_dtype = q.dtype if same_dtype else np.result_type(q, k)
    batch = q.shape[:-2]
    if not batch == k.shape[:-2] == v.shape[:-2]:
        try:
            batch = np.broadcast_shapes(batch, k.shape[:-2], v.shape[:-2])
        except ValueError:
            raise ValueError(
                f"{fn}: the leading (batch, head) axes of q {q.shape}, k {k.shape} and "
                f"v {v.shape} do not broadcast to one shape"
            ) from None
    scores_shape = batch + (q.shape[-2], k.shape[-2])
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype != bool:
            raise ValueError(f"{fn}: mask must be boolean (True = may attend), got {mask.dtype}")
        try:
            mask = np.broadcast_to(mask, scores_shape)
        except ValueError:
            raise ValueError(
                f"{fn}: mask of shape {mask.shape} does not broadcast to the "
                f"scores' shape {scores_shape}"
            ) from None
    dtype = q.dtype if same_dtype else np.result_type(q, k, v)
    if math.prod(scores_shape) * dtype.itemsize > MEMORY_BYTES:
        # leading axes broadcast against each other may ask for more weights than fit
        # where each of q, k, v does
        weights = np.broadcast_to(np.empty((), dtype), scores_shape)
        refuse_beyond_memory(fn, **{"the attention weights of q, k, v": weights})
    if dtype not in _KERNEL_DTYPES:
        return _attention_forward_numpy(q, k, v, mask, _attention_scale(scale_dtype, q.shape[-1]))
    qb, kb, vb = (_pair_view(a, batch, dtype) for a in (q, k, v))
    out, cache = _attention_kernel_forward(
        qb, kb, vb, None if mask is None else mask.view(np.uint8), scale_dtype
    )
    return out, cache._replace(q=q, k=k, v=v)


def _kernel_operands_as_they_are(q, k, v):
    """Whether q, k, v may go to the kernel without a conversion: arrays of one float
    dtype it takes, of one rank and one batch shape (the binding checks the rest)."""
    return (
        type(q) is np.ndarray
        and type(k) is np.ndarray
        and type(v) is np.ndarray
        and q.dtype in _KERNEL_DTYPES
        and q.dtype == k.dtype == v.dtype
        and q.ndim == k.ndim == v.ndim >= 2
        and q.shape[:-2] == k.shape[:-2] == v.shape[:-2]
    )


@functools.lru_cache(maxsize=None)
def _attention_scale(scale_dtype, d):
    """1 / sqrt(d) as a `scale_dtype` scalar (the inputs' dtype: a float64 scale would turn
    float32 gradients into float64)."""
    return scale_dtype.type(1.0 / math.sqrt(d) if d else 1.0)


def _attention_kernel_forward(q, k, v, mask, scale_dtype):
    """The C++ forward on pair views (_pair_view's) and a uint8 mask of the scores' shape
    (or None): out in q's memory order (the binding allocates it so: a head split's merge
    then copies nothing) and the cache, whose weights are the view of the (..., L, S) array
    the kernel writes (each pair's transposed)."""
    scale = _attention_scale(scale_dtype, q.shape[-1])
    out, weights_t = _C.attention_forward(q, k, v, mask, float(scale), None, None)
    return out, _AttentionCache(q, k, v, weights_t.swapaxes(-1, -2), scale)


def _attention_forward_numpy(q, k, v, mask, scale):
    """attention_forward in numpy, for dtypes the kernel does not take (float16)."""
    scores = (q @ np.swapaxes(k, -1, -2)) * scale
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    # Subtracting each row's maximum keeps exp from overflowing; a fully masked row has
    # maximum -inf and would give nan, so it is shifted by 0 instead and stays all zero.
    row_max = scores.max(axis=-1, keepdims=True) if scores.shape[-1] else 0
    weights = np.exp(scores - np.where(np.isfinite(row_max), row_max, 0))
    total = weights.sum(axis=-1, keepdims=True)
    weights /= np.where(total > 0, total, 1)
    return weights @ v, _AttentionCache(q, k, v, weights, scale)


def _pair_view(a, batch, dtype):
    """`a` in `dtype` with the batch shape `batch` (a broadcast view) and its last axis
    contiguous, as the attention kernels read it: a copy only when that is not so already."""
    if a.dtype != dtype:
        a = a.astype(dtype)
    if a.shape[:-2] != batch:
        a = np.broadcast_to(a, batch + a.shape[-2:])
    if a.shape[-1] > 1 and a.strides[-1] != a.itemsize:
        a = np.ascontiguousarray(a)
    return a


def attention_backward(dout: np.ndarray, cache: _AttentionCache) -> Tuple[np.ndarray, ...]:
    """dout: (..., S, dv) (the output's shape). Returns dq, dk, dv in the shapes of q, k, v
    (summed over the axes they were broadcast along)."""
    q, k, v, weights, scale = cache
    if (
        type(dout) is np.ndarray
        and dout.dtype == weights.dtype
        and _kernel_operands_as_they_are(q, k, v)
    ):
        # As in attention_forward: what the binding refuses, the checks below name.
        try:
            return _attention_kernel_backward(q, k, v, weights, dout, scale)
        except ValueError:
            pass
    batch = weights.shape[:-2]
    out_shape = batch + weights.shape[-2:-1] + v.shape[-1:]
    dout = _upstream("attention_backward", "dout", dout, out_shape)
    dtype = weights.dtype
    if dtype not in _KERNEL_DTYPES or np.result_type(dout, dtype) != dtype:
        dq, dk, dv = _attention_backward_numpy(dout, q, k, v, weights, scale)
    else:
        qb, kb, vb, db = (_pair_view(a, batch, dtype) for a in (q, k, v, dout))
        dq, dk, dv = _attention_kernel_backward(qb, kb, vb, weights, db, scale)
    return _sum_to(dq, q.shape), _sum_to(dk, k.shape), _sum_to(dv, v.shape)


def _attention_kernel_backward(q, k, v, weights, dout, scale):
    """The C++ backward on pair views (_pair_view's): dq, dk, dv in the memory order of q,
    k, v (the binding allocates them so), one matrix per pair."""
    # The kernel's weights are (L, S) per pair, C-contiguous: those of its forward (a copy
    # if the cache came from the numpy forward).
    weights_t = np.ascontiguousarray(weights.swapaxes(-1, -2))
    return _C.attention_backward(q, k, v, weights_t, dout, float(scale), None, None, None)


def _attention_backward_numpy(dout, q, k, v, weights, scale):
    """attention_backward in numpy, for dtypes the kernel does not take."""
    dweights = dout @ np.swapaxes(v, -1, -2)
    # softmax backward: dscores = w * (dw - sum(dw * w)); masked weights are 0 and get 0.
    dscores = weights * (dweights - (dweights * weights).sum(axis=-1, keepdims=True)) * scale
    return dscores @ k, np.swapaxes(dscores, -1, -2) @ q, np.swapaxes(weights, -1, -2) @ dout


def _sum_to(grad, shape):
    """Sum a broadcast gradient back to the shape of the input it came from."""
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, size in enumerate(shape) if size == 1 and grad.shape[lead + i] != 1
    )
    return grad.sum(axis=axes).reshape(shape) if axes else grad
