"""The eval-mode walk: a batch of fewer than SMALL_BATCH samples runs the small-batch plan
(gate by gate but for passes/conv_chain.py's runs, which compute every value and cache:
the fused steps' bookkeeping costs more than they save on activations that small), a
larger one or a train-mode walk runs the fused plan; a hooked walk runs the plan it would
without the hook; every node's value reads the same either way."""

import numpy as np
import pytest

import graphnet as gn
from graphnet.core.executor import SMALL_BATCH

pytestmark = pytest.mark.usefixtures("one_kernel_thread")


def convnet(dtype):
    """conv -> spatial batchnorm -> relu -> max pool -> affine: every conv pass has a run."""
    rng = np.random.default_rng(0)
    g = gn.Graph(dtype=dtype)
    x = g.input("x", shape=(None, 3, 8, 8), requires_grad=False)
    h = g.conv(
        x,
        g.param("w", rng.standard_normal((4, 3, 3, 3))),
        g.param("b", np.zeros(4)),
        pad=1,
        name="conv",
    )
    h = g.spatial_batchnorm(
        h, g.param("gamma", np.ones(4)), g.param("beta", np.zeros(4)), name="norm"
    )
    h = g.max_pool(g.relu(h, name="relu"), name="pool")
    g.affine(
        h, g.param("w2", rng.standard_normal((64, 5))), g.param("b2", np.zeros(5)), name="scores"
    )
    for _ in range(2):  # running averages away from 0 and 1
        g.run("scores", x=rng.standard_normal((6, 3, 8, 8)))
    return g


def fused_steps(g):
    return [step.label for step in g.executor.last_forward.steps if step.fused]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", [1, SMALL_BATCH - 1])
def test_small_eval_batch_runs_the_small_batch_plan(dtype, batch):
    g = convnet(dtype)
    x = np.random.default_rng(1).standard_normal((batch, 3, 8, 8)).astype(dtype)
    g.eval()
    scores = g.run("scores", x=x)
    assert fused_steps(g) == ["conv+spatial_batchnorm+relu+max_pool"]  # conv_chain.py's
    assert not g.store.has_deferred()
    values = {n.name: n.value for n in g.nodes if n.gate is not None}
    seen = []
    with g.add_hook(forward=lambda event: seen.append(event.step.label)):
        hooked = g.run("scores", x=x)
    assert seen == [step.label for step in g.executor.last_forward.steps]
    assert fused_steps(g) == ["conv+spatial_batchnorm+relu+max_pool"]  # what it watched
    with gn.detect_anomaly():  # a hook that must see every gate: gate by gate
        unfused = g.run("scores", x=x)
    assert fused_steps(g) == []
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_array_equal(hooked, scores)
    np.testing.assert_allclose(unfused, scores, rtol=tol, atol=tol)
    for name, value in values.items():  # every value, gate by gate or fused, the same
        np.testing.assert_allclose(g[name].value, value, rtol=tol, atol=tol)


def test_larger_eval_batch_and_train_mode_fuse():
    g = convnet(np.float32)
    rng = np.random.default_rng(2)
    g.eval().run("scores", x=rng.standard_normal((SMALL_BATCH, 3, 8, 8)))
    assert fused_steps(g) != []
    g.train().run("scores", x=rng.standard_normal((1, 3, 8, 8)))
    assert fused_steps(g) != []


def test_backward_after_small_eval_batch():
    """The gate-by-gate walk keeps every cache: a backward after it needs no deferred one."""
    g = convnet(np.float64)
    x = np.random.default_rng(3).standard_normal((2, 3, 8, 8))
    g.eval().run("scores", x=x)
    g.backward("scores", np.ones((2, 5)))
    twin = convnet(np.float64)
    twin.fuse = False
    twin.eval().run("scores", x=x)
    twin.backward("scores", np.ones((2, 5)))
    for name in ("w", "b", "gamma", "beta", "w2"):
        np.testing.assert_allclose(g[name].grad, twin[name].grad, rtol=1e-12, atol=1e-12)


def test_profile_of_a_small_eval_batch_times_the_small_batch_plan():
    g = convnet(np.float32)
    x = np.random.default_rng(4).standard_normal((1, 3, 8, 8)).astype(np.float32)
    g.eval().run("scores", x=x)
    small_batch_plan = g.executor.last_forward
    prof = gn.profile(g, {"x": x}, target="scores", repeat=2, memory=False)
    assert g.executor.last_forward is small_batch_plan
    assert sorted(prof.steps) == sorted(
        " ".join(n.name for n in step.nodes) for step in small_batch_plan.steps
    )
