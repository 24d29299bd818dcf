"""The widget's live mode: redraw the gradient flow while a model trains, through the
executor's hooks, within a budget of the training's time.

The hook counts backward walks (one per training iteration). Every `every`-th one it
redraws, unless redrawing so far has taken more than `budget` of the time since the
live mode began: then it skips that one. So however slow a redraw is (a large graph, a
slow browser connection), training never slows by much more than the budget. A redraw
only restyles the widget's drawing; the one that needs a new layout (the first) runs
Graphviz in a thread, and training goes on until it is done.
"""
import time
from typing import Any, Callable, Optional

from ..core.executor import Hook, thread_hooks


class Live:
    """What Widget.live() returns: a context manager (or call start() and stop())."""

    def __init__(self, widget: Any, every: int, budget: float):
        if int(every) < 1:
            raise ValueError(f"live(every=...) must be a positive number of iterations, "
                             f"got {every!r}")
        if not 0 < budget < 1:
            raise ValueError(f"live(budget=...) is a fraction of the training time, between "
                             f"0 and 1, got {budget!r}")
        self.widget, self.every, self.budget = widget, int(every), float(budget)
        self.iterations = self.updates = self.skipped = 0
        self.spent = 0.0
        self._started = time.perf_counter()
        self._remove: Optional[Callable[[], None]] = None
        self._graph = widget.graph

    def start(self) -> "Live":
        """Start redrawing after every `every`-th backward walk (entering the `with`
        block does this); returns self."""
        if self._graph is not None:
            self._remove = self._graph.add_hook(end=self._walked).remove
        else:  # no graph yet: watch every graph in this thread, take the first to train
            hook, hooks = Hook(end=self._walked), thread_hooks()
            hooks.append(hook)

            def remove() -> None:
                if hook in hooks:
                    hooks.remove(hook)

            self._remove = remove
        self._started = time.perf_counter()
        return self

    def stop(self) -> None:
        """Stop watching and draw the final state (leaving the `with` block does this)."""
        if self._remove is not None:
            self._remove()
            self._remove = None
        if self._graph is not None and self.iterations:
            self.widget.live_update(self.iterations, self._graph, wait=True)

    def __enter__(self) -> "Live":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def overhead(self) -> float:
        """The fraction of the time since start() spent redrawing."""
        elapsed = time.perf_counter() - self._started
        return self.spent / elapsed if elapsed > 0 else 0.0

    def _walked(self, direction, plan):
        if direction != "backward":
            return
        graph = plan.target.graph
        if self._graph is None:
            self._graph = graph
        elif graph is not self._graph:
            return
        self.iterations += 1
        began = time.perf_counter()
        # While Graphviz lays the first drawing out in its thread, each iteration only
        # looks whether it is done (and draws as soon as it is).
        if not self.widget.laying_out:
            if self.iterations % self.every and self.updates:
                return
            if self.spent > self.budget * (began - self._started):
                self.skipped += 1
                return
        self.updates += self.widget.live_update(self.iterations, graph)
        self.spent += time.perf_counter() - began
