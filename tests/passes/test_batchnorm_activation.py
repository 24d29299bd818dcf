"""(spatial) batchnorm -> leaky relu as one step each way, and conv -> spatial batchnorm ->
leaky relu as one forward step (graphnet/passes/norm_activation.py): every node reads as
gate by gate, bit for bit, in train and eval mode (to rounding where the eval-mode conv
folds the batchnorm), where the passes apply and only there."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphnet as gn
from graphnet.passes import norm_activation
from graphnet.passes.norm_activation import ConvBatchnormActivation, NormActivation

from .checks import (
    assert_backward_from_inside,
    assert_player_and_drawing_show,
    assert_same_everywhere,
    assert_train_eval_train,
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
    "leaky_relu": lambda g, h: g.leaky_relu(h, 0.1, name="act"),
    "negative": lambda g, h: g.leaky_relu(h, -0.3, name="act"),
}
# Not fused after a batchnorm (their gates' arithmetic, not memory, bounds the pass a
# fusion would save: norm_activation.py).
OTHERS = {
    "gelu": lambda g, h: g.gelu(h, name="act"),
    "softplus": lambda g, h: g.softplus(h, name="act"),
    "sigmoid": lambda g, h: g.sigmoid(h, name="act"),
    "tanh": lambda g, h: g.tanh(h, name="act"),
}
SIZES = {"conv": (3, 2, 5, 4), "sbn": (3, 4, 5, 4), "bn": (5, 2, 3, 3)}
# The eval-mode fold of conv -> spatial batchnorm rounds otherwise (batchnorm_fold.py).
TOL = {np.float32: 2e-5, np.float64: 1e-12}


@pytest.fixture(autouse=True)
def fused_at_any_size(monkeypatch):
    """The tests' activations are small: the fused steps would run the gates."""
    monkeypatch.setattr(norm_activation, "SMALLEST", 0)


def network(kind="conv", activation="leaky_relu", size=None, features=6, tap=False):
    """A batchnorm -> activation inside a net ending in an affine and a softmax loss:
    conv: x -> conv -> spatial batchnorm -> act; sbn: x -> spatial batchnorm -> act;
    bn: x -> affine -> batchnorm -> act. `tap`: the norm also feeds a sum added to the loss."""
    size = size or SIZES[kind]

    def build(g, rng):
        x = g.input("x", requires_grad=kind == "sbn")
        h, C = x, size[1]
        if kind == "conv":
            w = g.param("w", rng.standard_normal((features, size[1], 3, 3)) * 0.4)
            b = g.param("b", rng.standard_normal(features) * 0.1)
            h, C = g.conv(x, w, b, stride=1, pad=1, name="conv"), features
        elif kind == "bn":
            width = int(np.prod(size[1:]))
            w = g.param("w", rng.standard_normal((width, features)) * 0.3)
            h = g.affine(x, w, g.param("b", rng.standard_normal(features) * 0.1), name="fc")
            C = features
        gamma = g.param("gamma", rng.uniform(-1, 2, C))
        beta = g.param("beta", rng.standard_normal(C))
        norm = g.batchnorm if kind == "bn" else g.spatial_batchnorm
        h = norm(h, gamma, beta, momentum=0.6, name="norm")
        out = {**ACTIVATIONS, **OTHERS}[activation](g, h)
        return classifier_feeds(g, rng, out, size, h if tap else None)

    return build


def labels(kind):
    norm = "batchnorm" if kind == "bn" else "spatial_batchnorm"
    forward = f"conv+{norm}+leaky_relu" if kind == "conv" else f"{norm}+leaky_relu"
    return [forward], [f"{norm}+leaky_relu"]


def assert_fused_reads_as_gate_by_gate(kind, activation, dtype, size=None):
    """Two train steps bit for bit (the running averages move alike), an eval forward and
    backward (to rounding where the conv folds the batchnorm), and train again."""
    plain, fused, feeds = twins(network(kind, activation, size), dtype)
    assert (fused_labels(fused), fused_labels(fused, "backward")) == labels(kind)
    tol = TOL[dtype] if kind == "conv" else 0.0
    assert_train_eval_train(plain, fused, feeds, "act", tol)


@pytest.mark.parametrize("kind", sorted(SIZES))
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_fused_batchnorm_activation_reads_as_gate_by_gate(kind, activation, dtype):
    assert_fused_reads_as_gate_by_gate(kind, activation, dtype)


@settings(max_examples=25, deadline=None)
@given(
    st.sampled_from(sorted(SIZES)),
    st.sampled_from(sorted(ACTIVATIONS)),
    st.integers(2, 4),
    st.integers(1, 9),
    st.integers(1, 6),
    st.integers(1, 6),
    st.sampled_from([np.float32, np.float64]),
)
def test_random_shapes(kind, activation, N, C, H, W, dtype):
    assert_fused_reads_as_gate_by_gate(kind, activation, dtype, (N, C, H, W))


@pytest.mark.parametrize(
    "cls, kind, expected",
    [
        (NormActivation, "conv", (["spatial_batchnorm+leaky_relu"],) * 2),
        (NormActivation, "bn", (["batchnorm+leaky_relu"],) * 2),
        (ConvBatchnormActivation, "conv", (["conv+spatial_batchnorm+leaky_relu"], [])),
    ],
)
def test_each_pass_alone(monkeypatch, cls, kind, expected):
    only_pass(monkeypatch, cls)
    plain, fused, feeds = twins(network(kind, "leaky_relu"), np.float64)
    assert (fused_labels(fused), fused_labels(fused, "backward")) == expected
    for training in (True, False):
        for g in (plain, fused):
            g.train(training)
            walk(g, feeds)
        tol = 1e-12 if cls is ConvBatchnormActivation and not training else 0.0
        assert_same_everywhere(plain, fused, tol, tol)


@pytest.mark.parametrize("kind", sorted(SIZES))
def test_a_norm_read_by_another_gate_is_not_fused(kind):
    plain, fused, feeds = twins(network(kind, "leaky_relu", tap=True), np.float64)
    assert "batchnorm+" not in " ".join(fused_labels(fused) + fused_labels(fused, "backward"))
    for g in (plain, fused):
        walk(g, feeds)
    assert_same_everywhere(plain, fused)


@pytest.mark.parametrize("activation", sorted(OTHERS))
@pytest.mark.parametrize("kind", sorted(SIZES))
def test_other_activations_are_not_fused(kind, activation):
    plain, fused, feeds = twins(network(kind, activation), np.float64)
    assert "batchnorm+" not in " ".join(fused_labels(fused) + fused_labels(fused, "backward"))
    for g in (plain, fused):
        walk(g, feeds)
    assert_same_everywhere(plain, fused)


@pytest.mark.parametrize("fuse_forward, fuse_backward", [(True, False), (False, True)])
@pytest.mark.parametrize("kind", ["conv", "bn"])
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_a_fused_walk_one_way_and_gate_by_gate_the_other(
    kind, activation, fuse_forward, fuse_backward
):
    plain, g, feeds = twins(network(kind, activation), np.float64)
    for training in (True, False):
        for graph in (plain, g):
            graph.train(training)
        walk_fused_one_way(plain, g, feeds, fuse_forward, fuse_backward)
        tol = 1e-12 if kind == "conv" and not training and fuse_forward else 0.0
        assert_same_everywhere(plain, g, tol, tol)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_a_backward_from_inside_the_fused_chain(activation):
    assert_backward_from_inside(*twins(network("bn", activation), np.float64), "act")


@pytest.mark.parametrize("training", [True, False])
def test_the_norm_left_for_later_keeps_its_walk(training):
    """Read after the optimizer's in-place updates, a batch refilled in place and another
    train step's running averages, the norm's value and gradient and the activation's
    cache are those of their own walk."""
    plain, fused, feeds = twins(network("sbn", "leaky_relu"), np.float64)
    for g in (plain, fused):
        g.train(training)
        walk(g, feeds)
    feeds["x"][...] = 7  # the next batch, written into the same array
    for name in ("gamma", "beta"):
        fused[name].value += 1
    state = fused["norm"].state
    state["running_mean"] += 1
    state["running_var"] *= 2
    assert np.array_equal(fused["norm"].value, plain["norm"].value)
    assert np.array_equal(fused["norm"].grad, plain["norm"].grad)
    assert np.array_equal(fused["act"].cache, plain["act"].cache)


def test_drawings_steps_hooks_and_gradcheck_see_every_node():
    plain, fused, feeds = twins(network("conv", "negative"), np.float64)
    for g in (plain, fused):
        walk(g, feeds)
    assert_player_and_drawing_show(plain, fused, {"conv", "norm", "act"}, "norm")
    assert_same_everywhere(plain, fused)
    errors = gn.gradcheck(fused, **feeds)
    assert errors == gn.gradcheck(plain, **feeds)
    del errors["b"]  # the conv's bias, which the batchnorm cancels: a gradient of 0
    assert max(errors.values()) < 1e-5, errors


@pytest.mark.parametrize("dtype, smallest", [(np.float16, 0), (np.float64, 81)])
def test_float16_and_small_activations_run_the_gates(monkeypatch, dtype, smallest):
    """The kernels take float32 and float64 only, and below SMALLEST entries the fused
    step's bookkeeping costs more than it saves: the step then runs the two gates."""
    monkeypatch.setattr(norm_activation, "SMALLEST", smallest)
    plain, fused, feeds = twins(network("sbn", "leaky_relu", (2, 2, 5, 4)), dtype)  # 80 entries
    for g in (plain, fused):
        walk(g, feeds)
    assert deferred(fused["norm"]) == deferred(fused["act"]) == set()
    assert_same_everywhere(plain, fused)
