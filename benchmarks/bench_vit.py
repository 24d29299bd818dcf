"""The 2025 edition's VisionTransformer: the training step's loss and gradients,
`model.loss(X, y)`, at the notebook's sizes.

    python benchmarks/bench_vit.py [--batch 64] [--dtype float32] [--blocks 5] [--calls 3]

The notebook's VisionTransformer(): 3 x 32 x 32 images cut into 16 patches of 8 x 8,
embeddings of 128, 6 encoder layers of 4 heads and a feedforward of 256, 10 classes;
"patch 4" the same with 64 patches of 4 x 4. Training mode (dropout 0.1). CPU
time of this thread (run it with OMP_NUM_THREADS=1), the best of `blocks` blocks of
`calls` calls each.
"""

import argparse
import time

import numpy as np

from graphnet.models.vision_transformer import VisionTransformer

PATCH_SIZES = {"notebook": 8, "patch 4": 4}


def step_ms(patch_size, batch, dtype, blocks, calls):
    np.random.seed(0)
    model = VisionTransformer(patch_size=patch_size, dtype=dtype)
    rng = np.random.default_rng(0)
    X = rng.random((batch, 3, 32, 32)).astype(dtype)
    y = rng.integers(0, 10, batch)
    model.loss(X, y)

    def block():
        start = time.thread_time()
        for _ in range(calls):
            model.loss(X, y)
        return (time.thread_time() - start) / calls

    return min(block() for _ in range(blocks)) * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3)
    args = parser.parse_args()
    for size, patch_size in PATCH_SIZES.items():
        ms = step_ms(patch_size, args.batch, args.dtype, args.blocks, args.calls)
        print(f"{size:9s} batch {args.batch}, {args.dtype}: loss and gradients {ms:.1f} ms")


if __name__ == "__main__":
    main()
