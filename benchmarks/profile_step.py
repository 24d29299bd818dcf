"""Where one training step's time and memory go, step by step (graphnet.profile).

    python benchmarks/profile_step.py [--model convnet|fc|NAME] [--batch 50] [--repeat 20]
                                      [--threads N] [--clock wall|thread]

Profiles the forward and backward walks of a model's loss on a random batch, as its Solver
runs them, and prints the table: one row per step (a fused step is one row), its mean
forward and backward time over the repeats and its peak allocation. The times include the
hooks' own small cost per step (--clock thread: the calling thread's CPU time, which on a
shared machine leaves out the waits for a core; with --threads 1 that is the whole step's).
convnet and fc are the course's ThreeLayerConvNet and a
batchnorm FullyConnectedNet on CIFAR-sized data (the data loss, the target with reg = 0);
NAME is a network of benchmarks/zoo_models.py as bench_zoo.py builds it (a zoo or student
network's name, or random-SEED-INDEX: zoo_models.random_network).
"""
import argparse
import os
import sys
import time

import numpy as np

import graphnet as gn
from graphnet.kernels import _C

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from zoo_models import batch_of, build_graphnet, model_named  # noqa: E402


def course_model(name, batch, rng):
    """(model, feeds, target) of the course's ThreeLayerConvNet or batchnorm FC net."""
    if name == "convnet":
        model = gn.models.ThreeLayerConvNet(dtype=np.float32)
    else:
        model = gn.models.FullyConnectedNet([100] * 5, use_batchnorm=True, dtype=np.float32)
    X = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    return model, {"X": X, "y": rng.integers(10, size=batch)}, "data_loss"


def zoo_model(name, batch, rng):
    """(model, feeds, target) of a zoo_models network, as bench_zoo.py builds it."""
    spec = model_named(name)
    X, y = batch_of(spec, batch, np.float32, rng)
    model = build_graphnet(spec, np.float32)
    if spec.sequence:  # a language model's inputs: words, the LSTM's first state, a mask
        inputs, labels = model.feeds(X, y)
        return model, {**inputs, **labels}, "loss"
    return model, {"x": X, "y": y}, "loss"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="convnet")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--threads", type=int, default=_C.get_num_threads())
    parser.add_argument("--clock", choices=("wall", "thread"), default="wall")
    args = parser.parse_args()
    _C.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    np.random.seed(0)
    if args.model in ("convnet", "fc"):
        model, feeds, target = course_model(args.model, args.batch, rng)
        what = type(model).__name__
    else:
        model, feeds, target = zoo_model(args.model, args.batch, rng)
        what = f"{args.model} ({model_named(args.model).what})"
    clock = time.perf_counter if args.clock == "wall" else time.thread_time
    prof = gn.profile(model.graph, feeds, target=target, repeat=args.repeat, clock=clock)
    print(f"{what}, batch {args.batch}, float32, mean of {args.repeat} runs")
    print(prof.table())

if __name__ == "__main__":
    main()
