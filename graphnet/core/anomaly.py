"""Anomaly mode: stop at the first NaN or Inf and say where it came from."""

import contextlib
from typing import Any, Iterator

import numpy as np

from ..errors import AnomalyError
from .executor import BackwardEvent, ForwardEvent, Hook, thread_hooks


@contextlib.contextmanager
def detect_anomaly() -> Iterator[None]:
    """Within this block every forward and backward walk (of any graph, in this thread)
    runs gate by gate and checks each value and gradient as it is computed, raising
    AnomalyError at the first NaN or Inf, naming the node, its gate and the step.

    Examples:
        >>> with gn.detect_anomaly():
        ...     g.forward(x=-1.0)       # g computes log(x)
        AnomalyError: NaN in the value of node 'ln' (gate 'log', shape ()) at step 1 of forward
    """
    hook = Hook(forward=_check_value, backward=_check_gradients, every_gate=True)
    hooks = thread_hooks()
    hooks.append(hook)
    try:
        yield
    finally:
        hooks.remove(hook)


def _check_value(event: ForwardEvent) -> None:
    _check_finite(event.node, event.output, "value", f"step {event.number} of forward")


def _check_gradients(event: BackwardEvent) -> None:
    for inp, grad in zip(event.step.inputs, event.received):
        if grad is not None:
            _check_finite(
                inp, grad, f"gradient from {event.node.name!r}", f"step {event.number} of backward"
            )


def _check_finite(node: Any, array: Any, what: str, step: str) -> None:
    if not np.issubdtype(np.asarray(array).dtype, np.inexact) or np.all(np.isfinite(array)):
        return
    bad = "NaN" if np.any(np.isnan(array)) else "Inf"
    inputs = ", ".join(repr(i.name) for i in node.inputs) or "none (a source)"
    raise AnomalyError(
        f"{bad} in the {what} of node {node.name!r} (gate {node.op!r}, shape "
        f"{np.shape(array)}) at {step}; its inputs: {inputs}",
        node=node.name,
    )
