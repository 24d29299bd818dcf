"""spatial groupnorm -> gelu / leaky relu / relu / softplus (-> average pool) as one step each way
(graphnet/passes/norm_activation.py): every node reads as gate by gate, bit for bit, where
the passes apply and only there."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphnet as gn
from graphnet.passes import norm_activation
from graphnet.passes.norm_activation import GroupnormActivationPool, NormActivation

from .checks import (
    assert_backward_from_inside,
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

pytestmark = pytest.mark.usefixtures("one_kernel_thread")

ACTIVATIONS = {
    "gelu": lambda g, h: g.gelu(h, name="act"),
    "gelu_tanh": lambda g, h: g.gelu(h, approximate="tanh", name="act"),
    "leaky_relu": lambda g, h: g.leaky_relu(h, 0.1, name="act"),
    "relu": lambda g, h: g.relu(h, name="act"),
    "softplus": lambda g, h: g.softplus(h, name="act"),
}


@pytest.fixture(autouse=True)
def fused_at_any_size(monkeypatch):
    """The tests' activations are small: the fused steps would run the gates."""
    monkeypatch.setattr(norm_activation, "SMALLEST", 0)


def network(activation="gelu", size=(3, 2, 5, 4), features=6, G=3, tap=False, conv=True, pool=None):
    """x -> conv -> spatial groupnorm -> activation -> affine -> softmax loss (without
    conv: x -> groupnorm -> ...; with pool, (pool_height, pool_width, stride): an average
    pool after the activation). `tap`: the norm also feeds a sum added to the loss."""

    def build(g, rng):
        x = g.input("x", requires_grad=not conv)
        h, C = x, size[1]
        if conv:
            w = g.param("w", rng.standard_normal((features, size[1], 3, 3)) * 0.4)
            b = g.param("b", rng.standard_normal(features) * 0.1)
            h, C = g.conv(x, w, b, stride=1, pad=1, name="conv"), features
        gamma = g.param("gamma", rng.uniform(-1, 2, C))
        beta = g.param("beta", rng.standard_normal(C))
        h = g.spatial_groupnorm(h, gamma, beta, G=G if C % G == 0 else 1, name="norm")
        out = ACTIVATIONS[activation](g, h)
        if pool is not None:
            out = g.avg_pool(out, *pool, name="pool")
        return classifier_feeds(g, rng, out, size, h if tap else None)

    return build


def assert_fused_reads_as_gate_by_gate(activation, dtype, size=(3, 2, 5, 4), conv=True, pool=None):
    """One fused step each way (with pool: groupnorm -> activation -> avg_pool), whose
    deferred entries the backward does not compute, and every node as gate by gate."""
    plain, fused, feeds = twins(network(activation, size, conv=conv, pool=pool), dtype)
    op = "gelu" if activation.startswith("gelu") else activation
    label = [f"spatial_groupnorm+{op}" + ("+avg_pool" if pool else "")]
    assert (fused_labels(fused), fused_labels(fused, "backward")) == (label, label)
    act_deferred = {"value", "cache"} if pool else {"cache"}
    for _ in range(2):
        for g in (plain, fused):
            walk(g, feeds, backward=False)
        assert deferred(fused["norm"]) == {"value"}
        assert deferred(fused["act"]) == act_deferred
        for g in (plain, fused):
            g.backward()
        # The backward needed neither the norm's value nor the activation's saved input.
        assert deferred(fused["norm"]) == {"value", "grad"}
        assert deferred(fused["act"]) == act_deferred | ({"grad"} if pool else set())
        assert_same_everywhere(plain, fused)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_fused_groupnorm_activation_reads_as_gate_by_gate(activation, dtype):
    assert_fused_reads_as_gate_by_gate(activation, dtype)


@settings(max_examples=20, deadline=None)
@given(
    st.sampled_from(sorted(ACTIVATIONS)),
    st.integers(1, 4),
    st.integers(1, 6),
    st.integers(1, 5),
    st.integers(1, 5),
    st.booleans(),
    st.sampled_from([np.float32, np.float64]),
)
def test_random_shapes(activation, N, C, H, W, conv, dtype):
    assert_fused_reads_as_gate_by_gate(activation, dtype, (N, C, H, W), conv)


def test_the_pass_alone(monkeypatch):
    only_pass(monkeypatch, NormActivation)
    plain, fused, feeds = twins(network(), np.float64)
    assert fused_labels(fused) == fused_labels(fused, "backward") == ["spatial_groupnorm+gelu"]
    for g in (plain, fused):
        walk(g, feeds)
    assert_same_everywhere(plain, fused)


def test_a_norm_read_by_another_gate_is_not_fused():
    plain, fused, feeds = twins(network(tap=True), np.float64)
    assert "spatial_groupnorm+" not in " ".join(
        fused_labels(fused) + fused_labels(fused, "backward")
    )
    for g in (plain, fused):
        walk(g, feeds)
    assert_same_everywhere(plain, fused)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_relu_read_by_a_max_pool_is_left_to_the_pools_pass(dtype):
    """relu_pool.py runs ahead of this pass and takes the relu on the pooled values only."""

    def build(g, rng):
        x = g.input("x")
        gamma, beta = (
            g.param("gamma", rng.uniform(-1, 2, 4)),
            g.param("beta", rng.standard_normal(4)),
        )
        h = g.relu(g.spatial_groupnorm(x, gamma, beta, G=2, name="norm"), name="act")
        return classifier_feeds(g, rng, g.max_pool(h, 2, 2, 2, name="pool"), (3, 4, 6, 6))

    plain, fused, feeds = twins(build, dtype)
    assert fused_labels(fused) == fused_labels(fused, "backward") == ["relu+max_pool"]
    for g in (plain, fused):
        walk(g, feeds)
    assert_same_everywhere(plain, fused)


@pytest.mark.parametrize("fuse_forward, fuse_backward", [(True, False), (False, True)])
def test_a_fused_walk_one_way_and_gate_by_gate_the_other(fuse_forward, fuse_backward):
    plain, g, feeds = twins(network(), np.float64)
    walk_fused_one_way(plain, g, feeds, fuse_forward, fuse_backward)
    assert_same_everywhere(plain, g)


def test_a_backward_from_inside_the_fused_chain():
    assert_backward_from_inside(*twins(network(), np.float64), "act")


def test_the_norm_left_for_later_keeps_its_walk():
    """Read after the optimizer's in-place updates and a batch refilled in place, the
    norm's value and gradient and the activation's cache are those of their own walk."""
    plain, fused, feeds = twins(network(conv=False), np.float64)
    for g in (plain, fused):
        walk(g, feeds)
    feeds["x"][...] = 7  # the next batch, written into the same array
    for name in ("gamma", "beta"):
        fused[name].value += 1
    assert np.array_equal(fused["norm"].value, plain["norm"].value)
    assert np.array_equal(fused["norm"].grad, plain["norm"].grad)
    assert np.array_equal(fused["act"].cache, plain["act"].cache)


def test_drawings_steps_hooks_and_gradcheck_see_every_node():
    plain, fused, feeds = twins(network(), np.float64)
    for g in (plain, fused):
        walk(g, feeds)
    assert_player_and_drawing_show(plain, fused, {"conv", "norm", "act"}, "norm")
    assert_same_everywhere(plain, fused)
    errors = gn.gradcheck(fused, **feeds)
    assert errors == gn.gradcheck(plain, **feeds)
    assert max(errors.values()) < 1e-5, errors


@pytest.mark.parametrize("dtype, smallest", [(np.float16, 0), (np.float64, 81)])
def test_float16_and_small_activations_run_the_gates(monkeypatch, dtype, smallest):
    """The kernels take float32 and float64 only, and below SMALLEST entries the fused
    step's bookkeeping costs more than it saves: the step then runs the two gates."""
    monkeypatch.setattr(norm_activation, "SMALLEST", smallest)
    plain, fused, feeds = twins(network(size=(2, 2, 5, 4), conv=False), dtype)  # 80 entries
    for g in (plain, fused):
        walk(g, feeds)
    assert deferred(fused["norm"]) == deferred(fused["act"]) == set()
    assert_same_everywhere(plain, fused)


# ----- groupnorm -> activation -> average pool ------------------------------------------


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_fused_groupnorm_activation_pool_reads_as_gate_by_gate(activation, dtype):
    assert_fused_reads_as_gate_by_gate(activation, dtype, (3, 2, 6, 5), pool=(2, 2, 2))


@settings(max_examples=20, deadline=None)
@given(
    st.sampled_from(sorted(ACTIVATIONS)),
    st.integers(1, 4),
    st.integers(1, 6),
    st.integers(1, 7),
    st.integers(1, 7),
    st.integers(1, 3),
    st.integers(1, 3),
    st.booleans(),
    st.sampled_from([np.float32, np.float64]),
)
def test_pooled_random_shapes(activation, N, C, H, W, window, stride, conv, dtype):
    pool = (min(window, H), min(window, W), stride)
    assert_fused_reads_as_gate_by_gate(activation, dtype, (N, C, H, W), conv, pool)


def test_the_pooling_pass_alone(monkeypatch):
    only_pass(monkeypatch, GroupnormActivationPool)
    plain, fused, feeds = twins(network(size=(3, 2, 6, 6), pool=(2, 2, 2)), np.float64)
    label = ["spatial_groupnorm+gelu+avg_pool"]
    assert fused_labels(fused) == fused_labels(fused, "backward") == label
    for g in (plain, fused):
        walk(g, feeds)
    assert_same_everywhere(plain, fused)


def test_a_norm_read_by_another_gate_is_not_fused_with_its_pool():
    plain, fused, feeds = twins(network(tap=True, size=(3, 2, 6, 6), pool=(2, 2, 2)), np.float64)
    assert "+avg_pool" not in " ".join(fused_labels(fused) + fused_labels(fused, "backward"))
    for g in (plain, fused):
        walk(g, feeds)
    assert_same_everywhere(plain, fused)


@pytest.mark.parametrize("fuse_forward, fuse_backward", [(True, False), (False, True)])
def test_a_pooled_walk_fused_one_way_and_gate_by_gate_the_other(fuse_forward, fuse_backward):
    plain, g, feeds = twins(network(size=(3, 2, 6, 6), pool=(2, 2, 2)), np.float64)
    walk_fused_one_way(plain, g, feeds, fuse_forward, fuse_backward)
    assert_same_everywhere(plain, g)


@pytest.mark.parametrize("name", ["act", "norm"])
def test_a_backward_from_inside_the_pooled_chain(name):
    assert_backward_from_inside(
        *twins(network(size=(3, 2, 6, 6), pool=(2, 2, 2)), np.float64), name
    )


def test_the_pooled_chain_left_for_later_keeps_its_walk():
    plain, fused, feeds = twins(network(conv=False, size=(3, 3, 6, 6), pool=(2, 2, 2)), np.float64)
    for g in (plain, fused):
        walk(g, feeds)
    feeds["x"][...] = 7
    for name in ("gamma", "beta"):
        fused[name].value += 1
    for name in ("norm", "act"):
        assert np.array_equal(fused[name].value, plain[name].value)
        assert np.array_equal(fused[name].grad, plain[name].grad)
    assert np.array_equal(fused["act"].cache, plain["act"].cache)


def test_drawings_steps_hooks_and_gradcheck_see_every_pooled_node():
    plain, fused, feeds = twins(network(size=(3, 2, 6, 6), pool=(2, 2, 2)), np.float64)
    for g in (plain, fused):
        walk(g, feeds)
    assert_player_and_drawing_show(plain, fused, {"conv", "norm", "act", "pool"}, "norm")
    assert_same_everywhere(plain, fused)
    errors = gn.gradcheck(fused, **feeds)
    assert errors == gn.gradcheck(plain, **feeds)
    assert max(errors.values()) < 1e-5, errors


@pytest.mark.parametrize("dtype, smallest", [(np.float16, 0), (np.float64, 97)])
def test_float16_and_small_pooled_chains_run_the_gates(monkeypatch, dtype, smallest):
    monkeypatch.setattr(norm_activation, "SMALLEST", smallest)
    build = network(size=(2, 2, 6, 4), conv=False, pool=(2, 2, 2))  # 96 entries
    plain, fused, feeds = twins(build, dtype)
    for g in (plain, fused):
        walk(g, feeds)
    assert deferred(fused["norm"]) == deferred(fused["act"]) == set()
    assert_same_everywhere(plain, fused)
