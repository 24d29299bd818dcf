"""The built-in gate builders: `g.conv(x, w, b, stride=1, pad=0)` and the rest, each a
thin, documented call of `Graph.apply(op, ...)`. A gate registered elsewhere is built with
`g.apply(op, ...)` directly; it needs no builder here."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

if TYPE_CHECKING:
    from .node import Node

Operand = Union["Node", float, int, Any]
Axis = Union[None, int, Sequence[int]]


class GateBuilders:
    """Mixed into Graph. Inputs may be nodes or numbers/arrays (which become consts)."""

    def apply(self, op: str, *inputs: Operand, name: Optional[str] = None,
              **attrs: Any) -> Node:
        raise NotImplementedError  # Graph defines it

    def add(self, a: Operand, b: Operand, name: Optional[str] = None) -> Node:
        """a + b (broadcasting). Backward distributes: both get the upstream gradient."""
        return self.apply("add", a, b, name=name)

    def subtract(self, a: Operand, b: Operand, name: Optional[str] = None) -> Node:
        """a - b (broadcasting)."""
        return self.apply("subtract", a, b, name=name)

    def multiply(self, a: Operand, b: Operand, name: Optional[str] = None) -> Node:
        """a * b (broadcasting). Backward swaps: a gets dout * b, b gets dout * a."""
        return self.apply("multiply", a, b, name=name)

    def divide(self, a: Operand, b: Operand, name: Optional[str] = None) -> Node:
        """a / b (broadcasting)."""
        return self.apply("divide", a, b, name=name)

    def max(self, a: Operand, b: Operand, name: Optional[str] = None) -> Node:
        """Elementwise maximum of a and b. Backward routes the gradient to the larger one
        (to a on a tie)."""
        return self.apply("max", a, b, name=name)

    def relu(self, x: Operand, name: Optional[str] = None) -> Node:
        """max(x, 0)."""
        return self.apply("relu", x, name=name)

    def exp(self, x: Operand, name: Optional[str] = None) -> Node:
        """e^x."""
        return self.apply("exp", x, name=name)

    def log(self, x: Operand, name: Optional[str] = None) -> Node:
        """The natural logarithm of x."""
        return self.apply("log", x, name=name)

    def sigmoid(self, x: Operand, name: Optional[str] = None) -> Node:
        """1 / (1 + e^-x), computed without overflow."""
        return self.apply("sigmoid", x, name=name)

    def tanh(self, x: Operand, name: Optional[str] = None) -> Node:
        """tanh x."""
        return self.apply("tanh", x, name=name)

    def softmax(self, x: Operand, name: Optional[str] = None) -> Node:
        """Probabilities along the last axis."""
        return self.apply("softmax", x, name=name)

    def sum(self, x: Operand, axis: Axis = None, keepdims: bool = False,
            name: Optional[str] = None) -> Node:
        """Sum over `axis` (an int, a tuple of ints, or None for all axes)."""
        return self.apply("sum", x, name=name, axis=axis, keepdims=keepdims)

    def affine(self, x: Operand, w: Operand, b: Operand, name: Optional[str] = None) -> Node:
        """x @ w + b, x of shape (N, d1, ..., dk) flattened to (N, D); w (D, M); b (M,)."""
        return self.apply("affine", x, w, b, name=name)

    def conv(self, x: Operand, w: Operand, b: Operand, stride: int = 1, pad: int = 0,
             name: Optional[str] = None) -> Node:
        """Convolution (cross-correlation) of x (N, C, H, W) with filters w (F, C, HH, WW)
        plus b (F,): out (N, F, 1 + (H + 2 pad - HH) // stride, 1 + (W + 2 pad - WW) //
        stride). C++ kernels."""
        return self.apply("conv", x, w, b, name=name, stride=stride, pad=pad)

    def max_pool(self, x: Operand, pool_height: int = 2, pool_width: int = 2, stride: int = 2,
                 name: Optional[str] = None) -> Node:
        """The maximum of each pool_height x pool_width window of x (N, C, H, W), windows
        `stride` apart. C++ kernels."""
        return self.apply("max_pool", x, name=name, pool_height=pool_height,
                          pool_width=pool_width, stride=stride)

    def batchnorm(self, x: Operand, gamma: Operand, beta: Operand, eps: float = 1e-5,
                  momentum: float = 0.9, name: Optional[str] = None) -> Node:
        """Batch normalization of x (N, D) per feature, scaled by gamma and shifted by beta
        (D,); running averages with `momentum` for eval mode."""
        return self.apply("batchnorm", x, gamma, beta, name=name, eps=eps, momentum=momentum)

    def spatial_batchnorm(self, x: Operand, gamma: Operand, beta: Operand, eps: float = 1e-5,
                          momentum: float = 0.9, name: Optional[str] = None) -> Node:
        """Batch normalization of images x (N, C, H, W) per channel; gamma, beta (C,)."""
        return self.apply("spatial_batchnorm", x, gamma, beta, name=name, eps=eps,
                          momentum=momentum)

    def layernorm(self, x: Operand, gamma: Operand, beta: Operand, eps: float = 1e-5,
                  name: Optional[str] = None) -> Node:
        """Layer normalization of each sample of x (N, D) or (N, ..., D) over its last axis,
        scaled by gamma and shifted by beta (D,); the same in train and eval mode."""
        return self.apply("layernorm", x, gamma, beta, name=name, eps=eps)

    def spatial_groupnorm(self, x: Operand, gamma: Operand, beta: Operand, G: int,
                          eps: float = 1e-5, name: Optional[str] = None) -> Node:
        """Group normalization of images x (N, C, H, W): G groups of C // G channels, each
        normalized per sample over its channels and pixels; gamma, beta (C,) or
        (1, C, 1, 1)."""
        return self.apply("spatial_groupnorm", x, gamma, beta, name=name, G=G, eps=eps)

    def dropout(self, x: Operand, p: float, seed: Optional[int] = None,
                name: Optional[str] = None) -> Node:
        """Inverted dropout: in train mode each unit is dropped with probability p (the
        2017 course's meaning) and the rest scaled by 1 / (1 - p); identity in eval mode.
        A seed fixes the mask."""
        return self.apply("dropout", x, name=name, p=p, seed=seed)

    def softmax_loss(self, scores: Operand, y: Operand, name: Optional[str] = None) -> Node:
        """Mean cross-entropy of softmax(scores) (N, C) against integer labels y (N,)."""
        return self.apply("softmax_loss", scores, y, name=name)

    def svm_loss(self, scores: Operand, y: Operand, name: Optional[str] = None) -> Node:
        """Mean multiclass hinge loss (margin 1) of scores (N, C) for integer labels y (N,)."""
        return self.apply("svm_loss", scores, y, name=name)
