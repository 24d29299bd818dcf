"""The widget's live mode: redraw the gradient flow while a model trains, through the
executor's hooks, within a budget of the training's time.

Everything the live mode does runs in the training thread, between two iterations, and
is timed: laying the drawing out (building the scene, Graphviz's `dot`, reading what a
fused step left for later) and each redraw. A Graphviz run or a Python thread working
alongside the training would compete with it for the cores and for the GIL, at a cost
that cannot be measured from inside the process; in the training thread, what the live
mode costs is exactly what it spent.

The budget covers all of it: work starts only when the time spent so far plus what the
work is expected to cost stays within `budget` times the time since the live mode began.
So the first layout (the largest single cost) waits until the training has run long
enough to pay for it, and the redraws, every `every`-th backward walk, are skipped while
they would overrun. A layout's cost is estimated from the graph's size until one has
been measured; a redraw's is the last one's.

Leaving the live mode draws the final state, the one right after the last backward walk
(kept then: the Solver's accuracy checks run forwards after it, which drop its
gradients): that drawing (a layout too, if the training was too short to afford one) is
not part of the training's time, but the cell waits for it; `Live.final` is how long it
took.
"""

import time
from typing import Any, Callable, Optional

from ..core.executor import Hook, thread_hooks

#: The expected cost of a graph's first layout, before one was measured: a fixed part
#: (starting Graphviz) and a part per node (the scene, its labels, the layout), measured
#: on a loaded 2-core machine (the digits' TwoLayerNet, 18 nodes: 0.07 s; the convnet,
#: 26 nodes: 0.13 s) and rounded up.
LAYOUT_SECONDS_FIXED = 0.03
LAYOUT_SECONDS_PER_NODE = 0.004


def expected_layout_seconds(nodes: int) -> float:
    """What laying out a graph of `nodes` nodes is expected to cost, before measuring."""
    return LAYOUT_SECONDS_FIXED + LAYOUT_SECONDS_PER_NODE * nodes


class Live:
    """What Widget.live() returns: a context manager (or call start() and stop()).

    `clock` (seconds, monotonic) times the training and the live mode's work; tests
    pass their own. After stop(): `iterations` (backward walks seen), `layouts`,
    `updates` (redraws during training), `skipped` (redraws the budget left out),
    `spent` (seconds of live work during training), `overhead` (spent as a fraction of
    the training's time) and `final` (seconds stop() took to draw the final state)."""

    def __init__(
        self, widget: Any, every: int, budget: float, clock: Callable[[], float] = time.perf_counter
    ):
        if int(every) < 1:
            raise ValueError(
                f"live(every=...) must be a positive number of iterations, got {every!r}"
            )
        if not 0 < budget < 1:
            raise ValueError(
                f"live(budget=...) is a fraction of the training time, between "
                f"0 and 1, got {budget!r}"
            )
        self.widget, self.every, self.budget = widget, int(every), float(budget)
        self.iterations = self.layouts = self.updates = self.skipped = 0
        self.spent = self.final = 0.0
        self._clock = clock
        self._started = self._stopped = clock()
        self._remove: Optional[Callable[[], None]] = None
        self._graph = widget.graph
        self._layout_cost: Optional[tuple] = None  # (seconds, nodes) of the last layout
        self._redraw_cost = 0.0  # of the last redraw
        self._kept: Any = None  # the graph's state after the last backward (store.keep())

    def start(self) -> "Live":
        """Start watching the backward walks (entering the `with` block does this);
        returns self."""
        if self._graph is not None:
            self._remove = self._graph.add_hook(end=self._walked).remove
        else:  # no graph yet: watch every graph in this thread, take the first to train
            hook, hooks = Hook(end=self._walked), thread_hooks()
            hooks.append(hook)

            def remove() -> None:
                if hook in hooks:
                    hooks.remove(hook)

            self._remove = remove
        self._started = self._stopped = self._clock()
        return self

    def stop(self) -> None:
        """Stop watching, and draw the final state, laying it out first if the training
        was too short to afford a layout (leaving the `with` block does this)."""
        if self._remove is not None:
            self._remove()
            self._remove = None
        self._stopped = began = self._clock()
        graph = self._graph
        if graph is not None and self.iterations:
            if self.widget.needs_layout(graph):
                self.widget.live_layout(graph, self._kept)
            self.widget.live_update(self.iterations, graph, self._kept)
        self.final = self._clock() - began

    def __enter__(self) -> "Live":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def overhead(self) -> float:
        """The fraction of the training's time (from start() to stop(), or to now while
        it runs) the live mode spent."""
        end = self._clock() if self._remove is not None else self._stopped
        elapsed = end - self._started
        return self.spent / elapsed if elapsed > 0 else 0.0

    def expected_layout(self, graph: Any) -> float:
        """The expected cost of laying `graph` out: the last layout's, per node, once one
        was measured; else the estimate from its size."""
        nodes = len(graph.nodes)
        if self._layout_cost is None:
            return expected_layout_seconds(nodes)
        seconds, measured_nodes = self._layout_cost
        return seconds * nodes / max(measured_nodes, 1)

    def _walked(self, direction, plan):
        if direction != "backward":
            return
        graph = plan.target.graph
        if self._graph is None:
            self._graph = graph
        elif graph is not self._graph:
            return
        self.iterations += 1
        self._kept = graph.store.keep()  # two list copies: the final drawing's state
        began = self._clock()
        allowed = self.budget * (began - self._started) - self.spent
        if self.widget.needs_layout(graph):
            # Wait (without counting it as a skipped redraw) until the training so far
            # pays for the layout; the redraw right after it shows the same state.
            if self.expected_layout(graph) + self._redraw_cost > allowed:
                return
            self.widget.live_layout(graph)
            laid_out = self._clock()
            self._layout_cost = (laid_out - began, len(graph.nodes))
            self.layouts += 1
            self.spent += laid_out - began
            began = laid_out
        elif self.iterations % self.every:
            return
        elif self._redraw_cost > allowed:
            self.skipped += 1
            return
        self.widget.live_update(self.iterations, graph)
        self._redraw_cost = self._clock() - began
        self.updates += 1
        self.spent += self._redraw_cost
