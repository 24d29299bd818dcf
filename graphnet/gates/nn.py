"""Neural-network gates on whole arrays: affine, softmax and the two classification losses."""

import math
from typing import Callable, ClassVar

import numpy as np

from ..kernels import _C, layers
from ..kernels.layers import matmul
from .base import Gate, ShapeError, dims_match, register_gate
from .elementwise import threaded_array, threaded_pair


_BLAS_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))  # dtypes, not types: faster `in`
_INT64 = np.dtype(np.int64)


@register_gate
class Affine(Gate):
    """out = x @ w + b, with x of shape (N, d1, ..., dk) flattened to (N, D)."""

    op = "affine"
    inputs = ("x", "w", "b")
    formula = "{0}·{1} + {2}"
    rule = "affine: d{0} = dout·{1}ᵀ, d{1} = {0}ᵀ·dout, d{2} = dout summed over the batch"
    derivatives = ("dout·{1}ᵀ", "{0}ᵀ·dout", "Σ dout over the batch")

    def shape(self, x, w, b):
        if w is not None and len(w) != 2:
            raise ShapeError(f"w must be (D, M), got {w}")
        if b is not None and w is not None and (len(b) != 1 or not dims_match(b[0], w[1])):
            raise ShapeError(f"b must be ({w[1]},) to match w {w}, got {b}")
        if x is None:
            return None
        if len(x) < 2:
            raise ShapeError(f"x must be (N, D) or (N, d1, ..., dk), got {x}")
        features = None if None in x[1:] else math.prod(x[1:])
        if w is not None and not dims_match(features, w[0]):
            raise ShapeError(f"x {x} flattens to {features} features but w {w} expects {w[0]}")
        return (x[0], None if w is None else w[1])

    def forward(self, x, w, b):
        # not -1: N may be 0; a batch of rows already (N, D) as it is
        rows = x if x.ndim == 2 else x.reshape(x.shape[0], math.prod(x.shape[1:]))
        if rows.dtype == w.dtype == b.dtype and rows.dtype in _BLAS_DTYPES:
            # the bias added in C++: numpy's numbers; by position: no keyword's slow path
            out = _C.matmul(rows, w, False, False, b)
        else:
            out = matmul(rows, w)
            out += b
        return out, (x.shape, rows, w)

    def backward(self, dout, cache, needs):
        x_shape, rows, w = cache
        try:  # the three products in one binding, where dout, rows and w share a float dtype
            dx, dw, db = _C.affine_backward(dout, rows, w, needs)
        except (ValueError, TypeError):  # numpy's promotions of mixed dtypes
            dx = matmul(dout, w, transpose_b=True) if needs[0] else None
            dw = matmul(rows, dout, transpose_a=True) if needs[1] else None
            db = layers._column_sums(dout) if needs[2] else None
        return (dx if dx is None else dx.reshape(x_shape)), dw, db

    def summarize_cache(self, cache, input_names):
        _, rows, w = cache
        return [f"saved x as rows {np.shape(rows)} and w {np.shape(w)}"]


@register_gate
class Softmax(Gate):
    """Probabilities along the last axis. Backward: s * (dout - sum(dout * s))."""

    op = "softmax"
    inputs = ("x",)
    formula = "softmax({0})"
    rule = "softmax: d{0} = s·(dout − Σ dout·s) with s = {f}"
    derivatives = ("s·(dout − Σ dout·s)",)

    def shape(self, x):
        return x

    def forward(self, x):
        if threaded_array(x):  # C++: each row in one pass after its maximum
            probs = _C.softmax_forward(x)
            return probs, probs
        shifted = np.exp(x - x.max(axis=-1, keepdims=True))
        probs = shifted / shifted.sum(axis=-1, keepdims=True)
        return probs, probs

    def backward(self, dout, cache, needs):
        probs = cache
        if threaded_pair(dout, probs):
            return (_C.softmax_backward(dout, probs),)
        return (probs * (dout - (dout * probs).sum(axis=-1, keepdims=True)),)


class ClassificationLoss(Gate):
    """Mean loss over a batch of scores (N, C) and integer labels (N,). The kernel returns
    the loss and d loss / d scores together, so backward only scales the saved gradient.
    Float32 and float64 scores go to a C++ kernel (one pass over each row, where the
    course's numpy kernel makes a dozen calls of a microsecond each); other dtypes, and
    labels outside [0, C), to the course's kernel (which names the bad labels)."""

    inputs = ("scores", "y")
    integer_inputs = (1,)
    kernel: ClassVar[Callable[..., tuple]]  # (scores, labels) -> (loss, d loss / d scores)
    # the same in C++ (float32/64, int64 labels; the loss a numpy scalar of the scores'
    # dtype), with a third argument: gradient=False may skip the gradient (None)
    rows_kernel: ClassVar[Callable[..., tuple]]

    def shape(self, scores, labels):
        if scores is not None and len(scores) != 2:
            raise ShapeError(f"scores must be (N, C), got {scores}")
        if labels is not None and len(labels) != 1:
            raise ShapeError(f"labels must be (N,), got {labels}")
        if scores is not None and labels is not None and not dims_match(scores[0], labels[0]):
            raise ShapeError(f"{scores[0]} rows of scores {scores} but {labels[0]} labels")
        return ()

    def forward(self, scores, labels):
        return self._loss(scores, labels, True)

    def _loss(self, scores, labels, gradient: bool):
        """(loss, d loss / d scores), the gradient None where `gradient` is False and the
        C++ kernel takes the scores (which then skips it)."""
        if (
            type(scores) is np.ndarray
            and scores.dtype in _BLAS_DTYPES
            and scores.ndim == 2
            and scores.size
        ):
            if type(labels) is not np.ndarray or labels.dtype != _INT64:
                labels = np.asarray(labels).astype(np.int64, copy=False)
            try:  # (labels not (N,) are refused there too)
                return type(self).rows_kernel(scores, labels, gradient)
            except ValueError:
                pass  # a bad label: the course's kernel raises the error that shows them
        loss, dscores = type(self).kernel(scores, labels)
        return np.asarray(loss, dtype=scores.dtype)[()], dscores

    def eval_forward(self, scores, labels):
        """The loss, its gradient left to a backward, if one follows (LossInputs)."""
        loss, dscores = self._loss(scores, labels, False)
        return loss, LossInputs((scores, labels)) if dscores is None else dscores

    def backward(self, dout, cache, needs):
        if type(cache) is LossInputs:  # after an eval-mode forward
            cache = self.forward(*cache)[1]
        return cache * dout, None

    def summarize_cache(self, cache, input_names):
        if type(cache) is LossInputs:
            return [
                f"saved {input_names[0]} {np.shape(cache[0])} and {input_names[1]}: "
                "eval mode, d loss / d scores computed by a backward"
            ]
        return [f"saved d loss / d scores {np.shape(cache)}, computed with the loss"]


class LossInputs(tuple):
    """An eval-mode loss's cache: its inputs, from which a backward computes the gradient."""

    __slots__ = ()


def _svm_loss_rows(scores, labels, gradient=True):
    """_C.svm_loss, whose kernel computes the gradient with the loss whatever `gradient`."""
    loss, dscores = _C.svm_loss(scores, labels)
    return np.asarray(loss, dtype=scores.dtype)[()], dscores


@register_gate
class SoftmaxLoss(ClassificationLoss):
    """Cross-entropy of softmax(scores) against the labels."""

    op = "softmax_loss"
    formula = "cross-entropy(softmax({0}), {1})"
    rule = "softmax loss: d{0} = (softmax({0}) − one-hot({1})) / N; the labels get no gradient"
    derivatives = ("(softmax({0}) − one-hot({1})) / N", "none (labels)")
    kernel = staticmethod(layers.softmax_loss)
    # The C++ softmax loss (cpp/softmax_loss.h) of each row, summed and divided by N in
    # float64: one rounding, as numpy's mean, where weighing each row 1/N would round N
    # times (1/3 is inexact) and make a zero gradient's numerical estimate noise; dscores
    # divided by N after. One call: its six numpy calls around the kernel cost a batch-1
    # loss 2.3 of its 3.5 us, more where a step's walk runs it with its caches cold.
    rows_kernel = staticmethod(_C.mean_softmax_loss)


@register_gate
class SvmLoss(ClassificationLoss):
    """Multiclass hinge loss with margin 1."""

    op = "svm_loss"
    formula = "hinge loss({0}, {1})"
    rule = (
        "SVM loss: each violated margin adds +1/N to its class score and −1/N to the "
        "correct one; the labels get no gradient"
    )
    derivatives = (
        "(count of violated margins, −1 per violation at the label) / N",
        "none (labels)",
    )
    kernel = staticmethod(layers.svm_loss)
    rows_kernel = staticmethod(_svm_loss_rows)
