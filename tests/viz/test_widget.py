"""graphnet.viz.Widget without a browser: what it sends to the front end (one layout, the
forward and backward steps as patches, tooltips with the formula, rule, statistics and
cache), histograms on request, and the live mode's hook, every-N, layout and final
drawing (its budget's logic is in test_live.py). The browser side is in
test_widget_browser.py."""

import json
import re
import shutil

import numpy as np
import pytest

import graphnet as gn
from graphnet import Solver, viz
from graphnet.models import TwoLayerNet
from graphnet.viz.live import Live

pytest.importorskip("anywidget")
pytestmark = pytest.mark.skipif(not shutil.which("dot"), reason="no Graphviz 'dot'")


def model_and_data(reg=0.0):
    np.random.seed(0)
    model = TwoLayerNet(input_dim=8, hidden_dim=6, num_classes=3, weight_scale=0.3, reg=reg)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((60, 8)), rng.integers(0, 3, 60)
    return model, dict(X_train=X, y_train=y, X_val=X[:20], y_val=y[:20])


def final_nodes(widget):
    """The last frame's node patches, its differences from the first applied in order."""
    nodes = {key: dict(item) for key, item in widget.frames[0]["nodes"].items()}
    for frame in widget.frames[1:]:
        for key, item in frame["nodes"].items():
            nodes[key].update(item)
    return nodes


def svg_ids(svg):
    return set(re.findall(r'<g id="(n_[^"]+)" class="node"', svg))


def test_the_widget_sends_one_layout_and_the_forward_and_backward_steps():
    model, data = model_and_data()
    model.loss(data["X_train"][:5], data["y_train"][:5])
    w = viz.Widget(model)
    g = model.graph
    forward = g.plan("data_loss", "forward").steps
    backward = g.plan("data_loss", "backward").steps
    assert len(w.frames) == len(forward) + len(backward) + 1 == len(w.texts) == len(w.active)
    assert w.step == len(w.frames) - 1  # it opens on the graph's state
    assert w.texts[0].startswith("Step 1 of") and "forward" in w.texts[0]
    assert "backward" in w.texts[len(forward)]
    assert w.active[0] == "n_affine1" and w.active[len(forward)] == "n_data_5f_loss"
    assert svg_ids(w.svg) == set(w.frames[0]["nodes"])
    assert "n_reg_5f_loss" not in w.frames[0]["nodes"]
    assert w.svg.count("<svg") == 1
    json.dumps([w.frames, w.texts])  # all of it goes to the browser as JSON
    last = final_nodes(w)
    tip = last["n_affine1"]["tip"]
    for part in (
        "affine",
        "formula: affine1 = ",
        "rule: ",
        "value: shape (5, 6), mean",
        "grad: shape (5, 6), mean",
        "cache: ",
    ):
        assert part in tip
    rows = [r[0] for r in last["n_affine1"]["rows"]]
    assert f"value L2 {gn._format.num(np.linalg.norm(g['affine1'].value))}" in rows


def test_histograms_of_a_node_in_the_step_shown():
    model, data = model_and_data()
    model.loss(data["X_train"][:5], data["y_train"][:5])
    w = viz.Widget(model)
    sent = []
    w.send = sent.append
    w._on_message(w, {"type": "histogram", "node": "n_W1", "step": len(w.frames) - 1}, [])
    reply = sent[-1]
    assert reply["name"] == "W1" and set(reply) >= {"value", "grad"}
    counts, edges = np.histogram(model.graph["W1"].grad, bins=30)
    assert reply["grad"]["counts"] == counts.tolist()
    assert reply["grad"]["edges"] == pytest.approx(edges.tolist())
    w._on_message(w, {"type": "histogram", "node": "n_W1", "step": 0}, [])
    assert "grad" not in sent[-1]  # the first forward step: no gradient yet


@pytest.mark.parametrize(
    "content",
    [
        {"type": "histogram", "node": "n_no_such_node"},  # a unit of an earlier layout
        {"type": "histogram", "node": ["n_W1"]},
        {"type": "histogram"},
        {"type": "histogram", "node": "n_W1", "step": "last"},
        {"type": "histogram", "node": "n_W1", "step": None},
        {"type": "histogram", "node": "n_W1", "step": float("inf")},
        {"type": "histogram", "node": "n_W1", "step": True},
        ["histogram"],
    ],
)
def test_a_request_the_layout_cannot_answer_is_ignored_or_answered_for_the_state_shown(
    content,
):
    """What the front end sends is answered for the unit it names in the state shown
    (a step that is no step: the graph's own state), or, naming no unit shown, left
    unanswered (before: StopIteration, KeyError, ValueError, TypeError or OverflowError in
    the kernel's message handler)."""
    model, data = model_and_data()
    model.loss(data["X_train"][:5], data["y_train"][:5])
    w = viz.Widget(model)
    sent = []
    w.send = sent.append
    w._on_message(w, content, [])
    if isinstance(content, dict) and content.get("node") == "n_W1":
        assert [r["name"] for r in sent] == ["W1"] and "grad" in sent[0]
    else:
        assert sent == []
    viz.Widget()._on_message(None, {"type": "histogram", "node": "n_W1"}, [])  # no layout


def test_a_selection_the_new_layout_lacks_does_not_stop_the_training():
    """`selected` (the front end's last click) outlives the layout it named: a live
    training of a model without that node draws no histograms (before: StopIteration
    from the training's backward hook)."""
    model, data = model_and_data()
    w = viz.Widget(model)
    w.selected = "n_conv1"
    solver = Solver(model, data, num_epochs=1, batch_size=10, verbose=False, seed=0)
    with Live(w, every=1, budget=0.99, clock=training_clock(model.graph)) as live:
        solver.train()
    assert live.updates > 0 and "histograms" not in w.live_state
    w.selected = "n_W1"
    w.live_update(solver.iteration, model.graph)
    assert w.live_state["histograms"]["name"] == "W1"


def training_clock(graph):
    """A clock that advances one second per backward walk of `graph` and not otherwise
    (its hook is added before the live mode's, so it has ticked when the live mode reads
    it): the training pays for any layout at once, and the live mode's work is free."""
    ticks = [0.0]

    def walked(direction, plan):
        ticks[0] += direction == "backward"

    graph.add_hook(end=walked)
    return lambda: ticks[0]


def test_live_mode_redraws_every_n_iterations_and_removes_its_hook():
    model, data = model_and_data()
    w = viz.Widget(model)  # not run yet: every node, no numbers
    drawn = []
    original = w.live_update

    def recording(iteration, graph, store=None):
        original(iteration, graph, store)
        drawn.append(iteration)

    w.live_update = recording
    solver = Solver(model, data, num_epochs=2, batch_size=10, verbose=False, seed=0)
    clock = training_clock(model.graph)
    with Live(w, every=3, budget=0.5, clock=clock) as live:
        assert len(model.graph.executor.hooks) == 2
        solver.train()
    assert len(model.graph.executor.hooks) == 1  # the clock's
    # laid out again (and drawn) at the first backward, then every 3rd
    assert drawn[:-1] == [1] + [i for i in range(2, solver.iteration + 1) if i % 3 == 0]
    assert drawn[-1] == solver.iteration  # leaving draws the final state
    assert live.updates == len(drawn) - 1 and live.layouts == 1 and live.skipped == 0
    assert f"iteration {solver.iteration}" in w.status
    patch = w.live_state["patch"]["nodes"]
    assert "n_reg_5f_loss" not in patch  # laid out again once the graph ran: reg=0 is skipped
    # The final state is the one after the last backward: the accuracy checks after it
    # dropped the graph's gradients, the live mode kept them.
    g = model.graph
    assert g["W1"].grad is None
    last_grad = live._kept.grads[g["W1"].index]
    rows = [r[0] for r in patch["n_W1"]["rows"]]
    assert f"grad L2 {gn._format.num(np.linalg.norm(last_grad))}" in rows


def test_a_training_too_short_to_pay_for_a_layout_gets_it_when_it_ends():
    model, data = model_and_data()
    w = viz.Widget(model, steps=False)
    solver = Solver(model, data, num_epochs=1, batch_size=10, verbose=False, seed=0)
    with Live(w, every=1, budget=0.001, clock=training_clock(model.graph)) as live:
        solver.train()  # 6 s on the clock: 0.006 s of budget, less than a layout
        assert live.layouts == live.updates == 0 and "n_reg_5f_loss" in w.svg
    assert live.overhead == 0 and live.final >= 0
    assert w.live_state["iteration"] == solver.iteration and "n_reg_5f_loss" not in w.svg


def test_a_widget_without_a_graph_follows_the_first_graph_that_trains():
    model, data = model_and_data()
    w = viz.Widget()
    solver = Solver(model, data, num_epochs=1, batch_size=10, verbose=False, seed=0)
    with w.live(every=2, budget=0.99):
        solver.train()
    assert w.graph is model.graph and "n_W1" in w.svg
    assert w.live_state["iteration"] == solver.iteration
    with pytest.raises(TypeError, match="Graph"):
        viz.Widget(42)


@pytest.mark.slow
def test_live_mode_watches_graphnet_train_run_in_the_kernel(tmp_path):
    from graphnet import cli

    w = viz.Widget()
    with w.live(every=20, budget=0.99):
        assert (
            cli.main(
                [
                    "train",
                    "--model",
                    "twolayer",
                    "--epochs",
                    "1",
                    "--quiet",
                    "--out",
                    str(tmp_path / "run"),
                ]
            )
            == 0
        )
    assert w.graph is not None and w.live_state["iteration"] > 20
    assert "n_W1" in w.svg


def test_the_widget_marks_the_first_nan_and_its_path_to_the_loss():
    g = gn.Graph()
    x = g.input("x")
    g.add(g.exp(g.log(g.multiply(x, -1.0, name="negated"), name="ln"), name="e"), x, name="loss")
    with pytest.raises(gn.AnomalyError), gn.detect_anomaly(), np.errstate(invalid="ignore"):
        g.forward(x=2.0)
    w = viz.Widget(g)
    nodes = final_nodes(w)  # the graph's own state, after the forward stopped
    black = viz.scale.ANOMALY
    assert nodes["n_ln"]["stroke"] == black and nodes["n_ln"]["pen"] == "4"
    assert nodes["n_e"]["stroke"] == black and nodes["n_loss"]["stroke"] == black
    assert nodes["n_negated"]["stroke"] != black
    assert ["⚠ the first NaN/Inf", black, 1] in nodes["n_ln"]["rows"]


@pytest.mark.parametrize("nodes", [0, 1])
def test_a_graph_of_no_node_or_one_unrun_node_draws(nodes):
    """An empty Graph is falsy (its len is 0): the widget took it for no graph at all and
    raised AttributeError."""
    g = gn.Graph()
    if nodes:
        g.input("x")
    widget = viz.Widget(g)
    assert widget.graph is g
    assert "<svg" in widget.svg
