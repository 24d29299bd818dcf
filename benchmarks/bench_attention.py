"""Scaled dot-product attention over (batch, head) pairs: graphnet's kernel against PyTorch.

    python benchmarks/bench_attention.py [--sizes N,H,T,d ...] [--dtype float32] [--causal]
                                         [--calls 50] [--rounds 5]

q, k and v as a head split makes them: (N, T, H * d) projections viewed as (N, H, T, d)
(not contiguous). Times the forward (graphnet: rnn_layers.attention_forward, which also
keeps the weights for the backward; PyTorch: F.scaled_dot_product_attention under
no_grad) and the backward (graphnet: attention_backward; PyTorch: the forward with
autograd and its backward, minus the forward without) on one thread, the two taking turns
in blocks of --calls calls, process CPU time, the best block of --rounds. PyTorch runs in
this process (no numpy interplay to isolate: its tensors view the same arrays).
"""
import argparse
import time

import numpy as np

from graphnet import rnn_layers as R
from graphnet.kernels import _C

DEFAULT_SIZES = ["1,4,32,16", "32,4,32,16", "64,8,64,32", "8,8,128,64", "4,2,256,32"]


def best_ms(fn, calls, rounds):
    fn()
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(calls):
            fn()
        best = min(best, (time.process_time() - start) / calls)
    return 1e3 * best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="*", default=DEFAULT_SIZES, help="N,H,T,d each")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--causal", action="store_true")
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    import torch
    from torch.nn import functional as F

    _C.set_num_threads(1)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    print("N, H, T, d | graphnet fwd / bwd ms | torch fwd / bwd ms | ratio fwd / bwd")
    for size in args.sizes:
        N, H, T, d = (int(s) for s in size.split(","))
        q, k, v, dout = (
            rng.standard_normal((N, T, H * d)).astype(args.dtype).reshape(N, T, H, d)
            .transpose(0, 2, 1, 3) for _ in range(4)
        )
        mask = np.tril(np.ones((T, T), bool)) if args.causal else None
        _, cache = R.attention_forward(q, k, v, mask)
        tq, tk, tv = (torch.from_numpy(a).requires_grad_() for a in (q, k, v))
        tdout = torch.from_numpy(dout)

        def torch_forward():
            with torch.no_grad():
                F.scaled_dot_product_attention(tq, tk, tv, is_causal=args.causal)

        def torch_both():
            F.scaled_dot_product_attention(tq, tk, tv, is_causal=args.causal).backward(tdout)

        times = {}
        for _ in range(2):  # in turns
            for name, fn in (("g fwd", lambda: R.attention_forward(q, k, v, mask)),
                             ("g bwd", lambda: R.attention_backward(dout, cache)),
                             ("t fwd", torch_forward), ("t both", torch_both)):
                times[name] = min(times.get(name, np.inf), best_ms(fn, args.calls, args.rounds))
        t_bwd = times["t both"] - times["t fwd"]
        print(f"{N}, {H}, {T}, {d} | {times['g fwd']:.3f} / {times['g bwd']:.3f} | "
              f"{times['t fwd']:.3f} / {t_bwd:.3f} | {times['g fwd'] / times['t fwd']:.2f} / "
              f"{times['g bwd'] / t_bwd:.2f}")


if __name__ == "__main__":
    main()
