"""An affine layer's three products on one thread: graphnet's `_C.matmul` against PyTorch.

    python benchmarks/bench_products.py [--shapes M,K,N ...] [--dtypes float32,float64]
                                        [--rounds 7]

For each shape (M rows of x, K inputs, N outputs) the forward x @ w + b (`_C.matmul(x, w,
bias=b)` / `torch.addmm`), the input gradient dout w^T (`transpose_b=True` / `mm` of a
transposed view) and the weight gradient x^T dout (`transpose_a=True`), each the best of
--rounds blocks of calls, in process CPU time, graphnet and PyTorch in turns within each
round; the ms and GFLOP/s of each. The default shapes: the zoo transformer's feed-forward
(64 -> 256 -> 64 over 2048 rows) and projections (64 -> 64) at batch 64, and an FC net's
first layer (3072 -> 100) at batch 64.
"""

import argparse
import time

import numpy as np
import torch

from graphnet.kernels import _C

DEFAULT_SHAPES = ["2048,64,256", "2048,256,64", "2048,64,64", "64,3072,100"]


def block_seconds(fn, calls):
    start = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - start) / calls


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="*", default=DEFAULT_SHAPES, help="M,K,N each")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    _C.set_num_threads(1)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    print("product | graphnet ms (GFLOP/s) | torch ms (GFLOP/s)")
    for dtype in args.dtypes.split(","):
        for shape in args.shapes:
            m, k, n = (int(s) for s in shape.split(","))
            x, w, dout = (rng.standard_normal(s).astype(dtype) for s in ((m, k), (k, n), (m, n)))
            b = rng.standard_normal(n).astype(dtype)
            tx, tw, tdout, tb = (torch.from_numpy(a) for a in (x, w, dout, b))
            products = {
                f"x @ w + b   {m} x {k} x {n}": (
                    lambda: _C.matmul(x, w, bias=b),
                    lambda: torch.addmm(tb, tx, tw),
                ),
                f"dout w^T    {m} x {n} x {k}": (
                    lambda: _C.matmul(dout, w, transpose_b=True),
                    lambda: tdout.mm(tw.t()),
                ),
                f"x^T dout    {k} x {m} x {n}": (
                    lambda: _C.matmul(x, dout, transpose_a=True),
                    lambda: tx.t().mm(tdout),
                ),
            }
            flops = 2 * m * k * n
            calls = max(3, int(1e8 / flops))
            for name, contenders in products.items():
                for fn in contenders:
                    fn()
                best = [float("inf")] * len(contenders)
                for _ in range(args.rounds):
                    for i, fn in enumerate(contenders):
                        best[i] = min(best[i], block_seconds(fn, calls))
                cells = " | ".join(f"{1e3 * t:.3f} ({flops / t / 1e9:.0f})" for t in best)
                print(f"{dtype} {name} | {cells}", flush=True)


if __name__ == "__main__":
    main()
