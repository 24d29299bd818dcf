"""Where a graph's time and memory go, step by step, measured through the executor's hooks.

prof = gn.profile(model.graph, {"X": X, "y": y}, target="data_loss")
print(prof)                  # one row per step: forward and backward ms, memory
prof.draw()                  # the graph, each node coloured by its step's time

with gn.profile(model.graph) as prof:    # or record real training
    solver.train()
"""

from __future__ import annotations

import time
import tracemalloc
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from .executor import HookHandle


@dataclass
class StepProfile:
    """One step's totals over the walks recorded: seconds and calls each way, and the
    peak bytes allocated while it ran (when memory was measured)."""

    label: str
    nodes: tuple
    forward_s: float = 0.0
    backward_s: float = 0.0
    forward_calls: int = 0
    backward_calls: int = 0
    peak_bytes: int = 0

    @property
    def forward_ms(self) -> float:
        """Milliseconds per call of the step's forward, averaged over the timed runs."""
        return 1e3 * self.forward_s / max(self.forward_calls, 1)

    @property
    def backward_ms(self) -> float:
        """Milliseconds per call of the step's backward (0 when it had none)."""
        return 1e3 * self.backward_s / max(self.backward_calls, 1)


@dataclass
class Profile:
    """Per-step times of a graph's walks; a context manager that records while open.
    `clock` gives the seconds the steps are timed by: the wall clock by default;
    time.thread_time counts only this thread's CPU time, which leaves out the waits for a
    core on a machine shared with other work."""

    graph: Any
    memory: bool = False
    clock: Callable[[], float] = time.perf_counter
    steps: Dict[str, StepProfile] = field(default_factory=dict)
    _handle: Optional[HookHandle] = None
    _last: float = 0.0
    _base: int = 0

    # ----- recording ------------------------------------------------------------------

    def __enter__(self) -> Profile:
        if self.memory and not tracemalloc.is_tracing():
            tracemalloc.start()
        self._handle = self.graph.add_hook(self._forward, self._backward, start=self._start)
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if self.memory:
            tracemalloc.stop()

    def _start(self, direction, plan) -> None:
        if self.memory:
            tracemalloc.reset_peak()
            self._base = tracemalloc.get_traced_memory()[0]
        self._last = self.clock()

    def _record(self, step, attribute) -> StepProfile:
        now = self.clock()
        key = " ".join(n.name for n in step.nodes)
        row = self.steps.get(key)
        if row is None:
            row = self.steps[key] = StepProfile(step.label, tuple(n.name for n in step.nodes))
        setattr(row, attribute, getattr(row, attribute) + now - self._last)
        if self.memory:
            current, peak = tracemalloc.get_traced_memory()
            row.peak_bytes = max(row.peak_bytes, peak - self._base)
            tracemalloc.reset_peak()
            self._base = current
        self._last = self.clock()  # the bookkeeping above is not the next step's
        return row

    def _forward(self, event) -> None:
        self._record(event.step, "forward_s").forward_calls += 1

    def _backward(self, event) -> None:
        self._record(event.step, "backward_s").backward_calls += 1

    # ----- reading ----------------------------------------------------------------------

    @property
    def rows(self) -> List[StepProfile]:
        """The steps, slowest first."""
        return sorted(self.steps.values(), key=lambda r: -(r.forward_ms + r.backward_ms))

    def node_ms(self) -> Dict[str, float]:
        """Node name -> forward + backward ms of the step that computes it."""
        return {
            name: row.forward_ms + row.backward_ms
            for row in self.steps.values()
            for name in row.nodes
        }

    def table(self) -> str:
        """The profile as a text table, one row per step, slowest first (what print()
        shows): forward and backward milliseconds, their share, and the peak memory."""
        rows = self.rows
        total = sum(r.forward_ms + r.backward_ms for r in rows) or 1.0
        memory = " peak MB" if self.memory else ""
        lines = [f"{'step':<32} {'gate':<20} {'fwd ms':>8} {'bwd ms':>8} {'share':>6}{memory}"]
        for r in rows:
            name = r.nodes[0] if len(r.nodes) == 1 else f"{r.nodes[0]}..{r.nodes[-1]}"
            share = 100 * (r.forward_ms + r.backward_ms) / total
            line = (
                f"{name[:32]:<32} {r.label[:20]:<20} {r.forward_ms:8.3f} "
                f"{r.backward_ms:8.3f} {share:5.1f}%"
            )
            if self.memory:
                line += f" {r.peak_bytes / 1e6:8.2f}"
            lines.append(line)
        lines.append(
            f"{'total':<53} {sum(r.forward_ms for r in rows):8.3f} "
            f"{sum(r.backward_ms for r in rows):8.3f}"
        )
        return "\n".join(lines)

    __str__ = table

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(self.table())

    def draw(self, **options: Any) -> Any:
        """The graph drawn with each node filled by its step's time (graphnet.viz.draw)."""
        from ..viz import draw

        return draw(self.graph, heat=self.node_ms(), heat_unit="ms", **options)


def profile(
    graph: Any,
    feeds: Optional[dict] = None,
    *,
    target: Any = None,
    repeat: int = 5,
    memory: bool = True,
    clock: Callable[[], float] = time.perf_counter,
) -> Profile:
    """Time each step of `graph`'s forward (towards `target`, default every sink) and, when
    the target is a scalar, its backward, over `repeat` runs on `feeds` (the first run
    warms up and is not counted), then measure each step's peak allocation in one more run
    with tracemalloc when `memory`. Without feeds, returns a Profile to use as a context
    manager around your own calls (memory measured there only if memory=True is passed
    explicitly to Profile). `clock` times the steps: the wall clock by default,
    `time.thread_time` for the thread's CPU time alone (on a machine shared with other
    work, whose waits for a core the wall clock would charge to the steps).

    Examples:
        >>> prof = gn.profile(model.graph, {"X": X, "y": y}, target="data_loss")
        >>> print(prof)          # a table: each step's time both ways and its peak memory
        >>> prof.draw()          # the graph, each node filled by its step's time
        >>> with gn.profile(model.graph) as prof:
        ...     solver.train()
        >>> gn.profile(model.graph, {"X": X, "y": y}, clock=time.thread_time)
    """
    if not callable(clock):
        raise TypeError(f"profile: clock must be a function returning seconds, got {clock!r}")
    if feeds is None:
        return Profile(graph, clock=clock)
    targets = graph.sinks if target is None else [graph[target]]

    def run():
        graph.run(targets, feeds)
        if len(targets) == 1 and graph.store.peek_shape(targets[0].index) == ():
            graph.backward(targets[0])

    run()
    timed = Profile(graph, clock=clock)
    with timed:
        for _ in range(max(repeat, 1)):
            run()
    if memory:
        with Profile(graph, memory=True) as measured:
            run()
        for key, row in measured.steps.items():
            timed.steps[key].peak_bytes = row.peak_bytes
        timed.memory = True
    return timed


__all__ = ["profile", "Profile", "StepProfile"]
