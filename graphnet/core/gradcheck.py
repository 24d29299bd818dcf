"""Numerical gradient checking of a whole graph."""
import numpy as np

from ..errors import GraphError


def gradcheck(graph, feeds=None, /, h=1e-5, seed=0, **named_feeds):
    """Compare the gradients of `backward()` with centred differences, in float64.

    Returns {name: relative error} for every param and every float input that the sink
    depends on, where relative error = max |analytic - numeric| / max(1e-8, |a| + |n|).
    A non-scalar sink is reduced to sum(r * sink) with a fixed random r. Errors around
    1e-7 or below mean the gradients agree. Random gates must be deterministic while this
    runs: give dropout a seed, or put the graph in eval mode.
    """
    feeds = {name: np.array(value, dtype=np.float64) if np.asarray(value).dtype.kind == "f"
             else np.asarray(value) for name, value in {**(feeds or {}), **named_feeds}.items()}
    sink = graph.single_sink("check gradients")
    not_double = [n.name for n in graph.nodes if n.declared_dtype is not None
                  and n.dtype.kind == "f" and n.dtype != np.float64]
    if not_double:
        raise GraphError("gradcheck needs float64 throughout (float32 rounding swamps the "
                         "differences); build with Graph(dtype=np.float64). Not float64: "
                         + ", ".join(map(repr, not_double[:8])))
    out = np.asarray(graph.run(sink, feeds))
    weights = None if out.size == 1 else np.random.default_rng(seed).standard_normal(out.shape)

    def objective():
        value = np.asarray(graph.run(sink, feeds))
        return float(value.sum() if weights is None else (weights * value).sum())

    graph.run(sink, feeds)
    graph.backward(sink, grad=weights)
    checked = [n for n in graph.nodes if n.gate is None and n.requires_grad and n.grad is not None
               and (n.kind == "param" or n.name in feeds)]
    analytic = {n.name: np.array(n.grad, dtype=np.float64) for n in checked}
    errors = {}
    for node in checked:
        array = node.value if node.kind == "param" else feeds[node.name]
        numeric = _centred_differences(objective, array, h)
        errors[node.name] = relative_error(analytic[node.name], numeric)
    return errors


def _centred_differences(objective, array, h):
    """d objective / d array, nudging each element of `array` in place and restoring it."""
    flat = array.reshape(-1)  # a view: writes reach the array the graph reads
    grad = np.zeros(flat.shape)
    for i in range(flat.size):
        original = flat[i]
        flat[i] = original + h
        above = objective()
        flat[i] = original - h
        below = objective()
        flat[i] = original
        grad[i] = (above - below) / (2 * h)
    return grad.reshape(array.shape)


def relative_error(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b)), initial=0.0))
