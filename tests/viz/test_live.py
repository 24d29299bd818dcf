"""The live mode's budget (graphnet/viz/live.py), with a clock the tests move and a
widget whose layouts and redraws take the time the test says: when the first layout
starts, which redraws run and which are skipped, what leaving it draws, and that what it
spends stays within its budget of the training's time. No timings are measured."""

from types import SimpleNamespace

import pytest

from graphnet.core.executor import thread_hooks
from graphnet.viz.live import Live, expected_layout_seconds

START = 100.0  # the clock's time when the live mode starts


class Clock:
    def __init__(self):
        self.now = START

    def __call__(self):
        return self.now


class Graph:
    """What the live mode reads of a graph: its nodes, a hook on its walks, and its store
    (whose state it keeps after each backward, for the final drawing)."""

    def __init__(self, nodes):
        self.nodes = [None] * nodes
        self.ends = []
        self.walks = 0
        self.store = SimpleNamespace(keep=lambda: self.walks)

    def add_hook(self, end):
        self.ends.append(end)
        return SimpleNamespace(remove=lambda: self.ends.remove(end))


class Widget:
    """Layouts and redraws that take `layout` and `redraw` seconds on the clock."""

    def __init__(self, clock, graph, layout, redraw):
        self.clock, self.graph, self.layout, self.redraw = clock, graph, layout, redraw
        self.shown = None  # the graph laid out
        self.log = []

    def needs_layout(self, graph):
        return self.shown is not graph

    def live_layout(self, graph, store=None):
        self.clock.now += self.layout
        self.shown = graph
        self.log.append("layout")

    def live_update(self, iteration, graph, store=None):
        assert self.shown is graph
        assert store is None or store == iteration  # the final drawing: the last kept
        self.clock.now += self.redraw
        self.log.append(iteration)


def train(live, graph, clock, iterations, step, bounded=True):
    """`iterations` training iterations of `step` seconds each (a forward and a backward
    walk), checking after each (if `bounded`: the widget takes the time the live mode
    expects) that the live mode spent no more than its budget allows, plus one redraw
    (the first redraw's cost is not known before it runs)."""
    plan = SimpleNamespace(target=SimpleNamespace(graph=graph))
    for _ in range(iterations):
        clock.now += step
        graph.walks += 1
        for end in list(graph.ends):
            end("forward", plan)
            end("backward", plan)
        elapsed = clock.now - START
        assert not bounded or live.spent <= live.budget * elapsed + live.widget.redraw + 1e-12


def watched(nodes=20, layout=None, redraw=0.002, every=10, budget=0.05):
    clock, graph = Clock(), Graph(nodes)
    if layout is None:  # the estimate is right
        layout = expected_layout_seconds(nodes)
    widget = Widget(clock, graph, layout, redraw)
    return Live(widget, every, budget, clock=clock).start(), widget, graph, clock


def test_the_first_layout_waits_until_the_training_so_far_pays_for_it():
    live, widget, graph, clock = watched(nodes=20, budget=0.05)
    step = 0.012
    train(live, graph, clock, 400, step)
    first = widget.log.index("layout")
    assert first == widget.log.index(next(i for i in widget.log if i != "layout")) - 1
    laid_out_at = widget.log[first + 1]  # the redraw right after the layout
    expected = expected_layout_seconds(20)
    assert 0.05 * step * (laid_out_at - 1) < expected <= 0.05 * step * laid_out_at
    assert live.layouts == 1 and live.skipped == 0  # waiting for it skips no redraw


def test_a_training_too_short_for_a_layout_costs_it_nothing_and_gets_it_at_the_end():
    live, widget, graph, clock = watched(nodes=20, budget=0.05, every=1)
    train(live, graph, clock, 100, 0.01)  # 1 s: 0.05 s of budget, the layout 0.11 s
    assert widget.log == [] and live.spent == 0 and live.overhead == 0
    live.stop()
    assert widget.log == ["layout", 100]  # the final state, laid out after the training
    assert live.final == pytest.approx(expected_layout_seconds(20) + 0.002)
    assert live.overhead == 0 and graph.ends == []


def test_redraws_every_n_iterations_while_the_budget_allows_them():
    live, widget, graph, clock = watched(nodes=5, layout=0.01, redraw=0.001, every=7, budget=0.5)
    train(live, graph, clock, 50, 0.011)
    first = widget.log[1]  # drawn right after the layout, then every 7th
    assert widget.log == ["layout", first] + [i for i in range(first + 1, 51) if i % 7 == 0]
    assert first < 14 and live.skipped == 0
    live.stop()
    assert widget.log[-1] == 50 and live.layouts == 1  # leaving only redraws


def test_redraws_that_would_overrun_the_budget_are_skipped():
    live, widget, graph, clock = watched(nodes=5, layout=0.01, redraw=0.01, every=1, budget=0.1)
    train(live, graph, clock, 1000, 0.01)
    first = widget.log[1]  # after it, every iteration either redraws or skips
    assert live.skipped > 0 and live.updates + live.skipped == 1000 - first + 1
    # what it spent converges to the budget from below
    assert 0.09 < live.overhead <= 0.1


def test_a_layout_slower_than_expected_is_paid_back_before_anything_else_runs():
    live, widget, graph, clock = watched(nodes=20, layout=1.0, redraw=0.001, every=1, budget=0.1)
    train(live, graph, clock, 1, 0.0)  # a first iteration takes no time: nothing affordable
    assert widget.log == []
    clock.now += 1.01 * expected_layout_seconds(20) / 0.1  # now it is
    train(live, graph, clock, 1, 0.0, bounded=False)
    assert widget.log == ["layout", 2] and live.spent == pytest.approx(1.001)
    paid_back = (live.spent + 0.001) / 0.1  # the elapsed time by which a redraw fits again
    while clock.now - START < paid_back - 0.02:
        train(live, graph, clock, 1, 0.01, bounded=False)
    assert widget.log == ["layout", 2]
    train(live, graph, clock, 5, 0.01, bounded=False)
    assert widget.log[-1] == live.iterations
    assert live.expected_layout(Graph(40)) == pytest.approx(2.0)  # measured, per node


def test_it_follows_the_first_graph_that_trains_and_ignores_others():
    clock, graph, other = Clock(), Graph(5), Graph(5)
    widget = Widget(clock, None, layout=0.0, redraw=0.0)
    live = Live(widget, every=1, budget=0.5, clock=clock)
    with live:
        assert len(thread_hooks()) == 1
        for g in (graph, other, graph):
            g.ends = [hook.end for hook in thread_hooks()]
            train(live, g, clock, 1, 0.2)
    assert thread_hooks() == [] and widget.shown is graph and live.iterations == 2


def test_bad_parameters_are_named():
    clock, graph = Clock(), Graph(1)
    widget = Widget(clock, graph, 0, 0)
    with pytest.raises(ValueError, match="every"):
        Live(widget, every=0, budget=0.1)
    with pytest.raises(ValueError, match="budget"):
        Live(widget, every=1, budget=1.5)
