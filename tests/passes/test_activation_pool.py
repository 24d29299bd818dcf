"""sigmoid / tanh -> max_pool as one backward step (graphnet/passes/activation_pool.py):
every node reads as gate by gate, where it applies and only there."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphnet as gn
from graphnet.kernels import _C
from graphnet.passes import activation_pool
from graphnet.passes.activation_pool import ActivationPool

from .checks import (
    assert_backward_from_inside,
    assert_bitwise_on_two_threads,
    assert_player_and_drawing_show,
    assert_same_everywhere,
    classifier_feeds,
    deferred,
    fused_labels,
    only_pass,
    twins,
    walk,
    walk_fused_one_way,
)


@pytest.fixture(autouse=True)
def activation_pool_alone(monkeypatch):
    """This pass alone, on the tests' small arrays too."""
    only_pass(monkeypatch, ActivationPool)
    monkeypatch.setattr(activation_pool, "SMALLEST", 0)


# (pool_height, pool_width, stride) of windows that do not overlap: the usual, 3x3,
# gaps between windows, oblong, 1x1.
APART = [(2, 2, 2), (3, 3, 3), (2, 2, 3), (2, 3, 3), (1, 1, 1)]
OVERLAPPING = [(3, 3, 2), (2, 2, 1), (2, 3, 2)]


def network(act="sigmoid", pool=(2, 2, 2), size=(2, 3, 9, 8), tapped=None):
    """x -> conv -> spatial batchnorm -> act -> max_pool -> affine -> softmax loss (with
    `tapped`, that node's sum read by the loss too)."""
    N, C, H, W = size

    def build(g, rng):
        x = g.input("x", requires_grad=False)
        w = g.param("w", rng.standard_normal((4, C, 3, 3)) * 0.4)
        h = g.conv(x, w, g.param("b", rng.standard_normal(4) * 0.1), pad=1, name="conv")
        gamma, beta = rng.uniform(0.5, 2, 4), rng.standard_normal(4)
        h = g.spatial_batchnorm(h, g.param("gamma", gamma), g.param("beta", beta), name="sbn")
        h = getattr(g, act)(h, name="act")
        out = g.max_pool(h, *pool, name="pool")
        return classifier_feeds(g, rng, out, size, tapped and g[tapped])

    return build


def assert_reads_as_gate_by_gate(build, dtype, training=True, steps=2, fused=True):
    """Two steps alike (the running averages move along alike); the activation's gradient
    left for later where the fused step ran (`fused`: it did not run the gates)."""
    plain, g, feeds = twins(build, dtype)
    assert len(fused_labels(g)) == len(fused_labels(g, "backward")) == 1
    for _ in range(steps):
        for graph in (plain, g):
            graph.train(training)
            walk(graph, feeds)
        assert deferred(g["act"]) == ({"grad"} if fused else set())
        assert_same_everywhere(plain, g)
    return plain, g, feeds


@pytest.mark.parametrize("pool", APART)
@pytest.mark.parametrize("act", ["sigmoid", "tanh"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_fused_activation_pool_reads_as_gate_by_gate(act, pool, dtype):
    assert_reads_as_gate_by_gate(network(act, pool), dtype)


@pytest.mark.parametrize("act", ["sigmoid", "tanh"])
def test_eval_mode_runs_the_gates(act):
    """No NaN check in eval mode, where a backward is rare: its backward runs the gates."""
    assert_reads_as_gate_by_gate(network(act), np.float32, training=False, fused=False)


def test_small_arrays_run_the_gates(monkeypatch):
    monkeypatch.setattr(activation_pool, "SMALLEST", 2 * 4 * 9 * 8 + 1)
    assert_reads_as_gate_by_gate(network(), np.float32, fused=False)


@pytest.mark.parametrize("pool", OVERLAPPING)
def test_overlapping_windows_run_the_gates(pool):
    """A winner of two windows gets the sum of their gradients times the derivative gate
    by gate, which the winners' products would round otherwise."""
    plain, g, feeds = twins(network(pool=pool), np.float32)
    assert fused_labels(g) == fused_labels(g, "backward") == []


def test_other_activations_are_not_fused():
    plain, g, feeds = twins(network(act="gelu"), np.float32)
    assert fused_labels(g, "backward") == []


@settings(max_examples=30, deadline=None)
@given(
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(3, 12),
    st.integers(3, 12),
    st.sampled_from(APART),
    st.sampled_from(["sigmoid", "tanh"]),
    st.sampled_from([np.float32, np.float64]),
)
def test_random_shapes(N, C, H, W, pool, act, dtype):
    assert_reads_as_gate_by_gate(network(act, pool, (N, C, H, W)), dtype, steps=1)


def test_saturated_ties_keep_the_gates_winners():
    """Entries far from zero saturate to one output: the pool's winner is the first of the
    tied outputs, not the largest input, and the fused step scatters to it too."""

    def build(g, rng):
        x = g.input("x", requires_grad=True)
        h = g.tanh(x * g.param("scale", np.full((2, 6, 6), 40.0)), name="act")
        out = g.max_pool(h, 2, 2, 2, name="pool")
        return classifier_feeds(g, rng, out, (3, 2, 6, 6))

    assert_reads_as_gate_by_gate(build, np.float32)


@pytest.mark.parametrize("row", [2, 8])
def test_a_nan_runs_the_gates(row):
    """A NaN output: gate by gate, 0 * NaN is NaN where the pool's gradient is zero. In a
    window the pooled value is NaN; in the last of 9 rows, which no 2x2 window covers, it
    is not."""

    def build(g, rng):
        x = g.input("x", requires_grad=True)
        scale = rng.uniform(0.5, 2, (3, 9, 8))
        scale[1, row, 3] = np.nan
        h = g.sigmoid(x * g.param("scale", scale), name="act")
        out = g.max_pool(h, 2, 2, 2, name="pool")
        return classifier_feeds(g, rng, out, (2, 3, 9, 8))

    plain, g, feeds = assert_reads_as_gate_by_gate(build, np.float64, fused=False)
    assert np.isnan(g["x"].grad).any()


def test_a_nonfinite_pooled_gradient():
    plain, g, feeds = twins(network(), np.float32)
    for graph in (plain, g):
        graph.forward(**feeds)
    seed = np.random.default_rng(1).standard_normal(plain["pool"].shape)
    seed.flat[::5], seed.flat[1::7], seed.flat[2::9] = np.nan, np.inf, -np.inf
    for graph in (plain, g):
        graph.backward("pool", grad=seed.astype(np.float32))
    assert_same_everywhere(plain, g)


def test_an_activation_read_by_another_gate_is_not_fused():
    plain, g, feeds = twins(network(tapped="act"), np.float64)
    assert fused_labels(g, "backward") == []


def test_a_pool_read_twice_is_fused():
    """The pool's output feeding two gates: its gradient is their sum, then fused."""
    assert_reads_as_gate_by_gate(network(tapped="pool"), np.float64)


@pytest.mark.parametrize("fuse_forward, fuse_backward", [(True, False), (False, True)])
def test_a_fused_walk_one_way_and_gate_by_gate_the_other(fuse_forward, fuse_backward):
    plain, g, feeds = twins(network(), np.float64)
    walk_fused_one_way(plain, g, feeds, fuse_forward, fuse_backward)
    assert_same_everywhere(plain, g)


def test_a_backward_from_inside_the_fused_run():
    assert_backward_from_inside(*twins(network(), np.float64), "act")


def test_drawings_and_steps_see_every_node():
    plain, g, feeds = twins(network(), np.float64)
    for graph in (plain, g):
        walk(graph, feeds)
    assert_player_and_drawing_show(plain, g, {"act", "pool"}, "act")
    assert_same_everywhere(plain, g)


def test_gradcheck_through_a_fused_graph():
    plain, g, feeds = twins(network(act="tanh"), np.float64)
    errors = gn.gradcheck(g, **feeds)
    assert fused_labels(g, "backward") == ["tanh+max_pool"]
    assert errors == gn.gradcheck(plain, **feeds)
    del errors["b"]  # a conv bias before a batchnorm: a zero gradient, numerically noise
    assert max(errors.values()) < 1e-6, errors


@pytest.mark.parametrize("act", ["sigmoid", "tanh"])
def test_bitwise_on_any_thread_count(act):
    assert_bitwise_on_two_threads(network(act, size=(4, 6, 33, 31)), np.float32)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_on_threads_as_gate_by_gate(threads):
    """The kernels the fused step calls split their work among the threads: the gates'
    bits on each count."""
    before = _C.get_num_threads()
    _C.set_num_threads(threads)
    try:
        assert_reads_as_gate_by_gate(network("tanh", (2, 2, 2), (8, 3, 40, 37)), np.float32)
    finally:
        _C.set_num_threads(before)
