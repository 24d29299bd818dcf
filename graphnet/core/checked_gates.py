"""What a gate registered outside graphnet returns, checked as it runs.

graphnet's own gates are tested to return their node's dtype and shape, and one gradient
of its input's shape per input; a gate a user registers (`gn.register_gate`) is not, and
its mistakes would travel: a float64 output on a float32 graph turns every node after it,
and the params' gradients, into float64 without a word; a gradient of the wrong shape is
stored as it is. So the plans run such a gate's forward and backward through these
wrappers, which name the node, the gate and the dtypes and shapes. graphnet's own gates
run unwrapped and pay nothing.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..errors import GraphError


def is_graphnets(gate) -> bool:
    """Whether the gate is one of graphnet's own."""
    return type(gate).__module__.startswith("graphnet.")


def _where(node) -> str:
    return f"gate {node.op!r} ({type(node.gate).__qualname__}) of node {node.name!r}"


def _wrong_float(declared, value) -> bool:
    """A float value of another float dtype than the node's (integers pass: a user gate
    may compute labels or indices)."""
    dtype = np.asarray(value).dtype
    return declared is not None and declared.kind == "f" and dtype.kind == "f" and dtype != declared


def checked_forward(node, forward: Callable) -> Callable:
    """`forward`, checked to return (output, cache) with the output in the node's dtype and
    in a shape its shape rule allows."""
    static, declared = node.static_shape, node.declared_dtype

    def run(*values: Any) -> tuple:
        result = forward(*values)
        if type(result) is not tuple or len(result) != 2:
            raise GraphError(
                f"{_where(node)}: forward must return (output, cache), got {type(result).__name__}"
            )
        out = result[0]
        if _wrong_float(declared, out):
            raise GraphError(
                f"{_where(node)}: forward returned {np.asarray(out).dtype} values for a "
                f"{declared} node; return them in the inputs' dtype "
                f"(e.g. out.astype(x.dtype))"
            )
        shape = np.shape(out)
        if static is not None and (
            len(shape) != len(static)
            or any(s is not None and s != n for s, n in zip(static, shape))
        ):
            raise GraphError(
                f"{_where(node)}: forward returned shape {shape}, "
                f"but the gate's shape rule gave {static}"
            )
        return result

    return run


def checked_backward(node, backward: Callable) -> Callable:
    """`backward`, checked to return one gradient (or None) per input, each in its input's
    dtype and of its input's shape (or a shape the input broadcasts to, which the walk sums
    back down). A Python number becomes a number of the input's dtype."""
    inputs = node.inputs

    def run(dout: Any, cache: Any, needs) -> tuple:
        grads = backward(dout, cache, needs)
        if not isinstance(grads, (tuple, list)) or len(grads) != len(inputs):
            count = len(grads) if isinstance(grads, (tuple, list)) else type(grads).__name__
            raise GraphError(
                f"{_where(node)}: backward must return one gradient (or None) per input, "
                f"{len(inputs)}, got {count}"
            )
        checked = []
        for grad, source in zip(grads, inputs):
            if grad is not None:
                grad = _checked_gradient(node, source, grad)
            checked.append(grad)
        return tuple(checked)

    return run


def _checked_gradient(node, source, grad: Any) -> Any:
    value = source.value
    if isinstance(grad, (int, float)):
        return np.asarray(grad, dtype=np.asarray(value).dtype)[()]
    if not isinstance(grad, (np.ndarray, np.generic)):
        raise GraphError(
            f"{_where(node)}: backward returned a {type(grad).__name__} for input "
            f"{source.name!r}; return a numpy array (or None)"
        )
    dtype = np.asarray(value).dtype
    if _wrong_float(dtype, grad):
        raise GraphError(
            f"{_where(node)}: backward returned {grad.dtype} values for input "
            f"{source.name!r}, which is {dtype}; return them in the input's dtype"
        )
    shape, wanted = np.shape(grad), np.shape(value)
    try:
        fits = shape == wanted or np.broadcast_shapes(wanted, shape) == shape
    except ValueError:
        fits = False
    if not fits:
        raise GraphError(
            f"{_where(node)}: backward returned a gradient of shape {shape} for input "
            f"{source.name!r} of shape {wanted}"
        )
    return grad
