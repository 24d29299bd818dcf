"""spatial groupnorm -> gelu / leaky relu / relu / softplus (-> average or max pool) as one
step each way (graphnet/passes/norm_activation.py): every node reads as gate by gate, bit
for bit, where the passes apply and only there."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphnet as gn
from graphnet.passes import norm_activation
from graphnet.passes.norm_activation import GroupnormActivationPool, NormActivation

from .checks import (
    assert_backward_from_inside,
    assert_nonfinite_seed_reads_as_gate_by_gate,
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


def network(
    activation="gelu",
    size=(3, 2, 5, 4),
    features=6,
    G=3,
    tap=False,
    conv=True,
    pool=None,
    pool_op="avg_pool",
):
    """x -> conv -> spatial groupnorm -> activation -> affine -> softmax loss (without
    conv: x -> groupnorm -> ...; with pool, (pool_height, pool_width, stride): a pool_op
    after the activation). `tap`: the norm also feeds a sum added to the loss."""

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
            out = getattr(g, pool_op)(out, *pool, name="pool")
        return classifier_feeds(g, rng, out, size, h if tap else None)

    return build


def assert_fused_reads_as_gate_by_gate(
    activation, dtype, size=(3, 2, 5, 4), conv=True, pool=None, pool_op="avg_pool"
):
    """One fused step each way (with pool: groupnorm -> activation -> pool_op), whose
    deferred entries the backward does not compute, and every node as gate by gate."""
    build = network(activation, size, conv=conv, pool=pool, pool_op=pool_op)
    plain, fused, feeds = twins(build, dtype)
    op = "gelu" if activation.startswith("gelu") else activation
    label = [f"spatial_groupnorm+{op}" + (f"+{pool_op}" if pool else "")]
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


# ----- groupnorm -> activation -> average or max pool ----------------------------------

POOL_OPS = ["avg_pool", "max_pool"]


@pytest.mark.parametrize("pool_op", POOL_OPS)
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_fused_groupnorm_activation_pool_reads_as_gate_by_gate(activation, dtype, pool_op):
    assert_fused_reads_as_gate_by_gate(
        activation, dtype, (3, 2, 6, 5), pool=(2, 2, 2), pool_op=pool_op
    )


@pytest.mark.parametrize(
    "window", [(2, 2, 2), (3, 3, 1), (3, 3, 2), (2, 2, 1), (3, 2, 3), (1, 1, 1)]
)
@pytest.mark.parametrize("activation", ["gelu", "leaky_relu", "relu", "softplus"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_fused_groupnorm_activation_max_pool_of_any_window(activation, dtype, window):
    """Overlapping windows (stride 1) scatter into a winner several windows share."""
    assert_fused_reads_as_gate_by_gate(
        activation, dtype, (2, 4, 7, 8), pool=window, pool_op="max_pool"
    )


@pytest.mark.parametrize("activation", ["gelu", "leaky_relu", "relu", "softplus"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_max_pooled_chain_of_nans_infinities_and_ties(activation, dtype):
    """x (a param: feeds must be finite) with a NaN, making its group's statistics NaN;
    a beta of +inf and one of -inf; a gamma of 0 (its planes all ties: the first entry of
    each window wins). NaN and infinite upstream gradients reach x's as gate by gate."""

    def build(g, rng):
        x = rng.standard_normal((2, 6, 7, 6))
        x[0, 0, 1, 1] = np.nan
        gamma, beta = rng.uniform(-1, 2, 6), rng.standard_normal(6)
        gamma[3], beta[4], beta[5] = 0.0, np.inf, -np.inf
        norm = g.spatial_groupnorm(
            g.param("x", x), g.param("gamma", gamma), g.param("beta", beta), G=3, name="norm"
        )
        out = g.max_pool(ACTIVATIONS[activation](g, norm), 3, 3, 1, name="pool")
        g.sum(out * g.param("w", rng.standard_normal((2, 6, 5, 4))))
        return {}

    plain, fused, feeds = twins(build, dtype)
    assert fused_labels(fused) == [f"spatial_groupnorm+{activation}+max_pool"]
    for g in (plain, fused):
        walk(g, feeds)
    assert_nonfinite_seed_reads_as_gate_by_gate(plain, fused, "pool", dtype)


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
    st.sampled_from(POOL_OPS),
)
def test_pooled_random_shapes(activation, N, C, H, W, window, stride, conv, dtype, pool_op):
    pool = (min(window, H), min(window, W), stride)
    assert_fused_reads_as_gate_by_gate(activation, dtype, (N, C, H, W), conv, pool, pool_op)


@pytest.mark.parametrize("pool_op", POOL_OPS)
def test_the_pooling_pass_alone(monkeypatch, pool_op):
    only_pass(monkeypatch, GroupnormActivationPool)
    build = network(size=(3, 2, 6, 6), pool=(2, 2, 2), pool_op=pool_op)
    plain, fused, feeds = twins(build, np.float64)
    label = [f"spatial_groupnorm+gelu+{pool_op}"]
    assert fused_labels(fused) == fused_labels(fused, "backward") == label
    for g in (plain, fused):
        walk(g, feeds)
    assert_same_everywhere(plain, fused)


@pytest.mark.parametrize("pool_op", POOL_OPS)
def test_a_norm_read_by_another_gate_is_not_fused_with_its_pool(pool_op):
    build = network(tap=True, size=(3, 2, 6, 6), pool=(2, 2, 2), pool_op=pool_op)
    plain, fused, feeds = twins(build, np.float64)
    assert f"+{pool_op}" not in " ".join(fused_labels(fused) + fused_labels(fused, "backward"))
    for g in (plain, fused):
        walk(g, feeds)
    assert_same_everywhere(plain, fused)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_an_activation_read_by_a_max_pool_and_another_gate(dtype):
    """The activation's output is then written: groupnorm -> activation is one step (a relu's
    other readers keep it from relu_pool.py), the pool its gate's."""

    def build(g, rng):
        x = g.input("x")
        gamma, beta = (
            g.param("gamma", rng.uniform(-1, 2, 4)),
            g.param("beta", rng.standard_normal(4)),
        )
        h = g.leaky_relu(g.spatial_groupnorm(x, gamma, beta, G=2, name="norm"), 0.1, name="act")
        pooled = g.max_pool(h, 2, 2, 2, name="pool")
        return classifier_feeds(g, rng, pooled, (3, 4, 6, 6), h)

    plain, fused, feeds = twins(build, dtype)
    assert "+max_pool" not in " ".join(fused_labels(fused) + fused_labels(fused, "backward"))
    for g in (plain, fused):
        walk(g, feeds)
    assert_same_everywhere(plain, fused)


@pytest.mark.parametrize("pool_op", POOL_OPS)
@pytest.mark.parametrize("fuse_forward, fuse_backward", [(True, False), (False, True)])
def test_a_pooled_walk_fused_one_way_and_gate_by_gate_the_other(
    fuse_forward, fuse_backward, pool_op
):
    build = network(size=(3, 2, 6, 6), pool=(2, 2, 2), pool_op=pool_op)
    plain, g, feeds = twins(build, np.float64)
    walk_fused_one_way(plain, g, feeds, fuse_forward, fuse_backward)
    assert_same_everywhere(plain, g)


@pytest.mark.parametrize("pool_op", POOL_OPS)
@pytest.mark.parametrize("name", ["act", "norm"])
def test_a_backward_from_inside_the_pooled_chain(name, pool_op):
    build = network(size=(3, 2, 6, 6), pool=(2, 2, 2), pool_op=pool_op)
    assert_backward_from_inside(*twins(build, np.float64), name)


@pytest.mark.parametrize("pool_op", POOL_OPS)
def test_the_pooled_chain_left_for_later_keeps_its_walk(pool_op):
    build = network(conv=False, size=(3, 3, 6, 6), pool=(2, 2, 2), pool_op=pool_op)
    plain, fused, feeds = twins(build, np.float64)
    for g in (plain, fused):
        walk(g, feeds)
    feeds["x"][...] = 7
    for name in ("gamma", "beta"):
        fused[name].value += 1
    for name in ("norm", "act"):
        assert np.array_equal(fused[name].value, plain[name].value)
        assert np.array_equal(fused[name].grad, plain[name].grad)
    assert np.array_equal(fused["act"].cache, plain["act"].cache)


@pytest.mark.parametrize("pool_op", POOL_OPS)
@pytest.mark.parametrize("training", [True, False])
def test_drawings_steps_hooks_and_gradcheck_see_every_pooled_node(pool_op, training):
    build = network(size=(3, 2, 6, 6), pool=(2, 2, 2), pool_op=pool_op)
    plain, fused, feeds = twins(build, np.float64)
    for g in (plain, fused):
        g.train(training)
        walk(g, feeds)
    assert_player_and_drawing_show(plain, fused, {"conv", "norm", "act", "pool"}, "norm")
    assert_same_everywhere(plain, fused)
    errors = gn.gradcheck(fused, **feeds)
    assert errors == gn.gradcheck(plain, **feeds)
    assert max(errors.values()) < 1e-5, errors


@pytest.mark.parametrize(
    "dtype, smallest, pool_op",
    # (the max pool gate takes float32 and float64 only)
    [(np.float16, 0, "avg_pool"), (np.float64, 97, "avg_pool"), (np.float64, 97, "max_pool")],
)
def test_float16_and_small_pooled_chains_run_the_gates(monkeypatch, dtype, smallest, pool_op):
    monkeypatch.setattr(norm_activation, "SMALLEST", smallest)
    build = network(size=(2, 2, 6, 4), conv=False, pool=(2, 2, 2), pool_op=pool_op)  # 96 entries
    plain, fused, feeds = twins(build, dtype)
    for g in (plain, fused):
        walk(g, feeds)
    assert deferred(fused["norm"]) == deferred(fused["act"]) == set()
    assert_same_everywhere(plain, fused)
