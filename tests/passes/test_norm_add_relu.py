"""batchnorm / spatial batchnorm -> add(skip) -> relu as one step each way
(graphnet/passes/norm_relu.py, NormAddRelu): every node reads as gate by gate, bit for
bit, in train and eval mode, where the pass applies and only there."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphnet as gn
from graphnet.passes import norm_relu
from graphnet.passes.norm_relu import NormAddRelu

from .checks import (
    assert_backward_from_inside,
    assert_bitwise_on_two_threads,
    assert_player_and_drawing_show,
    assert_same_everywhere,
    classifier_feeds,
    deferred,
    fused_labels,
    relu_output_backward_calls,
    only_pass,
    twins,
    walk,
    walk_fused_one_way,
)

pytestmark = pytest.mark.usefixtures("one_kernel_thread")


@pytest.fixture(autouse=True)
def fused_at_any_size(monkeypatch):
    """The tests' activations are small: the fused steps would run the gates."""
    monkeypatch.setattr(norm_relu, "SMALLEST", 0)


def network(kind="res", size=(3, 2, 5, 4), skip_first=False, tap=None, skip="relu"):
    """A residual block's end inside a net ending in an affine and a softmax loss.
    res: x -> conv -> spatial batchnorm -> relu (h) -> conv -> spatial batchnorm (norm) ->
    add(norm, h) -> relu; fc: the same with affines and a batchnorm. skip_first: add(h,
    norm). The relu's output feeds the affine and a sum added to the loss (two readers).
    tap: "norm" or "add" also feeds that sum (then the pass must not apply). skip: "relu"
    (h, read by the conv too), "x" (the norm's own input) or "bias" (a (1, C, 1, 1) param:
    an add that broadcasts)."""

    def build(g, rng):
        x = g.input("x", requires_grad=kind == "sbn")
        C = size[1]
        if kind == "fc":
            width = int(np.prod(size[1:]))
            w1 = g.param("w1", rng.standard_normal((width, 7)) * 0.3)
            h = g.relu(g.affine(x, w1, g.param("b1", np.zeros(7)), name="fc1"), name="h")
            w2 = g.param("w2", rng.standard_normal((7, 7)) * 0.4)
            inner = g.affine(h, w2, g.param("b2", rng.standard_normal(7) * 0.1), name="fc2")
            C = 7
        else:
            w1 = g.param("w1", rng.standard_normal((C, C, 3, 3)) * 0.4)
            h = g.relu(g.conv(x, w1, g.param("b1", np.zeros(C)), pad=1, name="conv1"), name="h")
            w2 = g.param("w2", rng.standard_normal((C, C, 3, 3)) * 0.4)
            inner = g.conv(h, w2, g.param("b2", rng.standard_normal(C) * 0.1), pad=1, name="conv2")
        gamma = g.param("gamma", rng.uniform(-1, 2, C))
        beta = g.param("beta", rng.standard_normal(C))
        build_norm = g.batchnorm if kind == "fc" else g.spatial_batchnorm
        norm = build_norm(inner, gamma, beta, momentum=0.6, name="norm")
        other = {"relu": h, "x": inner}.get(skip)
        if skip == "bias":
            other = g.param("bias", rng.standard_normal((1, C, 1, 1)))
        add = g.add(other, norm, name="add") if skip_first else g.add(norm, other, name="add")
        out = g.relu(add, name="relu")
        tapped = {"norm": norm, "add": add}.get(tap, out)
        return classifier_feeds(g, rng, out, size, tapped)

    return build


LABELS = {"res": "spatial_batchnorm+add+relu", "fc": "batchnorm+add+relu"}
SIZES = {"res": (3, 2, 5, 4), "fc": (5, 2, 3, 3)}


def assert_fused_reads_as_gate_by_gate(kind, dtype, size=None, skip_first=False, skip="relu"):
    """Two train steps bit for bit (the running averages move alike), an eval forward and
    backward, and train again."""
    plain, fused, feeds = twins(network(kind, size or SIZES[kind], skip_first, skip=skip), dtype)
    label = LABELS[kind]
    assert label in fused_labels(fused) and label in fused_labels(fused, "backward")
    for _ in range(2):
        for g in (plain, fused):
            walk(g, feeds, backward=False)
        assert deferred(fused["norm"]) == deferred(fused["add"]) == {"value"}
        assert deferred(fused["relu"]) == {"cache"}
        for g in (plain, fused):
            g.backward()
        # The backward needed neither the norm's and the add's values nor the relu's mask.
        assert deferred(fused["norm"]) == deferred(fused["add"]) == {"value"}
        assert deferred(fused["relu"]) == {"cache"}
        assert_same_everywhere(plain, fused)
    for training in (False, True):
        for g in (plain, fused):
            g.train(training)
            walk(g, feeds)
        assert_same_everywhere(plain, fused)


@pytest.mark.parametrize("kind", sorted(LABELS))
@pytest.mark.parametrize("skip_first", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_fused_norm_add_relu_reads_as_gate_by_gate(kind, skip_first, dtype):
    assert_fused_reads_as_gate_by_gate(kind, dtype, skip_first=skip_first)


def test_the_skip_the_norms_own_input():
    """add(norm(y), y): the step's inputs hold y twice, its gradient sums both edges."""
    assert_fused_reads_as_gate_by_gate("res", np.float64, skip="x")


def test_the_pass_alone(monkeypatch):
    only_pass(monkeypatch, NormAddRelu)
    plain, fused, feeds = twins(network(), np.float64)
    assert fused_labels(fused) == fused_labels(fused, "backward") == [LABELS["res"]]
    for training in (True, False):
        for g in (plain, fused):
            g.train(training)
            walk(g, feeds)
        assert_same_everywhere(plain, fused)


@settings(max_examples=20, deadline=None)
@given(
    st.sampled_from(["res", "fc"]),
    st.integers(1, 4),
    st.integers(1, 9),
    st.integers(1, 33),
    st.integers(1, 33),
    st.booleans(),
    st.sampled_from([np.float32, np.float64]),
)
def test_random_shapes(kind, N, C, H, W, skip_first, dtype):
    H, W = (H, W) if H * W * C <= 600 else (1 + H % 5, W)  # keep the conv quick
    assert_fused_reads_as_gate_by_gate(kind, dtype, (N, C, H, W), skip_first)


@pytest.mark.parametrize("tap", ["norm", "add"])
def test_a_norm_or_add_read_by_another_gate_is_not_fused(tap):
    plain, fused, feeds = twins(network(tap=tap), np.float64)
    assert "+add" not in " ".join(fused_labels(fused) + fused_labels(fused, "backward"))
    for g in (plain, fused):
        walk(g, feeds)
    assert_same_everywhere(plain, fused)


def test_a_relu_a_max_pool_reads_is_left_to_the_pooled_pass():
    def build(g, rng):
        x = g.input("x")
        h = g.spatial_batchnorm(x, g.param("gamma", np.ones(2)), g.param("beta", np.zeros(2)))
        g.sum(g.max_pool(g.relu(g.add(h, x)), name="pool"))
        return {"x": rng.standard_normal((2, 2, 4, 4))}

    _, fused, _ = twins(build, np.float64)
    pooled = ["spatial_batchnorm+add+relu+max_pool"]
    assert fused_labels(fused) == fused_labels(fused, "backward") == pooled


def test_an_add_that_broadcasts_runs_the_gates():
    plain, fused, feeds = twins(network(skip="bias"), np.float64)
    assert LABELS["res"] in fused_labels(fused, "backward")
    for training in (True, False):
        for g in (plain, fused):
            g.train(training)
            walk(g, feeds)
        assert deferred(fused["norm"]) == deferred(fused["relu"]) == set()
        assert_same_everywhere(plain, fused)


@pytest.mark.parametrize("kind, skip", [("res", "relu"), ("fc", "x"), ("res", "bias")])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_small_activations_backward_in_one_kernel_call(monkeypatch, kind, skip, dtype):
    """Below SMALLEST entries the forward runs the three gates, and the backward the
    relu's, the add's and the batchnorm's in one kernel call from the relu's output: every
    value, cache, gradient and running average as gate by gate, bit for bit, nothing
    deferred, in train and eval mode. A skip that the add broadcasts (a (1, C, 1, 1) param)
    too: the walk sums its gradient down, as after the gates."""
    monkeypatch.setattr(norm_relu, "SMALLEST", 1 << 30)
    calls = relu_output_backward_calls(monkeypatch)
    plain, fused, feeds = twins(network(kind, SIZES[kind], skip=skip), dtype)
    assert LABELS[kind] in fused_labels(fused, "backward")
    for training in (True, False, True):
        for g in (plain, fused):
            g.train(training)
            walk(g, feeds)
        assert deferred(fused["norm"]) == deferred(fused["add"]) == set()
        assert deferred(fused["relu"]) == set()
        assert_same_everywhere(plain, fused)
    assert calls == [fused["relu"].shape] * 3


def test_a_small_skip_of_another_dtype(monkeypatch):
    """A float32 skip added to a float64 norm (the add promotes it): the one kernel call,
    the gradients as the gates', the skip's in the sum's dtype as theirs."""
    monkeypatch.setattr(norm_relu, "SMALLEST", 1 << 30)

    def build(g, rng):
        x = g.input("x", requires_grad=False)
        skip = g.input("skip", dtype=np.float32)
        norm = g.batchnorm(
            g.affine(x, g.param("w", rng.standard_normal((3, 5))), g.param("b", np.zeros(5))),
            g.param("gamma", rng.uniform(-1, 2, 5)),
            g.param("beta", rng.standard_normal(5)),
            name="norm",
        )
        out = g.relu(g.add(norm, skip, name="add"))
        scores = g.affine(
            out, g.param("w_out", rng.standard_normal((5, 3))), g.param("b_out", np.zeros(3))
        )
        g.softmax_loss(scores, g.input("y", dtype=np.int64))
        return {
            "x": rng.standard_normal((4, 3)),
            "skip": rng.standard_normal((4, 5)).astype(np.float32),
            "y": rng.integers(0, 3, 4),
        }

    calls = relu_output_backward_calls(monkeypatch)
    plain, fused, feeds = twins(build, np.float64)
    assert "batchnorm+add+relu" in fused_labels(fused, "backward")
    for g in (plain, fused):
        walk(g, feeds)
    assert fused["skip"].value.dtype == np.float32 and fused["skip"].grad is not None
    assert calls == [(4, 5)]
    assert_same_everywhere(plain, fused)


@pytest.mark.parametrize("fuse_forward, fuse_backward", [(True, False), (False, True)])
def test_a_fused_walk_one_way_and_gate_by_gate_the_other(fuse_forward, fuse_backward):
    plain, g, feeds = twins(network(), np.float64)
    for training in (True, False):
        for graph in (plain, g):
            graph.train(training)
        walk_fused_one_way(plain, g, feeds, fuse_forward, fuse_backward)
        assert_same_everywhere(plain, g)


def test_a_backward_from_inside_the_fused_chain():
    assert_backward_from_inside(*twins(network("fc"), np.float64), "relu")


def test_the_values_left_for_later_keep_their_walk():
    """Read after the optimizer's in-place updates and a batch refilled in place, the
    norm's and the add's values and the relu's cache are those of their own walk."""
    plain, fused, feeds = twins(network("res", skip="x"), np.float64)
    for g in (plain, fused):
        walk(g, feeds)
    feeds["x"][...] = 7
    for name in ("gamma", "beta", "w2", "b2"):
        fused[name].value += 1
    for name in ("norm", "add"):
        assert np.array_equal(fused[name].value, plain[name].value)
        assert np.array_equal(fused[name].grad, plain[name].grad)
    assert np.array_equal(fused["relu"].cache, plain["relu"].cache)


def test_drawings_steps_hooks_and_gradcheck_see_every_node():
    plain, fused, feeds = twins(network(), np.float64)
    for g in (plain, fused):
        walk(g, feeds)
    assert_player_and_drawing_show(plain, fused, {"norm", "add", "relu"}, "add")
    assert_same_everywhere(plain, fused)
    errors = gn.gradcheck(fused, **feeds)
    assert errors == gn.gradcheck(plain, **feeds)
    assert max(errors.values()) < 1e-5, errors


def test_float16_runs_the_gates():
    plain, fused, feeds = twins(network("fc"), np.float16)
    for g in (plain, fused):
        walk(g, feeds)
    assert deferred(fused["norm"]) == deferred(fused["relu"]) == set()
    assert_same_everywhere(plain, fused)


def test_bitwise_the_same_on_two_threads():
    assert_bitwise_on_two_threads(network("res", (4, 24, 16, 16)), np.float32)
