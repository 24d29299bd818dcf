"""The course's CaptioningRNN at the course's sizes against a PyTorch twin: the training
step and greedy sampling.

    python benchmarks/bench_captioning.py [--cell rnn|lstm] [--batches 25,50]
                                          [--optim adam] [--dtype float32] [--rounds 3]

The notebooks' model: a vocabulary of V = 1004 words, image features of D = 512, word
vectors of W = 256, a hidden state of H = 512, captions of T = 16 words (17 with <START>;
random lengths 8-16, <NULL> after). Each, on one thread, CPU time, PyTorch in a process of
its own (peer.py), in turns of blocks of about 0.2 s (bench_zoo's medians_in_turns):

- step: graphnet's `model.loss(features, captions)` and the update rule on each param (as
  the CaptioningSolver does), against nn.Linear / nn.Embedding / nn.RNN (tanh) or nn.LSTM
  / nn.Linear with the masked cross-entropy summed and divided by N, and torch.optim's rule;
- sample: `model.sample(features, max_length=T)` (a graph run per word: the rnn_step or
  lstm_step gate and the affine to the scores, then numpy's argmax) against the same greedy
  loop of the PyTorch modules under torch.inference_mode().
"""
import argparse
import functools
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_zoo import (TORCH_RULES, medians_in_turns, torch_optimizer,  # noqa: E402
                       training_step)
from peer import Peer, timed_calls  # noqa: E402

V, D, W, H, T = 1004, 512, 256, 512, 16
START, NULL = 1, 0
RATE = 5e-3  # the notebooks' learning rate


def captions_of(N, dtype, seed=0):
    """(features (N, D), captions (N, T + 1)): <START>, then 8-16 random words, <NULL> after."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((N, D)).astype(dtype)
    captions = rng.integers(3, V, size=(N, T + 1))
    captions[:, 0] = START
    for row, length in zip(captions, rng.integers(9, T + 2, size=N)):
        row[length:] = NULL
    return features, captions


def graphnet_contenders(N, cell, dtype, rule):
    from graphnet.models import CaptioningRNN

    words = {"<NULL>": NULL, "<START>": START, "<END>": 2, **{f"w{i}": i for i in range(3, V)}}
    model = CaptioningRNN(words, input_dim=D, wordvec_dim=W, hidden_dim=H, cell_type=cell,
                          dtype=dtype)
    features, captions = captions_of(N, dtype)
    return {"graphnet step": training_step(model, (features, captions), rule, RATE),
            "graphnet sample": lambda: model.sample(features, max_length=T)}


def torch_contenders(N, cell, dtype, rule):
    import torch
    from torch import nn

    class Captioner(nn.Module):
        def __init__(self):
            super().__init__()
            self.project = nn.Linear(D, H)
            self.embed = nn.Embedding(V, W)
            self.recurrent = (nn.LSTM if cell == "lstm" else nn.RNN)(W, H, batch_first=True)
            self.vocab = nn.Linear(H, V)

        def start(self, features):
            h0 = self.project(features)[None]
            return (h0, torch.zeros_like(h0)) if cell == "lstm" else h0

        def forward(self, features, words):
            return self.vocab(self.recurrent(self.embed(words), self.start(features))[0])

    net = Captioner().to(getattr(torch, dtype))
    features, captions = (torch.from_numpy(a) for a in captions_of(N, dtype))
    words_in, words_out = captions[:, :-1], captions[:, 1:]
    counted = (words_out != NULL).reshape(-1)
    optimizer = torch_optimizer(torch, rule, net.parameters(), lr=RATE)

    def step():
        optimizer.zero_grad(set_to_none=True)
        scores = net(features, words_in).reshape(-1, V)
        losses = nn.functional.cross_entropy(scores, words_out.reshape(-1), reduction="none")
        (losses * counted).sum().div(N).backward()
        optimizer.step()

    def sample():
        with torch.inference_mode():
            state = net.start(features)
            word = torch.full((N,), START, dtype=torch.long)
            for _ in range(T):
                h, state = net.recurrent(net.embed(word)[:, None], state)
                word = net.vocab(h[:, 0]).argmax(1)

    return {"torch step": step, "torch sample": sample}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cell", choices=("rnn", "lstm"), default="rnn")
    parser.add_argument("--batches", default="25,50")
    parser.add_argument("--optim", choices=tuple(TORCH_RULES), default="adam")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from graphnet.kernels import _C

    _C.set_num_threads(1)
    peer = Peer(1, "cpu")
    print(f"CaptioningRNN ({args.cell}, {args.dtype}, {args.optim}): V {V}, D {D}, W {W}, "
          f"H {H}, T {T}; 1 thread, CPU time, {args.rounds} rounds")
    for N in map(int, args.batches.split(",")):
        ours = graphnet_contenders(N, args.cell, args.dtype, args.optim)
        blocks = {name: functools.partial(timed_calls, run, clock=time.process_time)
                  for name, run in ours.items()}
        for name in peer.build(torch_contenders, N, args.cell, args.dtype, args.optim):
            blocks[name] = functools.partial(peer.block, name)
        ms = medians_in_turns(blocks, args.rounds, 0.2)
        print(f"N {N}: step {ms['graphnet step']:.2f} ms, PyTorch {ms['torch step']:.2f} "
              f"({ms['graphnet step'] / ms['torch step']:.2f}); sample {T} words "
              f"{ms['graphnet sample']:.2f} ms, PyTorch {ms['torch sample']:.2f} "
              f"({ms['graphnet sample'] / ms['torch sample']:.2f})", flush=True)
    peer.close()


if __name__ == "__main__":
    main()
