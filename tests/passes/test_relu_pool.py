"""relu -> max_pool as one fused step, the relu after the pool (graphnet/passes/relu_pool.py):
every node reads as gate by gate, where it applies and only there."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphnet as gn

from graphnet.passes.relu_pool import ReluPool

from .checks import (
    assert_backward_from_inside,
    assert_player_and_drawing_show,
    assert_same_everywhere,
    deferred,
    fused_labels,
    only_pass,
    twins,
    walk,
    walk_fused_one_way,
)

pytestmark = pytest.mark.usefixtures("one_kernel_thread")


@pytest.fixture(autouse=True)
def relu_pool_alone(monkeypatch):
    only_pass(monkeypatch, ReluPool)


# (pool_height, pool_width, stride): the usual, overlapping windows, stride 1, oblong.
POOLS = [(2, 2, 2), (3, 3, 2), (2, 2, 1), (2, 3, 2)]


def network(
    source="sbn", pool=(2, 2, 2), conv_stride=1, pad=1, shift=0.0, size=(2, 3, 9, 8), filters=4
):
    """x -> [conv -> spatial batchnorm | conv + conv(conv) | nothing] -> relu -> max_pool ->
    affine -> softmax loss; `shift` moves the relu's input (negative: windows it blocks)."""
    N, C, H, W = size

    def build(g, rng):
        x = g.input("x", requires_grad=source == "input")
        h = x
        if source != "input":
            h = _conv(g, x, "conv", C, filters, conv_stride, pad, rng)
            if source == "sbn":
                h = g.spatial_batchnorm(
                    h,
                    g.param("gamma", rng.uniform(0.5, 2, filters)),
                    g.param("beta", rng.standard_normal(filters) + shift),
                    name="sbn",
                )
            else:  # a skip add, as in a residual block
                h = g.add(h, _conv(g, h, "conv_b", filters, filters, 1, 1, rng), name="skip")
        pooled = g.max_pool(g.relu(h, name="relu"), *pool, name="pool")
        features = int(np.prod(g.run(pooled, x=rng.standard_normal(size)).shape[1:]))
        w = g.param("w_out", rng.standard_normal((features, 3)) * 0.3)
        scores = g.affine(pooled, w, g.param("b_out", np.zeros(3)), name="scores")
        g.softmax_loss(scores, g.input("y", dtype=np.int64), name="loss")
        x_value = rng.standard_normal(size) + (shift if source == "input" else 0)
        return {"x": x_value.astype(g.dtype), "y": rng.integers(0, 3, N)}

    return build


def _conv(g, x, name, channels, filters, stride, pad, rng):
    w = g.param("w_" + name, rng.standard_normal((filters, channels, 3, 3)) * 0.4)
    b = g.param("b_" + name, rng.standard_normal(filters) * 0.1)
    return g.conv(x, w, b, stride=stride, pad=pad, name=name)


def assert_fused_reads_as_gate_by_gate(build, dtype, training=True, steps=2):
    plain, fused, feeds = twins(build, dtype)
    assert fused_labels(fused, "forward") == fused_labels(fused, "backward") == ["relu+max_pool"]
    for _ in range(steps):  # the running averages move along alike
        for g in (plain, fused):
            g.train(training)
            walk(g, feeds)
        assert deferred(fused["relu"]) == {"value", "cache", "grad"}
        assert_same_everywhere(plain, fused)


@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("source", ["sbn", "skip", "input"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_fused_relu_pool_reads_as_gate_by_gate(pool, source, dtype):
    assert_fused_reads_as_gate_by_gate(network(source, pool), dtype)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("conv_stride, pad", [(1, 0), (2, 1)])
def test_train_and_eval_mode_and_strided_convs(training, conv_stride, pad):
    build = network("sbn", (2, 2, 2), conv_stride, pad, size=(3, 2, 11, 10))
    assert_fused_reads_as_gate_by_gate(build, np.float32, training)


@pytest.mark.parametrize("pool", POOLS)
def test_windows_the_relu_blocks_keep_their_first_winner(pool):
    """Most windows all negative: the relu leaves zeros there and the first one wins."""
    build = network("input", pool, shift=-1.5)
    assert_fused_reads_as_gate_by_gate(build, np.float64)
    _, fused, feeds = twins(build, np.float64)
    walk(fused, feeds)
    assert (fused["pool"].value == 0).mean() > 0.5


@settings(max_examples=25, deadline=None)
@given(
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(3, 9),
    st.integers(3, 9),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 3),
    st.sampled_from(["sbn", "input"]),
    st.sampled_from([np.float32, np.float64]),
    st.floats(-1, 0.5),
)
def test_random_shapes(N, C, H, W, ph, pw, stride, source, dtype, shift):
    ph, pw = min(ph, H), min(pw, W)
    build = network(source, (ph, pw, stride), size=(N, C, H, W), pad=1, shift=shift, filters=3)
    assert_fused_reads_as_gate_by_gate(build, dtype, steps=1)


def test_a_relu_read_by_another_gate_is_not_fused():
    def build(g, rng):
        feeds = network("sbn")(g, rng)
        tap = g.sum(g["relu"] * g.const(0.5), name="tap")
        g.add(g["loss"], tap, name="total")
        return feeds

    plain, fused, feeds = twins(build, np.float64)
    assert fused_labels(fused) == fused_labels(fused, "backward") == []
    for g in (plain, fused):
        walk(g, feeds)
    assert_same_everywhere(plain, fused)


def test_a_relu_read_by_another_gate_outside_the_gradient_is_fused_backward_only():
    """A second reader of the relu that the loss does not depend on: the forward of the
    loss alone fuses; a forward of both does not, and the backward still does."""

    def build(g, rng):
        feeds = network("sbn")(g, rng)
        g.sum(g["relu"], name="tap")
        return feeds

    plain, fused, feeds = twins(build, np.float64)
    for g in (plain, fused):
        g.run(["loss", "tap"], **feeds)
        g.backward("loss")
    assert [s.label for s in fused.plan(fused["loss"], "backward", fuse=True).steps if s.fused] == [
        "relu+max_pool"
    ]
    assert deferred(fused["relu"]) == {"grad"}
    assert_same_everywhere(plain, fused)


@pytest.mark.parametrize("fuse_forward, fuse_backward", [(True, False), (False, True)])
def test_a_fused_walk_one_way_and_gate_by_gate_the_other(fuse_forward, fuse_backward):
    plain, g, feeds = twins(network("sbn", (3, 3, 2)), np.float64)
    walk_fused_one_way(plain, g, feeds, fuse_forward, fuse_backward)
    assert_same_everywhere(plain, g)


def test_a_backward_from_inside_the_fused_chain():
    assert_backward_from_inside(*twins(network("sbn"), np.float64), "relu")


def test_the_relu_left_for_later_keeps_its_walk():
    """Read after the next forward and the optimizer's in-place update, the relu's value
    and gradient are those of their own walk; an input refilled in place too."""
    plain, fused, feeds = twins(network("input"), np.float64)
    for g in (plain, fused):
        walk(g, feeds)
    feeds["x"][...] = 7  # the next batch, written into the same array
    fused["w_out"].value += 1
    assert np.array_equal(fused["relu"].value, plain["relu"].value)
    assert np.array_equal(fused["relu"].grad, plain["relu"].grad)


def test_drawings_and_steps_see_every_node():
    plain, fused, feeds = twins(network("sbn", (2, 2, 1)), np.float64)
    for g in (plain, fused):
        walk(g, feeds)
    assert_player_and_drawing_show(plain, fused, {"relu", "pool", "sbn", "conv"}, "relu")
    assert_same_everywhere(plain, fused)


def test_gradcheck_through_a_fused_graph():
    plain, fused, feeds = twins(network("sbn"), np.float64)
    errors = gn.gradcheck(fused, **feeds)
    assert fused_labels(fused, "backward") == ["relu+max_pool"]
    assert errors == gn.gradcheck(plain, **feeds)
    # The conv's bias feeds a batchnorm, which subtracts it again: its gradient is zero up
    # to rounding, and its relative error is rounding over rounding.
    assert np.abs(fused["b_conv"].grad).max() < 1e-12
    assert max(error for name, error in errors.items() if name != "b_conv") < 1e-5, errors
