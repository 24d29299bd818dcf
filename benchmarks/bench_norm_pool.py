"""The spatial batchnorm -> relu -> max pool kernel (cpp/norm.h with a pool: the fused step of
graphnet/passes/norm_relu.py, its output not kept) against its parts: the batchnorm -> relu
kernel alone, and the max pool kernel on that output. Train mode, float32, one thread.

    python benchmarks/bench_norm_pool.py [--batches 1,16,64] [--rounds 9]

The shapes: the random networks' conv -> spatial batchnorm -> relu (or leaky relu) -> max pool
layers (benchmarks/zoo_models.py random_network, seed 0): random-0-12's 6 x 11 x 8 and
random-0-2's 30 x 9 x 12 with 2x2 stride-1 windows, random-0-31's 15 x 10 x 12 with 3x3
stride 1, random-0-23's 17 x 26 x 16 and random-0-9's 28 x 7 x 5 with 2x2 stride 2, and
random-0-14's 3 x 29 x 34 with 3x3 stride 2. Printed: the fastest of --rounds blocks of calls
of each (CPU time, the three in turns), us."""

import argparse

import numpy as np
from bench_attention import best_ms

from graphnet.fast_layers import max_pool_forward_fast
from graphnet.kernels import _C, norm

SHAPES = [
    ((6, 11, 8), (2, 2, 1)),
    ((30, 9, 12), (2, 2, 1)),
    ((15, 10, 12), (3, 3, 1)),
    ((17, 26, 16), (2, 2, 2)),
    ((28, 7, 5), (2, 2, 2)),
    ((3, 29, 34), (3, 3, 2)),
]
EPS, MOMENTUM = 1e-5, 0.9


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", default="1,16,64")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    _C.set_num_threads(1)
    rng = np.random.default_rng(0)
    print(f"{'x':20} {'window':10} {'fused us':>9} {'norm+relu':>10} {'pool':>7} {'parts':>7}")
    for batch in (int(b) for b in args.batches.split(",")):
        for (C, H, W), window in SHAPES:
            x = rng.standard_normal((batch, C, H, W), dtype=np.float32)
            gamma, beta = np.ones(C, np.float32), np.zeros(C, np.float32)
            running = (np.zeros(C, np.float32), np.ones(C, np.float32))
            relu_out = np.maximum(x, 0)
            pool = dict(zip(("pool_height", "pool_width", "stride"), window))
            calls = max(10, 40_000 // x.size)

            def fused():
                norm.batchnorm_forward(
                    x, gamma, beta, EPS, MOMENTUM, *running, True, True, pool=window, keep=False
                )

            def norm_relu():
                norm.batchnorm_forward(x, gamma, beta, EPS, MOMENTUM, *running, True, True)

            def pooled():
                max_pool_forward_fast(relu_out, pool)

            times = [1e3 * best_ms(fn, calls, args.rounds) for fn in (fused, norm_relu, pooled)]
            print(
                f"{str(x.shape):20} {str(window):10} {times[0]:9.1f} {times[1]:10.1f} "
                f"{times[2]:7.1f} {times[1] + times[2]:7.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
