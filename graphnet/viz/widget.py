"""graphnet.viz.Widget(graph): the drawing in a notebook, to hover, click, step through
and watch while a model trains.

    w = viz.Widget(model.graph)      # display it: the last cell line, or display(w)
    with w.live(every=10):           # redraw the gradient flow while it trains
        solver.train()

Hovering a node shows its gate, formula and local rule, its value's and gradient's
statistics and what its gate cached; clicking it shows histograms of its value and
gradient; the slider walks the forward and then the backward pass step by step, on one
layout. The front end (graphnet/viz/static/) ships inside the package and Graphviz lays
the drawing out in Python, so the widget works offline in JupyterLab 4, Notebook 7 and
VS Code (anywidget's front end comes with its Python package).
"""

from typing import Any, NamedTuple, Optional

import numpy as np

from .._format import describe, num, scalar
from ..core.graph import Graph
from ..core.store import ValueStore
from .draw import Picture, View, graph_of
from .live import Live
from .scene import Scene, static_text
from .steps import backward_steps, forward_steps

try:
    import anywidget
    import traitlets
except ImportError as error:  # the widget extra is optional; drawings do not need it
    raise ImportError(
        "graphnet.viz.Widget needs anywidget: pip install 'graphnet[widget]' "
        "(or pip install anywidget)"
    ) from error

#: Step frames beyond this many are left out (a 10,000-gate chain): the slider would be
#: too fine to use, and every frame is a patch the browser keeps.
MAX_STEPS = 400
HISTOGRAM_BINS = 30


class Widget(anywidget.AnyWidget):
    """An interactive drawing of `graph` (a Graph, or a model with `.graph`); `options`
    go to draw() (detail, show_not_run, collapse, ...). `steps=False` leaves out the
    step slider. `refresh()` redraws after the graph ran again; `live(every=N)` redraws
    the gradient flow every N training iterations while it is open."""

    _esm = static_text("scene.js") + "\n" + static_text("widget.js")
    _css = static_text("widget.css")
    svg = traitlets.Unicode("").tag(sync=True)
    frames = traitlets.List(traitlets.Dict()).tag(sync=True)
    texts = traitlets.List(traitlets.Unicode()).tag(sync=True)
    active = traitlets.List(traitlets.Unicode()).tag(sync=True)
    step = traitlets.Int(0).tag(sync=True)
    live_state = traitlets.Dict({}).tag(sync=True)
    status = traitlets.Unicode("").tag(sync=True)
    selected = traitlets.Unicode("").tag(sync=True)

    def __init__(self, graph: Any = None, *, steps: bool = True, **options: Any):
        super().__init__()
        self.graph = None
        self.options, self.steps = options, steps
        self._layout: Optional[_Layout] = None  # the layout shown
        self.on_msg(self._on_message)
        if graph is not None:
            self.refresh(graph_of(graph, "Widget"))

    # ----- drawing ----------------------------------------------------------------------

    def refresh(self, graph: Optional[Graph] = None, steps: Optional[bool] = None) -> None:
        """Lay the drawing out again from the graph's current state (after it ran)."""
        # (`graph or ...` would take an empty Graph, whose len is 0, for no graph)
        self._show(self._lay_out(self.graph if graph is None else graph, steps))

    def _lay_out(self, graph, steps, store=None):
        """A new layout of `graph`, all but Graphviz's run (Scene.svg does that); of the
        state `store` kept (ValueStore.keep), if given, rather than the graph's own."""
        self.graph = graph
        frames = self._step_frames(graph) if (self.steps if steps is None else steps) else []
        shown = View.of(graph) if store is None else View.of(graph, False, store)
        views = [frame.view() for frame in frames] + [shown]
        picture = Picture(graph, views[-1], store=store, **self.options)
        scene = Scene(picture, [picture.state(view) for view in views], reserve=True)
        # A layout made before the graph ran shows every node; once it runs, the nodes
        # its forward skips are left out, so a live update lays it out again.
        running = bool(views[-1].values.keys() - {n.name for n in graph.nodes if n.gate is None})
        return _Layout(
            scene,
            picture,
            views,
            [f.text for f in frames] + [_state_text(graph, store)],
            [scene.unit_id(f.node.name) for f in frames] + [""],
            running,
        )

    def _show(self, layout):
        self._layout = layout
        with self.hold_sync():
            self.svg, self.frames = layout.scene.svg, layout.scene.frames
            self.texts, self.active = layout.texts, layout.active
            self.step = len(layout.views) - 1
            self.live_state = {}

    @staticmethod
    def _step_frames(graph):
        """The forward walk and then the backward walk of the last backward's target
        (or the forward's, if no backward ran), as step frames."""
        last = graph.store.last_backward
        if last is None:
            ran = [n for n in graph.nodes if n.gate is not None and n.value is not None]
            return _bounded(forward_steps(graph, ran[-1])) if ran else []
        plan, seed = last.plan, last.seed
        target = plan.target
        frames = forward_steps(graph, target)
        if len(frames) > MAX_STEPS:
            return []
        return _bounded(frames + backward_steps(graph, target, seed))

    def live(self, every: int = 10, budget: float = 0.02) -> Live:
        """A context manager that redraws the gradient flow after every `every`-th
        backward of the graph (or, for a widget made without a graph, of the first graph
        that runs a backward in this thread: `graphnet.cli.main(['train', ...])`), never
        spending more than `budget` (a fraction) of the training's time on it, the first
        layout included: the layout waits until the training has run long enough to pay
        for it, and a redraw that would overrun is skipped. Leaving it draws the final
        state (see graphnet/viz/live.py)."""
        return Live(self, every, budget)

    def needs_layout(self, graph: Graph) -> bool:
        """True if drawing `graph`'s state needs a new layout first: none yet, another
        graph's, or one made before the graph ran (which shows the nodes its forward
        skips)."""
        layout = self._layout
        return layout is None or graph is not layout.picture.graph or not layout.running

    def live_layout(self, graph: Graph, store: Optional[ValueStore] = None) -> None:
        """Lay `graph` out for live updates (without step frames) and show it; this
        runs Graphviz, in the calling thread. `store`: as in live_update."""
        self._show(self._lay_out(graph, steps=False, store=store))

    def live_update(self, iteration: int, graph: Graph, store: Optional[ValueStore] = None) -> None:
        """Redraw the shown layout (needs_layout(graph) is False) from `graph`'s current
        state, or the one `store` kept (ValueStore.keep), as the state after `iteration`
        training iterations."""
        layout = self._layout
        assert layout is not None and not self.needs_layout(graph), "live_layout() first"
        # What a fused chain left to compute on first read stays as it is: computing it
        # at every redraw would cost as much as the rest of the redraw.
        view = View.of(graph, compute=False, store=store)
        patch = layout.scene.encode(layout.picture.state(view))
        layout.views[-1] = view
        loss = _loss(graph, store or graph.store)
        state = {"iteration": iteration, "patch": patch}
        histograms = self._histograms(self.selected, view)
        if histograms is not None:
            state["histograms"] = histograms
        with self.hold_sync():
            self.status = f"live: iteration {iteration}" + (f", loss {loss}" if loss else "")
            self.live_state = state

    # ----- the front end's requests -------------------------------------------------------

    def _on_message(self, _, content, buffers):
        """A click's request for histograms: {'type': 'histogram', 'node': a unit's id,
        'step': the slider's step}. A request the layout shown cannot answer (no layout, a
        unit of an earlier one, fields of other types) is left unanswered: the front end
        is the widget's own, and an error here would only reach the kernel's log."""
        if self._layout is None or not isinstance(content, dict):
            return
        if content.get("type") == "histogram":
            views, step = self._layout.views, content.get("step", -1)
            if not isinstance(step, int) or isinstance(step, bool):
                step = -1
            histograms = self._histograms(
                content.get("node"), views[min(max(step, -1), len(views) - 1)]
            )
            if histograms is not None:
                self.send(histograms)

    def _histograms(self, unit_id, view):
        """Histograms of the value and gradient of the node drawn as `unit_id` (a block's
        output node), in `view`'s state; None if the layout shows no such unit (none
        selected, or the selection of an earlier layout: `selected` outlives them)."""
        units = self._layout.picture.units
        key = next((k for k in units.visible() if self._layout.scene.unit_id(k) == unit_id), None)
        if key is None:
            return None
        node = units.members(key)[-1]
        out = {"type": "histogram", "node": unit_id, "name": node.name}
        for what, store in (("value", view.values), ("grad", view.grads)):
            if node.name in store:
                out[what] = histogram(store[node.name])
        return out


class _Layout(NamedTuple):
    """A layout the widget shows: the scene, its picture, the state of each step (the
    graph's own last), their texts and their active units."""

    scene: Scene
    picture: Picture
    views: list
    texts: list
    active: list
    running: bool  # laid out after the graph ran (so its skipped nodes are left out)


def histogram(array: Any) -> dict:
    """Counts of `array`'s finite entries in HISTOGRAM_BINS bins, with its statistics."""
    values = np.asarray(array, dtype=np.float64).ravel()
    finite = values[np.isfinite(values)]
    counts, edges = (
        np.histogram(finite, bins=HISTOGRAM_BINS) if finite.size else (np.zeros(0), np.zeros(0))
    )
    return {
        "counts": [int(c) for c in counts],
        "edges": [float(e) for e in edges],
        "summary": describe(array),
        "nonfinite": int(values.size - finite.size),
    }


def _bounded(frames):
    return frames if len(frames) <= MAX_STEPS else []


def _loss(graph, store):
    last = store.last_backward
    value = None if last is None else store.peek_value(last.plan.target.index)
    return None if value is None or np.size(value) != 1 else num(scalar(value))


def _state_text(graph, store=None):
    last = (store or graph.store).last_backward
    if last is not None:
        return (
            f"after the last forward and backward (from {last.plan.target.name!r}): "
            "every value and gradient"
        )
    return (
        "after the last forward"
        if any(n.value is not None for n in graph.nodes if n.gate is not None)
        else "not run yet"
    )
