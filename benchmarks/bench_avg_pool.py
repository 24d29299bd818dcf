"""The average pooling kernels (cpp/avg_pool_plane.h: _C.avg_pool_forward and
_C.avg_pool_backward) on their own, on the random student networks' pools.

    python benchmarks/bench_avg_pool.py [--dtypes float32,float64] [--rounds 30]

One thread, the process's CPU time, the fastest of `--rounds` calls of each, on standard
normal x and dout of batch 64; a copy of x for the memory a forward reads at least.
"""

import argparse
import os
import sys

import numpy as np

from graphnet.kernels import _C

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_pointwise import best_ms  # noqa: E402

# (what, (N, C, H, W), window, stride): the pools of random networks (zoo_models), and
# two of a 32 x 32 image.
CASES = [
    ("random-0-32", (64, 47, 7, 7), 3, 1),
    ("random-0-37", (64, 37, 25, 22), 2, 1),
    ("random-0-28", (64, 31, 34, 11), 3, 1),
    ("random-0-33", (64, 33, 22, 35), 3, 2),
    ("random-0-9", (64, 35, 28, 19), 3, 2),
    ("random-0-26", (64, 45, 20, 12), 3, 2),
    ("random-0-3", (64, 16, 32, 33), 3, 2),
    ("random-0-6", (64, 29, 24, 26), 3, 1),
    ("32x32", (64, 32, 32, 32), 3, 1),
    ("32x32", (64, 32, 32, 32), 2, 2),
    ("32x32", (64, 32, 32, 32), 5, 3),
]
ROW = "{:<12} {:<13} {:<7} {:<8} {:>10} {:>11} {:>8}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtypes", default="float32")
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    _C.set_num_threads(1)
    rng = np.random.default_rng(0)
    print(ROW.format("net", "C x H x W", "window", "dtype", "forward ms", "backward ms", "copy ms"))
    for what, shape, k, stride in CASES:
        for dtype in args.dtypes.split(","):
            x = rng.standard_normal(shape).astype(dtype)
            dout = rng.standard_normal(_C.avg_pool_forward(x, k, k, stride).shape).astype(dtype)
            fwd = best_ms(lambda: _C.avg_pool_forward(x, k, k, stride), args.rounds)
            bwd = best_ms(lambda: _C.avg_pool_backward(dout, *shape[2:], k, k, stride), args.rounds)
            copy = best_ms(x.copy, args.rounds)
            size = "x".join(map(str, shape[1:]))
            times = (f"{ms:.3f}" for ms in (fwd, bwd, copy))
            print(ROW.format(what, size, f"{k}x{k} s{stride}", dtype, *times))


if __name__ == "__main__":
    main()
