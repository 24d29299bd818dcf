"""Where one training step's time and memory go, step by step (graphnet.profile).

    python benchmarks/profile_step.py [--model convnet|fc] [--batch 50] [--repeat 20]

Profiles the forward and backward walks of a course model's loss on a CIFAR-sized random
batch, as its Solver runs them (the data loss, the target with reg = 0), and prints the
table: one row per step (a fused step is one row), its mean forward and backward time over
the repeats and its peak allocation. The times include the hooks' own small cost per step.
"""
import argparse

import numpy as np

import graphnet as gn


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["convnet", "fc"], default="convnet")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    np.random.seed(0)
    if args.model == "convnet":
        model = gn.models.ThreeLayerConvNet(dtype=np.float32)
    else:
        model = gn.models.FullyConnectedNet([100] * 5, use_batchnorm=True, dtype=np.float32)
    X = rng.standard_normal((args.batch, 3, 32, 32)).astype(np.float32)
    y = rng.integers(10, size=args.batch)
    prof = gn.profile(model.graph, {"X": X, "y": y}, target="data_loss", repeat=args.repeat)
    print(f"{type(model).__name__}, batch {args.batch}, float32, mean of {args.repeat} runs")
    print(prof.table())


if __name__ == "__main__":
    main()
