"""The batchnorm kernel with a leaky relu in its loops (cpp/norm.h, the fused batchnorm ->
leaky relu step of graphnet/passes/norm_activation.py) against the batchnorm kernel and
the leaky relu gate one after the other, each way, train mode, one thread.

    python benchmarks/bench_batchnorm_activation.py [--rounds 30] [--dtype float32]

The shapes: the random networks' conv -> spatial batchnorm -> leaky relu layers at batch 64
(random-0-20's 9 x 35 x 28, random-0-8's 14 x 30 x 35 and 24 x 30 x 35, random-0-13's
37 x 26 x 28), a 32 x 32 x 32 one at batch 16, 8 x 8 planes, and an affine's (256, 512).
Printed: the fastest of --rounds calls of each (wall clock, the calls in turns), ms."""

import argparse
import time

import numpy as np

from graphnet.gates.pointwise import LeakyRelu
from graphnet.kernels import _C, norm

SHAPES = [
    (64, 9, 35, 28),
    (64, 14, 30, 35),
    (64, 24, 30, 35),
    (64, 37, 26, 28),
    (16, 32, 32, 32),
    (64, 64, 8, 8),
    (256, 512),
]
EPS, MOMENTUM = 1e-5, 0.9


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = parser.parse_args()
    _C.set_num_threads(1)
    gate, rng = LeakyRelu(0.01), np.random.default_rng(0)
    print(f"{'shape':18} {'fwd gates':>10} {'fused':>7} {'ratio':>6} "
          f"{'bwd gates':>10} {'fused':>7} {'ratio':>6}")
    for shape in SHAPES:
        x, dout = (rng.standard_normal(shape).astype(args.dtype) for _ in range(2))
        gamma, beta = (rng.standard_normal(shape[1]).astype(args.dtype) for _ in range(2))

        def forward(**activation):
            return norm.batchnorm_forward(x, gamma, beta, EPS, MOMENTUM, None, None, True,
                                          **activation)[:2]

        y, cache = forward()
        _, saved = gate.forward(y)
        _, fused_cache = forward(activation=gate.kernel)
        calls = {
            "gates forward": lambda: gate.forward(forward()[0]),
            "fused forward": lambda: forward(activation=gate.kernel),
            "gates backward": lambda: norm.batchnorm_backward(
                gate.backward(dout, saved, (True,))[0], cache),
            "fused backward": lambda: norm.batchnorm_backward(
                dout, fused_cache, activation=gate.kernel),
        }
        times = {name: [] for name in calls}
        for _ in range(args.rounds):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
        ms = {name: 1e3 * min(t) for name, t in times.items()}
        fwd, bwd = ms["fused forward"] / ms["gates forward"], ms["fused backward"] / ms[
            "gates backward"]
        print(f"{str(shape):18} {ms['gates forward']:10.3f} {ms['fused forward']:7.3f} "
              f"{fwd:6.2f} {ms['gates backward']:10.3f} {ms['fused backward']:7.3f} {bwd:6.2f}")


if __name__ == "__main__":
    main()
