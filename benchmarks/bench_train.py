"""Benchmark training through the graph API.

    python benchmarks/bench_train.py [--steps 20] [--skip-cli] [--threads N]

(a) `graphnet train` with its defaults (ThreeLayerConvNet on the 8x8 digits), run as a
    subprocess exactly as a user runs it: wall time (process start to exit, so imports,
    data loading, the plot and the graph drawing included) and the test accuracy it prints.
(b) One ThreeLayerConvNet training step at batch 50 on CIFAR-shaped float32 random data
    (3x32x32 input, 32 filters 7x7, hidden 100, 10 classes): forward, backward and an adam
    update of every parameter, through the graph (model.loss + graphnet.optim.adam, what
    the Solver does) against the same network in PyTorch CPU (torch.nn + torch.optim.Adam)
    with as many threads (graphnet._C.get_num_threads(); set with --threads or
    OMP_NUM_THREADS). Times are medians of --steps steps after warm-up; the two take turns
    step by step (or run back to back with --blocked), so a shared machine's load affects
    them alike.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

from graphnet.kernels import _C
from cnn_steps import cifar_batch, graphnet_step, median_ms_in_turns, torch_step  # noqa: E402  (same folder)

try:
    import torch
except ImportError:
    torch = None


def bench_cli():
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "graphnet", "train", "--out", out,
                                 "--quiet"], capture_output=True, text=True)
        wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"graphnet train failed:\n{result.stderr}")
    accuracy = float(re.search(r"^test accuracy: (\S+)$", result.stdout, re.M).group(1))
    inner = float(re.search(r"^time: (\S+) s$", result.stdout, re.M).group(1))
    return wall, inner, accuracy


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--skip-cli", action="store_true", help="skip part (a)")
    parser.add_argument("--blocked", action="store_true",
                        help="time each contender's steps back to back instead of in turns")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for graphnet's kernels and PyTorch")
    args = parser.parse_args(argv)
    if args.threads:
        _C.set_num_threads(args.threads)
    threads = _C.get_num_threads()
    print(f"machine: {os.cpu_count()} cores; graphnet kernels and PyTorch on {threads} "
          f"thread(s); numpy {np.__version__}"
          + (f", torch {torch.__version__}" if torch is not None else ", torch not installed"))

    if not args.skip_cli:
        wall, inner, accuracy = bench_cli()
        print("\n(a) `graphnet train` defaults (ThreeLayerConvNet on the digits)")
        print(f"    wall time {wall:.1f} s (training and evaluation {inner:.1f} s), "
              f"test accuracy {accuracy:.3f}")

    X, y = cifar_batch()
    contenders = {"graphnet": graphnet_step(X, y)}
    if torch is not None:
        torch.set_num_threads(threads)
        contenders["PyTorch CPU"] = torch_step(X, y)
    medians = median_ms_in_turns(contenders, args.steps, turn=args.steps if args.blocked else 1)
    reference = medians.get("PyTorch CPU")
    rows = list(medians.items())

    print("\n(b) ThreeLayerConvNet training step, batch 50, 3x32x32 float32, 32 filters 7x7, "
          f"hidden 100, adam ({'back to back' if args.blocked else 'in turns'})")
    print(f"    {'':40s} {'median ms':>10s} {'vs torch':>9s}")
    for name, ms in rows:
        ratio = f"{ms / reference:8.2f}x" if reference else "       -"
        print(f"    {name:40s} {ms:10.1f} {ratio}")


if __name__ == "__main__":
    main()
