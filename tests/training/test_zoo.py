"""Every network of the benchmark's model zoo (benchmarks/zoo_models.py) builds, runs a
training step, and its loss and gradients equal PyTorch's for the same weights, the same
batch and the same dropout masks (float64, a tiny batch, train mode), and so do the
weights after one adam step and the eval-mode scores after it. This guards the kernels
and fused paths the benchmark times: whatever makes them faster must keep these equal."""

import importlib.util
import pathlib

import numpy as np
import pytest

from graphnet import optim

torch = pytest.importorskip("torch")

_PATH = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "zoo_models.py"
_spec = importlib.util.spec_from_file_location("zoo_models", _PATH)
zoo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(zoo)

pytestmark = [pytest.mark.torch, pytest.mark.slow]


def graphnet_masks(model):
    """The mask each dropout node applied in the last forward, as its gate's own backward
    of ones gives it (mask / (1 - p)): independent of how the gate stores it."""
    return [
        node.gate.backward(np.ones(node.value.shape), node.cache, (True,))[0]
        for node in model.graph.nodes
        if node.op == "dropout"
    ]


@pytest.mark.parametrize("name", [m.name for m in zoo.ZOO])
def test_zoo_network_matches_pytorch(name):
    spec = zoo.BY_NAME[name]
    ours = zoo.build_graphnet(spec, np.float64, seed=3)
    net, dropouts = zoo.build_torch(spec, ours)
    X, y = zoo.batch_of(spec, 3, np.float64, np.random.default_rng(4))

    loss, grads = ours.loss(X, y)
    for layer, mask in zip(dropouts, graphnet_masks(ours), strict=True):
        layer.mask = torch.from_numpy(mask)
    net.train()
    their_loss = zoo.torch_loss(spec, net(torch.from_numpy(X)), torch.from_numpy(y))
    their_loss.backward()
    np.testing.assert_allclose(loss, their_loss.item(), rtol=1e-10)
    their_grads = zoo.graphnet_view(spec, net, grads=True)
    for (key, grad), expected in zip(grads.items(), their_grads, strict=True):
        np.testing.assert_allclose(grad, expected, rtol=1e-7, atol=1e-11, err_msg=f"{name}: d{key}")

    # One adam step on both sides, then the eval-mode scores (running averages) agree.
    # Adam moves a weight by about the learning rate whatever its gradient's size, so a
    # gradient that is zero up to rounding (a conv's bias before a batchnorm) moves it by a
    # random +-lr: those weights are left out of the comparison.
    configs = {key: {"learning_rate": 1e-2} for key in ours.params}
    for key in ours.params:
        ours.params[key], configs[key] = optim.adam(ours.params[key], grads[key], configs[key])
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    opt.step()
    their_weights = zoo.graphnet_view(spec, net)
    for (key, w), expected, grad in zip(ours.params.items(), their_weights, their_grads):
        meaningful = np.abs(grad) > 1e-8
        np.testing.assert_allclose(
            w[meaningful],
            expected[meaningful],
            rtol=1e-6,
            atol=1e-9,
            err_msg=f"{name}: {key} after adam",
        )
    scores = ours.loss(X)
    net.eval()
    with torch.no_grad():
        expected_scores = net(torch.from_numpy(X)).numpy()
    # torch's running variance is unbiased, the course's biased; with 3 samples the eval
    # scores of batchnorm nets differ by that alone, so they are compared with their own
    # running statistics copied over.
    if any(layer[0] in ("bn", "sbn", "res") for layer in spec.layers):
        zoo.copy_weights(spec, ours, net)
        with torch.no_grad():
            expected_scores = net(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("batch", [1, 6])
@pytest.mark.parametrize("name", [m.name for m in zoo.ZOO])
def test_zoo_inference_matches_pytorch(name, batch):
    """model.loss(X) in eval mode, as the benchmark times it: gate by gate at batch 1, the
    fused plan (the batchnorm folded into the conv, the feed checked in the first affine)
    at 6, against PyTorch's eval forward with the same weights and running averages."""
    spec = zoo.BY_NAME[name]
    ours = zoo.build_graphnet(spec, np.float64, seed=5)
    rng = np.random.default_rng(6)
    for _ in range(2):  # running averages away from their start
        ours.loss(*zoo.batch_of(spec, 4, np.float64, rng))
    net, _ = zoo.build_torch(spec, ours)
    net.eval()
    X, _ = zoo.batch_of(spec, batch, np.float64, rng)
    for _ in range(2):  # a second call as the first: nothing kept from one to the next
        scores = ours.loss(X)
        with torch.no_grad():
            expected = net(torch.from_numpy(X)).numpy()
        np.testing.assert_allclose(scores, expected, rtol=1e-7, atol=1e-10)
