"""Log-probabilities: log_softmax, and the cross-entropy loss on them with an ignore mask
(labels equal to `ignore_index` count for nothing: padding in a batch of sequences)."""

import numpy as np

from ..kernels import _C
from .base import Gate, GateError, ShapeError, dims_match, integer, mask_summary, register_gate
from .elementwise import threaded_array, threaded_pair
from .tensor import normalized_axis


def _last_axis(x, axis):
    """Whether the C++ rows kernel takes x along `axis`: its last."""
    return threaded_array(x) and axis in (-1, x.ndim - 1)


def log_softmax(x, axis):
    """x − log Σ e^x along `axis`, shifted by the maximum so that nothing overflows."""
    if _last_axis(x, axis):  # C++: each row in one pass after its maximum
        return _C.softmax_forward(x, True)  # log softmax; by position: no keyword's slow path
    if x.size == 0:  # no maximum to shift by (along an empty batch's axis, say)
        return np.empty_like(x)
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


@register_gate
class LogSoftmax(Gate):
    """f = log softmax(x) along `axis` (the last by default).
    Backward: dout − softmax·Σ dout."""

    op = "log_softmax"
    inputs = ("x",)
    formula = "log softmax({0})"
    rule = (
        "log softmax: d{0} = dout − softmax({0})·Σ dout; each entry gives back what it "
        "received, less its probability's share of the total"
    )
    derivatives = ("dout − e^{f}·Σ dout",)

    def __init__(self, axis=-1):
        self.axis = integer("axis", axis)

    def attrs(self):
        return {"axis": self.axis}

    def shape(self, x):
        if x is not None:
            normalized_axis(self.axis, len(x))
        return x

    def forward(self, x):
        out = log_softmax(x, self.axis)
        return out, out

    def backward(self, dout, cache, needs):
        if _last_axis(cache, self.axis) and threaded_pair(dout, cache):
            return (_C.softmax_backward(dout, cache, True),)
        return (dout - np.exp(cache) * np.sum(dout, axis=self.axis, keepdims=True),)


@register_gate
class CrossEntropy(Gate):
    """The mean of −log softmax(scores)[y] over the counted positions: scores (..., C) with
    the classes along the last axis, integer labels y (...). Positions whose label is
    `ignore_index` are not counted (their gradient is 0); with none counted the loss is 0."""

    op = "cross_entropy"
    inputs = ("scores", "y")
    integer_inputs = (1,)
    formula = "cross-entropy(softmax({0}), {1})"
    rule = (
        "cross-entropy: d{0} = (softmax({0}) − one-hot({1})) / n at the n counted "
        "positions, 0 at the ignored ones; the labels get no gradient"
    )
    derivatives = ("(softmax({0}) − one-hot({1})) / n where counted", "none (labels)")

    def __init__(self, ignore_index=None):
        self.ignore_index = None if ignore_index is None else integer("ignore_index", ignore_index)

    def attrs(self):
        return {"ignore_index": self.ignore_index}

    def shape(self, scores, labels):
        if scores is not None and not scores:
            raise ShapeError("scores must have a class axis (..., C), got a scalar")
        if (
            scores is not None
            and labels is not None
            and (len(labels) != len(scores) - 1 or not all(map(dims_match, labels, scores[:-1])))
        ):
            raise ShapeError(
                f"labels {labels} must have the shape of scores {scores} "
                "without its last (class) axis"
            )
        return ()

    def forward(self, scores, labels):
        labels = np.asarray(labels)
        counted = (
            labels != self.ignore_index
            if self.ignore_index is not None
            else np.ones(labels.shape, dtype=bool)
        )
        classes = np.shape(scores)[-1]
        wrong = labels[counted & ((labels < 0) | (labels >= classes))]
        if wrong.size:
            raise GateError(
                f"labels {wrong[:5].tolist()} are not classes 0..{classes - 1}"
                + ("" if self.ignore_index is None else f" nor ignore_index {self.ignore_index}")
            )
        picked = np.where(counted, labels, 0)[..., np.newaxis]
        logp = log_softmax(scores, -1)
        count = max(int(counted.sum()), 1)
        loss = -np.sum(np.take_along_axis(logp, picked, -1)[..., 0] * counted) / count
        return np.asarray(loss, dtype=logp.dtype)[()], (logp, picked, counted, count)

    def backward(self, dout, cache, needs):
        logp, picked, counted, count = cache
        dscores = np.exp(logp)
        np.put_along_axis(dscores, picked, np.take_along_axis(dscores, picked, -1) - 1, -1)
        dscores *= (counted * (dout / count))[..., np.newaxis]
        return dscores, None

    def summarize_cache(self, cache, input_names):
        logp, _, counted, _ = cache
        return [
            f"saved log-probabilities {logp.shape}",
            mask_summary(counted, f"{input_names[1]} counted"),
        ]
