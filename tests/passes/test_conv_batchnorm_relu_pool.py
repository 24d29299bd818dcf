"""conv -> spatial batchnorm -> relu -> max_pool as one forward step, folded into the
conv-relu-pool kernel in eval mode, the conv then the pooled norm kernel in train mode
(graphnet/passes/conv_batchnorm_relu_pool.py)."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import graphnet as gn
from graphnet.passes import norm_relu
from graphnet.passes.conv_batchnorm_relu_pool import ConvBatchnormReluPool

from .checks import (
    assert_player_and_drawing_show,
    assert_same_everywhere,
    classifier_feeds,
    deferred,
    fused_labels,
    only_pass,
    twins,
    walk,
)

pytestmark = pytest.mark.usefixtures("one_kernel_thread")

TOL = {np.float32: 2e-5, np.float64: 1e-12}
CHAIN = "conv+spatial_batchnorm+relu+max_pool"


@pytest.fixture(autouse=True, params=["kernel", "gates"])
def train_mode_way(request, monkeypatch):
    """Train steps through the pooled norm kernel (the tests' activations are small: it
    would not run) and, as below norm_relu.SMALLEST entries, through the gates."""
    if request.param == "kernel":
        monkeypatch.setattr(norm_relu, "SMALLEST", 0)


def network(stride=1, pad=1, pool=(2, 2, 2), size=(3, 2, 9, 8), filters=4, tap=False, slope=None):
    """x -> conv -> spatial batchnorm -> relu -> max_pool -> affine -> softmax loss; `tap`:
    the batchnorm also feeds a sum added to the loss; slope: a leaky relu of that slope in
    the relu's place."""

    def build(g, rng):
        x = g.input("x", requires_grad=False)
        w = g.param("w", rng.standard_normal((filters, size[1], 3, 3)) * 0.4)
        h = g.conv(
            x, w, g.param("b", rng.standard_normal(filters)), stride=stride, pad=pad, name="conv"
        )
        h = g.spatial_batchnorm(
            h,
            g.param("gamma", rng.uniform(0.5, 2, filters)),
            g.param("beta", rng.standard_normal(filters)),
            momentum=0.6,
            name="sbn",
        )
        act = g.relu(h, name="relu") if slope is None else g.leaky_relu(h, slope, name="relu")
        pooled = g.max_pool(act, *pool, name="pool")
        return classifier_feeds(g, rng, pooled, size, h if tap else None)

    return build


def trained_twins(build, dtype, chain):
    """Twins of `build` whose forward plan is the one step `chain`, after two train steps
    that read as gate by gate bit for bit."""
    plain, fused, feeds = twins(build, dtype)
    assert fused_labels(fused) == [chain]
    for _ in range(2):
        for g in (plain, fused):
            walk(g, feeds)
        assert_same_everywhere(plain, fused)
    return plain, fused, feeds


def assert_folds(build, dtype):
    """Train steps read as gate by gate bit for bit, eval steps to rounding, and train
    again: the running averages moved once per train step."""
    plain, fused, feeds = trained_twins(build, dtype, CHAIN)
    for g in (plain, fused):
        g.eval()
        g.forward(**feeds)
    for name in ("conv", "sbn", "relu"):
        assert deferred(fused[name]) == {"value", "cache"}, name
    assert deferred(fused["pool"]) == {"cache"}
    for g in (plain, fused):
        g.backward()
    assert_same_everywhere(plain, fused, TOL[dtype], TOL[dtype])
    for g in (plain, fused):
        g.train()
        walk(g, feeds)
    assert_same_everywhere(plain, fused)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "stride, pad, pool",
    [(1, 1, (2, 2, 2)), (2, 1, (2, 2, 2)), (1, 0, (3, 3, 2)), (1, 1, (2, 2, 1))],
)
def test_alone(monkeypatch, stride, pad, pool, dtype):
    only_pass(monkeypatch, ConvBatchnormReluPool)
    assert_folds(network(stride, pad, pool), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_with_every_pass(dtype):
    """The backward's spatial batchnorm -> relu -> max_pool fused (norm_relu.py) after the
    chain's forward."""
    assert_folds(network(), dtype)
    _, fused, _ = twins(network(), dtype)
    assert fused_labels(fused, "backward") == ["spatial_batchnorm+relu+max_pool"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("slope", [0.01, 0.2, 0.0, -0.1])
@pytest.mark.parametrize("stride, pad, pool", [(2, 1, (3, 3, 1)), (1, 1, (2, 2, 2))])
def test_a_leaky_relu(stride, pad, pool, slope, dtype):
    """Train steps bit for bit through the conv and the pooled norm kernel (the backward
    norm_relu.py's); eval steps the fold with the leaky relu in the conv kernel (a negative
    slope: its gate), then the pool's gate, to rounding."""
    build = network(stride, pad, pool, slope=slope)
    plain, fused, feeds = trained_twins(build, dtype, "conv+spatial_batchnorm+leaky_relu+max_pool")
    assert fused_labels(fused, "backward") == ["spatial_batchnorm+leaky_relu+max_pool"]
    for g in (plain, fused):
        g.eval()
        walk(g, feeds)
    assert_same_everywhere(plain, fused, TOL[dtype], TOL[dtype])
    for g in (plain, fused):
        g.train()
        walk(g, feeds)
    assert_same_everywhere(plain, fused)


@settings(max_examples=15, deadline=None)
@given(
    st.integers(2, 4),
    st.integers(1, 3),
    st.integers(4, 9),
    st.integers(4, 9),
    st.integers(1, 5),
    st.integers(1, 2),
    st.integers(0, 2),
    st.integers(1, 3),
    st.integers(1, 2),
    st.sampled_from([np.float32, np.float64]),
)
def test_random_shapes(N, C, H, W, filters, stride, pad, window, pool_stride, dtype):
    assume(min(H, W) + 2 * pad - 3 >= stride * (window - 1))  # the conv's output fits a window
    build = network(stride, pad, (window, window, pool_stride), (N, C, H, W), filters)
    assert_folds(build, dtype)


def test_a_batchnorm_read_by_another_gate_is_not_taken_into_the_chain():
    plain, fused, feeds = twins(network(tap=True), np.float64)
    assert CHAIN not in fused_labels(fused)
    for g in (plain, fused):
        walk(g, feeds)
        g.eval()
        walk(g, feeds)
    assert_same_everywhere(plain, fused, 1e-12, 1e-12)


def test_drawings_steps_and_gradcheck_in_eval_mode():
    plain, fused, feeds = twins(network(), np.float64)
    for g in (plain, fused):
        walk(g, feeds)
        g.eval()
        walk(g, feeds)
    assert_player_and_drawing_show(plain, fused, {"conv", "sbn", "relu", "pool"}, "sbn")
    assert_same_everywhere(plain, fused, 1e-12, 1e-12)
    errors = gn.gradcheck(fused, **feeds)
    assert max(errors[name] for name in ("w", "b", "gamma", "beta")) < 1e-6, errors


@pytest.mark.parametrize("chain", [(), ("relu",), ("spatial_batchnorm", "relu")])
def test_a_pool_of_a_shorter_run_is_left_to_the_other_passes(chain):
    """max_pool of an input, of relu(input), of relu(spatial_batchnorm(input))."""

    def build(g, rng):
        h = g.input("x")
        for op in chain:
            h = (
                g.relu(h)
                if op == "relu"
                else g.spatial_batchnorm(
                    h, g.param("gamma", np.ones(2)), g.param("beta", np.zeros(2))
                )
            )
        g.sum(g.max_pool(h, name="pool"))
        return {"x": rng.standard_normal((2, 2, 4, 4))}

    plain, fused, feeds = twins(build, np.float64)
    labels = {(): [], ("relu",): ["relu+max_pool"]}
    assert fused_labels(fused) == labels.get(chain, ["spatial_batchnorm+relu+max_pool"])
    for g in (plain, fused):
        walk(g, feeds)
    assert_same_everywhere(plain, fused)
