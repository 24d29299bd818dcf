"""The fused groupnorm -> activation kernels (cpp/group_norm.h with an activation, what
passes/norm_activation.py runs), each direction on its own, against the two kernels one
after the other and the memory they must move.

    python benchmarks/bench_group_norm_activation.py [--shape 64,32,32,32] [--groups 8]
        [--activations gelu,gelu_tanh,leaky_relu,relu,softplus] [--dtypes float32,float64]
        [--rounds 9]

One thread, the process's CPU time, the median of `--rounds` calls of each in turns. Per
activation and dtype: the fused forward and backward (graphnet.kernels.norm.groupnorm_*
with activation=...), the groupnorm kernel followed by the activation's gate kernel
(_C.pointwise_*), and "in cache": the fused kernels on a batch of 2 of the same planes,
scaled to the batch, what the arithmetic alone costs when x and dout never leave L2. The
last column is a copy of x (np.copyto): the forward reads x and writes out, one copy's
traffic; the backward reads x and dout and writes dx, one and a half.
"""

import argparse
import time

import numpy as np

from graphnet.kernels import _C
from graphnet.kernels import norm as K


def median_ms(calls, rounds):
    """{name: median CPU ms} of the callables, called in turns."""
    for fn in calls.values():
        fn()
    times = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            start = time.process_time()
            fn()
            times[name].append(time.process_time() - start)
    return {name: 1e3 * float(np.median(t)) for name, t in times.items()}


def fused_calls(shape, G, act, dtype, rng):
    x, dout = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
    gamma, beta = (rng.standard_normal(shape[1]).astype(dtype) for _ in range(2))
    alpha = (0.1,) if act == "leaky_relu" else ()
    _, cache = K.groupnorm_forward(x, gamma, beta, G, 1e-5, (act, 0.1))
    normalized, plain = K.groupnorm_forward(x, gamma, beta, G, 1e-5)
    y = np.empty_like(x)
    return {
        "fwd": lambda: K.groupnorm_forward(x, gamma, beta, G, 1e-5, (act, 0.1)),
        "bwd": lambda: K.groupnorm_backward(dout, cache, (act, 0.1)),
        "two fwd": lambda: _C.pointwise_forward(
            act, K.groupnorm_forward(x, gamma, beta, G, 1e-5)[0], *alpha
        ),
        "two bwd": lambda: K.groupnorm_backward(
            _C.pointwise_backward(act, dout, normalized, *alpha), plain
        ),
        "copy": lambda: np.copyto(y, x),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="64,32,32,32")
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--activations", default="gelu,gelu_tanh,leaky_relu,softplus")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    _C.set_num_threads(1)
    shape = tuple(int(s) for s in args.shape.split(","))
    small = (2,) + shape[1:]
    rng = np.random.default_rng(0)
    print(f"shape {shape}, G = {args.groups}; ms: fwd / bwd")
    print("| activation | dtype | fused | two kernels | in cache | copy of x |")
    print("|---|---|--:|--:|--:|--:|")
    for dtype in args.dtypes.split(","):
        for act in args.activations.split(","):
            big = median_ms(fused_calls(shape, args.groups, act, dtype, rng), args.rounds)
            calls = fused_calls(small, args.groups, act, dtype, rng)
            cached = median_ms({k: calls[k] for k in ("fwd", "bwd")}, args.rounds * 8)
            scale = shape[0] / small[0]
            print(
                f"| {act} | {dtype} | {big['fwd']:.2f} / {big['bwd']:.2f} "
                f"| {big['two fwd']:.2f} / {big['two bwd']:.2f} "
                f"| {cached['fwd'] * scale:.2f} / {cached['bwd'] * scale:.2f} "
                f"| {big['copy']:.2f} |"
            )


if __name__ == "__main__":
    main()
