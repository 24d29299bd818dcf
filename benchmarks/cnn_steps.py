"""One training step of the CIFAR-10 ThreeLayerConvNet, in graphnet and in PyTorch, for
the benchmarks. torch is imported only when its step is built, so a graphnet-only process
(bench_step.py's memory measurement) never loads it."""
import time

import numpy as np

import graphnet as gn
from graphnet import optim


def cifar_batch(batch=50, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((batch, 3, 32, 32)).astype(np.float32),
            rng.integers(10, size=batch).astype(np.int64))


def adam_step(model, X, y):
    """One training step of a graphnet model: what the Solver does per iteration."""
    configs = {name: {"learning_rate": 1e-3} for name in model.params}

    def step():
        _, grads = model.loss(X, y)
        for name in model.params:
            model.params[name], configs[name] = optim.adam(model.params[name], grads[name],
                                                           configs[name])
    return step


def graphnet_step(X, y):
    np.random.seed(0)
    model = gn.models.ThreeLayerConvNet(input_dim=(3, 32, 32), num_filters=32, filter_size=7,
                                        hidden_dim=100, num_classes=10, weight_scale=1e-3,
                                        dtype=np.float32)
    return adam_step(model, X, y)


def torch_step(X, y):
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 7, padding=3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(32 * 16 * 16, 100), torch.nn.ReLU(),
        torch.nn.Linear(100, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(Xt), yt)
        loss.backward()
        opt.step()
    return step


def median_ms_in_turns(contenders, steps, turn=1, warmup=3):
    """{name: median ms per step} of the contenders {name: step function}, each warmed
    up `warmup` times and then timed for `steps` steps, in turns of `turn` steps: so a slow
    spell of a shared machine hits them alike (turn=steps runs each back to back)."""
    for step in contenders.values():
        for _ in range(warmup):
            step()
    times = {name: [] for name in contenders}
    while any(len(t) < steps for t in times.values()):
        for name, step in contenders.items():
            for _ in range(min(turn, steps - len(times[name]))):
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)
    return {name: 1e3 * float(np.median(t)) for name, t in times.items()}
