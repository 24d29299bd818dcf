"""The non-convolution passes of a CNN training step against the memory floor.

    python benchmarks/bench_memory.py [--rounds 12] [--batch 64]

One thread, CPU time, medians. For resnet's activations at the batch (float32, (N, 32,
32, 32) and (N, 64, 16, 16)): spatial batchnorm forward with its relu, backward through
the relu, backward alone, with a residual block's skip added before the relu (forward and
backward, and the relu gate's passes that it saves), relu -> 2x2 max pool forward and its
backward, and the numpy passes that set the floor: a copy (read one array, write one) and
an add (read two, write one). Each is timed twice: hot (its arrays in cache from the call
before) and cold (a 256 MB array rewritten before every call, as a training step's other
arrays do), which is how a step meets them. The outputs are new arrays at every call, as in a step,
allocated as a graph walk allocates them: from the array pool (cpp/array_pool.h), which
keeps the memory freed for the next call of the same size, or with
GRAPHNET_RETURN_FREED_MEMORY=1 in the environment from numpy's allocator, with glibc
returning large blocks to the kernel to be faulted in afresh.
"""
import argparse
import time

import numpy as np

from graphnet.core.executor import WALK_MEMORY
from graphnet.kernels import _C, fast


def cases(N, C, H, rng):
    shape = (N, C, H, H)
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    gamma = rng.uniform(0.5, 2, C).astype(np.float32)
    beta = rng.standard_normal(C).astype(np.float32)
    _, mean, _, inv_std = _C.channel_norm_forward(x, gamma, beta, 1e-5, relu=True)
    pool = {"pool_height": 2, "pool_width": 2, "stride": 2}
    pooled, cache = fast.relu_max_pool_forward_fast(x, pool)
    skip = rng.standard_normal(shape).astype(np.float32)
    summed, keep = _C.relu_forward(_C.channel_norm_forward(x, gamma, beta, 1e-5)[0] + skip)
    dpool = rng.standard_normal(pooled.shape).astype(np.float32)
    return {
        "sbn + relu forward": lambda: _C.channel_norm_forward(x, gamma, beta, 1e-5, relu=True),
        "sbn + relu backward": lambda: _C.channel_norm_backward(
            dy, x, gamma, mean, inv_std, True, beta
        ),
        "sbn backward": lambda: _C.channel_norm_backward(dy, x, gamma, mean, inv_std, True, None),
        "sbn + skip + relu forward": lambda: _C.channel_norm_forward(
            x, gamma, beta, 1e-5, relu=True, skip=skip
        ),
        "sbn + skip + relu backward": lambda: _C.channel_norm_backward(
            dy, x, gamma, mean, inv_std, True, relu_out=summed
        ),
        "relu forward (gate)": lambda: _C.relu_forward(x),
        "relu backward (gate)": lambda: _C.relu_backward(dy, keep),
        "relu + max pool forward": lambda: fast.relu_max_pool_forward_fast(x, pool),
        "max pool backward": lambda: fast.max_pool_backward_fast(dpool, cache),
        "floor: copy (read 1, write 1)": lambda: x.copy(),
        "floor: add (read 2, write 1)": lambda: x + dy,
    }


def median_ms(run, rounds, flush):
    run()
    times = []
    for _ in range(rounds):
        if flush is not None:
            np.add(flush, 1.0, out=flush)
        start = time.process_time()
        run()
        times.append(time.process_time() - start)
    return 1e3 * float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    _C.set_num_threads(1)
    rng = np.random.default_rng(0)
    flush = np.ones(64 << 20, np.float32)
    print("freed memory " + ("returned to the C library" if WALK_MEMORY is None
                             else "kept by the array pool"))
    _C.set_array_memory_handler(WALK_MEMORY)
    print("| pass | x | hot ms | cold ms |\n|---|---|--:|--:|")
    for C, H in ((32, 32), (64, 16)):
        for name, run in cases(args.batch, C, H, rng).items():
            hot = median_ms(run, args.rounds, None)
            cold = median_ms(run, args.rounds, flush)
            print(f"| {name} | ({args.batch}, {C}, {H}, {H}) | {hot:.2f} | {cold:.2f} |")


if __name__ == "__main__":
    main()
