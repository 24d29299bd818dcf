"""Two moments of a graph side by side in one drawing.

    before = viz.snapshot(model.graph)       # a copy of every value and gradient
    solver.train()                           # ... 100 steps later
    viz.diff(before, model.graph)            # each node filled by how its gradient changed

`diff` draws the later graph with each node filled by the change of its gradient's L2
norm, on a log scale: brown where it grew, teal where it shrank, white where it has no
counterpart (diff two graphs, with and without batchnorm say: nodes match by name).
"""

import dataclasses
import math
from typing import Any, Optional

import numpy as np

from .._format import norm, num
from ..core.graph import Graph
from .draw import Overlay, Picture, View, graph_of, not_run
from .scale import change_color

#: The colour scale spans at least this many decades of change either way.
MIN_DECADES = 1.0
MAX_DECADES = 6.0


@dataclasses.dataclass
class Snapshot:
    """A graph's state at one moment: copies of its values, gradients and edge
    gradients (`view`), and the graph they belong to."""

    graph: Graph
    view: View
    label: str

    def draw(self, **options: Any) -> Any:
        """The graph drawn as it was when the snapshot was taken (draw()'s options)."""
        from .draw import draw

        return draw(self.graph, view=self.view, **options)


def snapshot(graph: Any, label: Optional[str] = None) -> Snapshot:
    """A Snapshot of `graph` (a Graph, or a model with `.graph`) now. `label` names the
    moment in diff()'s title (default: 'snapshot')."""
    graph = graph_of(graph, "snapshot")
    view = View.of(graph)
    skipped = not_run(graph)
    copy = {
        part: {
            name: np.array(value, copy=True)[()]
            for name, value in items.items()
            if name not in skipped
        }
        for part, items in (("values", view.values), ("grads", view.grads))
    }
    edges = {key: np.array(value, copy=True)[()] for key, value in view.edge_grads.items()}
    return Snapshot(graph, View(copy["values"], copy["grads"], edges), label or "snapshot")


def diff(before: Any, after: Any, *, title: Optional[str] = None, **options: Any) -> Any:
    """A graphviz.Digraph of `after` (a Graph or a Snapshot) with each node filled by
    log10(|grad after| / |grad before|), |.| the L2 norm, against `before` (a Graph or a
    Snapshot: of the same graph earlier, or of another graph whose nodes share names).
    `options` go to draw(). The result has `.changes`: {node name: that log ratio}."""
    before, after = _as_snapshot(before, "before"), _as_snapshot(after, "after")
    changes = {}
    for name, grad in after.view.grads.items():
        if name in before.view.grads:
            changes[name] = log_ratio(norm(before.view.grads[name]), norm(grad))
    finite = [abs(c) for c in changes.values() if math.isfinite(c)]
    decades = min(max(math.ceil(max(finite, default=0.0)), MIN_DECADES), MAX_DECADES)
    cells = {}
    for name in after.view.grads:
        if name not in changes:
            cells[name] = ("#ffffff", f"no gradient in {before.label}")
            continue
        change = changes[name]
        shown = max(min(change, decades), -decades)
        grown = (
            f"×{num(10**change)}" if math.isfinite(change) else ("from 0" if change > 0 else "to 0")
        )
        cells[name] = (
            change_color(shown, decades),
            f"grad L2 {num(norm(before.view.grads[name]))} → "
            f"{num(norm(after.view.grads[name]))} ({grown})",
        )
    legend = [
        (
            None,
            f"fill: the change of the gradient's L2 norm,\n{before.label} → "
            f"{after.label}, log scale",
        ),
        (change_color(decades, decades), f"grew ×{num(10**decades)} or more"),
        (change_color(0, decades), "unchanged"),
        (change_color(-decades, decades), f"shrank ×{num(10**-decades)} or less"),
        ("#ffffff", f"no gradient in {before.label}"),
    ]
    picture = Picture(after.graph, after.view, overlay=Overlay(cells, legend), **options)
    drawing = picture.dot(
        picture.state(after.view),
        title=title or (f"how each gradient changed: {before.label} → {after.label}"),
    )
    drawing.changes = changes
    return drawing


def log_ratio(before: float, after: float) -> float:
    """log10(after / before), +-inf where one of them is 0, 0 where both are."""
    if before == after:
        return 0.0
    if before == 0 or after == 0:
        return math.inf if after > before else -math.inf
    return math.log10(after / before)


def _as_snapshot(item, label):
    return item if isinstance(item, Snapshot) else snapshot(graph_of(item, "diff"), label)
