"""Eval calls at batch 1 right after a training step: how long the caches take to recover.

    python benchmarks/bench_after_step.py [--models fc_dropout] [--dtype float32]
                                          [--calls 12] [--repeats 30]

bench_zoo.py times each contender in blocks of calls that take turns, so a block of
inference calls follows a block of training steps (adam), which stream the weights, their
gradients and the optimizer's states through the caches (fc_dropout: four times its 6.3
MB of weights). For each network, on one thread, in CPU time, this takes one training
step and then --calls eval calls (`model.loss(X)`; PyTorch's `net(X)` in eval mode under
`torch.inference_mode()`, in this process), --repeats times, and prints the median time
of the i-th call after the step, graphnet's line, then PyTorch's.
"""

import argparse
import os
import sys
import time

import numpy as np

from graphnet.kernels import _C

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_zoo import graphnet_contenders, torch_contenders  # noqa: E402
from zoo_models import BY_NAME  # noqa: E402


def calls_after_steps(step, infer, calls, repeats):
    """Median seconds of the i-th infer() after a step(), for i < calls."""
    step()
    infer()
    times = []
    for _ in range(repeats):
        step()
        row = []
        for _ in range(calls):
            start = time.process_time()
            infer()
            row.append(time.process_time() - start)
        times.append(row)
    return np.median(times, axis=0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="fc_dropout")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--calls", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    import torch

    _C.set_num_threads(1)
    torch.set_num_threads(1)
    print(
        f"batch 1, {args.dtype}, one thread, CPU time: median us of the i-th eval call "
        f"after a training step, i = 1..{args.calls}, over {args.repeats} steps"
    )
    for name in args.models.split(","):
        ours = graphnet_contenders(BY_NAME[name], 1, args.dtype)
        theirs = torch_contenders(name, 1, args.dtype)
        for label, runs in (("graphnet", ours), ("torch", theirs)):
            step = runs[f"{label} step"]
            infer = runs[f"{label} infer"]
            medians = calls_after_steps(step, infer, args.calls, args.repeats)
            print(f"{name:12} {label:9}", " ".join(f"{1e6 * t:.0f}" for t in medians))


if __name__ == "__main__":
    main()
