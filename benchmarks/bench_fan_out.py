"""The backward walk's sums of a fan-out's gradients (cpp/walk.cpp): one walk of an input
read by 2-4 consumers, each sending a gradient of the transformer's activations at batch
64 ((64, 32, 64) float32, 512 KB), with nothing else in the walk.

    python benchmarks/bench_fan_out.py [--walks 400]

Prints the median and best CPU time of a walk per consumer count. Each edge's gradient is
kept (drawings read them), so the first sum is a new array; the walk adds the later ones
into that sum in place.
"""
import argparse
import time

import numpy as np

from graphnet.gates.base import unbroadcast
from graphnet.kernels import _C


def sender(gradient):
    return lambda dout, cache, needs: (gradient,)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--walks", type=int, default=400)
    args = parser.parse_args()
    _C.set_num_threads(1)
    _C.set_array_memory_handler(_C.array_pool)  # as the executor's walks allocate
    rng = np.random.default_rng(0)
    shape = (64, 32, 64)
    values = [np.zeros(shape, np.float32)] * 2
    for consumers in (2, 3, 4):
        sent = [rng.standard_normal(shape).astype(np.float32) for _ in range(consumers)]
        loop = [(0, sender(sent[e]), (True,), ((0, 1, e),), False) for e in range(consumers)]
        times = []
        for _ in range(args.walks):
            grads, edges = [None, None], [None] * consumers
            start = time.process_time()
            _C.backward_walk(loop, values, [None] * 2, grads, edges, None, np.float64,
                             unbroadcast, [0])
            times.append(time.process_time() - start)
        us = np.array(times[args.walks // 8 :]) * 1e6
        print(f"{consumers} consumers: median {np.median(us):.1f} us, best {us.min():.1f}")


if __name__ == "__main__":
    main()
