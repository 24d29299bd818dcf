"""An affine layer's products on one thread: graphnet's `_C.matmul` against numpy and PyTorch.

    python benchmarks/bench_products.py [--shapes M,K,N ...] [--sweep] [--dtypes float32,float64]
                                        [--rounds 7] [--min-ratio 0]

For each shape (M rows of x, K inputs, N outputs) the forward x @ w + b (`_C.matmul(x, w,
bias=b)`; numpy's `x @ w + b`; `torch.addmm`, what F.linear runs), the input gradient
dout w^T (`transpose_b=True`; `dout @ w.T`; `mm` of a transposed view, what the autograd
of F.linear runs), the weight gradient x^T dout (`transpose_a=True`; `x.T @ dout`;
`mm`) and the bias gradient, dout summed over the rows (`_C.column_sums`, the gate's
`dout.sum(axis=0)` in numpy's column, `sum(0)`), each the best of --rounds blocks of calls,
in process CPU time, the three in turns within each round, numpy's BLAS on one thread
(threadpoolctl). Printed: graphnet's ms and each one's GFLOP/s (the bias gradient: GB/s of
dout read). The default shapes: the zoo transformer's feed-forward (64 -> 256 -> 64 over
2048 rows) and projections (64 -> 64) at batch 64, and an FC net's first layer
(3072 -> 100) at batch 64. --sweep takes instead the fully connected layers of the zoo
and of students' nets (SWEEP_LAYERS) at batches 1, 16, 64 and 256; --min-ratio R prints
only the rows where graphnet's rate is below R times the best of numpy's and PyTorch's
(after the runs: every row's numbers are measured alike).
"""

import argparse
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from graphnet.kernels import _C

DEFAULT_SHAPES = ["2048,64,256", "2048,256,64", "2048,64,64", "64,3072,100"]
# (inputs, outputs): the zoo's fully connected layers (fc, fc_dropout, the MLPs, the CNNs'
# flattened maps into 256 or 120, lenet's 120 -> 84, the scores) and students' (8192 -> 10,
# 300 -> 700, 1024 -> 1024, 3072 -> 4096).
SWEEP_LAYERS = ((3072, 100), (100, 100), (100, 10), (3072, 512), (512, 512), (3072, 256),
                (256, 256), (4096, 256), (2048, 256), (400, 120), (120, 84), (784, 128),
                (50, 50), (8192, 10), (300, 700), (1024, 1024), (3072, 4096))
SWEEP_BATCHES = (1, 16, 64, 256)


def block_seconds(fn, calls):
    start = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - start) / calls


def contenders(x, w, b, dout):
    """{product: (graphnet, numpy, torch)}, and the work of each (flops, or bytes read)."""
    tx, tw, tdout, tb = (torch.from_numpy(a) for a in (x, w, dout, b))
    (m, k), n = x.shape, w.shape[1]
    flops = 2 * m * k * n
    return {
        f"x @ w + b   {m} x {k} x {n}": (flops, (
            lambda: _C.matmul(x, w, False, False, b),
            lambda: x @ w + b,
            lambda: torch.addmm(tb, tx, tw),
        )),
        f"dout w^T    {m} x {n} x {k}": (flops, (
            lambda: _C.matmul(dout, w, False, True),
            lambda: dout @ w.T,
            lambda: tdout.mm(tw.t()),
        )),
        f"x^T dout    {k} x {m} x {n}": (flops, (
            lambda: _C.matmul(x, dout, True, False),
            lambda: x.T @ dout,
            lambda: tx.t().mm(tdout),
        )),
        f"sum dout    {m} x {n}": (dout.nbytes, (
            lambda: _C.column_sums(dout),
            lambda: dout.sum(axis=0),
            lambda: tdout.sum(0),
        )),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="*", default=DEFAULT_SHAPES, help="M,K,N each")
    parser.add_argument("--sweep", action="store_true", help="SWEEP_LAYERS x SWEEP_BATCHES")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--min-ratio", type=float, default=0.0)
    args = parser.parse_args()
    _C.set_num_threads(1)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    shapes = [tuple(int(s) for s in shape.split(",")) for shape in args.shapes]
    if args.sweep:
        shapes = [(m, k, n) for k, n in SWEEP_LAYERS for m in SWEEP_BATCHES]
    print("product | graphnet ms | GFLOP/s (sum: GB/s) graphnet  numpy  torch | graphnet / best")
    with threadpool_limits(1):
        for dtype in args.dtypes.split(","):
            for m, k, n in shapes:
                x, w, dout = (
                    rng.standard_normal(s).astype(dtype) for s in ((m, k), (k, n), (m, n))
                )
                b = rng.standard_normal(n).astype(dtype)
                for name, (work, fns) in contenders(x, w, b, dout).items():
                    calls = max(3, min(2000, int(1e8 / work)))
                    for fn in fns:
                        fn()
                    best = [float("inf")] * len(fns)
                    for _ in range(args.rounds):
                        for i, fn in enumerate(fns):
                            best[i] = min(best[i], block_seconds(fn, calls))
                    rates = [work / t / 1e9 for t in best]
                    ratio = rates[0] / max(rates[1:])
                    if ratio < args.min_ratio or not args.min_ratio:
                        cells = " ".join(f"{r:6.1f}" for r in rates)
                        print(f"{dtype} {name:28} | {1e3 * best[0]:8.3f} | {cells} | {ratio:.2f}",
                              flush=True)


if __name__ == "__main__":
    main()
