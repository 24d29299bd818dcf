"""Winograd's float32 passes against another setting, layer by layer.

    python benchmarks/bench_winograd.py [--kernel 3] [--pad 1] [--batch 64] [--sizes 32,16,8,7,4]
        [--channels 16,32,64,128,256 | --pairs 8:33,31:18] [--repeats 5] [--a always,4x4]
        [--b always,2x2] [--passes forward,dx]

Times the --passes of k x k layers (stride 1, pad --pad, by default (k - 1) / 2; sizes
are the images'): forward
(_C.conv_forward), dx (_C.conv_backward(..., need_dw=False)) and dw
(_C.conv_backward(..., need_dx=False), db included), with Winograd switched to setting A
and to setting B
(_C.set_winograd_conv(mode, tiles): e.g. 'always,4x4' against 'always,2x2' for F(4x4,
3x3) against F(2x2, 3x3) on every 3x3 layer, or 'always' against 'off' for Winograd
against the direct and tap kernels), on one thread, in the process's CPU time, in turns
(medians of --repeats after a warm-up), and prints the ms of each and A / B. Channel
pairs C -> F: F in --channels with C = F, F / 2 and 2 F where those are too, or exactly
--pairs (C:F each). A size is a square image's side or H x W (26x39).
'auto' against 'off' times the default paths against the kernels without Winograd. Wide layers
take fewer images (the batch scaled down to the work of 32 -> 64 channels on 16 x 16,
at least 2, or 1 at batch 1), so that 256 channels on 32 x 32 take about as long as the
zoo's layers.
"""

import argparse

import numpy as np
from bench_conv import cpu_medians

from graphnet.kernels import _C


def with_winograd(setting, fn):
    def run():
        _C.set_winograd_conv(*setting)
        try:
            fn()
        finally:
            _C.set_winograd_conv("auto")

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kernel", type=int, default=3)
    parser.add_argument("--pad", type=int, default=None, help="(k - 1) / 2 if not given")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--sizes", default="32,16,8,7,4")
    parser.add_argument("--channels", default="16,32,64,128,256")
    parser.add_argument("--pairs", help="C:F[,C:F...], instead of --channels' pairs")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--a", default="always,4x4", help="mode[,tiles] of the first setting")
    parser.add_argument("--b", default="always,2x2", help="mode[,tiles] of the second")
    parser.add_argument("--passes", default="forward,dx", help="of forward, dx, dw")
    args = parser.parse_args()
    a, b = (tuple(s.split(",")) for s in (args.a, args.b))
    channels = [int(c) for c in args.channels.split(",")]
    pairs = [(c, f) for f in channels for c in (f // 2, f, 2 * f) if c in channels]
    if args.pairs:
        pairs = [tuple(int(n) for n in pair.split(":")) for pair in args.pairs.split(",")]
    k = args.kernel
    pad = (k - 1) // 2 if args.pad is None else args.pad
    _C.set_num_threads(1)
    rng = np.random.default_rng(0)
    print(
        f"{k}x{k} pad {pad}, one thread, CPU time, medians of {args.repeats}: ms with "
        f"{args.a} / {args.b}"
    )
    passes = args.passes.split(",")
    columns = "".join(f"  {p:>17} {'ratio':>6}" for p in passes)
    print(f"{'C -> F':>12} {'H x W':>7} {'N':>4}" + columns)
    for size in args.sizes.split(","):
        H, W = (int(n) for n in size.split("x")) if "x" in size else (int(size),) * 2
        for C, F in pairs:
            Ho, Wo = H + 2 * pad - k + 1, W + 2 * pad - k + 1
            if min(Ho, Wo) < 1:
                continue
            scaled = args.batch * 32 * 64 * 16 * 16 // (C * F * H * W)
            N = min(args.batch, max(min(2, args.batch), scaled))
            x = rng.standard_normal((N, C, H, W), dtype=np.float32)
            w = (rng.standard_normal((F, C, k, k)) / np.sqrt(C * k * k)).astype(np.float32)
            bias = np.zeros(F, np.float32)
            dout = rng.standard_normal((N, F, Ho, Wo), dtype=np.float32)

            fns = {
                "forward": lambda: _C.conv_forward(x, w, bias, 1, pad),
                "dx": lambda: _C.conv_backward(dout, x, w, 1, pad, need_dw=False),
                "dw": lambda: _C.conv_backward(dout, x, w, 1, pad, need_dx=False),
            }
            runs = [with_winograd(s, fns[p]) for p in passes for s in (a, b)]
            t = cpu_medians(runs, args.repeats)
            print(
                f"{C:>5} -> {F:<4} {f'{H}x{W}':>7} {N:>4}"
                + "".join(
                    f"  {t[i] * 1e3:8.3f} {t[i + 1] * 1e3:8.3f} {t[i] / t[i + 1]:6.2f}"
                    for i in range(0, len(t), 2)
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
