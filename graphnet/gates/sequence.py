"""Sequence gates with the course's conventions (CS231n assignment 3): word embeddings,
a tanh RNN and an LSTM over whole sequences (one C++ kernel each) and one step at a time,
the same affine map at every step, the masked temporal softmax loss, and scaled
dot-product attention.

Shapes: N sequences, T steps, D input features, H hidden units, V words, M outputs. The
LSTM stacks its four gates in the course's order i, f, o, g: Wx (D, 4H), Wh (H, 4H),
b (4H,). The arithmetic is graphnet.kernels.rnn_layers'; a gate checks shapes when the
graph is built, says what it computes, and caches what the kernel returned.
"""

import collections
from typing import ClassVar, Tuple

import numpy as np

from ..kernels import rnn_layers
from .nn import LossInputs
from .base import (
    Gate,
    ShapeError,
    broadcast_shape,
    check_rank,
    dims_match,
    mask_summary,
    register_gate,
)


def _match(what, size, other, expected):
    """size == other, for sizes or shapes that may hold None (unknown)."""
    if isinstance(size, tuple):
        same = len(size) == len(other) and all(map(dims_match, size, other))
    else:
        same = dims_match(size, other)
    if not same:
        raise ShapeError(f"{what} must have {expected} = {other}, got {size}")


@register_gate
class WordEmbedding(Gate):
    """out[n, t] = W[x[n, t]]: the vector of each word. Backward adds each position's
    upstream gradient into the row of its word (a word used twice collects both)."""

    op = "word_embedding"
    inputs = ("x", "W")
    integer_inputs = (0,)
    formula = "{1}[{0}]"
    rule = (
        "word embedding: each row of {1} receives the upstream gradients of every "
        "position that looked it up, added up; the word indices get no gradient"
    )
    derivatives = ("none (word indices)", "1 at each looked-up row (repeats add up)")

    def shape(self, x, W):
        check_rank(x, 2, "word indices (N, T)", "x")
        check_rank(W, 2, "word vectors (V, D)", "W")
        if x is None or W is None:
            return None
        return (x[0], x[1], W[1])

    def forward(self, x, W):
        return rnn_layers.word_embedding_forward(x, W)

    def backward(self, dout, cache, needs):
        return None, rnn_layers.word_embedding_backward(dout, cache)

    def summarize_cache(self, cache, input_names):
        x, W_shape, _ = cache
        return [f"saved {x.size} word indices {x.shape} into {input_names[1]} {W_shape}"]


class Recurrent(Gate):
    """What the RNN and LSTM gates share: the shape rule of x, h0, Wx, Wh, b with
    `blocks` stacked gate blocks of H columns (1 for the RNN, 4 for the LSTM)."""

    inputs: ClassVar[Tuple[str, ...]] = ("x", "h0", "Wx", "Wh", "b")
    blocks = 1
    x_rank, x_layout = 3, "(N, T, D)"

    def recurrent_shape(self, x, h, Wx, Wh, b):
        """(N, H) from the inputs' shapes (either may be None), or a ShapeError."""
        G = "" if self.blocks == 1 else str(self.blocks)
        check_rank(x, self.x_rank, self.x_layout, "x")
        check_rank(h, 2, "(N, H)", "the hidden state")
        check_rank(Wx, 2, f"(D, {G}H)", "Wx")
        check_rank(Wh, 2, f"(H, {G}H)", "Wh")
        check_rank(b, 1, f"({G}H,)", "b")
        N = None if h is None else h[0]
        H = None if h is None else h[1]
        if H is None and Wh is not None:
            H = Wh[0]
        width = None if H is None else self.blocks * H
        if x is not None:
            _match(f"x {x}", x[0], N, "N (the hidden state's rows)")
            N = x[0] if N is None else N
            if Wx is not None:
                _match(f"Wx {Wx}", Wx[0], x[-1], "D rows (x's features)")
        if Wx is not None:
            _match(f"Wx {Wx}", Wx[1], width, f"{G}H columns")
        if Wh is not None:
            _match(f"Wh {Wh}", Wh, (H, width), f"shape (H, {G}H)")
        if b is not None:
            _match(f"b {b}", b[0], width, f"{G}H entries")
        return N, H


#: The cache of an eval-mode forward that saved no states: its inputs, from which a
#: backward runs the train-mode forward again (the same bits) for the states it reads.
_Inputs = collections.namedtuple("_Inputs", "x h0 Wx Wh b")


class RecurrentSequence(Recurrent):
    """What the whole-sequence RNN and LSTM gates share: their output is every hidden
    state (N, T, H), and their cache (the kernel's) keeps them all."""

    def shape(self, x, h0, Wx, Wh, b):
        N, H = self.recurrent_shape(x, h0, Wx, Wh, b)
        return None if x is None else (N, x[1], H)

    def kernel_cache(self, cache):
        """The kernel's cache, which is what the forward saved (see Lstm's eval mode)."""
        return cache

    def hidden_state_grads(self, dout, cache):
        """dL/dh_t of every step (N, T, H), from this node's upstream gradient `dout`
        (its .grad) and its cache: what reaches each hidden state from its own output and
        through every later step (see rnn_layers.hidden_state_gradients)."""
        return rnn_layers.hidden_state_gradients(dout, self.kernel_cache(cache))

    def summarize_cache(self, cache, input_names):
        if isinstance(cache, _Inputs):
            return ["eval mode: saved only the inputs (a backward runs the forward again)"]
        lines = [f"saved the hidden states h_1..h_T {cache.h.shape}"]
        if cache.c is not None:
            lines.append(
                f"and the cell states {cache.c.shape} and gates i, f, o, g {cache.act.shape}"
            )
        return lines


@register_gate
class Rnn(RecurrentSequence):
    """A tanh RNN over whole sequences: h_t = tanh(x_t Wx + h_{t-1} Wh + b), from h_0 =
    h0; the output is every h_t (N, T, H). One C++ kernel runs all the steps."""

    op = "rnn"
    formula = "h_t = tanh({0}_t·{2} + h_(t−1)·{3} + {4}), h_0 = {1}"
    rule = (
        "an RNN backpropagates through time: from the last step back, each h_t gets "
        "its own upstream gradient plus what step t+1 sends back through {3}, and "
        "passes (that × (1 − h_t²)) on to {0}_t, {2}, {3}, {4} and h_(t−1)"
    )
    derivatives = (
        "da_t·{2}ᵀ per step, da_t = dh_t·(1 − h_t²)",
        "da_1·{3}ᵀ",
        "Σ_t {0}_tᵀ·da_t",
        "Σ_t h_(t−1)ᵀ·da_t",
        "Σ_t da_t",
    )

    def forward(self, x, h0, Wx, Wh, b):
        return rnn_layers.rnn_forward(x, h0, Wx, Wh, b)

    def backward(self, dout, cache, needs):
        return rnn_layers.rnn_backward(dout, cache)


@register_gate
class Lstm(RecurrentSequence):
    """An LSTM over whole sequences from h_0 = h0 and a zero cell state; the output is
    every h_t (N, T, H). One C++ kernel runs all the steps."""

    op = "lstm"
    blocks = 4
    formula = (
        "i, f, o, g = σ, σ, σ, tanh({0}_t·{2} + h_(t−1)·{3} + {4}); "
        "c_t = f·c_(t−1) + i·g; h_t = o·tanh(c_t), h_0 = {1}"
    )
    rule = (
        "an LSTM backpropagates through time along two paths: h_t's gradient goes "
        "through the gates, and c_t's goes on to c_(t−1) multiplied only by the "
        "forget gate f, which is how an LSTM keeps gradients from vanishing"
    )
    derivatives = (
        "da_t·{2}ᵀ per step",
        "da_1·{3}ᵀ",
        "Σ_t {0}_tᵀ·da_t",
        "Σ_t h_(t−1)ᵀ·da_t",
        "Σ_t da_t",
    )

    # Stateful for the graph's mode (its state stays empty): in eval mode the forward keeps
    # none of the gates, cell states and their tanh the backward reads (N·T·6H numbers).
    stateful = True

    def forward(self, state, training, x, h0, Wx, Wh, b):
        if training:
            return self.train_forward(x, h0, Wx, Wh, b)
        return self.eval_forward(x, h0, Wx, Wh, b)

    def eval_forward(self, x, h0, Wx, Wh, b):
        """h, and the inputs: a backward runs the train-mode forward for its cache."""
        return rnn_layers.lstm_inference(x, h0, Wx, Wh, b), _Inputs(x, h0, Wx, Wh, b)

    def train_forward(self, x, h0, Wx, Wh, b):
        return rnn_layers.lstm_forward(x, h0, Wx, Wh, b)

    def kernel_cache(self, cache):
        """After an eval-mode forward, the train-mode forward's cache (the same h)."""
        return self.train_forward(*cache)[1] if isinstance(cache, _Inputs) else cache

    def backward(self, dout, cache, needs):
        return rnn_layers.lstm_backward(dout, self.kernel_cache(cache))


@register_gate
class RnnStep(Recurrent):
    """One step of a tanh RNN: next_h = tanh(x·Wx + prev_h·Wh + b), x (N, D)."""

    op = "rnn_step"
    inputs = ("x", "prev_h", "Wx", "Wh", "b")
    x_rank, x_layout = 2, "(N, D)"
    formula = "tanh({0}·{2} + {1}·{3} + {4})"
    rule = (
        "an RNN step: da = dout·(1 − {f}²) (tanh's local derivative), then as an "
        "affine: d{0} = da·{2}ᵀ, d{1} = da·{3}ᵀ, d{2} = {0}ᵀ·da, d{3} = {1}ᵀ·da, "
        "d{4} = Σ da"
    )
    derivatives = ("da·{2}ᵀ", "da·{3}ᵀ", "{0}ᵀ·da", "{1}ᵀ·da", "Σ da")

    def shape(self, x, prev_h, Wx, Wh, b):
        return self.recurrent_shape(x, prev_h, Wx, Wh, b)

    def forward(self, x, prev_h, Wx, Wh, b):
        return rnn_layers.rnn_step_forward(x, prev_h, Wx, Wh, b)

    def backward(self, dout, cache, needs):
        return rnn_layers.rnn_step_backward(dout, cache)

    def summarize_cache(self, cache, input_names):
        return [f"saved next_h {cache.next_h.shape} (for tanh's derivative 1 − next_h²)"]


@register_gate
class LstmStep(Recurrent):
    """One LSTM step. Its output stacks the next hidden and cell states, (2, N, H):
    `step[0]` is next_h and `step[1]` next_c."""

    op = "lstm_step"
    inputs = ("x", "prev_h", "prev_c", "Wx", "Wh", "b")
    blocks = 4
    x_rank, x_layout = 2, "(N, D)"
    formula = (
        "i, f, o, g = σ, σ, σ, tanh({0}·{3} + {1}·{4} + {5}); "
        "{f} = [o·tanh(c), c] with c = f·{2} + i·g"
    )
    rule = (
        "an LSTM step: the gradient of next_c is its own plus next_h's through "
        "o·(1 − tanh²(c)); {2} receives it times f; the gates' gradients go through "
        "σ' and tanh' to {0}, {1} and the weights as in an affine"
    )
    derivatives = ("da·{3}ᵀ", "da·{4}ᵀ", "dc·f", "{0}ᵀ·da", "{1}ᵀ·da", "Σ da")

    def shape(self, x, prev_h, prev_c, Wx, Wh, b):
        N, H = self.recurrent_shape(x, prev_h, Wx, Wh, b)
        if (
            prev_c is not None
            and prev_h is not None
            and (len(prev_c) != 2 or not all(map(dims_match, prev_c, prev_h)))
        ):
            raise ShapeError(f"prev_c must have prev_h's shape {prev_h}, got {prev_c}")
        return (2, N, H)

    def forward(self, x, prev_h, prev_c, Wx, Wh, b):
        next_h, next_c, cache = rnn_layers.lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b)
        return np.stack([next_h, next_c]), cache

    def backward(self, dout, cache, needs):
        return rnn_layers.lstm_step_backward(dout[0], dout[1], cache)

    def summarize_cache(self, cache, input_names):
        return [f"saved the gates i, f, o, g {cache.i.shape} each, prev_c and tanh(next_c)"]


@register_gate
class TemporalAffine(Gate):
    """out[n, t] = x[n, t]·w + b: one affine map applied at every step."""

    op = "temporal_affine"
    inputs = ("x", "w", "b")
    formula = "{0}_t·{1} + {2} at every step"
    rule = (
        "temporal affine: an affine at every step; d{0}_t = dout_t·{1}ᵀ, and {1}, {2} "
        "collect their gradients over all steps and sequences"
    )
    derivatives = ("dout·{1}ᵀ", "Σ_(n,t) {0}ᵀ·dout", "Σ_(n,t) dout")

    def shape(self, x, w, b):
        check_rank(x, 3, "(N, T, D)", "x")
        check_rank(w, 2, "(D, M)", "w")
        if x is not None and w is not None:
            _match(f"w {w}", w[0], x[2], "D rows (x's features)")
        if b is not None and w is not None:
            _match(f"b {b}", b, (w[1],), "shape (M,)")
        if x is None:
            return None
        return (x[0], x[1], None if w is None else w[1])

    def forward(self, x, w, b):
        return rnn_layers.temporal_affine_forward(x, w, b)

    def backward(self, dout, cache, needs):
        return rnn_layers.temporal_affine_backward(dout, cache)

    def summarize_cache(self, cache, input_names):
        x, w = cache[:2]
        return [f"saved {input_names[0]} {x.shape} and {input_names[1]} {w.shape}"]


@register_gate
class TemporalSoftmaxLoss(Gate):
    """Softmax cross-entropy of scores x (N, T, V) against words y (N, T) at the steps
    where mask (N, T) is nonzero, summed over the steps and averaged over the N sequences
    (the course's normalisation)."""

    op = "temporal_softmax_loss"
    inputs = ("x", "y", "mask")
    integer_inputs = (1, 2)
    formula = "Σ_t mask·cross-entropy(softmax({0}_t), {1}_t) / N"
    rule = (
        "temporal softmax loss: d{0} = (softmax({0}) − one-hot({1})) / N where {2} "
        "is true, 0 where it is not (padding); the words and the mask get no gradient"
    )
    derivatives = ("(softmax({0}) − one-hot({1}))·{2} / N", "none (words)", "none (mask)")

    def shape(self, x, y, mask):
        check_rank(x, 3, "scores (N, T, V)", "x")
        for name, labels in (("y", y), ("mask", mask)):
            check_rank(labels, 2, "(N, T)", name)
            if x is not None and labels is not None:
                _match(f"{name} {labels}", labels, x[:2], "the shape (N, T) of x")
        return ()

    def forward(self, x, y, mask):
        loss, dx, dtype = rnn_layers.temporal_softmax_loss_value(x, y, mask, gradient=True)
        return dtype.type(loss), (dx, mask)

    def eval_forward(self, x, y, mask):
        """The loss alone; a backward computes the gradient from the inputs."""
        loss, _, dtype = rnn_layers.temporal_softmax_loss_value(x, y, mask)
        return dtype.type(loss), LossInputs((x, y, mask))

    def backward(self, dout, cache, needs):
        if type(cache) is LossInputs:  # after an eval-mode forward
            cache = self.forward(*cache)[1]
        return cache[0] * dout, None, None

    def summarize_cache(self, cache, input_names):
        if type(cache) is LossInputs:
            return [
                f"saved {input_names[0]} {np.shape(cache[0])}, {input_names[1]} and "
                f"{input_names[2]}: eval mode, d loss / d scores computed by a backward"
            ]
        dx, mask = cache
        return [
            f"saved d loss / d scores {dx.shape}, computed with the loss",
            mask_summary(np.asarray(mask) != 0, f"steps counted by {input_names[2]}"),
        ]


@register_gate
class Attention(Gate):
    """Scaled dot-product attention: softmax(q·kᵀ / √d)·v over the last two axes, q
    (..., S, d), k (..., L, d), v (..., L, dv); leading axes (batch, heads) broadcast."""

    op = "attention"
    inputs: ClassVar[Tuple[str, ...]] = ("q", "k", "v")
    formula = "softmax({0}·{1}ᵀ / √d)·{2}"
    rule = (
        "attention: with weights A = softmax({0}·{1}ᵀ/√d): d{2} = Aᵀ·dout; dA = "
        "dout·{2}ᵀ goes back through the softmax to the scores S, then d{0} = dS·{1}/√d "
        "and d{1} = dSᵀ·{0}/√d"
    )
    derivatives: ClassVar[Tuple[str, ...]] = ("dS·{1} / √d", "dSᵀ·{0} / √d", "Aᵀ·dout")

    def shape(self, q, k, v, mask=None):
        for name, s in (("q", q), ("k", k), ("v", v)):
            if s is not None and len(s) < 2:
                raise ShapeError(f"{name} must be (..., length, features), got {s}")
        if q is not None and k is not None:
            _match(f"k {k}", k[-1], q[-1], "the features d of q")
        if k is not None and v is not None:
            _match(f"v {v}", v[-2], k[-2], "the length L of k")
        if None in (q, k, v):
            return None
        try:
            batch = broadcast_shape(q[:-2], k[:-2], v[:-2])
        except ShapeError:
            raise ShapeError(f"the batch axes of q {q}, k {k} and v {v} do not broadcast") from None
        if mask is not None:
            scores = batch + (q[-2], k[-2])
            try:
                broadcast_shape(mask, scores)
            except ShapeError:
                raise ShapeError(f"mask {mask} does not broadcast to the scores {scores}") from None
        return batch + (q[-2], v[-1])

    def forward(self, q, k, v, mask=None):
        return rnn_layers.attention_forward(q, k, v, None if mask is None else mask != 0)

    def backward(self, dout, cache, needs):
        return rnn_layers.attention_backward(dout, cache)

    def summarize_cache(self, cache, input_names):
        return [f"saved the attention weights {cache.weights.shape} and q, k, v"]


@register_gate
class MaskedAttention(Attention):
    """Attention where mask (broadcastable to (..., S, L)) is nonzero where query s may
    attend to key l. A query that may attend to no key gets zero weights and a zero
    output, and its scores send no gradient back (as torch's F.scaled_dot_product_attention;
    a softmax over masked_fill(-inf) gives NaN there, and the course's layers zero weights,
    graphnet.models.transformer)."""

    op = "masked_attention"
    inputs = ("q", "k", "v", "mask")
    integer_inputs = (3,)
    formula = "softmax({0}·{1}ᵀ / √d where {3}, −∞ elsewhere)·{2}"
    derivatives = Attention.derivatives + ("none (mask)",)

    def backward(self, dout, cache, needs):
        return super().backward(dout, cache, needs) + (None,)
