"""One sample through an affine layer: a row times a weight matrix, graphnet against PyTorch.

    python benchmarks/bench_row_product.py [--rounds 7] [--dtypes float32,float64] [--blas]
                                           [--rows 1]

At batch 1 an affine layer's forward is `x (1 x k) @ W (k x n) + b`: k * n multiply-adds
on k * n weights, each read once, so its time is the time to read W. For the shapes of
the zoo's fully connected layers (benchmarks/zoo_models.py), on one thread in CPU time,
it times graphnet's `_C.matmul(x, W, bias=b)` (the affine gate's product: a gemv) and
PyTorch's `F.linear` under `torch.inference_mode()` on the same weights, the two in turns
within each round (medians over --rounds rounds), and prints both times, the rate each
reads W at (GB/s) and PyTorch / graphnet. The same W read call after call stays in the
caches: L2 (1 MB a core here) up to its size, L3 (32 MB) past it.

--blas times BLAS's gemv (`_C.matmul` with `_C.set_avx512_matmul(False)`) in PyTorch's
place: graphnet's own row kernel against the one it replaces, in the same process.
--rows times a few samples at once, x (rows x k): W is still read once a call where
graphnet's row kernel serves them in one pass (up to 4 rows, docs/performance/overhead.md).
"""
import argparse
import time

import numpy as np
import torch

from graphnet.kernels import _C

# (k, n): the first layers of fc_dropout, the MLPs and twolayer/fc, then their inner ones;
# the CNNs' affines on their flattened maps (conv5x5, vgg_wide, strided), then the scores.
SHAPES = ((3072, 512), (3072, 256), (3072, 100), (512, 512), (256, 256), (100, 100),
          (4096, 256), (2048, 256), (8192, 10), (100, 10), (300, 700))


def per_call_us(run, calls):
    start = time.process_time()
    for _ in range(calls):
        run()
    return (time.process_time() - start) / calls * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--blas", action="store_true", help="BLAS's gemv as the peer")
    parser.add_argument("--rows", type=int, default=1, help="samples in x")
    args = parser.parse_args()
    _C.set_num_threads(1)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    peer_name = "blas" if args.blas else "torch"
    print(f"{args.rows} row(s) times W (k x n), one thread, CPU time, medians of "
          f"{args.rounds} rounds (us; GB/s: W's bytes over the time)")
    print(f"{'dtype':8} {'k x n':>11} {'W MB':>6} {'graphnet':>9} {'GB/s':>5} "
          f"{peer_name:>8} {'GB/s':>5} {peer_name + '/graphnet':>15}")
    for dtype in map(np.dtype, args.dtypes.split(",")):
        for k, n in SHAPES:
            x = rng.standard_normal((args.rows, k)).astype(dtype)
            w = rng.standard_normal((k, n)).astype(dtype)
            b = rng.standard_normal(n).astype(dtype)
            xt, wt, bt = torch.from_numpy(x), torch.from_numpy(w.T.copy()), torch.from_numpy(b)
            calls = max(200, int(4e6 / (k * n)))
            ours, theirs = [], []
            def peer():
                if not args.blas:
                    return torch.nn.functional.linear(xt, wt, bt)
                _C.set_avx512_matmul(False)
                try:
                    return _C.matmul(x, w, bias=b)
                finally:
                    _C.set_avx512_matmul(True)

            with torch.inference_mode():
                for run in (lambda: _C.matmul(x, w, bias=b), peer):
                    per_call_us(run, calls // 10)  # warm-up: W into the caches
                for _ in range(args.rounds):
                    ours.append(per_call_us(lambda: _C.matmul(x, w, bias=b), calls))
                    theirs.append(per_call_us(peer, calls))
            a, t = np.median(ours), np.median(theirs)
            mb = w.nbytes / 1e6
            print(f"{dtype.name:8} {f'{k} x {n}':>11} {mb:6.2f} {a:9.1f} {mb * 1e3 / a:5.0f} "
                  f"{t:8.1f} {mb * 1e3 / t:5.0f} {t / a:15.2f}")


if __name__ == "__main__":
    main()
