"""conv -> spatial batchnorm as one forward step, the batchnorm folded into the conv in eval
mode (graphnet/passes/batchnorm_fold.py): train mode reads as gate by gate bit for bit,
eval mode to rounding, the running averages move once per train step."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphnet as gn

from graphnet.passes.batchnorm_fold import BatchnormFold, fold_pays

from .checks import (
    assert_player_and_drawing_show,
    assert_same_everywhere,
    deferred,
    fused_labels,
    leaves,
    only_pass,
    twins,
    walk,
)

pytestmark = pytest.mark.usefixtures("one_kernel_thread")


@pytest.fixture(autouse=True)
def batchnorm_fold_alone(monkeypatch):
    """(A conv -> spatial batchnorm -> relu is norm_relu.py's, which folds the same way.)"""
    only_pass(monkeypatch, BatchnormFold)


TOL = {np.float32: 2e-5, np.float64: 1e-12}


def network(kind="conv", stride=1, pad=1, size=(3, 2, 7, 6), features=4, relu=True, mean=0.0):
    """x -> conv -> spatial batchnorm | x -> affine -> batchnorm, [-> relu] -> affine ->
    softmax loss; `mean` shifts the conv's or affine's output (its bias)."""

    def build(g, rng):
        x = g.input("x", requires_grad=kind == "affine")
        if kind == "conv":
            w = g.param("w", rng.standard_normal((features, size[1], 3, 3)) * 0.4)
            h = g.conv(
                x,
                w,
                g.param("b", rng.standard_normal(features) + mean),
                stride=stride,
                pad=pad,
                name="layer",
            )
            norm = g.spatial_batchnorm
        else:
            w = g.param("w", rng.standard_normal((int(np.prod(size[1:])), features)) * 0.3)
            h = g.affine(x, w, g.param("b", rng.standard_normal(features) + mean), name="layer")
            norm = g.batchnorm
        h = norm(
            h,
            g.param("gamma", rng.uniform(0.5, 2, features)),
            g.param("beta", rng.standard_normal(features)),
            momentum=0.7,
            name="norm",
        )
        if relu:
            h = g.relu(h, name="relu")
        width = int(np.prod(g.run(h, x=rng.standard_normal(size)).shape[1:]))
        scores = g.affine(
            h,
            g.param("w_out", rng.standard_normal((width, 3)) * 0.3),
            g.param("b_out", np.zeros(3)),
            name="scores",
        )
        g.softmax_loss(scores, g.input("y", dtype=np.int64), name="loss")
        return {"x": rng.standard_normal(size).astype(g.dtype), "y": rng.integers(0, 3, size[0])}

    return build


def folded_terms(g):
    """The largest term of the folded conv's sums, (x - mean) * gamma / std + beta: a
    batchnorm output near 0 (a relu's kept values) rounds as that term does."""
    norm, state = g["norm"], g["norm"].state
    scale = np.abs(g["gamma"].value) / np.sqrt(state["running_var"] + norm.gate.eps)
    centred = np.max(np.abs(g["layer"].value)) + np.max(np.abs(state["running_mean"]))
    return float(centred * np.max(scale) + np.max(np.abs(g["beta"].value)))


def assert_folds(build, dtype):
    """Two train steps read as gate by gate bit for bit; then eval steps to rounding where
    the fold pays, else (filters as many as the conv's outputs or more) the chain's bit for
    bit, nothing left for later."""
    plain, fused, feeds = twins(build, dtype)
    assert fused_labels(fused) == ["conv+spatial_batchnorm"]
    assert fused_labels(fused, "backward") == []
    for _ in range(2):
        for g in (plain, fused):
            walk(g, feeds)
        assert not deferred(fused["layer"]) and not deferred(fused["norm"])
        assert_same_everywhere(plain, fused)
    for g in (plain, fused):
        g.eval()
        g.forward(**feeds)
    tol = 0.0
    if fold_pays(fused["layer"], fused.store):
        assert deferred(fused["layer"]) == {"value", "cache"}
        assert deferred(fused["norm"]) == {"cache"}
        tol = TOL[dtype]
    else:
        assert not deferred(fused["layer"]) and not deferred(fused["norm"])
    for g in (plain, fused):  # gate by gate, on the caches computed when read
        g.backward()
    assert_same_everywhere(plain, fused, tol, tol, value_scale=folded_terms(plain))
    for g in (plain, fused):  # and back: the running averages moved once per train step
        g.train()
        walk(g, feeds)
    assert_same_everywhere(plain, fused)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("stride, pad", [(1, 1), (2, 1), (1, 0), (2, 0)])
@pytest.mark.parametrize("relu", [True, False])  # without: a residual block's second conv
def test_conv_spatial_batchnorm(relu, stride, pad, dtype):
    assert_folds(network("conv", stride, pad, relu=relu), dtype)


@pytest.mark.parametrize("relu", [True, False])
def test_affine_batchnorm_is_not_fused(relu):
    plain, fused, feeds = twins(network("affine", relu=relu), np.float64)
    assert fused_labels(fused) == fused_labels(fused, "backward") == []


@settings(max_examples=20, deadline=None)
@given(
    st.integers(2, 4),
    st.integers(1, 3),
    st.integers(3, 8),
    st.integers(3, 8),
    st.integers(1, 5),
    st.integers(1, 2),
    st.integers(0, 2),
    st.sampled_from([np.float32, np.float64]),
    st.floats(-5, 5),
)
def test_random_shapes(N, C, H, W, features, stride, pad, dtype, mean):
    assert_folds(network("conv", stride, pad, (N, C, H, W), features, mean=mean), dtype)


def test_eval_before_any_training_folds_with_the_gates_zero_averages():
    plain, fused, feeds = twins(network("conv"), np.float64)
    for g in (plain, fused):
        g.eval()
        g.forward(**feeds)
    assert deferred(fused["layer"]) == {"value", "cache"}
    for g in (plain, fused):
        g.backward()
    assert_same_everywhere(plain, fused, 1e-12, 1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_eval_of_a_fresh_graph_stores_the_gates_zero_averages(dtype):
    def build(g, rng):
        h = g.conv(
            g.input("x"), g.param("w", rng.standard_normal((4, 2, 3, 3))), g.param("b", np.ones(4))
        )
        g.spatial_batchnorm(
            h, g.param("gamma", np.ones(4)), g.param("beta", np.zeros(4)), name="norm"
        )
        return {"x": rng.standard_normal((6, 2, 5, 5)).astype(dtype)}

    plain, fused, feeds = twins(build, dtype)
    for g in (plain, fused):
        g.eval()
        g.forward(**feeds)
    assert fused_labels(fused) == ["conv+spatial_batchnorm"]
    assert fold_pays(fused["norm"].inputs[0], fused.store)
    for key in ("running_mean", "running_var"):
        np.testing.assert_array_equal(fused["norm"].state[key], plain["norm"].state[key])
        np.testing.assert_array_equal(fused["norm"].state[key], np.zeros(4, dtype))
        assert fused["norm"].state[key].dtype == dtype


def test_a_conv_read_by_another_gate_is_not_fused():
    def build(g, rng):
        feeds = network("conv")(g, rng)
        g.add(g["loss"], g.sum(g["layer"]), name="total")
        return feeds

    plain, fused, feeds = twins(build, np.float64)
    assert fused_labels(fused) == []
    for g in (plain, fused):
        g.eval()
        walk(g, feeds)
    assert_same_everywhere(plain, fused)


def test_what_is_left_for_later_survives_in_place_updates():
    """After an eval forward the optimizer updates the params in place and the input batch
    is refilled: the conv's value and the batchnorm's cache read later are still those
    of the walk."""
    plain, fused, feeds = twins(network("conv"), np.float64)
    for g in (plain, fused):
        walk(g, feeds)
        g.eval()
        g.forward(**feeds)
    want = {
        name: (
            np.array(plain[name].value),
            [np.array(a) for a in leaves(plain[name].cache) if isinstance(a, np.ndarray)],
        )
        for name in ("layer", "norm")
    }
    for name in ("w", "b", "gamma", "beta"):
        fused[name].value += 1
    feeds["x"][...] = 0
    fused["norm"].state["running_mean"] += 1
    for name, (value, cache) in want.items():
        assert np.allclose(fused[name].value, value, rtol=0, atol=1e-12), name
        got = [a for a in leaves(fused[name].cache) if isinstance(a, np.ndarray)]
        assert all(np.array_equal(a, b) for a, b in zip(got, cache, strict=True)), name


def test_a_failing_folded_step_names_its_nodes_and_shapes():
    g = gn.Graph(np.float32)
    x = g.input("x", requires_grad=False)  # no static shape: the kernels find the mistake
    conv = g.conv(x, g.param("w", np.ones((4, 3, 3, 3))), g.param("b", np.zeros(4)), name="conv1")
    g.sum(
        g.spatial_batchnorm(
            conv, g.param("gamma", np.ones(4)), g.param("beta", np.zeros(4)), name="sbn1"
        )
    )
    g.eval()
    with pytest.raises(gn.GraphError) as err:
        g.forward(x=np.ones((2, 2, 8, 8), np.float32))
    for word in ["'conv1' (conv) -> 'sbn1' (spatial_batchnorm)", "(2, 2, 8, 8)"]:
        assert word in str(err.value)


def test_drawings_steps_and_gradcheck_in_eval_mode():
    plain, fused, feeds = twins(network("conv"), np.float64)
    for g in (plain, fused):
        walk(g, feeds)
        g.eval()
        walk(g, feeds)
    assert_player_and_drawing_show(plain, fused, {"layer", "norm", "relu"}, "layer")
    assert_same_everywhere(plain, fused, 1e-12, 1e-12)
    errors = gn.gradcheck(fused, **feeds)
    assert fused_labels(fused) == ["conv+spatial_batchnorm"]
    # The fused chain's params; the output layer's (w_out) have entries near zero that the
    # elementwise relative error judges harshly, alike gate by gate.
    assert max(errors[name] for name in ("w", "b", "gamma", "beta")) < 1e-6, errors
