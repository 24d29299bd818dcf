"""Sweep graphnet's float32 conv passes over a grid of layer shapes, against PyTorch.

    OMP_NUM_THREADS=1 python benchmarks/bench_conv_sweep.py [--batch 64] [--repeats 5]
        [--kernels 3s1,3s2,5,1,7,3v,5v] [--sizes 32,16,8,7,14] [--channels 3,8,...,128]
        [--csv out.csv] [--compare before.csv] [--flagged-only] [--peer-winograd off]

Each pass of a float32 conv (forward: _C.conv_forward; dx and dw separately:
_C.conv_backward(..., need_dx=..., need_dw=...), dw including db) is timed on one thread
in the process's CPU time (time.process_time), in turns with PyTorch in the same process
(torch.set_num_threads(1); torch.nn.functional.conv2d, and
torch.ops.aten.convolution_backward asked for that one gradient and the bias's); medians
of --repeats rounds after a warm-up. GFLOP/s count 2*N*F*C*HH*WW*Ho*Wo per pass (padding
zeros included, db ignored).

The grid: kernels 3x3 stride 1 and stride 2 (pad 1), 5x5 (pad 2), 1x1 (pad 0), 7x7
(stride 1, pad 3), and on request "valid" 3x3 and 5x5 layers (3v, 5v: pad 0) and other
strides (5s2: 5x5 stride 2 pad 2, 3s3, 1s2, 1s3, 1s4, 2s3, 3s4, 7s2: kernel, stride, pad
(kernel - 1) // 2) and non-overlapping "patchify" layers (2s2, 3s3v, 4s4, 8s8: kernel =
stride, pad 0); square
images of 32, 16, 8, 7, 14 pixels; channel pairs (C -> F) with F in --channels and C = F,
F / 2 and 2 F where those are in --channels too, and first layers 3 -> F (forward and dw
only, as a net's first layer needs no dx). Past the first layer, 7x7 layers on up to 16
channels and 5x5 on up to 64 only in the default grid (the sizes nets use them at); a
--channels list given is swept whole for every kernel.

A pass is flagged when it is slower than PyTorch's ("slow": graphnet / PyTorch time
> 1) or runs at under --cliff (default 0.6) times the median rate of its neighbours in
the grid: the same pass and kernel with the next channel pair below and above (in the
order of C * F) at the same image size, and the next image sizes at the same channels
("cliff"). --compare prints, for each pass also in an earlier --csv, the old and new
graphnet times. --peer-winograd MODE also times each pass with Winograd switched to MODE
(_C.set_winograd_conv: off, auto, always), in the same turns, and prints its ms and
graphnet's time / its time. What the sweep found, and the table it gave:
docs/performance/kernels.md ("float32 conv passes across layer shapes").
"""
import argparse
import csv

import numpy as np
from bench_conv import cpu_medians, pass_functions

from graphnet.kernels import _C

try:
    import torch
except ImportError:
    torch = None

KERNELS = {  # name: (kernel, stride, pad)
    "3s1": (3, 1, 1), "3s2": (3, 2, 1), "5": (5, 1, 2), "1": (1, 1, 0), "7": (7, 1, 3),
    "3v": (3, 1, 0), "5v": (5, 1, 0), "5s2": (5, 2, 2), "3s3": (3, 3, 1), "1s2": (1, 2, 0),
    "1s3": (1, 3, 0), "1s4": (1, 4, 0), "2s3": (2, 3, 0), "3s4": (3, 4, 1), "7s2": (7, 2, 3),
    "2s2": (2, 2, 0), "3s3v": (3, 3, 0), "4s4": (4, 4, 0), "8s8": (8, 8, 0)}
DEFAULT_KERNELS = "3s1,3s2,5,1,7"
DEFAULT_CHANNELS = "3,8,12,16,24,32,48,64,96,128"
KERNEL_MAX_CHANNELS = {"7": 16, "5": 64, "5v": 64}
PASSES = ("forward", "dx", "dw")


def channel_pairs(channels):
    """(C, F) pairs: C = F, F / 2, 2 F within channels, and 3 -> F first layers."""
    pairs = set()
    wide = [c for c in channels if c != 3]
    for f in wide:
        for c in (f, f // 2 if f % 2 == 0 else None, 2 * f):
            if c in wide:
                pairs.add((c, f))
        if 3 in channels:
            pairs.add((3, f))
    return sorted(pairs, key=lambda cf: (cf[0] * cf[1], cf))


def with_winograd(mode, fn):
    """fn run with Winograd switched to mode, back to 'auto' after."""
    def run():
        _C.set_winograd_conv(mode)
        try:
            return fn()
        finally:
            _C.set_winograd_conv("auto")
    return run


def time_passes(rng, N, C, H, F, kernel, stride, pad, repeats, peer_winograd=None):
    """{pass: (graphnet s, torch s, GFLOP, peer s)} of one layer's passes (no dx for C = 3);
    peer: graphnet with Winograd switched to peer_winograd (nan without)."""
    x = rng.standard_normal((N, C, H, H), dtype=np.float32)
    w = (rng.standard_normal((F, C, kernel, kernel)) / np.sqrt(C * kernel * kernel)).astype(
        np.float32)
    b = np.zeros(F, np.float32)
    out_shape = _C.conv_forward(x[:1], w, b, stride, pad).shape
    dout = rng.standard_normal((N,) + out_shape[1:], dtype=np.float32)
    gflop = 2 * N * F * C * kernel * kernel * out_shape[2] * out_shape[3] / 1e9
    ours, theirs = pass_functions(x, w, b, dout, stride, pad)
    result = {}
    for name in PASSES:
        if name == "dx" and C == 3:
            continue
        fns = [ours[name]] + ([theirs[name]] if theirs else [])
        if peer_winograd:
            fns.append(with_winograd(peer_winograd, ours[name]))
        times = cpu_medians(fns, repeats)
        result[name] = (times[0], times[1] if theirs else float("nan"), gflop,
                        times[-1] if peer_winograd else float("nan"))
    return result


def layer_text(r):
    return f"{r['kernel']:<7}{str(r['C']) + '->' + str(r['F']):<9}{r['H']:>4}{r['pass']:>9}"


def row_text(r):
    peer = (f"{r['peer_ms']:>10.3f}{r['ours_ms'] / r['peer_ms']:>7.2f}"
            if r["peer_ms"] == r["peer_ms"] else "")
    return (f"{layer_text(r)}{r['ours_ms']:>10.3f}{r['torch_ms']:>10.3f}{r['gflops']:>11.1f}"
            f"{r['torch_gflops']:>11.1f}{r['ratio']:>7.2f}{peer}")


def flag_rows(rows, cliff):
    """Adds 'flags' to each row: 'slow' (behind PyTorch) and 'cliff' (vs its neighbours)."""
    by_key = {(r["kernel"], r["pass"], r["H"], r["C"], r["F"]): r for r in rows}
    for r in rows:
        flags = []
        if r["ratio"] > 1.0:
            flags.append("slow")
        same_pass = [o for o in rows if (o["kernel"], o["pass"]) == (r["kernel"], r["pass"])]
        same_size = sorted((o for o in same_pass if o["H"] == r["H"]),
                           key=lambda o: (o["C"] * o["F"], o["C"], o["F"]))
        i = same_size.index(r)
        neighbours = same_size[max(0, i - 1):i] + same_size[i + 1:i + 2]
        sizes = sorted({o["H"] for o in same_pass})
        j = sizes.index(r["H"])
        for h in sizes[max(0, j - 1):j] + sizes[j + 1:j + 2]:
            other = by_key.get((r["kernel"], r["pass"], h, r["C"], r["F"]))
            if other is not None:
                neighbours.append(other)
        if neighbours and r["gflops"] < cliff * float(np.median([o["gflops"] for o in neighbours])):
            flags.append("cliff")
        r["flags"] = ",".join(flags)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--kernels", default=DEFAULT_KERNELS,
                        help="of " + ", ".join(KERNELS) + " (3s2: 3x3 stride 2)")
    parser.add_argument("--sizes", default="32,16,8,7,14", help="image heights (= widths)")
    parser.add_argument("--channels", help="default 3,8,12,16,24,32,48,64,96,128, with "
                        "7x7 and 5x5 layers capped as above")
    parser.add_argument("--passes", default="forward,dx,dw")
    parser.add_argument("--cliff", type=float, default=0.6,
                        help="flag a rate under this share of its neighbours' median")
    parser.add_argument("--csv", help="write every pass's numbers to this file")
    parser.add_argument("--compare", help="a --csv of an earlier run: print old / new times")
    parser.add_argument("--flagged-only", action="store_true", help="print flagged rows only")
    parser.add_argument("--peer-winograd", choices=("off", "auto", "always"),
                        help="also time each pass with Winograd switched to this, in turns")
    args = parser.parse_args()
    _C.set_num_threads(1)
    if torch is not None:
        torch.set_num_threads(1)
    wanted = set(args.passes.split(","))
    channels = [int(c) for c in (args.channels or DEFAULT_CHANNELS).split(",")]
    max_channels = KERNEL_MAX_CHANNELS if args.channels is None else {}
    rng = np.random.default_rng(0)
    rows = []
    print(f"float32 conv passes, batch {args.batch}, one thread, CPU time, medians of "
          f"{args.repeats}; torch {torch.__version__ if torch is not None else 'not installed'}")
    print(f"{'kernel':<7}{'C->F':<9}{'H':>4}{'pass':>9}{'ours ms':>10}{'torch ms':>10}"
          f"{'ours GF/s':>11}{'torch GF/s':>11}{'ratio':>7}"
          + (f"{'peer ms':>10}{'/peer':>7}" if args.peer_winograd else ""), flush=True)
    for name in args.kernels.split(","):
        kernel, stride, pad = KERNELS[name]
        for H in (int(h) for h in args.sizes.split(",")):
            if kernel > H + 2 * pad:
                continue  # (an 8x8 patch on 7 x 7 pixels)
            for C, F in channel_pairs(channels):
                if C != 3 and max(C, F) > max_channels.get(name, max(channels)):
                    continue
                for p, (ours, theirs, gflop, peer) in time_passes(
                        rng, args.batch, C, H, F, kernel, stride, pad, args.repeats,
                        args.peer_winograd).items():
                    if p not in wanted:
                        continue
                    row = {"kernel": name, "C": C, "F": F, "H": H, "pass": p, "ours_ms": 1e3 * ours,
                           "torch_ms": 1e3 * theirs, "gflops": gflop / ours,
                           "torch_gflops": gflop / theirs, "ratio": ours / theirs,
                           "peer_ms": 1e3 * peer}
                    rows.append(row)
                    if not args.flagged_only:
                        print(row_text(row), flush=True)
    flag_rows(rows, args.cliff)
    flagged = [r for r in rows if r["flags"]]
    print(f"\n{len(flagged)} of {len(rows)} passes flagged (slow: behind PyTorch; cliff: under "
          f"{args.cliff} of its neighbours' rate)")
    for r in flagged:
        print(f"{row_text(r)}  {r['flags']}")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    if args.compare:
        with open(args.compare) as f:
            old = {(r["kernel"], int(r["C"]), int(r["F"]), int(r["H"]), r["pass"]): r
                   for r in csv.DictReader(f)}
        print("\nagainst --compare: ms old / new (ratio to PyTorch old / new)")
        for r in rows:
            o = old.get((r["kernel"], r["C"], r["F"], r["H"], r["pass"]))
            if o is not None:
                print(f"{layer_text(r)}{float(o['ours_ms']):>10.3f} / {r['ours_ms']:<8.3f}"
                      f"({float(o['ratio']):.2f} / {r['ratio']:.2f})")


if __name__ == "__main__":
    main()
