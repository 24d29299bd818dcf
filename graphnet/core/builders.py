"""The built-in gate builders: `g.conv(x, w, b, stride=1, pad=0)` and the rest, each a
thin, documented call of `Graph.apply(op, ...)`. A gate registered elsewhere is built with
`g.apply(op, ...)` directly; it needs no builder here."""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import numpy as np

from ..errors import GraphError
from .node import Node

Operand = Union["Node", float, int, Any]
Axis = Union[None, int, Sequence[int]]


class GateBuilders:
    """Mixed into Graph. Inputs may be nodes or numbers/arrays (which become consts)."""

    def apply(self, op: str, *inputs: Operand, name: Optional[str] = None, **attrs: Any) -> Node:
        """A node of the gate registered as `op` (see Graph.apply)."""
        raise NotImplementedError  # Graph defines it

    def _build(self, op: str, inputs: tuple, name: Optional[str], attrs: Optional[dict]) -> Node:
        raise NotImplementedError  # Graph defines it: apply with its arguments packed

    def add(self, a: Operand, b: Operand, name: Optional[str] = None) -> Node:
        """a + b (broadcasting). Backward distributes: both get the upstream gradient."""
        return self._build("add", (a, b), name, None)

    def subtract(self, a: Operand, b: Operand, name: Optional[str] = None) -> Node:
        """a - b (broadcasting)."""
        return self._build("subtract", (a, b), name, None)

    def multiply(self, a: Operand, b: Operand, name: Optional[str] = None) -> Node:
        """a * b (broadcasting). Backward swaps: a gets dout * b, b gets dout * a."""
        return self._build("multiply", (a, b), name, None)

    def divide(self, a: Operand, b: Operand, name: Optional[str] = None) -> Node:
        """a / b (broadcasting)."""
        return self._build("divide", (a, b), name, None)

    def max(self, a: Operand, b: Operand, name: Optional[str] = None) -> Node:
        """Elementwise maximum of a and b. Backward routes the gradient to the larger one
        (to a on a tie)."""
        return self._build("max", (a, b), name, None)

    def relu(self, x: Operand, name: Optional[str] = None) -> Node:
        """max(x, 0)."""
        return self._build("relu", (x,), name, None)

    def exp(self, x: Operand, name: Optional[str] = None) -> Node:
        """e^x."""
        return self._build("exp", (x,), name, None)

    def log(self, x: Operand, name: Optional[str] = None) -> Node:
        """The natural logarithm of x."""
        return self._build("log", (x,), name, None)

    def sigmoid(self, x: Operand, name: Optional[str] = None) -> Node:
        """1 / (1 + e^-x), computed without overflow."""
        return self._build("sigmoid", (x,), name, None)

    def tanh(self, x: Operand, name: Optional[str] = None) -> Node:
        """tanh x."""
        return self._build("tanh", (x,), name, None)

    def softmax(self, x: Operand, name: Optional[str] = None) -> Node:
        """Probabilities along the last axis."""
        return self._build("softmax", (x,), name, None)

    def sum(
        self, x: Operand, axis: Axis = None, keepdims: bool = False, name: Optional[str] = None
    ) -> Node:
        """Sum over `axis` (an int, a tuple of ints, or None for all axes)."""
        return self.apply("sum", x, name=name, axis=axis, keepdims=keepdims)

    def affine(self, x: Operand, w: Operand, b: Operand, name: Optional[str] = None) -> Node:
        """x @ w + b, x of shape (N, d1, ..., dk) flattened to (N, D); w (D, M); b (M,)."""
        return self._build("affine", (x, w, b), name, None)

    def conv(
        self,
        x: Operand,
        w: Operand,
        b: Operand,
        stride: int = 1,
        pad: int = 0,
        name: Optional[str] = None,
    ) -> Node:
        """Convolution (cross-correlation) of x (N, C, H, W) with filters w (F, C, HH, WW)
        plus b (F,): out (N, F, 1 + (H + 2 pad - HH) // stride, 1 + (W + 2 pad - WW) //
        stride). C++ kernels."""
        return self.apply("conv", x, w, b, name=name, stride=stride, pad=pad)

    def max_pool(
        self,
        x: Operand,
        pool_height: int = 2,
        pool_width: int = 2,
        stride: int = 2,
        name: Optional[str] = None,
    ) -> Node:
        """The maximum of each pool_height x pool_width window of x (N, C, H, W), windows
        `stride` apart. C++ kernels."""
        return self.apply(
            "max_pool", x, name=name, pool_height=pool_height, pool_width=pool_width, stride=stride
        )

    def batchnorm(
        self,
        x: Operand,
        gamma: Operand,
        beta: Operand,
        eps: float = 1e-5,
        momentum: float = 0.9,
        name: Optional[str] = None,
    ) -> Node:
        """Batch normalization of x (N, D) per feature, scaled by gamma and shifted by beta
        (D,); running averages with `momentum` for eval mode."""
        return self.apply("batchnorm", x, gamma, beta, name=name, eps=eps, momentum=momentum)

    def spatial_batchnorm(
        self,
        x: Operand,
        gamma: Operand,
        beta: Operand,
        eps: float = 1e-5,
        momentum: float = 0.9,
        name: Optional[str] = None,
    ) -> Node:
        """Batch normalization of images x (N, C, H, W) per channel; gamma, beta (C,)."""
        return self.apply(
            "spatial_batchnorm", x, gamma, beta, name=name, eps=eps, momentum=momentum
        )

    def layernorm(
        self,
        x: Operand,
        gamma: Operand,
        beta: Operand,
        eps: float = 1e-5,
        name: Optional[str] = None,
    ) -> Node:
        """Layer normalization of each sample of x (N, D) or (N, ..., D) over its last axis,
        scaled by gamma and shifted by beta (D,); the same in train and eval mode."""
        return self.apply("layernorm", x, gamma, beta, name=name, eps=eps)

    def spatial_groupnorm(
        self,
        x: Operand,
        gamma: Operand,
        beta: Operand,
        G: int,
        eps: float = 1e-5,
        name: Optional[str] = None,
    ) -> Node:
        """Group normalization of images x (N, C, H, W): G groups of C // G channels, each
        normalized per sample over its channels and pixels; gamma, beta (C,) or
        (1, C, 1, 1)."""
        return self.apply("spatial_groupnorm", x, gamma, beta, name=name, G=G, eps=eps)

    def dropout(
        self, x: Operand, p: float, seed: Optional[int] = None, name: Optional[str] = None
    ) -> Node:
        """Inverted dropout: in train mode each unit is dropped with probability p (the
        2017 course's meaning) and the rest scaled by 1 / (1 - p); identity in eval mode.
        A seed fixes the mask."""
        return self.apply("dropout", x, name=name, p=p, seed=seed)

    def softmax_loss(self, scores: Operand, y: Operand, name: Optional[str] = None) -> Node:
        """Mean cross-entropy of softmax(scores) (N, C) against integer labels y (N,)."""
        return self._build("softmax_loss", (scores, y), name, None)

    def svm_loss(self, scores: Operand, y: Operand, name: Optional[str] = None) -> Node:
        """Mean multiclass hinge loss (margin 1) of scores (N, C) for integer labels y (N,)."""
        return self._build("svm_loss", (scores, y), name, None)

    # ----- tensor gates ----------------------------------------------------------------

    def matmul(self, a: Operand, b: Operand, name: Optional[str] = None) -> Node:
        """a @ b like np.matmul: matrices, stacks of matrices whose batch axes broadcast,
        and vectors. Backward: dout @ b.T and a.T @ dout. Also `a @ b` on nodes."""
        return self._build("matmul", (a, b), name, None)

    def reshape(self, x: Operand, shape: Sequence[int], name: Optional[str] = None) -> Node:
        """The same numbers in `shape` (one size may be -1: whatever is left)."""
        return self.apply("reshape", x, name=name, shape=shape)

    def flatten(self, x: Operand, axis: int = 1, name: Optional[str] = None) -> Node:
        """The axes before `axis` kept, the rest merged: (N, C, H, W) -> (N, C*H*W)."""
        return self.apply("flatten", x, name=name, axis=axis)

    def transpose(
        self, x: Operand, axes: Optional[Sequence[int]] = None, name: Optional[str] = None
    ) -> Node:
        """The axes permuted like np.transpose (reversed when `axes` is None)."""
        return self.apply("transpose", x, name=name, axes=axes)

    def concat(self, inputs: Sequence[Operand], axis: int = 0, name: Optional[str] = None) -> Node:
        """The inputs joined along `axis` like np.concatenate; the other axes must match."""
        return self.apply("concat", *inputs, name=name, axis=axis)

    def index(self, x: Operand, key: Any, name: Optional[str] = None) -> Node:
        """x[key], as `node[key]` builds it. A basic key (ints, slices, ..., None) builds a
        slice gate; a key with one integer array or integer node, the other entries `:`
        (or a leading `...`), a take gate along that axis: `W[ids]`, `x[:, ids]`."""
        parts = key if isinstance(key, tuple) else (key,)
        picks = [i for i, p in enumerate(parts) if isinstance(p, (Node, list, np.ndarray))]
        if not picks:
            return self.apply("slice", x, name=name, key=key)
        where = picks[0]
        indices = parts[where]
        if not isinstance(indices, Node) and np.asarray(indices).dtype == bool:
            raise GraphError(
                f"indexing {_named(x)} with a boolean mask: it picks a number of "
                "entries known only from the data; use g.where(mask, x, 0), or "
                "x[np.flatnonzero(mask)] for a constant mask"
            )
        others = parts[:where] + parts[where + 1 :]
        if len(picks) == 1 and all(isinstance(p, slice) and p == slice(None) for p in others):
            return self.take(x, indices, axis=where, name=name)
        if len(picks) == 1 and parts[:where] == (Ellipsis,) and not others[1:]:
            return self.take(x, indices, axis=-1, name=name)
        raise GraphError(
            f"indexing {_named(x)}: an integer array (or integer node) may be "
            "the one array in the key, with `:` for every other axis (x[ids], "
            f"x[:, ids], x[..., ids]); got {key!r}; build it from take and slice "
            "gates"
        )

    def take(self, x: Operand, indices: Operand, axis: int = 0, name: Optional[str] = None) -> Node:
        """np.take(x, indices, axis): the entries of x at the integer `indices` (a node, or
        an array that becomes an integer const) along `axis`; W[ids] is an embedding."""
        return self.apply("take", x, indices, name=name, axis=axis)

    def mean(
        self, x: Operand, axis: Axis = None, keepdims: bool = False, name: Optional[str] = None
    ) -> Node:
        """The mean over `axis` (an int, a tuple of ints, or None for all axes)."""
        return self.apply("mean", x, name=name, axis=axis, keepdims=keepdims)

    def global_avg_pool(self, x: Operand, name: Optional[str] = None) -> Node:
        """Global average pooling: the mean of each channel of x (N, C, H, W) -> (N, C),
        a mean gate over the axes (2, 3)."""
        return self.mean(x, axis=(2, 3), name=name)

    def avg_pool(
        self,
        x: Operand,
        pool_height: int = 2,
        pool_width: int = 2,
        stride: int = 2,
        name: Optional[str] = None,
    ) -> Node:
        """The mean of each pool_height x pool_width window of x (N, C, H, W), windows
        `stride` apart."""
        return self.apply(
            "avg_pool", x, name=name, pool_height=pool_height, pool_width=pool_width, stride=stride
        )

    # ----- more elementwise gates --------------------------------------------------------

    def negate(self, x: Operand, name: Optional[str] = None) -> Node:
        """-x; also `-node`."""
        return self._build("negate", (x,), name, None)

    def pow(self, x: Operand, exponent: float, name: Optional[str] = None) -> Node:
        """x ** exponent for a constant exponent; also `node ** 2`."""
        if isinstance(exponent, Node):
            raise GraphError(
                f"{_named(x)} ** {_named(exponent)}: the exponent must be a "
                "number; for x ** y with a node y build exp(y * log(x))"
            )
        return self.apply("pow", x, name=name, exponent=exponent)

    def sqrt(self, x: Operand, name: Optional[str] = None) -> Node:
        """√x."""
        return self._build("sqrt", (x,), name, None)

    def abs(self, x: Operand, name: Optional[str] = None) -> Node:
        """|x|; also `abs(node)`. Backward: sign(x) (0 at 0)."""
        return self._build("abs", (x,), name, None)

    def min(self, a: Operand, b: Operand, name: Optional[str] = None) -> Node:
        """Elementwise minimum of a and b. Backward routes the gradient to the smaller one
        (to a on a tie)."""
        return self._build("min", (a, b), name, None)

    def clip(
        self,
        x: Operand,
        low: Optional[float] = None,
        high: Optional[float] = None,
        name: Optional[str] = None,
        limits_pass: bool = True,
    ) -> Node:
        """x limited to [low, high] (None: no limit on that side); the gradient passes
        where low <= x <= high (PyTorch's clamp), or with limits_pass=False only where
        low < x < high (its hardtanh, relu6)."""
        return self.apply("clip", x, name=name, low=low, high=high, limits_pass=limits_pass)

    def compare(self, a: Operand, relation: str, b: Operand, name: Optional[str] = None) -> Node:
        """1 where `a relation b` (one of >, >=, <, <=, ==, !=), else 0: an int8 mask for
        where, multiply or a loss; no gradient passes through it.
        `g.where(g.compare(x, ">", 0), x, 0.1 * x)` is a leaky relu."""
        return self.apply("compare", a, b, name=name, relation=relation)

    def where(self, mask: Operand, a: Operand, b: Operand, name: Optional[str] = None) -> Node:
        """a where `mask` is true (nonzero), else b; all three broadcast. `mask` is an
        array (it becomes an integer const) or an integer node; it gets no gradient."""
        return self._build("where", (_integer_mask(mask), a, b), name, None)

    def leaky_relu(self, x: Operand, alpha: float = 0.01, name: Optional[str] = None) -> Node:
        """x where x > 0, alpha * x elsewhere."""
        return self.apply("leaky_relu", x, name=name, alpha=alpha)

    def gelu(self, x: Operand, approximate: str = "none", name: Optional[str] = None) -> Node:
        """x·Φ(x), Φ the standard normal CDF; approximate='tanh' for the tanh formula."""
        return self.apply("gelu", x, name=name, approximate=approximate)

    def softplus(self, x: Operand, name: Optional[str] = None) -> Node:
        """ln(1 + e^x), computed without overflow."""
        return self._build("softplus", (x,), name, None)

    def log_softmax(self, x: Operand, axis: int = -1, name: Optional[str] = None) -> Node:
        """log softmax(x) along `axis`, without overflow."""
        return self.apply("log_softmax", x, name=name, axis=axis)

    def cross_entropy(
        self,
        scores: Operand,
        y: Operand,
        ignore_index: Optional[int] = None,
        name: Optional[str] = None,
    ) -> Node:
        """Mean cross-entropy of softmax(scores) (..., C) against integer labels y (...),
        over the positions whose label is not `ignore_index`."""
        return self.apply("cross_entropy", scores, y, name=name, ignore_index=ignore_index)

    # ----- sequence gates (CS231n assignment 3) ------------------------------------------

    def word_embedding(self, x: Operand, W: Operand, name: Optional[str] = None) -> Node:
        """W[x]: the vectors (N, T, D) of the integer words x (N, T) in W (V, D)."""
        return self.apply("word_embedding", x, W, name=name)

    def rnn(
        self,
        x: Operand,
        h0: Operand,
        Wx: Operand,
        Wh: Operand,
        b: Operand,
        name: Optional[str] = None,
    ) -> Node:
        """A tanh RNN over sequences x (N, T, D) from h0 (N, H); Wx (D, H), Wh (H, H),
        b (H,). The node's value is every hidden state (N, T, H)."""
        return self.apply("rnn", x, h0, Wx, Wh, b, name=name)

    def lstm(
        self,
        x: Operand,
        h0: Operand,
        Wx: Operand,
        Wh: Operand,
        b: Operand,
        name: Optional[str] = None,
    ) -> Node:
        """An LSTM over sequences x (N, T, D) from h0 (N, H) and a zero cell state;
        Wx (D, 4H), Wh (H, 4H), b (4H,), gates in the order i, f, o, g. The node's value
        is every hidden state (N, T, H)."""
        return self.apply("lstm", x, h0, Wx, Wh, b, name=name)

    def rnn_step(
        self,
        x: Operand,
        prev_h: Operand,
        Wx: Operand,
        Wh: Operand,
        b: Operand,
        name: Optional[str] = None,
    ) -> Node:
        """One tanh RNN step: tanh(x @ Wx + prev_h @ Wh + b), x (N, D) -> (N, H)."""
        return self.apply("rnn_step", x, prev_h, Wx, Wh, b, name=name)

    def lstm_step(
        self,
        x: Operand,
        prev_h: Operand,
        prev_c: Operand,
        Wx: Operand,
        Wh: Operand,
        b: Operand,
        name: Optional[str] = None,
    ) -> Node:
        """One LSTM step; the node's value stacks next_h and next_c, (2, N, H): take them
        as `step[0]` and `step[1]`."""
        return self.apply("lstm_step", x, prev_h, prev_c, Wx, Wh, b, name=name)

    def temporal_affine(
        self, x: Operand, w: Operand, b: Operand, name: Optional[str] = None
    ) -> Node:
        """x[n, t] @ w + b at every step: x (N, T, D), w (D, M), b (M,) -> (N, T, M)."""
        return self.apply("temporal_affine", x, w, b, name=name)

    def temporal_softmax_loss(
        self, x: Operand, y: Operand, mask: Operand, name: Optional[str] = None
    ) -> Node:
        """Softmax cross-entropy of scores x (N, T, V) against integer words y (N, T) where
        mask (N, T) is true, summed over steps and averaged over the N sequences. A
        boolean array mask becomes an integer const."""
        return self.apply("temporal_softmax_loss", x, y, _integer_mask(mask), name=name)

    def attention(
        self, q: Operand, k: Operand, v: Operand, mask: Operand = None, name: Optional[str] = None
    ) -> Node:
        """Scaled dot-product attention softmax(q @ kᵀ / √d) @ v over the last two axes;
        mask (broadcastable to (..., S, L), true where query s may attend to key l) builds
        a masked_attention gate."""
        if mask is None:
            return self.apply("attention", q, k, v, name=name)
        return self.apply("masked_attention", q, k, v, _integer_mask(mask), name=name)


def _integer_mask(mask: Operand) -> Operand:
    """A boolean array as 0/1 integers (a const must hold numbers); nodes stay."""
    if not isinstance(mask, Node) and np.asarray(mask).dtype == bool:
        return np.asarray(mask).astype(np.int64)
    return mask


def _named(operand: Operand) -> str:
    if isinstance(operand, Node):
        return f"node {operand.name!r} {operand.static_shape}"
    return f"a constant {np.shape(operand)}"
