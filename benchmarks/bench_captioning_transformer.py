"""The course's CaptioningTransformer: the training step's loss and gradients,
`model.loss(features, captions)`, at the notebook's sizes and at a small one.

    python benchmarks/bench_captioning_transformer.py [--batch 25] [--blocks 5] [--calls 5]

notebook: V = 1004 words, image features of D = 512, word vectors of W = 256, 2 heads, 2
layers, the decoder layer's feedforward of 2048, captions of T = 16 words (17 with
<START>). small: the overfitting test's model (V = 34, D = 192, W = 64, feedforward 64,
T = 5). Training mode (dropout on), float32. CPU time of this thread (run it with
OMP_NUM_THREADS=1), the best of `blocks` blocks of `calls` calls each.
"""
import argparse
import time

import numpy as np

from graphnet.models.transformer import CaptioningTransformer

SIZES = {  # V, D, W, feedforward, T + 1
    "notebook": (1004, 512, 256, 2048, 17),
    "small": (34, 192, 64, 64, 6),
}


def step_ms(size, batch, blocks, calls):
    V, D, W, F, T1 = SIZES[size]
    words = {"<NULL>": 0, "<START>": 1, **{f"w{i}": i for i in range(2, V)}}
    np.random.seed(0)
    model = CaptioningTransformer(words, D, W, num_heads=2, num_layers=2, max_length=30,
                                  dim_feedforward=F)
    rng = np.random.default_rng(0)
    features = rng.standard_normal((batch, D)).astype(np.float32)
    captions = rng.integers(2, V, (batch, T1))
    captions[:, 0] = 1
    for _ in range(2):
        model.loss(features, captions)
    best = float("inf")
    for _ in range(blocks):
        start = time.thread_time()
        for _ in range(calls):
            model.loss(features, captions)
        best = min(best, (time.thread_time() - start) / calls)
    return best * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=25)
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--calls", type=int, default=5)
    args = parser.parse_args()
    for size in SIZES:
        ms = step_ms(size, args.batch, args.blocks, args.calls)
        print(f"{size:9s} batch {args.batch}: loss and gradients {ms:.1f} ms")


if __name__ == "__main__":
    main()
