"""Training speed of an LSTM language model: graphnet's rnn_layers against PyTorch CPU.

    python benchmarks/bench_lstm.py [--steps 15] [--threads N] [--sizes N,T,V,D,H ...]
    python benchmarks/bench_lstm.py --passes [--threads N] [--sizes N,T,V,D,H ...]

One training step, the same in both: word embedding (V x D), an LSTM over T steps with H
hidden units from a zero state, the affine map to V scores at every step, softmax
cross-entropy summed over the steps and averaged over the N sequences, the backward pass,
and an Adam update of every parameter; float32, random words. PyTorch runs nn.Embedding,
nn.LSTM (batch_first), nn.Linear, F.cross_entropy and torch.optim.Adam on the same number
of threads, in a process of its own (see peer.py). Prints the median step of
each (the two take turns in blocks of steps, so a slow spell of the shared machine hits
both) and graphnet / PyTorch (goal <= 1.0x), in wall-clock time and in each process's
CPU time. On one thread the CPU time leaves out the
spells when another job had the core, so on a busy machine it is the steadier of the two;
on more threads it also counts the time idle threads spin, so read the wall time there.

--passes times instead graphnet's lstm_forward and lstm_backward alone on the step's
inputs (V unused): us per call in the calling thread's CPU time, the minimum of 7 blocks
of calls, the two in turns.
"""
import argparse
import functools
import importlib.metadata
import importlib.util
import os
import time

import numpy as np

from graphnet import optim
from graphnet import rnn_layers as R
from graphnet.kernels import _C
from peer import CLOCKS, Peer, timed_calls  # noqa: E402  (same folder)

HAVE_TORCH = importlib.util.find_spec("torch") is not None
# (N, T, V, D, H): a character model of the size one trains on a laptop (the zoo's lstm_lm)
# at batches 32 and 64, and two larger ones (word-level vocabulary, wider LSTM).
DEFAULT_SIZES = ["32,50,65,32,128", "64,50,65,32,128", "64,50,80,64,256", "64,50,1000,128,512"]


def language_model_data(N, T, V, seed=0):
    rng = np.random.default_rng(seed)
    words = rng.integers(V, size=(N, T + 1))
    return words[:, :-1], words[:, 1:]  # each step predicts the next word


def graphnet_step(N, T, V, D, H):
    rng = np.random.default_rng(1)
    params = {"W_embed": rng.standard_normal((V, D)), "Wx": rng.standard_normal((D, 4 * H)),
              "Wh": rng.standard_normal((H, 4 * H)), "b": np.zeros(4 * H),
              "W_vocab": rng.standard_normal((H, V)), "b_vocab": np.zeros(V)}
    for name, fan_in in (("Wx", D), ("Wh", H), ("W_vocab", H)):
        params[name] /= np.sqrt(fan_in)
    params = {name: p.astype(np.float32) for name, p in params.items()}
    configs = {name: {"learning_rate": 1e-3} for name in params}
    x, y = language_model_data(N, T, V)
    mask = np.ones((N, T), dtype=bool)
    h0 = np.zeros((N, H), dtype=np.float32)

    def step():
        p = params
        words, embed_cache = R.word_embedding_forward(x, p["W_embed"])
        h, lstm_cache = R.lstm_forward(words, h0, p["Wx"], p["Wh"], p["b"])
        scores, vocab_cache = R.temporal_affine_forward(h, p["W_vocab"], p["b_vocab"])
        _, dscores = R.temporal_softmax_loss(scores, y, mask)
        grads = {}
        dh, grads["W_vocab"], grads["b_vocab"] = R.temporal_affine_backward(dscores,
                                                                            vocab_cache)
        dwords, _, grads["Wx"], grads["Wh"], grads["b"] = R.lstm_backward(dh, lstm_cache)
        grads["W_embed"] = R.word_embedding_backward(dwords, embed_cache)
        for name in params:
            params[name], configs[name] = optim.adam(params[name], grads[name], configs[name])
    return step


def lstm_passes_us(N, T, D, H, blocks=7):
    """(forward, backward) us per call of lstm_forward and lstm_backward, float32: the
    minimum over `blocks` blocks of calls in the thread's CPU time, the two in turns."""
    rng = np.random.default_rng(1)
    x, h0, b = rng.standard_normal((N, T, D)), np.zeros((N, H)), np.zeros(4 * H)
    Wx = rng.standard_normal((D, 4 * H)) / np.sqrt(D)
    Wh = rng.standard_normal((H, 4 * H)) / np.sqrt(H)
    dh = rng.standard_normal((N, T, H))
    x, h0, Wx, Wh, b, dh = (a.astype(np.float32) for a in (x, h0, Wx, Wh, b, dh))
    _, cache = R.lstm_forward(x, h0, Wx, Wh, b)
    passes = (lambda: R.lstm_forward(x, h0, Wx, Wh, b), lambda: R.lstm_backward(dh, cache))
    calls = max(3, 20000 // (N * H))
    best = [float("inf")] * 2
    for _ in range(blocks):
        for i, run in enumerate(passes):
            start = time.thread_time()
            for _ in range(calls):
                run()
            best[i] = min(best[i], (time.thread_time() - start) / calls * 1e6)
    return tuple(best)


def torch_step(N, T, V, D, H):
    import torch
    torch.manual_seed(1)
    embed, lstm = torch.nn.Embedding(V, D), torch.nn.LSTM(D, H, batch_first=True)
    vocab = torch.nn.Linear(H, V)
    parameters = [*embed.parameters(), *lstm.parameters(), *vocab.parameters()]
    adam = torch.optim.Adam(parameters, lr=1e-3)
    x, y = (torch.from_numpy(a) for a in language_model_data(N, T, V))
    state = (torch.zeros(1, N, H), torch.zeros(1, N, H))

    def step():
        adam.zero_grad(set_to_none=True)
        h, _ = lstm(embed(x), state)
        scores = vocab(h)
        loss = torch.nn.functional.cross_entropy(scores.reshape(N * T, V), y.reshape(N * T),
                                                 reduction="sum") / N
        loss.backward()
        adam.step()
    return step


def torch_contenders(*size):
    """{"torch": its step} (built in the peer process)."""
    return {"torch": torch_step(*size)}


def medians_in_turns(blocks, steps, turn, warmup=3):
    """{name: (wall ms, CPU ms)}: medians of `steps` calls of each of the blocks {name:
    run(calls) -> each call's (wall, cpu) seconds}, in turns of `turn` calls."""
    for run in blocks.values():
        run(warmup)
    times = {name: [] for name in blocks}
    while any(len(t) < steps for t in times.values()):
        for name, run in blocks.items():
            times[name] += run(min(turn, steps - len(times[name])))
    return {name: 1e3 * np.median(t, axis=0) for name, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--threads", type=int, default=_C.get_num_threads())
    parser.add_argument("--sizes", nargs="+", default=DEFAULT_SIZES, metavar="N,T,V,D,H")
    parser.add_argument("--passes", action="store_true",
                        help="time lstm_forward and lstm_backward alone (no PyTorch)")
    args = parser.parse_args()
    _C.set_num_threads(args.threads)
    if args.passes:
        print(f"lstm_forward | lstm_backward, float32, {args.threads} thread(s), us per call")
        for text in args.sizes:
            N, T, _, D, H = (int(v) for v in text.split(","))
            forward, backward = lstm_passes_us(N, T, D, H)
            print(f"    N={N} T={T} D={D} H={H}:  {forward:8.1f} | {backward:8.1f}")
        return
    peer = Peer(args.threads, "both") if HAVE_TORCH else None
    versions = f"numpy {np.__version__}, torch " + (
        importlib.metadata.version("torch") if HAVE_TORCH else "absent")
    print(f"{args.threads} of {os.cpu_count()} cores for each; {versions}")
    print("LSTM language-model training step, float32, median ms: wall clock | CPU time")
    for text in args.sizes:
        N, T, V, D, H = (int(v) for v in text.split(","))
        blocks = {"graphnet": functools.partial(timed_calls, graphnet_step(N, T, V, D, H),
                                                clock=CLOCKS["both"])}
        if peer is not None:
            peer.build(torch_contenders, N, T, V, D, H)
            blocks["torch"] = functools.partial(peer.block, "torch")
        medians = medians_in_turns(blocks, args.steps, turn=max(1, args.steps // 3))
        columns = []
        for clock in (0, 1):  # wall, cpu
            ours = medians["graphnet"][clock]
            theirs = medians["torch"][clock] if "torch" in medians else float("nan")
            columns.append(f"graphnet {ours:7.1f}  PyTorch {theirs:7.1f}  {ours / theirs:.2f}x")
        print(f"    N={N} T={T} V={V} D={D} H={H}:  " + "  |  ".join(columns))
    if peer is not None:
        peer.close()
    print("    (goal: graphnet / PyTorch <= 1.0x)")


if __name__ == "__main__":
    main()
