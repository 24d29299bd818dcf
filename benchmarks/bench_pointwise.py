"""The transcendental pointwise kernels (cpp/pointwise.cpp: _C.pointwise_forward and
_C.pointwise_backward, AVX-512 / AVX2 where the CPU has them) on their own.

    python benchmarks/bench_pointwise.py [--ops gelu,gelu_tanh,softplus]
        [--shapes 2048x256,64x32x32x32] [--dtypes float32,float64] [--rounds 300]

One thread, the process's CPU time, the fastest of `--rounds` calls of each (the kernels
are arithmetic-bound and pure, so the fastest call is the kernel's cost without the shared
machine's interruptions), on standard normal x and dout; a copy of x (np.copyto) for the
memory a forward moves at least. For gelu and gelu_tanh also what the GELU gate runs in
train mode: _C.pointwise_forward_slope (the forward and its slope in one pass) and the
backward's product dout * slope.
"""

import argparse
import time

import numpy as np

from graphnet.kernels import _C

ROW = "{:<10} {:<14} {:<8} {:>10} {:>11} {:>8} {:>13} {:>12}"
SLOPED = ("gelu", "gelu_tanh")


def best_ms(fn, rounds):
    fn()
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return 1e3 * best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", default="gelu,gelu_tanh,softplus")
    parser.add_argument("--shapes", default="2048x256,64x32x32x32")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    _C.set_num_threads(1)
    rng = np.random.default_rng(0)
    print(ROW.format("op", "shape", "dtype", "forward ms", "backward ms", "copy ms",
                     "+ slope ms", "dout*slope"))
    for shape_text in args.shapes.split(","):
        shape = tuple(int(n) for n in shape_text.split("x"))
        for dtype in args.dtypes.split(","):
            x = rng.standard_normal(shape).astype(dtype)
            dout = rng.standard_normal(shape).astype(dtype)
            copy = best_ms(lambda: np.copyto(dout, x), args.rounds)
            dout = rng.standard_normal(shape).astype(dtype)
            for op in args.ops.split(","):
                fwd = best_ms(lambda: _C.pointwise_forward(op, x), args.rounds)
                bwd = best_ms(lambda: _C.pointwise_backward(op, dout, x), args.rounds)
                times = [f"{ms:.3f}" for ms in (fwd, bwd, copy)]
                if op in SLOPED:
                    _, slope = _C.pointwise_forward_slope(op, x)
                    both = best_ms(lambda: _C.pointwise_forward_slope(op, x), args.rounds)
                    product = best_ms(lambda: dout * slope, args.rounds)
                    times += [f"{both:.3f}", f"{product:.3f}"]
                else:
                    times += ["-", "-"]
                print(ROW.format(op, shape_text, dtype, *times))


if __name__ == "__main__":
    main()
