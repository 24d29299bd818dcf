"""Numerical gradients by centred differences: the one core behind `gn.gradcheck` (a whole
graph) and the course's checkers in `graphnet.gradient_check` (a function of an array)."""

import numbers
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, Tuple

import numpy as np

from ..errors import GraphError


def difference_quotients(
    f: Callable[[np.ndarray], Any],
    x: np.ndarray,
    h: float,
    indices: Iterable[Tuple[int, ...]],
    difference: Callable[[Any, Any], Any] = np.subtract,
) -> Iterator[Tuple[Tuple[int, ...], Any]]:
    """Yield (ix, difference(f(x + h e_ix), f(x - h e_ix)) / (2h)) for each index ix.

    x is perturbed IN PLACE, one element at a time, because the function under test usually
    closes over x rather than reading its argument; every element is restored, also when f
    raises. What f returns is passed to `difference` as it is, so f must return a fresh
    value, not a buffer it overwrites on the next call. x + h is rounded to x's own dtype,
    as when the course's checkers write into x.
    """
    if not (isinstance(x, np.ndarray) and x.dtype.kind == "f"):
        raise ValueError(
            "gradient check: x must be a float ndarray that f reads, "
            f"got {type(x).__name__} {getattr(x, 'dtype', '')}"
        )
    if not (isinstance(h, numbers.Real) and not isinstance(h, bool) and 0 < h < np.inf):
        raise ValueError(f"gradient check: the step h must be a positive finite number, got {h!r}")
    if any(stride == 0 and size > 1 for stride, size in zip(x.strides, x.shape)):
        raise ValueError(
            f"gradient check: x (shape {x.shape}, strides {x.strides}) repeats its memory "
            "along an axis (a broadcast view), so a step on one entry moves others; pass "
            "x.copy() and let f read that"
        )
    step = x.dtype.type
    for ix in indices:
        original = x[ix]
        up, down = step(original + h), step(original - h)
        if up == down:
            raise ValueError(
                f"gradient check: x{list(ix)} = {original!r} plus or minus h = {h!r} rounds "
                f"to the same {x.dtype} value, so no difference can be measured there; "
                "use a float64 x or a larger h"
            )
        try:
            x[ix] = up
            above = f(x)
            x[ix] = down
            below = f(x)
        finally:
            x[ix] = original
        quotient = difference(above, below) / (2 * h)
        if np.ndim(quotient) != 0:
            raise ValueError(
                f"gradient check: f(x) must return a scalar, got a value of shape "
                f"{np.shape(quotient)} (for an array output, use "
                "eval_numerical_gradient_array(f, x, df))"
            )
        yield ix, quotient


def numerical_gradient(
    f: Callable[[np.ndarray], Any],
    x: np.ndarray,
    h: float,
    difference: Callable[[Any, Any], Any] = np.subtract,
    on_entry: Optional[Callable[[Tuple[int, ...], Any], None]] = None,
) -> np.ndarray:
    """The gradient of f at x by centred differences: an array of x's shape and dtype.

    f maps x to a scalar, or to anything `difference` reduces to one (see
    difference_quotients). on_entry(ix, value) is called as each entry is computed.
    """
    grad = np.zeros_like(x)
    for ix, quotient in difference_quotients(f, x, h, np.ndindex(*np.shape(x)), difference):
        grad[ix] = quotient
        if on_entry is not None:
            on_entry(ix, grad[ix])
    return grad


def gradcheck(
    graph: Any,
    feeds: Optional[Dict[str, Any]] = None,
    /,
    h: float = 1e-5,
    seed: int = 0,
    **named_feeds: Any,
) -> Dict[str, float]:
    """Compare the gradients of `backward()` with centred differences, in float64.

    Returns {name: relative error} for every param and every float input that the sink
    depends on, where relative error = max |analytic - numeric| / max(1e-8, |a| + |n|).
    A non-scalar sink is reduced to sum(r * sink) with a fixed random r. Errors around
    1e-7 or below mean the gradients agree. Random gates must be deterministic while this
    runs: give dropout a seed, or put the graph in eval mode.

    Args:
        graph: the graph; its single sink is the function differentiated.
        feeds: the inputs, as a dict or as keyword arguments (`X=..., y=...`).
        h: the step of the centred differences.
        seed: the seed of the random projection of a non-scalar sink.

    Examples:
        >>> errors = gn.gradcheck(model.graph, X=X[:2], y=y[:2])
        >>> max(errors.values()) < 1e-6
        True
    """
    feeds = {
        name: np.array(value, dtype=np.float64)
        if np.asarray(value).dtype.kind == "f"
        else np.asarray(value)
        for name, value in {**(feeds or {}), **named_feeds}.items()
    }
    sink = graph.single_sink("check gradients")
    not_double = [
        n.name
        for n in graph.nodes
        if n.declared_dtype is not None and n.dtype.kind == "f" and n.dtype != np.float64
    ]
    if not_double:
        raise GraphError(
            "gradcheck needs float64 throughout (float32 rounding swamps the "
            "differences); build with Graph(dtype=np.float64). Not float64: "
            + ", ".join(map(repr, not_double[:8]))
        )
    out = np.asarray(graph.run(sink, feeds))
    weights = None if out.size == 1 else np.random.default_rng(seed).standard_normal(out.shape)

    def objective(_):
        value = np.asarray(graph.run(sink, feeds))
        return float(value.sum() if weights is None else (weights * value).sum())

    graph.run(sink, feeds)
    graph.backward(sink, grad=weights)
    checked = [
        n
        for n in graph.nodes
        if n.gate is None
        and n.requires_grad
        and n.grad is not None
        and (n.kind == "param" or n.name in feeds)
    ]
    analytic = {n.name: np.array(n.grad, dtype=np.float64) for n in checked}
    errors = {}
    for node in checked:
        array = node.value if node.kind == "param" else feeds[node.name]
        errors[node.name] = relative_error(
            analytic[node.name], numerical_gradient(objective, array, h)
        )
    # The differences left the graph computed at a nudged input: walk it once more, so the
    # values and gradients a student reads next are those of the feeds that were checked.
    graph.run(sink, feeds)
    graph.backward(sink, grad=weights)
    return errors


def relative_error(a: Any, b: Any) -> float:
    """max |a - b| / max(1e-8, |a| + |b|), elementwise; a float (0.0 for empty arrays)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b)), initial=0.0))
