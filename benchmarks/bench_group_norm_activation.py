"""The fused groupnorm -> activation (-> average or max pool) kernels (cpp/group_norm.h with an
activation, what passes/norm_activation.py runs), each direction on its own, against the
gates' kernels one after the other and the memory they must move.

    python benchmarks/bench_group_norm_activation.py [--shape 64,32,32,32] [--groups 8]
        [--activations gelu,gelu_tanh,leaky_relu,relu,softplus] [--dtypes float32,float64]
        [--pool 2,2,2 [--max-pool]] [--rounds 9]

One thread, the process's CPU time, the median of `--rounds` calls of each in turns. Per
activation and dtype: the fused forward and backward (graphnet.kernels.norm.groupnorm_*
with activation=..., and pool=... with --pool: the modern net's groupnorm -> gelu ->
avg_pool; with --max-pool a max pool, winners and all), the groupnorm kernel followed by
the activation's gate kernel (_C.pointwise_*) and the pool's (_C.avg_pool_* or
_C.max_pool_*), and "in cache": the fused kernels on a batch of 2 of the
same planes, scaled to the batch, what the arithmetic alone costs when x and dout never
leave L2, next to the groupnorm kernels alone in cache (the activation's and the pool's
arithmetic is the difference). The last column is a copy of x (np.copyto): the forward
reads x and writes out, one copy's traffic; the backward reads x and dout and writes dx,
one and a half.
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


def fused_calls(shape, G, act, dtype, rng, pool=None, max_pool=False):
    x = rng.standard_normal(shape).astype(dtype)
    gamma, beta = (rng.standard_normal(shape[1]).astype(dtype) for _ in range(2))
    alpha = (0.1,) if act == "leaky_relu" else ()
    fused = (x, gamma, beta, G, 1e-5, (act, 0.1), pool, max_pool)
    pooled, cache = K.groupnorm_forward(*fused)
    winners = pooled[1] if max_pool else None
    dout = rng.standard_normal(np.shape(winners if max_pool else pooled)).astype(dtype)
    normalized, plain = K.groupnorm_forward(x, gamma, beta, G, 1e-5)
    y = np.empty_like(x)

    def gates_forward():
        out = _C.pointwise_forward(act, K.groupnorm_forward(x, gamma, beta, G, 1e-5)[0], *alpha)
        if pool is None:
            return out
        return _C.max_pool_forward(out, *pool) if max_pool else _C.avg_pool_forward(out, *pool)

    def gates_backward():
        spread = dout
        if max_pool:
            spread = _C.max_pool_backward(dout, winners, *shape[2:])
        elif pool is not None:
            spread = _C.avg_pool_backward(dout, *shape[2:], *pool)
        return K.groupnorm_backward(_C.pointwise_backward(act, spread, normalized, *alpha), plain)

    return {
        "fwd": lambda: K.groupnorm_forward(*fused),
        "bwd": lambda: K.groupnorm_backward(dout, cache, (act, 0.1), pool, winners),
        "gates fwd": gates_forward,
        "gates bwd": gates_backward,
        "norm fwd": lambda: K.groupnorm_forward(x, gamma, beta, G, 1e-5),
        "norm bwd": lambda: K.groupnorm_backward(normalized, plain),
        "copy": lambda: np.copyto(y, x),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="64,32,32,32")
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--activations", default="gelu,gelu_tanh,leaky_relu,softplus")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--pool", default=None, help="pool_height,pool_width,stride")
    parser.add_argument("--max-pool", action="store_true", help="a max pool, not an average")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    _C.set_num_threads(1)
    shape = tuple(int(s) for s in args.shape.split(","))
    pool = tuple(int(s) for s in args.pool.split(",")) if args.pool else None
    small = (2,) + shape[1:]
    rng = np.random.default_rng(0)
    kind = "max" if args.max_pool else "average"
    print(f"shape {shape}, G = {args.groups}, {kind} pool {pool}; ms: fwd / bwd")
    print(
        "| activation | dtype | fused | gates' kernels | in cache | groupnorm alone in cache "
        "| copy of x |"
    )
    print("|---|---|--:|--:|--:|--:|--:|")
    for dtype in args.dtypes.split(","):
        for act in args.activations.split(","):
            both = (args.groups, act, dtype, rng, pool, args.max_pool)
            big = median_ms(fused_calls(shape, *both), args.rounds)
            calls = fused_calls(small, *both)
            cached = median_ms(
                {k: calls[k] for k in ("fwd", "bwd", "norm fwd", "norm bwd")}, args.rounds * 8
            )
            scale = shape[0] / small[0]
            print(
                f"| {act} | {dtype} | {big['fwd']:.2f} / {big['bwd']:.2f} "
                f"| {big['gates fwd']:.2f} / {big['gates bwd']:.2f} "
                f"| {cached['fwd'] * scale:.2f} / {cached['bwd'] * scale:.2f} "
                f"| {cached['norm fwd'] * scale:.2f} / {cached['norm bwd'] * scale:.2f} "
                f"| {big['copy']:.2f} |"
            )


if __name__ == "__main__":
    main()
