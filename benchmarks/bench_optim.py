"""The update rules on one param, graphnet against numpy's expressions and PyTorch.

    python benchmarks/bench_optim.py [--rounds 7] [--calls 40] [--dtypes float32,float64]

For each of graphnet.optim's rules (sgd, sgd_momentum, rmsprop, adam) and param shapes of
the zoo's fully connected layers (a 3072 x 512 first layer, 6.3 MB in float32; a 512 x 512
inner one; a bias of 512), on one thread in CPU time, it times one call of the rule with
the config it filled before (the Solver's everyday call), the course's numpy expressions
for the same rule in place, and `torch.optim`'s step on one tensor of the same shape (SGD,
SGD with momentum, RMSprop with alpha = decay_rate, Adam), the three in turns within each
round (medians over --rounds rounds of --calls calls), and prints microseconds per call and
numpy / graphnet, PyTorch / graphnet.
"""
import argparse
import statistics
import time

import numpy as np

from graphnet import optim
from graphnet.kernels import _C

SHAPES = ((3072, 512), (512, 512), (512,))
RULES = ("sgd", "sgd_momentum", "rmsprop", "adam")


def numpy_rule(rule, w, dw, config):
    """The course's expressions, in place on w and the states config holds."""
    lr = config["learning_rate"]
    if rule == "sgd":
        w -= lr * dw
    elif rule == "sgd_momentum":
        v = config["velocity"]
        v *= config["momentum"]
        v -= lr * dw
        w += v
    elif rule == "rmsprop":
        cache = config["cache"]
        cache *= config["decay_rate"]
        cache += (1 - config["decay_rate"]) * dw**2
        w -= lr * dw / (np.sqrt(cache) + config["epsilon"])
    else:
        config["t"] += 1
        m, v, t = config["m"], config["v"], config["t"]
        m *= config["beta1"]
        m += (1 - config["beta1"]) * dw
        v *= config["beta2"]
        v += (1 - config["beta2"]) * dw**2
        m_hat, v_hat = m / (1 - config["beta1"] ** t), v / (1 - config["beta2"] ** t)
        w -= lr * m_hat / (np.sqrt(v_hat) + config["epsilon"])


def torch_step(rule, w, dw):
    """A zero-argument call making one torch.optim step on a copy of w, or None."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    param = torch.nn.Parameter(torch.from_numpy(w.copy()))
    param.grad = torch.from_numpy(dw.copy())
    make = {
        "sgd": lambda p: torch.optim.SGD(p, lr=1e-2),
        "sgd_momentum": lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9),
        "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-2, alpha=0.99, eps=1e-8),
        "adam": lambda p: torch.optim.Adam(p, lr=1e-3),
    }[rule]
    opt = make([param])
    opt.step()
    return opt.step


def per_call_us(run, calls):
    start = time.thread_time()
    for _ in range(calls):
        run()
    return (time.thread_time() - start) / calls * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--dtypes", default="float32,float64")
    args = parser.parse_args()
    _C.set_num_threads(1)
    rng = np.random.default_rng(0)
    print(f"{'rule':13} {'dtype':8} {'shape':11} {'graphnet us':>11} {'numpy us':>9} "
          f"{'torch us':>9} {'numpy/gn':>8} {'torch/gn':>8}")
    for dtype in args.dtypes.split(","):
        for shape in SHAPES:
            w0 = rng.standard_normal(shape).astype(dtype)
            dw = (rng.standard_normal(shape) * 1e-3).astype(dtype)
            for rule in RULES:
                ours, theirs = w0.copy(), w0.copy()
                _, config = getattr(optim, rule)(ours, dw, {})
                _, reference = getattr(optim, rule)(theirs, dw, {})
                runs = {
                    "graphnet": lambda: getattr(optim, rule)(ours, dw, config),
                    "numpy": lambda: numpy_rule(rule, theirs, dw, reference),
                }
                torch_run = torch_step(rule, w0, dw)
                if torch_run is not None:
                    runs["torch"] = torch_run
                times = {name: [] for name in runs}
                for _ in range(args.rounds):
                    for name, run in runs.items():
                        times[name].append(per_call_us(run, args.calls))
                us = {name: statistics.median(values) for name, values in times.items()}
                torch_us = us.get("torch", float("nan"))
                print(f"{rule:13} {dtype:8} {str(shape):11} {us['graphnet']:11.1f} "
                      f"{us['numpy']:9.1f} {torch_us:9.1f} {us['numpy'] / us['graphnet']:8.2f} "
                      f"{torch_us / us['graphnet']:8.2f}")


if __name__ == "__main__":
    main()
