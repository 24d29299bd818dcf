"""A gradient belongs to the values its backward read: a forward that recomputes any of them
drops the gradients of that backward (`.grad` reads None, as before any backward), so
no reader (node.grad, the drawing, the widget's view, the step player) shows a gradient
next to values it does not belong to. A walk apart from the last backward's keeps its
gradients."""

import numpy as np
import pytest

import graphnet as gn
from graphnet import viz
from graphnet.core.store import ValueStore
from graphnet.passes.base import once
from graphnet.viz.draw import View

from .test_executor import small_cnn


def grads_of(g):
    return {n.name: n.grad for n in g.nodes}


def test_a_forward_with_new_values_drops_the_gradients_of_the_old_ones():
    g = gn.Graph()
    x, y = g.input("x"), g.input("y")
    w = g.param("w", 2.0)
    f = g.multiply(g.multiply(x, y), w, name="f")
    assert all(grad is None for grad in grads_of(g).values())  # before any backward
    g.forward(x=2.0, y=3.0)
    assert x.grad is None
    g.backward()
    assert (x.grad, y.grad, w.grad, f.grad) == (6.0, 4.0, 6.0, 1.0)
    g.forward(x=5.0, y=7.0)
    # Every gradient of that backward goes, the param's too: its gradient read x and y.
    assert all(grad is None for grad in grads_of(g).values())
    assert "grad" not in repr(x) and g.store.last_backward is None and g.grads == {"w": None}
    g.backward()
    assert (x.grad, y.grad, w.grad) == (14.0, 10.0, 35.0)
    g.forward(x=5.0, y=7.0)  # the same values again: still a walk that recomputed them
    assert x.grad is None


@pytest.mark.parametrize("fuse", [True, False])
def test_an_array_graph_drops_its_gradients_deferred_ones_too(fuse):
    g, feeds = small_cnn()
    g.fuse = fuse
    g.forward(feeds)
    g.backward()
    if fuse:  # conv -> relu -> max_pool left the conv's gradient to compute on first read
        assert g.store.is_deferred("grad", g["conv"].index)
    new = {"x": feeds["x"][:, :, ::-1].copy(), "y": [3, 0]}
    g.forward(new)
    assert all(grad is None for grad in grads_of(g).values())
    assert not g.store.is_deferred("grad", g["conv"].index)
    assert g.edge_gradients() == {}
    # The next backward is that of the new values, bitwise a fresh graph's.
    g.backward()
    fresh, _ = small_cnn()
    fresh.fuse = fuse
    fresh.forward(new)
    fresh.backward()
    for node in g.nodes:
        got, want = node.grad, fresh[node.name].grad
        assert (got is None and want is None) or np.asarray(got).tobytes() == np.asarray(
            want
        ).tobytes(), node.name


def two_branches():
    """loss = sum(x * w) and, apart from it, a sink tanh(z)."""
    g = gn.Graph()
    x, w, z = g.input("x"), g.param("w", [1.0, -2.0]), g.input("z")
    prod = g.multiply(x, w, name="prod")
    g.sum(prod, name="loss")
    g.tanh(z, name="side")
    return g, {"x": np.array([3.0, 4.0]), "z": np.array([0.5, -1.0])}


def test_a_partial_walk_keeps_the_gradients_of_values_it_did_not_recompute():
    g, feeds = two_branches()
    g.forward(feeds)
    g.backward("loss")
    kept = {name: g[name].grad for name in ("x", "w", "prod", "loss")}
    loss_walk = g.shown_walk()
    # z and side do not reach the loss: their gradient is zero.
    assert np.array_equal(g["z"].grad, [0.0, 0.0]) and np.array_equal(g["side"].grad, [0, 0])
    g.run("side", z=np.array([2.0, 3.0]))  # recomputes z and side only
    for name, grad in kept.items():
        assert g[name].grad is grad  # values not recomputed: their gradients stay
    assert g["z"].grad is None and g["side"].grad is None  # recomputed: dropped
    assert g.shown_walk() is loss_walk and ("loss", 0) in g.edge_gradients()
    # A walk of part of the loss's graph recomputes values its backward read: all go.
    g.run("prod", x=np.array([1.0, 1.0]))
    assert all(grad is None for grad in grads_of(g).values())
    assert g.store.last_backward is None and g.edge_gradients() == {}


def test_a_backward_from_an_input_keeps_its_seed_until_that_input_is_fed_again():
    g, feeds = two_branches()
    g.forward(feeds)
    g.backward("x", grad=np.ones(2))  # a backward with no steps: only the seed
    g.run("side", z=feeds["z"])
    assert np.array_equal(g["x"].grad, [1.0, 1.0])
    g.run("prod", x=feeds["x"])
    assert g["x"].grad is None


def test_the_drawing_and_the_widget_view_after_a_forward_show_no_gradient():
    g = gn.Graph()
    x, y = g.input("x"), g.input("y")
    g.multiply(x, y, name="f")
    g.forward(x=2.0, y=3.0)
    g.backward()
    drawn = viz.draw(g).source
    assert "<B>grad 3</B>" in drawn and "grad: 3" in drawn  # the label and the tooltip
    g.forward(x=5.0, y=7.0)
    drawn = viz.draw(g).source
    assert "<B>value 5</B>" in drawn
    assert "<B>grad" not in drawn and "grad: " not in drawn and "grad L2" not in drawn
    view = View.of(g)
    assert view.grads == {} and view.edge_grads == {} and view.values["f"] == 35.0


def test_a_model_drawn_after_an_accuracy_check_shows_its_values_without_gradients():
    g, feeds = small_cnn()
    g.forward(feeds)
    g.backward()
    g.run("scores", x=feeds["x"])  # the scores alone, as a Solver's accuracy check
    drawn = viz.draw(g).source
    assert "grad L2" not in drawn and "value L2" in drawn
    assert "n_loss" not in drawn  # the walk shown is the scores': the loss did not run


def test_hooks_of_a_forward_see_the_gradients_gone_and_a_backward_fill_them_again():
    g = gn.Graph()
    x, y = g.input("x"), g.input("y")
    g.multiply(g.add(x, y, name="q"), y, name="f")
    g.forward(x=1.0, y=2.0)
    g.backward()
    seen = []

    def look(what):
        seen.append((what, x.grad, g["q"].grad))

    with g.add_hook(
        forward=lambda event: look(("forward", event.node.name)),
        backward=lambda event: look(("backward", event.node.name)),
        start=lambda direction, plan: look(("start", direction)),
        end=lambda direction, plan: look(("end", direction)),
    ):
        g.forward(x=3.0, y=4.0)
        g.backward()
    assert seen == [
        (("start", "forward"), None, None),
        (("forward", "q"), None, None),
        (("forward", "f"), None, None),
        (("end", "forward"), None, None),
        (("start", "backward"), None, None),
        (("backward", "f"), None, 4.0),  # q's gradient arrives at f's step
        (("backward", "q"), 4.0, 4.0),
        (("end", "backward"), 4.0, 4.0),
    ]


def test_a_failed_forward_and_a_failed_backward_leave_no_gradient_behind():
    @gn.register_gate
    class FailsOnNegatives(gn.Gate):
        op = "fails_on_negatives"
        inputs = ("x",)

        def forward(self, x):
            if np.any(np.asarray(x) < 0):
                raise ValueError("negative input")
            return x, None

        def backward(self, dout, cache, needs):
            raise ValueError("no gradient today")

    g = gn.Graph()
    x = g.input("x")
    e = g.exp(x, name="e")
    g.sum(g.apply("fails_on_negatives", e, name="bad"), name="s")
    g.forward(x=np.ones(2))
    with pytest.raises(gn.GraphError, match="no gradient today"):
        g.backward()
    assert g["s"].grad == 1.0  # what the failed backward computed stays readable
    g.forward(x=np.zeros(2))
    assert all(grad is None for grad in grads_of(g).values())

    h = gn.Graph()
    a = h.input("a")
    h.sum(h.multiply(a, a, name="sq"), name="s")
    h.forward(a=np.ones(2))
    h.backward()
    h.add_hook(forward=lambda event: (_ for _ in ()).throw(ValueError("stop")))
    with pytest.raises(ValueError, match="stop"):
        h.forward(a=np.full(2, 5.0))  # stops part-way: the values are half new
    assert all(grad is None for grad in grads_of(h).values())


def test_grads_a_model_returned_and_the_gradcheck_are_unaffected():
    g, feeds = small_cnn()
    from graphnet.models.classifiers import classifier_loss

    loss, grads = classifier_loss(g, {"x": feeds["x"]}, {"y": feeds["y"]}, "scores", "loss")
    copies = {name: np.array(grad) for name, grad in grads.items()}
    classifier_loss(g, {"x": feeds["x"][::-1].copy()}, None, "scores", "loss")  # scores only
    assert all(g[name].grad is None for name in grads)
    for name, grad in grads.items():  # the dict returned keeps the gradients of its call
        np.testing.assert_array_equal(grad, copies[name])
    c = gn.Graph()
    u, v = c.input("u"), c.param("v", [0.5, -1.5])
    c.sum(c.tanh(c.multiply(u, v)))
    errors = gn.gradcheck(c, u=np.array([0.3, 0.7]))
    assert max(errors.values()) < 1e-7 and c["v"].grad is not None  # it walks last


def test_a_backward_records_the_walk_that_computed_its_target_not_the_latest_walk():
    g, feeds = two_branches()
    g.run("loss", {"x": feeds["x"]})
    loss_walk = g.executor.last_forward
    g.run("side", z=feeds["z"])  # the latest walk, which does not compute the loss
    assert g.executor.last_forward is not loss_walk
    g.backward("loss")
    assert g.store.last_backward.forward is loss_walk and g.shown_walk() is loss_walk
    g.forward(feeds)  # computes the loss again: its walk is the one recorded now
    g.backward("loss")
    assert g.store.last_backward.forward is g.executor.last_forward is g.shown_walk()


def test_grads_reads_each_param_gradient_and_computes_a_deferred_one_once():
    store = ValueStore()
    for _ in range(3):
        store.grow()
    store.grads[0], store.grads[2] = np.ones(2), None
    calls = []
    store.defer("grad", 1, lambda: calls.append(1) or np.full(2, 3.0))
    grads = store.grads_of({"a": 0, "b": 1, "c": 2})
    assert grads["a"] is store.grads[0] and grads["c"] is None
    assert np.array_equal(grads["b"], [3.0, 3.0]) and store.grads[1] is grads["b"]
    assert store.grads_of({"b": 1})["b"] is grads["b"] and calls == [1]
    assert not store.is_deferred("grad", 1)


def test_once_computes_on_the_first_call_and_again_only_after_a_failure():
    calls = []

    def compute():
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("first call fails")
        return object()

    value = once(compute)
    with pytest.raises(ValueError):
        value()
    first = value()
    assert value() is first and len(calls) == 2
