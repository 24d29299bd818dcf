"""spatial batchnorm -> add(skip) -> relu -> max_pool and spatial batchnorm -> relu or leaky
relu -> max_pool as one step each way (graphnet/passes/norm_relu.py, NormAddReluPool): every node
reads as gate by gate, bit for bit, in train and eval mode, whatever the windows, where the
pass applies and only there."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphnet as gn
from graphnet.passes import norm_relu
from graphnet.passes.norm_relu import NormAddReluPool

from .checks import (
    assert_backward_from_inside,
    assert_nonfinite_seed_reads_as_gate_by_gate,
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

pytestmark = pytest.mark.usefixtures("one_kernel_thread")

POOLED = "spatial_batchnorm+add+relu+max_pool"
UNPOOLED = "spatial_batchnorm+add+relu"
# Without the add (skip=None).
PLAIN_POOLED = "spatial_batchnorm+relu+max_pool"
PLAIN_UNPOOLED = "spatial_batchnorm+relu"
LEAKY_POOLED = "spatial_batchnorm+leaky_relu+max_pool"
LEAKY_UNPOOLED = "spatial_batchnorm+leaky_relu"
# The leaky relu's slopes: students' 0.01 to 0.3, a relu's 0, and one that flips the sign.
SLOPES = [0.01, 0.1, 0.3, 0.0, -0.2]


@pytest.fixture(autouse=True)
def fused_at_any_size(monkeypatch):
    """The tests' activations are small: the fused steps would run the gates."""
    monkeypatch.setattr(norm_relu, "SMALLEST", 0)


def network(
    size=(3, 2, 6, 5), window=(2, 2, 2), skip_first=False, tap=None, skip="relu", slope=None
):
    """A residual block's end and a max pool inside a net ending in an affine and a softmax
    loss: x -> conv -> relu (h) -> conv -> spatial batchnorm (norm) -> add(norm, h) -> relu
    -> max_pool (pool: window = (height, width, stride)). skip_first: add(h, norm). tap:
    "relu", "norm" or "add" also feeds 0.1 * a sum added to the loss (a second reader).
    skip: "relu" (h), "x" (the norm's own input), "bias" (a (1, C, 1, 1) param: an add
    that broadcasts) or None (no add: a VGG unit's end, norm -> relu -> max_pool, the norm
    reading h). slope (no add): a leaky relu of that slope in the relu's place."""

    def build(g, rng):
        x = g.input("x")
        C = size[1]
        w1 = g.param("w1", rng.standard_normal((C, C, 3, 3)) * 0.4)
        h = g.relu(g.conv(x, w1, g.param("b1", np.zeros(C)), pad=1, name="conv1"), name="h")
        w2 = g.param("w2", rng.standard_normal((C, C, 3, 3)) * 0.4)
        b2 = g.param("b2", rng.standard_normal(C) * 0.1)
        inner = g.conv(h, w2, b2, pad=1, name="conv2") if skip else None
        gamma = g.param("gamma", rng.uniform(-1, 2, C))
        beta = g.param("beta", rng.standard_normal(C))
        # Without an add, the norm reads h: after a conv, conv_batchnorm_relu_pool.py's.
        norm = g.spatial_batchnorm(inner if skip else h, gamma, beta, momentum=0.6, name="norm")
        other = {"relu": h, "x": inner}.get(skip)
        if skip == "bias":
            other = g.param("bias", rng.standard_normal((1, C, 1, 1)))
        if skip is None:
            add = norm
        else:
            add = g.add(other, norm, name="add") if skip_first else g.add(norm, other, name="add")
        relu = g.relu(add, name="relu") if slope is None else g.leaky_relu(add, slope, name="relu")
        height, width, stride = window
        out = g.max_pool(relu, pool_height=height, pool_width=width, stride=stride, name="pool")
        tapped = {"norm": norm, "add": add, "relu": relu}.get(tap)
        return classifier_feeds(g, rng, out, size, tapped)

    return build


def assert_fused_reads_as_gate_by_gate(dtype, size=(3, 2, 6, 5), window=(2, 2, 2), **kw):
    """Two train steps bit for bit (the running averages move alike), an eval forward and
    backward, and train again."""
    plain, fused, feeds = twins(network(size, window, **kw), dtype)
    kept = kw.get("tap") == "relu"  # the relu's output, for its other reader
    added = kw.get("skip", "relu") is not None
    leaky = kw.get("slope") is not None  # the norm kernel takes its gradient: norm's deferred
    inner = ("norm", "add") if added else ("norm",)
    pooled, unpooled = (
        (POOLED, UNPOOLED)
        if added
        else (LEAKY_POOLED, LEAKY_UNPOOLED)
        if leaky
        else (PLAIN_POOLED, PLAIN_UNPOOLED)
    )
    assert pooled in fused_labels(fused)
    backward = unpooled if kept else pooled
    assert backward in fused_labels(fused, "backward")
    for _ in range(2):
        for g in (plain, fused):
            walk(g, feeds, backward=False)
        assert all(deferred(fused[name]) == {"value"} for name in inner)
        assert deferred(fused["relu"]) == ({"cache"} if kept else {"value", "cache"})
        assert deferred(fused["pool"]) == set()
        for g in (plain, fused):
            g.backward()
        # The backward needed neither the norm's, the add's nor the relu's values (and
        # NormRelu's leaves the norm's gradient to whoever reads it).
        grad = {"grad"} if (kept or leaky) and not added else set()
        assert deferred(fused["norm"]) == {"value"} | grad
        assert all(deferred(fused[name]) == {"value"} for name in inner[1:])
        assert deferred(fused["relu"]) >= {"cache"}
        assert_same_everywhere(plain, fused)
    for training in (False, True):
        for g in (plain, fused):
            g.train(training)
            walk(g, feeds)
        assert_same_everywhere(plain, fused)


@pytest.mark.parametrize("window", [(2, 2, 2), (3, 3, 2), (2, 2, 1), (3, 2, 3), (1, 1, 1)])
@pytest.mark.parametrize("skip_first", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_fused_norm_add_relu_pool_reads_as_gate_by_gate(window, skip_first, dtype):
    assert_fused_reads_as_gate_by_gate(dtype, window=window, skip_first=skip_first)


@pytest.mark.parametrize("window", [(2, 2, 2), (3, 3, 2), (2, 2, 1), (3, 2, 3), (1, 1, 1)])
@pytest.mark.parametrize("size", [(3, 2, 6, 5), (2, 3, 7, 9)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_fused_norm_relu_pool_reads_as_gate_by_gate(window, size, dtype):
    """No add: a VGG unit's end."""
    assert_fused_reads_as_gate_by_gate(dtype, size, window, skip=None)


@pytest.mark.parametrize(
    "window", [(2, 2, 2), (3, 3, 1), (3, 3, 2), (2, 2, 1), (3, 2, 3), (1, 1, 1)]
)
@pytest.mark.parametrize("slope", SLOPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_fused_norm_leaky_relu_pool_reads_as_gate_by_gate(window, slope, dtype):
    """A leaky relu in the relu's place: the kernel pools its output; backward, the pool's
    gate, then the norm kernel through the leaky relu."""
    assert_fused_reads_as_gate_by_gate(dtype, (2, 3, 7, 9), window, skip=None, slope=slope)


def test_the_skip_the_norms_own_input():
    """add(norm(y), y): the step's inputs hold y twice, its gradient sums both edges."""
    assert_fused_reads_as_gate_by_gate(np.float64, skip="x")


ACTIVATIONS = [("relu", None), (None, None), (None, 0.1)]  # (skip, slope) of each kind


@pytest.mark.parametrize("skip, slope", ACTIVATIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_relu_read_by_another_gate_too(dtype, skip, slope):
    """The kernel writes the relu's output as well as the pooled values; backward, the
    pool runs its gate and NormAddRelu's (NormRelu's, NormActivation's) step the rest."""
    assert_fused_reads_as_gate_by_gate(dtype, tap="relu", skip=skip, slope=slope)


@pytest.mark.parametrize("skip, slope", ACTIVATIONS)
def test_planes_of_one_pixel(skip, slope):
    """1x1 planes take the batchnorm kernel's column loops, pooled after them."""
    assert_fused_reads_as_gate_by_gate(
        np.float64, size=(4, 3, 1, 1), window=(1, 1, 1), skip=skip, slope=slope
    )


@pytest.mark.parametrize(
    "skip, slope, label",
    [("relu", None, POOLED), (None, None, PLAIN_POOLED), (None, 0.1, LEAKY_POOLED)],
)
def test_the_pass_alone(monkeypatch, skip, slope, label):
    only_pass(monkeypatch, NormAddReluPool)
    plain, fused, feeds = twins(network(skip=skip, slope=slope), np.float64)
    assert fused_labels(fused) == fused_labels(fused, "backward") == [label]
    for training in (True, False):
        for g in (plain, fused):
            g.train(training)
            walk(g, feeds)
        assert_same_everywhere(plain, fused)


@settings(max_examples=25, deadline=None)
@given(
    st.integers(1, 4),
    st.integers(1, 6),
    st.integers(1, 17),
    st.integers(1, 17),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 3),
    st.booleans(),
    st.sampled_from([None, "relu"]),
    st.sampled_from(["relu", None]),
    st.sampled_from([None, 0.0, 0.01, 0.3]),
    st.sampled_from([np.float32, np.float64]),
)
def test_random_shapes(N, C, H, W, height, width, stride, skip_first, tap, skip, slope, dtype):
    """slope: a leaky relu where there is no add."""
    height, width = min(height, H), min(width, W)
    assert_fused_reads_as_gate_by_gate(
        dtype,
        (N, C, H, W),
        (height, width, stride),
        skip_first=skip_first,
        tap=tap,
        skip=skip,
        slope=None if skip else slope,
    )


@pytest.mark.parametrize("tap", ["norm", "add"])
def test_a_norm_or_add_read_by_another_gate_is_not_fused(tap):
    plain, fused, feeds = twins(network(tap=tap), np.float64)
    assert "+add" not in " ".join(fused_labels(fused) + fused_labels(fused, "backward"))
    for g in (plain, fused):
        walk(g, feeds)
    assert_same_everywhere(plain, fused)


def test_an_add_that_broadcasts_runs_the_gates():
    plain, fused, feeds = twins(network(skip="bias"), np.float64)
    assert POOLED in fused_labels(fused, "backward")
    for training in (True, False):
        for g in (plain, fused):
            g.train(training)
            walk(g, feeds)
        assert deferred(fused["norm"]) == deferred(fused["add"]) == set()
        assert_same_everywhere(plain, fused)


@pytest.mark.parametrize("fuse_forward, fuse_backward", [(True, False), (False, True)])
@pytest.mark.parametrize("tap", [None, "relu"])
@pytest.mark.parametrize("skip, slope", ACTIVATIONS)
def test_a_fused_walk_one_way_and_gate_by_gate_the_other(
    fuse_forward, fuse_backward, tap, skip, slope
):
    plain, g, feeds = twins(network(tap=tap, skip=skip, slope=slope), np.float64)
    for training in (True, False):
        for graph in (plain, g):
            graph.train(training)
        walk_fused_one_way(plain, g, feeds, fuse_forward, fuse_backward)
        assert_same_everywhere(plain, g)


@pytest.mark.parametrize(
    "inside, skip, slope",
    [("relu", "relu", None), ("add", "relu", None), ("relu", None, None), ("relu", None, 0.1)],
)
def test_a_backward_from_inside_the_fused_chain(inside, skip, slope):
    assert_backward_from_inside(*twins(network(skip=skip, slope=slope), np.float64), inside)


def test_the_values_left_for_later_keep_their_walk():
    """Read after the optimizer's in-place updates and a batch refilled in place, the
    norm's, the add's and the relu's values and the relu's cache are those of their own
    walk."""
    plain, fused, feeds = twins(network(skip="x"), np.float64)
    for g in (plain, fused):
        walk(g, feeds)
    feeds["x"][...] = 7
    for name in ("gamma", "beta", "w2", "b2"):
        fused[name].value += 1
    for name in ("norm", "add", "relu"):
        assert np.array_equal(fused[name].value, plain[name].value)
        assert np.array_equal(fused[name].grad, plain[name].grad)
    assert np.array_equal(fused["relu"].cache, plain["relu"].cache)


@pytest.mark.parametrize("skip, slope", ACTIVATIONS)
def test_drawings_steps_hooks_and_gradcheck_see_every_node(skip, slope):
    # (a seed whose numerical gradients step over no relu's or pool's kink, and whose b2,
    # a bias the batchnorm cancels, has a gradient of rounding only but sound relatively)
    plain, fused, feeds = twins(network(skip=skip, slope=slope), np.float64, seed=3)
    for g in (plain, fused):
        walk(g, feeds)
    names = {"norm", "add", "relu", "pool"} if skip else {"norm", "relu", "pool"}
    assert_player_and_drawing_show(plain, fused, names, "add" if skip else "norm")
    assert_same_everywhere(plain, fused)
    errors = gn.gradcheck(fused, **feeds)
    assert errors == gn.gradcheck(plain, **feeds)
    assert max(errors.values()) < 1e-5, errors


@pytest.mark.parametrize("skip, slope", ACTIVATIONS)
def test_bitwise_the_same_on_two_threads(skip, slope):
    assert_bitwise_on_two_threads(network((4, 24, 16, 16), skip=skip, slope=slope), np.float32)


@pytest.mark.parametrize("slope", [None, 0.1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_and_infinities_read_as_gate_by_gate(dtype, slope):
    """x -> spatial batchnorm -> relu (or leaky relu) -> max_pool with a NaN, -inf and +inf
    in x (a param: feeds must be finite): in eval mode they stay where they are (a NaN wins
    its window, as in the pool gate), in train mode they make their channels' statistics
    NaN. NaN and infinite upstream gradients reach x's as gate by gate."""

    def build(g, rng):
        x = rng.standard_normal((2, 3, 7, 6))
        x[0, 0, 1, 1], x[1, 1, 4, 2], x[1, 2, 0, 5] = np.nan, -np.inf, np.inf
        norm = g.spatial_batchnorm(
            g.param("x", x),
            g.param("gamma", rng.uniform(-1, 2, 3)),
            g.param("beta", rng.standard_normal(3)),
        )
        act = g.relu(norm) if slope is None else g.leaky_relu(norm, slope)
        out = g.max_pool(act, pool_height=3, pool_width=3, stride=2, name="pool")
        g.sum(out * g.param("w", rng.standard_normal((2, 3, 3, 2))))
        return {}

    plain, fused, feeds = twins(build, dtype)
    assert fused_labels(fused) == [PLAIN_POOLED if slope is None else LEAKY_POOLED]
    for training in (False, True):
        for g in (plain, fused):
            g.train(training)
            walk(g, feeds)
        assert_nonfinite_seed_reads_as_gate_by_gate(plain, fused, "pool", dtype)
