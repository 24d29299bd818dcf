"""Elementwise gates: the CS231n circuit view of backprop, one local rule per gate.

Binary gates broadcast like numpy; the scheduler sums each gradient back down to its
input's shape, so the rules below are written for equal shapes.
"""
import numpy as np

from ..kernels import _C
from .base import Gate, broadcast_shape


class BinaryGate(Gate):
    def shape(self, a, b):
        return broadcast_shape(a, b)


class UnaryGate(Gate):
    def shape(self, x):
        return x


class Add(BinaryGate):
    """f = a + b. An add gate distributes: both inputs get the upstream gradient unchanged."""
    op = "add"

    def forward(self, a, b):
        return a + b, None

    def backward(self, dout, cache, needs):
        return dout, dout


class Subtract(BinaryGate):
    """f = a - b. Like add, with the sign flipped for b."""
    op = "subtract"

    def forward(self, a, b):
        return a - b, None

    def backward(self, dout, cache, needs):
        return dout, -dout


class Multiply(BinaryGate):
    """f = a * b. A multiply gate swaps its inputs: df/da = b and df/db = a."""
    op = "multiply"

    def forward(self, a, b):
        return a * b, (a, b)

    def backward(self, dout, cache, needs):
        a, b = cache
        return (dout * b if needs[0] else None), (dout * a if needs[1] else None)


class Divide(BinaryGate):
    """f = a / b. df/da = 1/b and df/db = -a/b^2."""
    op = "divide"

    def forward(self, a, b):
        return a / b, (a, b)

    def backward(self, dout, cache, needs):
        a, b = cache
        da = dout / b if needs[0] else None
        db = -dout * a / (b * b) if needs[1] else None
        return da, db


class Maximum(BinaryGate):
    """f = max(a, b) elementwise. A max gate routes: the whole gradient goes to the larger
    input and the other gets zero. On a tie the first input `a` gets it, every time."""
    op = "max"

    def forward(self, a, b):
        a_wins = a >= b
        return np.maximum(a, b), a_wins

    def backward(self, dout, cache, needs):
        a_wins = cache
        return dout * a_wins, dout * ~a_wins


class Relu(UnaryGate):
    """f = max(x, 0): passes the gradient where x > 0 and blocks it elsewhere (also at 0)."""
    op = "relu"

    def forward(self, x):
        if _threaded(x):  # one C++ pass over a big activation; the same numbers as below
            return _C.relu_forward(x)
        return np.maximum(x, 0), x > 0

    def backward(self, dout, cache, needs):
        if _threaded(dout) and dout.shape == cache.shape:
            return (_C.relu_backward(dout, cache),)
        return (dout * cache,)


def _threaded(array):
    return isinstance(array, np.ndarray) and array.ndim > 0 and array.dtype in (np.float32,
                                                                               np.float64)


class Exp(UnaryGate):
    """f = e^x. Its own derivative: df/dx = f."""
    op = "exp"

    def forward(self, x):
        out = np.exp(x)
        return out, out

    def backward(self, dout, cache, needs):
        return (dout * cache,)


class Log(UnaryGate):
    """f = ln x. df/dx = 1/x."""
    op = "log"

    def forward(self, x):
        return np.log(x), x

    def backward(self, dout, cache, needs):
        return (dout / cache,)


class Sigmoid(UnaryGate):
    """f = 1 / (1 + e^-x). df/dx = f (1 - f)."""
    op = "sigmoid"

    def forward(self, x):
        out = np.exp(-np.logaddexp(0, -x))  # never overflows, unlike 1 / (1 + exp(-x))
        return out, out

    def backward(self, dout, cache, needs):
        return (dout * cache * (1 - cache),)


class Tanh(UnaryGate):
    """f = tanh x. df/dx = 1 - f^2."""
    op = "tanh"

    def forward(self, x):
        out = np.tanh(x)
        return out, out

    def backward(self, dout, cache, needs):
        return (dout * (1 - cache * cache),)
