"""batchnorm / spatial batchnorm / layernorm -> relu as one step each way, and conv ->
spatial batchnorm -> relu as one forward step (graphnet/passes/norm_relu.py): every node
reads as gate by gate, bit for bit in train mode, where the passes apply and only there."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphnet as gn
from graphnet.core import plan
from graphnet.passes import norm_relu
from graphnet.passes.conv_batchnorm_relu_pool import ConvBatchnormReluPool
from graphnet.passes.norm_relu import ConvBatchnormRelu, NormRelu

from .checks import (
    assert_backward_from_inside,
    assert_player_and_drawing_show,
    assert_same_everywhere,
    assert_train_eval_train,
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


TOL = {np.float32: 2e-5, np.float64: 1e-12}
# What each network's walks fuse: (forward labels, backward labels).
LABELS = {
    "conv": (["conv+spatial_batchnorm+relu"], ["spatial_batchnorm+relu"]),
    "sbn": (["spatial_batchnorm+relu"],) * 2,
    "bn": (["batchnorm+relu"],) * 2,
    "ln": (["layernorm+relu"],) * 2,
    "ln3": (["layernorm+relu"],) * 2,
}


def network(kind="conv", size=(3, 2, 5, 4), features=6, momentum=0.6, tap=False):
    """A norm -> relu inside a net ending in an affine and a softmax loss:
    conv: x -> conv -> spatial batchnorm -> relu; sbn: x -> spatial batchnorm -> relu;
    bn: x -> affine -> batchnorm -> relu; ln: x -> affine -> layernorm -> relu;
    ln3: x (N, T, D) -> layernorm over D -> relu. `tap`: the norm also feeds a sum added to
    the loss."""

    def build(g, rng):
        x = g.input("x", requires_grad=kind in ("sbn", "ln3"))
        h, C = x, size[1]
        if kind == "conv":
            w = g.param("w", rng.standard_normal((features, size[1], 3, 3)) * 0.4)
            b = g.param("b", rng.standard_normal(features) * 0.1)
            h, C = g.conv(x, w, b, stride=1, pad=1, name="conv"), features
        elif kind in ("bn", "ln"):
            width = int(np.prod(size[1:]))
            w = g.param("w", rng.standard_normal((width, features)) * 0.3)
            h = g.affine(x, w, g.param("b", rng.standard_normal(features) * 0.1), name="fc")
            C = features
        elif kind == "ln3":
            C = size[-1]
        gamma = g.param("gamma", rng.uniform(-1, 2, C))
        beta = g.param("beta", rng.standard_normal(C))
        if kind in ("ln", "ln3"):
            h = g.layernorm(h, gamma, beta, name="norm")
        elif kind == "bn":
            h = g.batchnorm(h, gamma, beta, momentum=momentum, name="norm")
        else:
            h = g.spatial_batchnorm(h, gamma, beta, momentum=momentum, name="norm")
        out = g.relu(h, name="relu")
        return classifier_feeds(g, rng, out, size, h if tap else None)

    return build


SIZES = {
    "conv": (3, 2, 5, 4),
    "sbn": (3, 4, 5, 4),
    "bn": (5, 2, 3, 3),
    "ln": (5, 7),
    "ln3": (3, 4, 6),
}


def assert_fused_reads_as_gate_by_gate(kind, dtype, size=None):
    """Two train steps bit for bit (the running averages move alike), an eval forward and
    backward (to rounding where the conv folds the batchnorm), and train again."""
    plain, fused, feeds = twins(network(kind, size or SIZES[kind]), dtype)
    assert (fused_labels(fused), fused_labels(fused, "backward")) == tuple(LABELS[kind])
    tol = TOL[dtype] if kind == "conv" else 0.0
    assert_train_eval_train(plain, fused, feeds, "relu", tol)


@pytest.mark.parametrize("kind", sorted(LABELS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_fused_norm_relu_reads_as_gate_by_gate(kind, dtype):
    assert_fused_reads_as_gate_by_gate(kind, dtype)


@pytest.mark.parametrize(
    "cls, kind, labels",
    [
        (NormRelu, "conv", (["spatial_batchnorm+relu"],) * 2),
        (NormRelu, "bn", LABELS["bn"]),
        (NormRelu, "ln", LABELS["ln"]),
        (ConvBatchnormRelu, "conv", (["conv+spatial_batchnorm+relu"], [])),
    ],
)
def test_each_pass_alone(monkeypatch, cls, kind, labels):
    only_pass(monkeypatch, cls)
    plain, fused, feeds = twins(network(kind, SIZES[kind]), np.float64)
    assert (fused_labels(fused), fused_labels(fused, "backward")) == tuple(labels)
    for training in (True, False):
        for g in (plain, fused):
            g.train(training)
            walk(g, feeds)
        tol = 1e-12 if cls is ConvBatchnormRelu and not training else 0.0
        assert_same_everywhere(plain, fused, tol, tol)


@settings(max_examples=20, deadline=None)
@given(
    st.sampled_from(["conv", "sbn", "bn", "ln"]),
    st.integers(1, 4),
    st.integers(1, 9),
    st.integers(1, 4),
    st.integers(1, 4),
    st.sampled_from([np.float32, np.float64]),
)
def test_random_shapes(kind, N, C, H, W, dtype):
    if kind == "ln":
        size = (N, C * H * W)
    else:
        size = (max(N, 2), C, H, W)  # train-mode batchnorm of one entry: var 0, fine too
    assert_fused_reads_as_gate_by_gate(kind, dtype, size)


@pytest.mark.parametrize("kind", ["conv", "bn", "ln"])
def test_a_norm_read_by_another_gate_is_not_fused(kind):
    plain, fused, feeds = twins(network(kind, SIZES[kind], tap=True), np.float64)
    assert "+relu" not in " ".join(fused_labels(fused) + fused_labels(fused, "backward"))
    for g in (plain, fused):
        walk(g, feeds)
    assert_same_everywhere(plain, fused)


def test_a_relu_a_max_pool_reads_is_left_to_the_pooled_step():
    def build(g, rng):
        h = g.spatial_batchnorm(
            g.input("x"), g.param("gamma", np.ones(2)), g.param("beta", np.zeros(2))
        )
        g.sum(g.max_pool(g.relu(h), name="pool"))
        return {"x": rng.standard_normal((2, 2, 4, 4))}

    _, fused, _ = twins(build, np.float64)
    pooled = ["spatial_batchnorm+relu+max_pool"]
    assert fused_labels(fused) == fused_labels(fused, "backward") == pooled


@pytest.mark.parametrize("fuse_forward, fuse_backward", [(True, False), (False, True)])
@pytest.mark.parametrize("kind", ["conv", "bn"])
def test_a_fused_walk_one_way_and_gate_by_gate_the_other(kind, fuse_forward, fuse_backward):
    plain, g, feeds = twins(network(kind), np.float64)
    for training in (True, False):
        for graph in (plain, g):
            graph.train(training)
        walk_fused_one_way(plain, g, feeds, fuse_forward, fuse_backward)
        tol = 0.0 if training or not fuse_forward else 1e-12
        assert_same_everywhere(plain, g, tol, tol)


def test_a_backward_from_inside_the_fused_chain():
    assert_backward_from_inside(*twins(network("bn"), np.float64), "relu")


def test_the_norm_left_for_later_keeps_its_walk():
    """Read after the optimizer's in-place updates and a batch refilled in place, the
    norm's value and gradient and the relu's cache are those of their own walk."""
    plain, fused, feeds = twins(network("sbn"), np.float64)
    for g in (plain, fused):
        walk(g, feeds)
    feeds["x"][...] = 7  # the next batch, written into the same array
    for name in ("gamma", "beta"):
        fused[name].value += 1
    assert np.array_equal(fused["norm"].value, plain["norm"].value)
    assert np.array_equal(fused["norm"].grad, plain["norm"].grad)
    assert np.array_equal(fused["relu"].cache, plain["relu"].cache)


def test_drawings_steps_hooks_and_gradcheck_see_every_node():
    plain, fused, feeds = twins(network("conv"), np.float64)
    for g in (plain, fused):
        walk(g, feeds)
    assert_player_and_drawing_show(plain, fused, {"conv", "norm", "relu"}, "norm")
    assert_same_everywhere(plain, fused)
    errors = gn.gradcheck(fused, **feeds)
    assert errors == gn.gradcheck(plain, **feeds)
    assert max(errors.values()) < 1e-5, errors


@pytest.mark.parametrize("dtype, smallest", [(np.float16, 0), (np.float64, 36)])
def test_float16_and_small_activations_run_the_gates(monkeypatch, dtype, smallest):
    """The kernels take float32 and float64 only, and below SMALLEST entries the relu gate
    costs less than the fused step's bookkeeping: the step then runs the two gates."""
    monkeypatch.setattr(norm_relu, "SMALLEST", smallest)
    plain, fused, feeds = twins(network("ln"), dtype)  # 5 x 7 entries
    for g in (plain, fused):
        walk(g, feeds)
    assert deferred(fused["norm"]) == deferred(fused["relu"]) == set()
    assert_same_everywhere(plain, fused)


@pytest.mark.parametrize("kind", ["bn", "sbn", "conv"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_small_batchnorms_backward_in_one_kernel_call(monkeypatch, kind, dtype):
    """Below SMALLEST entries the forward runs the gates, and the backward the relu's and
    the batchnorm's in one kernel call from the relu's output: every value, cache,
    gradient and running average as gate by gate, bit for bit, nothing deferred; in
    train mode, then eval mode (a backward after an eval forward), then train again."""
    monkeypatch.setattr(norm_relu, "SMALLEST", 1 << 30)
    calls = relu_output_backward_calls(monkeypatch)
    plain, fused, feeds = twins(network(kind), dtype)
    assert fused_labels(fused, "backward") == LABELS[kind][1]
    for g in (plain, fused):
        walk(g, feeds)
    assert calls == [fused["relu"].shape]
    assert deferred(fused["norm"]) == deferred(fused["relu"]) == set()
    assert_same_everywhere(plain, fused)
    for g in (plain, fused):
        g.eval()
        walk(g, feeds)
        g.train()
        walk(g, feeds)
    # An eval-mode conv -> batchnorm -> relu folds the norm into the conv (its cache left
    # to its gate): that backward runs the gates.
    assert len(calls) == (2 if kind == "conv" else 3)
    assert_same_everywhere(plain, fused)


def test_a_pooled_chain_without_conv_batchnorm_relu_pool_is_the_conv_and_the_pooled_norm(
    monkeypatch,
):
    """conv -> spatial batchnorm -> relu -> max_pool with every pass but the one for the
    whole chain: the conv's gate, then NormAddReluPool's step, not batchnorm_fold's."""
    others = [r for r in plan.REWRITES if not isinstance(r, ConvBatchnormReluPool)]
    monkeypatch.setattr(plan, "REWRITES", others)

    def build(g, rng):
        x = g.input("x", requires_grad=False)
        w = g.param("w", rng.standard_normal((4, 2, 3, 3)) * 0.4)
        h = g.conv(x, w, g.param("b", np.zeros(4)), stride=1, pad=1, name="conv")
        h = g.spatial_batchnorm(h, g.param("gamma", np.ones(4)), g.param("beta", np.zeros(4)))
        g.sum(g.max_pool(g.relu(h), name="pool"))
        return {"x": rng.standard_normal((2, 2, 6, 6))}

    plain, fused, feeds = twins(build, np.float64)
    assert fused_labels(fused) == ["spatial_batchnorm+relu+max_pool"]
    for g in (plain, fused):
        walk(g, feeds)
    assert_same_everywhere(plain, fused)
