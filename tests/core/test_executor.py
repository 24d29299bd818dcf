"""The executor and its value store: hooks see every step, nodes describe and the store
holds, reading changes nothing, a failed forward cannot feed a backward, threads, and the
profile built on the hooks."""

import itertools
import threading
import time

import numpy as np
import pytest

import graphnet as gn
from graphnet import viz


def circuit():
    g = gn.Graph()
    x, y, z = g.input("x"), g.input("y"), g.input("z")
    q = g.add(x, y, name="q")
    g.multiply(q, q * z, name="f")  # q feeds two gates
    return g


def small_cnn(seed=0):
    rng = np.random.default_rng(seed)
    g = gn.Graph(dtype=np.float32)
    x, y = g.input("x", requires_grad=False), g.input("y")
    w, b = g.param("w", rng.standard_normal((4, 3, 3, 3)) * 0.3), g.param("b", np.zeros(4))
    pool = g.max_pool(g.relu(g.conv(x, w, b, pad=1, name="conv"), name="relu"), name="pool")
    W, c = g.param("W", rng.standard_normal((64, 5)) * 0.1), g.param("c", np.zeros(5))
    g.softmax_loss(g.affine(pool, W, c, name="scores"), y, name="loss")
    feeds = {"x": rng.standard_normal((2, 3, 8, 8)).astype(np.float32), "y": [1, 4]}
    return g, feeds


# ----- hooks -----------------------------------------------------------------------------


def test_hooks_see_each_step_with_its_inputs_output_and_gradients():
    g = circuit()
    forward, backward, walks = [], [], []
    handle = g.add_hook(
        forward=forward.append,
        backward=backward.append,
        start=lambda d, plan: walks.append(("start", d, len(plan))),
        end=lambda d, plan: walks.append(("end", d, len(plan))),
    )
    g.forward(x=1.0, y=2.0, z=-4.0)
    g.backward()
    assert [e.node.name for e in forward] == ["q", "multiply_1", "f"]
    assert [(e.number, e.total) for e in forward] == [(1, 3), (2, 3), (3, 3)]
    assert forward[0].inputs == (1.0, 2.0) and forward[0].output == 3.0
    assert forward[2].output == 3.0 * -12.0
    assert walks == [
        ("start", "forward", 3),
        ("end", "forward", 3),
        ("start", "backward", 3),
        ("end", "backward", 3),
    ]
    f, mul, q = backward
    assert f.node.name == "f" and f.upstream == 1.0 and f.received == (-12.0, 3.0)
    assert mul.received == (3.0 * -4.0, 3.0 * 3.0)  # q * z: d/dq = z * upstream
    assert q.received == (g["x"].grad, g["y"].grad) == (-24.0, -24.0)
    handle.remove()
    g.forward(x=1.0, y=2.0, z=-4.0)
    assert len(forward) == 3  # removed: no more events
    with g.add_hook(forward=forward.append):
        g.forward(x=1.0, y=2.0, z=-4.0)
    g.forward(x=1.0, y=2.0, z=-4.0)
    assert len(forward) == 6 and g.executor.hooks == []


def test_a_fused_step_is_one_event_listing_its_nodes():
    g, feeds = small_cnn()
    events = []
    with g.add_hook(forward=events.append, backward=events.append):
        g.forward(feeds)
        g.backward()
    labels = [e.step.label for e in events]
    assert labels.count("conv+relu+max_pool") == 2
    fused = next(e for e in events if e.step.fused)
    assert [n.name for n in fused.step.fused] == ["conv", "relu", "pool"]
    assert fused.output is g["pool"].value


def test_edge_gradients_come_from_the_walk_itself():
    g = circuit()
    g.forward(x=1.0, y=2.0, z=-4.0)
    g.backward()
    edges = g.edge_gradients()
    # q feeds f directly and through q * z: each edge shows its own share
    assert edges["f", 0] == -12.0 and edges["multiply_1", 0] == -12.0
    assert edges["f", 0] + edges["multiply_1", 0] == g["q"].grad
    assert edges["q", 0] == edges["q", 1] == g["q"].grad  # one consumer: its whole gradient
    assert viz.edge_gradients(g) == edges


# ----- nodes describe, the store holds -------------------------------------------------


def test_requires_grad_is_right_when_a_node_is_built():
    g = gn.Graph()
    data = g.input("data", requires_grad=False)
    w = g.param("w", np.ones(3))
    assert g.exp(data).requires_grad is False
    assert g.add(data, w).requires_grad is True
    labels = g.input("labels", dtype=np.int64)
    assert labels.requires_grad is False


def test_reading_a_node_never_computes_a_deferred_entry():
    g, feeds = small_cnn()
    g.forward(feeds)
    store = g.store
    assert store.is_deferred("value", g["conv"].index)
    assert g["conv"].shape == (2, 4, 8, 8) and "conv" in repr(g["conv"])
    assert store.is_deferred("value", g["conv"].index)  # shape and repr did not compute it
    value = g["conv"].value  # reading the value does, once, and keeps it
    assert not store.is_deferred("value", g["conv"].index) and g["conv"].value is value


def test_only_sources_take_a_new_value():
    g = circuit()
    g["x"].value = 2.0
    assert g["x"].value == 2.0
    with pytest.raises(gn.GraphError, match="computed by its gate"):
        g["q"].value = 3.0


def test_an_input_without_dtype_takes_it_from_the_feed():
    g = gn.Graph()
    scores = g.input("scores", shape=(None, 3))
    y = g.input("y")  # no dtype: the feed decides
    loss = g.softmax_loss(scores, y, name="loss")
    value = g.forward(scores=np.zeros((2, 3)), y=np.array([0, 2]))
    assert value == pytest.approx(np.log(3))
    assert y.dtype == np.int64 and y.grad is None
    g.backward()
    assert y.grad is None and scores.grad.shape == (2, 3) and loss.grad == 1.0
    g.forward(scores=np.zeros((2, 3)), y=[1.0, 2.0])  # whole floats are labels too
    assert g["y"].value.dtype == np.int64
    with pytest.raises(gn.GraphError, match="non-integers"):
        g.forward(scores=np.zeros((2, 3)), y=[0.5, 1.0])
    h = gn.Graph()
    x = h.input("x")  # read as a float by the gates: takes the graph's dtype
    h.exp(x)
    h.forward(x=np.array([1, 2]))
    assert x.dtype == np.float64


@pytest.mark.parametrize(
    "dtype, feed",
    [
        (np.int32, 2**40),
        (np.uint8, 300),
        (np.uint8, -1),
        (np.int64, 2.0**70),
        (np.int16, 1.5),
        (np.int32, np.nan),
        (np.int8, [1, 2, 128]),
        (np.int8, np.array([1, 200], np.int16)),  # arrays of a wider integer dtype: checked
        (np.uint8, np.array([0, -1], np.int64)),
        (np.int64, np.array([2**63], np.uint64)),
        (np.uint64, np.array([3, -2], np.int64)),
    ],
)
def test_integer_feeds_that_do_not_fit_are_refused(dtype, feed):
    g = gn.Graph()
    g.input("n", dtype=dtype)
    with pytest.raises(gn.GraphError, match="'n'"):
        g.run("n", n=feed)


def test_integer_feeds_that_fit_are_kept_exactly():
    g = gn.Graph()
    g.input("n", dtype=np.uint8)
    g.input("m", dtype=np.int64)
    assert g.run("n", n=255) == 255
    assert g.run("m", m=2**62) == 2**62
    assert g.run("m", m=4.0) == 4
    # An array of the input's dtype or one it holds all of: every value fits as it is.
    for words in (np.array([0, 2**62, -(2**63)], np.int64), np.array([7, 2**32 - 1], np.uint32)):
        fed = g.run("m", m=words)
        assert fed.dtype == np.int64 and fed.tolist() == words.tolist()


# ----- failures and threads -----------------------------------------------------------


def test_backward_refuses_to_mix_a_failed_batch_with_the_last_gradient():
    @gn.register_gate
    class RefusesLargeBatches(gn.Gate):
        op = "refuses_large_batches"
        inputs = ("x",)

        def forward(self, x):
            if len(x) > 3:
                raise ValueError(f"batch of {len(x)} is too large")
            return x * 2, None

        def backward(self, dout, cache, needs):
            return (2 * dout,)

    g = gn.Graph()
    x = g.input("x", shape=(None,))
    h = g.multiply(x, g.param("w", np.ones(1)), name="h")
    g.sum(g.apply("refuses_large_batches", h, name="guard"), name="loss")
    g.forward(x=np.ones(2))
    g.backward()
    with pytest.raises(gn.GraphError, match="'guard'.*too large"):
        g.forward(x=np.ones(5))  # 'h' holds the new batch now, 'loss' the old one
    with pytest.raises(gn.GraphError, match="last forward failed at node 'guard'"):
        g.backward()
    assert g.forward(x=np.ones(3)) == 6.0  # a forward that succeeds clears it
    g.backward()
    assert g["w"].grad == pytest.approx([6.0])


def test_threads_sharing_a_model_get_correct_results():
    np.random.seed(0)
    model = gn.models.TwoLayerNet(input_dim=20, hidden_dim=30, num_classes=4)
    rng = np.random.default_rng(1)
    batches = [(rng.standard_normal((8, 20)), rng.integers(0, 4, 8)) for _ in range(6)]
    expected = []
    for X, y in batches:
        loss, grads = model.loss(X, y)
        expected.append((loss, {k: v.copy() for k, v in grads.items()}))
    results = [None] * 60

    def work(i):
        X, y = batches[i % len(batches)]
        loss, grads = model.loss(X, y)
        results[i] = (loss, {k: v.copy() for k, v in grads.items()})

    threads = [threading.Thread(target=work, args=(i,)) for i in range(60)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, (loss, grads) in enumerate(results):
        want_loss, want_grads = expected[i % len(batches)]
        assert loss == want_loss
        for name, grad in grads.items():
            np.testing.assert_array_equal(grad, want_grads[name])


# ----- profile ----------------------------------------------------------------------------


def test_profile_reports_every_step_both_ways_and_draws_by_time():
    g, feeds = small_cnn()
    prof = gn.profile(g, feeds, repeat=3)
    labels = {row.label for row in prof.rows}
    assert labels == {"conv+relu+max_pool", "affine", "softmax_loss"}
    assert all(row.forward_calls == 3 and row.backward_calls == 3 for row in prof.rows)
    assert all(row.forward_ms > 0 and row.backward_ms > 0 for row in prof.rows)
    fused = next(row for row in prof.rows if row.label == "conv+relu+max_pool")
    assert fused.nodes == ("conv", "relu", "pool") and fused.peak_bytes > 0
    table = prof.table()
    assert "conv..pool" in table and "fwd ms" in table and "peak MB" in table
    source = prof.draw().source
    assert " ms</B>" in source and "fillcolor" in source
    with gn.profile(g) as live:  # around one's own calls
        g.forward(feeds)
    assert {row.label for row in live.rows} == labels and g.executor.hooks == []


def test_profile_times_the_steps_by_the_clock_given():
    g, feeds = small_cnn()
    ticks = itertools.count()  # one second a reading: each step spans exactly one
    prof = gn.profile(g, feeds, repeat=2, memory=False, clock=lambda: float(next(ticks)))
    assert all(row.forward_ms == row.backward_ms == 1000.0 for row in prof.rows)
    on_cpu = gn.profile(g, feeds, repeat=2, memory=False, clock=time.thread_time)
    assert {row.label for row in on_cpu.rows} == {row.label for row in prof.rows}
    with pytest.raises(TypeError, match="clock must be a function"):
        gn.profile(g, feeds, clock="cpu")


def test_the_walk_a_drawing_shows_and_edges_left_uncomputed():
    g, feeds = small_cnn()
    assert g.shown_walk() is None  # nothing ran yet
    g.forward(feeds)
    g.backward()
    loss_walk = g.shown_walk()
    assert {g["loss"].index, g["x"].index, g["conv"].index} <= loss_walk.writes
    assert g.store.is_deferred("grad", g["conv"].index)
    edges = g.edge_gradients(compute=False)
    assert ("relu", 0) not in edges and ("pool", 0) not in edges  # deferred: left out
    assert g.store.is_deferred("grad", g["conv"].index)  # and still not computed
    assert ("scores", 0) in edges
    full = g.edge_gradients()
    np.testing.assert_array_equal(full["relu", 0], g["conv"].grad)
    # A later walk of the scores alone (an accuracy check) recomputes values the backward
    # read: the drawing shows that walk, without the gradients of the old values.
    g.backward()  # the conv's gradient deferred again
    g.run("scores", x=feeds["x"])
    scores_walk = g.shown_walk()
    assert scores_walk is not loss_walk and g["loss"].index not in scores_walk.writes
    assert not g.store.is_deferred("grad", g["conv"].index)
    assert g.edge_gradients() == {} and all(n.grad is None for n in g.nodes)


def test_a_failing_backward_step_is_named_with_and_without_hooks():
    @gn.register_gate
    class BackwardFails(gn.Gate):
        op = "backward_fails"
        inputs = ("x",)

        def forward(self, x):
            return x, None

        def backward(self, dout, cache, needs):
            raise ValueError("no gradient today")

    for hooked in (False, True):
        g = gn.Graph()
        g.sum(g.apply("backward_fails", g.exp(g.input("x"), name="e"), name="bad"), name="s")
        g.forward(x=np.ones(2))
        with g.add_hook(backward=lambda e: None) if hooked else g.add_hook(end=print):
            with pytest.raises(gn.GraphError, match="backward of node 'bad' .*no gradient"):
                g.backward()


def test_a_float_fed_is_the_float64_the_array_checks_make():
    g = gn.Graph()
    x, v = g.input("x"), g.input("v", dtype=np.float32)
    g.add(g.tanh(x), g.sum(v))
    for number in (0.1, -0.0, 1e300, 5e-324):
        g.forward(x=number, v=np.zeros(2, np.float32))
        fed = g.store.values[x.index]
        assert type(fed) is np.float64 and fed == np.asarray(number, np.float64)[()]
        assert np.signbit(fed) == np.signbit(number)
    g.forward(x=0.5, v=0.25)  # a float for a float32 input: converted by the checks
    assert type(g.store.values[v.index]) is np.float32
