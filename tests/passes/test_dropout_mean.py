"""dropout -> mean as one backward step (graphnet/passes/dropout_mean.py): every node reads
as gate by gate, random streams included, where it applies and only there."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphnet as gn
from graphnet.passes.dropout_mean import DropoutMean

from .checks import (
    assert_backward_from_inside,
    assert_bitwise_on_two_threads,
    assert_player_and_drawing_show,
    assert_same_everywhere,
    classifier_feeds,
    deferred,
    fused_labels,
    only_pass,
    walk,
    walk_fused_one_way,
)


@pytest.fixture(autouse=True)
def dropout_mean_alone(monkeypatch):
    only_pass(monkeypatch, DropoutMean)


def network(
    size=(3, 4, 7, 6), axis=(2, 3), p=0.5, seed=None, keepdims=False, tapped=None, act=True
):
    """x -> [leaky relu] -> dropout -> mean over `axis` -> affine -> softmax loss (with
    `tapped`, that node's sum read by the loss too)."""

    def build(g, rng):
        h = x = g.input("x", requires_grad=not act)
        if act:
            h = g.leaky_relu(x * g.param("scale", rng.uniform(0.5, 2, size[1:])), 0.1, name="act")
        h = g.dropout(h, p, seed=seed, name="dropout")
        out = g.mean(h, axis=axis, keepdims=keepdims, name="gmean")
        return classifier_feeds(g, rng, out, size, tapped and g[tapped])

    return build


def twins(build, dtype):
    """(plain, fused, feeds) as checks.twins, their dropouts' random streams alike (each
    node seeds its stream from numpy's global state on its first walk, which `build`
    runs)."""
    graphs = []
    for fuse in (False, True):
        g = gn.Graph(dtype=dtype)
        g.fuse = fuse
        np.random.seed(5)
        feeds = build(g, np.random.default_rng(0))
        graphs.append(g)
    return graphs[0], graphs[1], feeds


def assert_reads_as_gate_by_gate(build, dtype, training=True, steps=2, left=("grad",)):
    """Two train (or eval) steps alike, the dropouts' streams too; `left`: what the fused
    step leaves of the dropout for later in train mode (nothing where it runs the gates)."""
    plain, fused, feeds = twins(build, dtype)
    assert fused_labels(fused) == []
    assert fused_labels(fused, "backward") == ["dropout+mean"]
    for _ in range(steps):  # new masks each step, alike
        for g in (plain, fused):
            g.train(training)
            walk(g, feeds)
        assert deferred(fused["dropout"]) == (set(left) if training else set())
        assert_same_everywhere(plain, fused)
        assert_same_streams(plain, fused)


def assert_same_streams(plain, fused):
    streams = [g["dropout"].state.get("rng") for g in (plain, fused)]
    assert (streams[0] is None) == (streams[1] is None)
    if streams[0] is not None:
        assert streams[0].bit_generator.state == streams[1].bit_generator.state


@pytest.mark.parametrize("axis", [(2, 3), (1, 2, 3), 3, -1, (1, 3), 1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_fused_dropout_mean_reads_as_gate_by_gate(axis, dtype):
    """Over leading or inner axes, the step runs the gates."""
    trailing = axis not in ((1, 3), 1)
    assert_reads_as_gate_by_gate(network(axis=axis), dtype, left=("grad",) * trailing)


@pytest.mark.parametrize("keepdims", [False, True])
def test_keepdims(keepdims):
    assert_reads_as_gate_by_gate(network(keepdims=keepdims), np.float32)


def test_the_course_mask_for_a_seed():
    assert_reads_as_gate_by_gate(network(seed=3), np.float32)


def test_eval_mode_runs_the_gates():
    """No mask in eval mode: the dropout's gradient is the mean's, an array of its own."""
    assert_reads_as_gate_by_gate(network(), np.float32, training=False)
    plain, fused, feeds = twins(network(), np.float32)
    fused.eval()
    walk(fused, feeds)
    assert fused["act"].grad.flags.writeable and fused["act"].grad.base is None


@settings(max_examples=25, deadline=None)
@given(
    st.integers(1, 4),
    st.integers(1, 5),
    st.integers(1, 9),
    st.integers(1, 9),
    st.sampled_from([0.0, 0.1, 0.5, 0.9]),
    st.sampled_from([np.float32, np.float64]),
)
def test_random_shapes(N, C, H, W, p, dtype):
    assert_reads_as_gate_by_gate(network((N, C, H, W), p=p, act=N % 2 == 0), dtype, steps=1)


def test_a_dropout_read_by_another_gate_is_not_fused():
    plain, fused, feeds = twins(network(tapped="dropout"), np.float64)
    assert fused_labels(fused) == fused_labels(fused, "backward") == []
    for g in (plain, fused):
        walk(g, feeds)
    assert_same_everywhere(plain, fused)


def test_a_mean_read_twice_is_fused():
    """The mean's output feeding two gates: its gradient is their sum, then fused."""
    plain, fused, feeds = twins(network(tapped="gmean"), np.float64)
    assert fused_labels(fused, "backward") == ["dropout+mean"]
    for g in (plain, fused):
        walk(g, feeds)
    assert_same_everywhere(plain, fused)


@pytest.mark.parametrize("fuse_forward, fuse_backward", [(True, False), (False, True)])
def test_a_fused_walk_one_way_and_gate_by_gate_the_other(fuse_forward, fuse_backward):
    plain, g, feeds = twins(network(), np.float64)
    walk_fused_one_way(plain, g, feeds, fuse_forward, fuse_backward)
    assert_same_everywhere(plain, g)


def test_a_backward_from_inside_the_fused_run():
    assert_backward_from_inside(*twins(network(), np.float64), "dropout")


def test_what_is_left_for_later_keeps_its_walk():
    """Read after the optimizer's in-place update and an input refilled in place, the
    dropout's output gradient is that of its own walk."""
    plain, fused, feeds = twins(network(act=False), np.float64)
    for g in (plain, fused):
        walk(g, feeds)
    assert deferred(fused["dropout"]) == {"grad"}
    feeds["x"][...] = 7  # the next batch, written into the same array
    fused["w_out"].value += 1
    assert np.array_equal(fused["dropout"].value, plain["dropout"].value)
    assert np.array_equal(fused["dropout"].grad, plain["dropout"].grad)


def test_drawings_and_steps_see_every_node():
    plain, fused, feeds = twins(network(), np.float64)
    for g in (plain, fused):
        walk(g, feeds)
    assert_player_and_drawing_show(plain, fused, {"dropout", "gmean", "act"}, "dropout")
    assert_same_everywhere(plain, fused)


def test_gradcheck_through_a_fused_graph():
    plain, fused, feeds = twins(network(seed=1), np.float64)
    errors = gn.gradcheck(fused, **feeds)
    assert fused_labels(fused, "backward") == ["dropout+mean"]
    assert errors == gn.gradcheck(plain, **feeds)
    assert max(errors.values()) < 1e-6, errors


def test_bitwise_on_any_thread_count():
    assert_bitwise_on_two_threads(network(size=(4, 6, 33, 31), seed=2), np.float32)
