"""_C.matmul at column counts just past whole vectors of the AVX-512 kernel (16 float32,
8 float64), against the whole-vector count below them: the LSTM language models' output
layer (65 words) and its gradients.

    python benchmarks/bench_matmul_columns.py [--rounds 7] [--threads 1]

For each layout (x @ w, x^T dout, dout w^T) and shape m x k, one row of microseconds per
column count (64, 64 + 1 .. 64 + width - 1, 64 + width), the best of --rounds rounds of
CPU time (the process's: one thread leaves out the waits of a loaded machine).
"""
import argparse

import numpy as np
from bench_attention import best_ms

from graphnet.kernels import _C

LAYOUTS = {"x @ w": (False, False), "x^T dout": (True, False), "dout w^T": (False, True)}
SHAPES = ((3200, 128), (128, 3200), (50, 128), (300, 300))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    _C.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    for dtype, width in ((np.float32, 16), (np.float64, 8)):
        for layout, (transpose_a, transpose_b) in LAYOUTS.items():
            for m, k in SHAPES:
                cells = []
                for n in range(64, 64 + width + 1):
                    a = rng.standard_normal((k, m) if transpose_a else (m, k)).astype(dtype)
                    b = rng.standard_normal((n, k) if transpose_b else (k, n)).astype(dtype)
                    calls = max(1, int(3e6 / (m * n * k)))
                    us = 1e3 * best_ms(
                        lambda: _C.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b),
                        calls,
                        args.rounds,
                    )
                    cells.append(f"{n}:{us:.0f}")
                name = np.dtype(dtype).name
                print(f"{name} {layout} {m} x {k}: " + " ".join(cells), flush=True)


if __name__ == "__main__":
    main()
