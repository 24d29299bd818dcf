"""Anomaly mode: stop at the first NaN or Inf and say where it came from."""
import contextlib
import threading

import numpy as np

from ..errors import AnomalyError

_local = threading.local()


@contextlib.contextmanager
def detect_anomaly():
    """Within this block every forward and backward walk checks each value and gradient
    as it is computed and raises AnomalyError at the first NaN or Inf, naming the node,
    its gate and the step."""
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield
    finally:
        _local.depth -= 1


def checker():
    """The check the walks call on every value and gradient, or None outside anomaly mode
    (so a normal walk pays one test per step, not a scan of every array)."""
    return check_finite if getattr(_local, "depth", 0) > 0 else None


def check_finite(node, array, what, step):
    if not np.issubdtype(np.asarray(array).dtype, np.inexact) or np.all(np.isfinite(array)):
        return
    bad = "NaN" if np.any(np.isnan(array)) else "Inf"
    inputs = ", ".join(repr(i.name) for i in node.inputs) or "none (a source)"
    raise AnomalyError(
        f"{bad} in the {what} of node {node.name!r} (gate {node.op!r}, shape "
        f"{np.shape(array)}) at {step}; its inputs: {inputs}")
