"""A batch fed straight into an affine layer: its NaN/Inf check read off the layer's output.

Every float feed is checked for NaN and Inf before it is stored, a pass over the whole
batch (256 x 3072 float32: 0.13 ms, a tenth of the course's TwoLayerNet forward). Where a
forward plan starts with an affine gate whose x is an input and whose w and b are params
or consts, the check runs that gate first and looks at its output instead, N x M numbers:
a NaN or Inf in a row of x makes the whole row of x @ w + b NaN or Inf (inf times a
finite weight is an infinity, or NaN for a zero weight, and a sum with a NaN or infinite
term is NaN or infinite). So a finite output clears the batch; only a non-finite one
(weights holding NaN or Inf, or a product that overflows) makes the check read the batch
itself and refuse it with the same error as ever. Nothing is stored before the check
passes, as with any feed, and the step then returns the output the check computed.

A walk with hooks checks the feed itself (the hooks then time the affine in its step).
"""

from typing import Any, Optional


from ..core.feeds import all_finite, check_finite
from .base import FusionPass, register_pass


@register_pass
class FeedCheck(FusionPass):
    """Gives the plan's first step, such an affine, a run that also checks the feed (the
    step stays one gate's: hooks and drawings see the affine as ever)."""

    length = 1

    def fuse_forward(self, steps):
        first = steps[0] if steps else None
        if (
            first is None
            or first.fused
            or first.node.op != "affine"
            or first.inputs[0].kind != "input"
            or any(source.kind not in ("param", "const") for source in first.inputs[1:])
        ):
            return steps
        return [first._replace(run=CheckedAffine(first.node)), *steps[1:]]


class CheckedAffine:
    """The step's run(x, w, b) -> (out, cache), and `check(x, store)`, the feed check that
    computes the step's output first (kept for the step, which takes it for those same
    arrays only)."""

    def __init__(self, node: Any):
        self.node, self.checks = node, node.inputs[0]
        self._ready: Optional[tuple] = None  # (x, w, b, out, cache) from the check

    def check(self, x: Any, store: Any) -> None:
        """Refuse x (a GraphError) if it holds NaN or Inf; `store` holds w and b."""
        self._ready = None
        w, b = (store.values[source.index] for source in self.node.inputs[1:])
        try:
            out, cache = self.node.gate.forward(x, w, b)
        except Exception:  # the step will fail and say why; the feed is checked first
            check_finite(self.checks, x)
            return
        if not all_finite(out):
            check_finite(self.checks, x)
        self._ready = (x, w, b, out, cache)

    def __call__(self, x: Any, w: Any, b: Any) -> tuple:
        ready, self._ready = self._ready, None
        if ready is not None and ready[0] is x and ready[1] is w and ready[2] is b:
            return ready[3], ready[4]
        return self.node.gate.forward(x, w, b)
