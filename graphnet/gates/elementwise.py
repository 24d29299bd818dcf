"""Elementwise gates: the CS231n circuit view of backprop, one local rule per gate.

Binary gates broadcast like numpy; the executor sums each gradient back down to its
input's shape, so the rules below are written for equal shapes.
"""

import math

import numpy as np

from ..kernels import _C
from .base import Gate, broadcast_shape, mask_summary, register_gate


class BinaryGate(Gate):
    inputs = ("a", "b")

    def shape(self, a, b):
        return broadcast_shape(a, b)


class UnaryGate(Gate):
    inputs = ("x",)

    def shape(self, x):
        return x


@register_gate
class Add(BinaryGate):
    """f = a + b. An add gate distributes: both inputs get the upstream gradient unchanged."""

    op = "add"
    formula = "{0} + {1}"
    rule = "an add gate distributes: each input receives the upstream gradient unchanged"
    derivatives = ("1", "1")

    def forward(self, a, b):
        return a + b, None

    def backward(self, dout, cache, needs):
        return dout, dout


@register_gate
class Subtract(BinaryGate):
    """f = a - b. Like add, with the sign flipped for b."""

    op = "subtract"
    formula = "{0} − {1}"
    rule = "a subtract gate distributes like add, with the sign flipped for the second input"
    derivatives = ("1", "−1")

    def forward(self, a, b):
        return a - b, None

    def backward(self, dout, cache, needs):
        return dout, -dout


@register_gate
class Multiply(BinaryGate):
    """f = a * b. A multiply gate swaps its inputs: df/da = b and df/db = a."""

    op = "multiply"
    formula = "{0} × {1}"
    rule = "a multiply gate swaps: each input receives the upstream gradient times the other input"
    derivatives = ("{1}", "{0}")

    def forward(self, a, b):
        return a * b, (a, b)

    def backward(self, dout, cache, needs):
        a, b = cache
        da = dout * b if needs[0] else None
        if a is b and needs[1]:  # x * x (an L2 penalty): both edges carry the same product
            return da, da
        return da, (dout * a if needs[1] else None)


@register_gate
class Divide(BinaryGate):
    """f = a / b. df/da = 1/b and df/db = -a/b^2."""

    op = "divide"
    formula = "{0} / {1}"
    rule = "a divide gate: d/d{0} = 1/{1}, d/d{1} = −{0}/{1}²"
    derivatives = ("1/{1}", "−{0}/{1}²")

    def forward(self, a, b):
        return a / b, (a, b)

    def backward(self, dout, cache, needs):
        a, b = cache
        da = dout / b if needs[0] else None
        db = -dout * a / (b * b) if needs[1] else None
        return da, db


@register_gate
class Maximum(BinaryGate):
    """f = max(a, b) elementwise. A max gate routes: the whole gradient goes to the larger
    input and the other gets zero. On a tie the first input `a` gets it, every time."""

    op = "max"
    formula = "max({0}, {1})"
    rule = (
        "a max gate routes: the larger input receives the whole upstream gradient, the "
        "other receives 0 (a tie goes to {0})"
    )
    derivatives = ("1 if {0} ≥ {1} else 0", "1 if {1} > {0} else 0")

    def forward(self, a, b):
        a_wins = a >= b
        return np.maximum(a, b), a_wins

    def backward(self, dout, cache, needs):
        a_wins = cache
        return dout * a_wins, dout * ~a_wins

    def summarize_cache(self, cache, input_names):
        a, b = input_names
        return [mask_summary(cache, f"mask {a} >= {b}")]


@register_gate
class Relu(UnaryGate):
    """f = max(x, 0): passes the gradient where x > 0 and blocks it elsewhere (also at 0)."""

    op = "relu"
    formula = "max({0}, 0)"
    rule = "a relu gate passes the gradient where its input is positive and blocks it elsewhere"
    derivatives = ("1 if {0} > 0 else 0",)
    # The C++ pointwise kernel (cpp/pointwise.h) and its alpha that a fused step applies for
    # this gate (passes/norm_activation.py): the same bits as below.
    kernel = ("relu", 0.0)

    def forward(self, x):
        if type(x) is _FLOAT64:  # one number (a scalar circuit): 20x faster than the ufunc
            passes = x > _ZERO  # a float64 against a float64: no conversion of the 0
            return (x if passes or x != x else _ZERO), passes  # NaN passes, as in np.maximum
        if threaded_array(x):  # one C++ pass over a big activation; the same numbers as below
            return _C.relu_forward(x)
        return np.maximum(x, 0), x > 0

    def backward(self, dout, cache, needs):
        if type(dout) is _FLOAT64:  # one number: the same as dout * cache, without the bool
            return (dout if cache else dout * _ZERO,)
        if threaded_array(dout) and dout.shape == cache.shape:
            return (_C.relu_backward(dout, cache),)
        return (dout * cache,)

    def summarize_cache(self, cache, input_names):
        return [mask_summary(cache, f"mask {input_names[0]} > 0")]


_FLOAT64, _ZERO = np.float64, np.float64(0.0)


def threaded_array(array):
    """Whether the C++ kernels take `array`: a float32 or float64 ndarray of rank >= 1 (a
    scalar circuit's numbers stay in Python, where they are faster)."""
    return isinstance(array, np.ndarray) and array.ndim > 0 and array.dtype in _KERNEL_DTYPES


#: dtypes, not types: `in` compares them without converting each type to a dtype
_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def threaded_pair(dout, saved):
    """Whether a C++ backward takes the upstream gradient and a saved array: both
    threaded_array, of one shape and dtype."""
    return (
        threaded_array(dout)
        and isinstance(saved, np.ndarray)
        and dout.shape == saved.shape
        and dout.dtype == saved.dtype
    )


@register_gate
class Exp(UnaryGate):
    """f = e^x. Its own derivative: df/dx = f."""

    op = "exp"
    formula = "exp({0})"
    rule = "exp is its own derivative: d{f}/d{0} = {f}"
    derivatives = ("{f}",)

    def forward(self, x):
        out = np.exp(x)  # numpy's is vectorised (AVX-512 where the CPU has it)
        return out, out

    def backward(self, dout, cache, needs):
        return (dout * cache,)


@register_gate
class Log(UnaryGate):
    """f = ln x. df/dx = 1/x."""

    op = "log"
    formula = "ln {0}"
    rule = "log: d{f}/d{0} = 1/{0}"
    derivatives = ("1/{0}",)

    def forward(self, x):
        return np.log(x), x

    def backward(self, dout, cache, needs):
        return (dout / cache,)


@register_gate
class Sigmoid(UnaryGate):
    """f = 1 / (1 + e^-x). df/dx = f (1 - f)."""

    op = "sigmoid"
    formula = "σ({0})"
    rule = (
        "sigmoid: d{f}/d{0} = {f}·(1 − {f}), at most 0.25, so deep sigmoid stacks shrink gradients"
    )
    derivatives = ("{f}·(1 − {f})",)

    def forward(self, x):
        if type(x) is _FLOAT64:  # one number (a scalar circuit)
            e = math.exp(-abs(x))
            out = _FLOAT64((1 if x >= 0 else e) / (1 + e))
        elif threaded_array(x) and x.dtype == np.float32:  # one C++ pass (AVX2)
            out = _C.sigmoid(x)
        elif threaded_array(x):
            out = _C.pointwise_forward("sigmoid", x)
        else:
            # e^-|x| never overflows, unlike 1 / (1 + e^-x) for x << 0; 2.5x faster than
            # exp(-logaddexp(0, -x)), whose logaddexp numpy does not vectorize.
            e = np.exp(-np.abs(x))
            out = np.where(x >= 0, e.dtype.type(1), e) / (1 + e)
        return out, out

    def backward(self, dout, cache, needs):
        # a number (a scalar circuit) skips the check's two calls
        if type(dout) is not _FLOAT64 and threaded_pair(dout, cache):
            return (_C.pointwise_backward("sigmoid", dout, cache),)
        return (dout * cache * (1 - cache),)


@register_gate
class Tanh(UnaryGate):
    """f = tanh x. df/dx = 1 - f^2."""

    op = "tanh"
    formula = "tanh({0})"
    rule = "tanh: d{f}/d{0} = 1 − {f}²"
    derivatives = ("1 − {f}²",)

    def forward(self, x):
        out = _FLOAT64(math.tanh(x)) if type(x) is _FLOAT64 else np.tanh(x)
        return out, out

    def backward(self, dout, cache, needs):
        if type(dout) is not _FLOAT64 and threaded_pair(dout, cache):  # as in sigmoid's
            return (_C.pointwise_backward("tanh", dout, cache),)
        return (dout * (1 - cache * cache),)
