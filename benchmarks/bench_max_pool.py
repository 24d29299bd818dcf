"""The max pool's kernels (_C.max_pool_forward and _C.max_pool_backward) on their own, per
plane, on small and larger planes and the windows students pool with.

    python benchmarks/bench_max_pool.py [--planes 5x5,7x9,10x10] [--dtypes float32,float64]

One thread, the process's CPU time, the fastest of `--rounds` blocks of `--calls` calls,
ns a plane of x (64, 16, H, W): standard normal x, and dout for the forward's winners.
"""

import argparse
import os
import sys

import numpy as np

from graphnet.kernels import _C

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_attention import best_ms  # noqa: E402

WINDOWS = [(2, 2, 2), (3, 3, 2), (2, 2, 1), (3, 3, 1), (3, 2, 3)]  # (height, width, stride)
ROW = "{:<8} {:<8} {:<8} {:>12} {:>13}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--planes", default="5x5,7x7,7x9,8x8,10x10,16x16")
    parser.add_argument("--dtypes", default="float32")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    _C.set_num_threads(1)
    rng = np.random.default_rng(0)
    print(ROW.format("plane", "window", "dtype", "forward ns", "backward ns"))
    for plane in args.planes.split(","):
        H, W = map(int, plane.split("x"))
        for ph, pw, stride in WINDOWS:
            if ph > H or pw > W:
                continue
            for dtype in args.dtypes.split(","):
                x = rng.standard_normal((64, 16, H, W)).astype(dtype)
                out, winners = _C.max_pool_forward(x, ph, pw, stride, False)
                dout = rng.standard_normal(out.shape).astype(dtype)
                forward = best_ms(
                    lambda: _C.max_pool_forward(x, ph, pw, stride, False), args.calls, args.rounds
                )
                backward = best_ms(
                    lambda: _C.max_pool_backward(dout, winners, H, W), args.calls, args.rounds
                )
                per_plane = (f"{1e6 * ms / (64 * 16):.1f}" for ms in (forward, backward))
                print(ROW.format(plane, f"{ph}x{pw} s{stride}", dtype, *per_plane))


if __name__ == "__main__":
    main()
