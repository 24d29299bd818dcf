"""The max pool's kernels (_C.max_pool_forward and _C.max_pool_backward) on their own, per
plane, on small and larger planes and the windows students pool with; with --average the
average pool's (_C.avg_pool_forward and _C.avg_pool_backward).

    python benchmarks/bench_max_pool.py [--planes 5x5,7x9,10x10] [--dtypes float32,float64]
        [--windows 3x3s1,2x2s1] [--channels 16] [--torch] [--average]

One thread, the process's CPU time, the fastest of `--rounds` blocks of `--calls` calls,
ns a plane of x (64, C, H, W): standard normal x, and dout for the forward's winners; a
copy of x (the bytes the forward reads and the backward writes at least), and with
--torch PyTorch's max_pool2d (avg_pool2d) forward and backward (the gradient of x alone)
in the same run.
"""

import argparse
import os
import sys

import numpy as np

from graphnet.kernels import _C

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_attention import best_ms  # noqa: E402

WINDOWS = "2x2s2,3x3s2,2x2s1,3x3s1,3x2s3"  # (height)x(width)s(stride)
ROW = "{:<8} {:<8} {:<8} {:>12} {:>13} {:>9} {:>12} {:>13}"


def window(text):
    """'3x2s1' -> (3, 2, 1)"""
    size, stride = text.split("s")
    return (*map(int, size.split("x")), int(stride))


def torch_calls(x, dout, ph, pw, stride, average):
    """PyTorch's forward and backward (the gradient of x) of the same pooling."""
    import torch

    torch.set_num_threads(1)
    pool = torch.nn.functional.avg_pool2d if average else torch.nn.functional.max_pool2d
    tx = torch.from_numpy(x).requires_grad_()
    ty = pool(tx, (ph, pw), stride)
    td = torch.from_numpy(dout)

    def forward():
        with torch.no_grad():
            pool(tx, (ph, pw), stride)

    def backward():
        torch.autograd.grad(ty, tx, td, retain_graph=True)

    return forward, backward


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--planes", default="5x5,7x7,7x9,8x8,10x10,16x16")
    parser.add_argument("--dtypes", default="float32")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--windows", default=WINDOWS)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--torch", action="store_true")
    parser.add_argument("--average", action="store_true", help="the average pool's kernels")
    args = parser.parse_args()
    _C.set_num_threads(1)
    rng = np.random.default_rng(0)
    planes = 64 * args.channels
    print(
        ROW.format(
            "plane",
            "window",
            "dtype",
            "forward ns",
            "backward ns",
            "copy ns",
            "torch fwd ns",
            "torch bwd ns",
        )
    )
    for plane in args.planes.split(","):
        H, W = map(int, plane.split("x"))
        for ph, pw, stride in map(window, args.windows.split(",")):
            if ph > H or pw > W:
                continue
            for dtype in args.dtypes.split(","):
                x = rng.standard_normal((64, args.channels, H, W)).astype(dtype)
                if args.average:
                    dout = rng.standard_normal(_C.avg_pool_forward(x, ph, pw, stride).shape)
                    dout = dout.astype(dtype)
                    calls = [
                        lambda: _C.avg_pool_forward(x, ph, pw, stride),
                        lambda: _C.avg_pool_backward(dout, H, W, ph, pw, stride),
                    ]
                else:
                    out, winners = _C.max_pool_forward(x, ph, pw, stride, False)
                    dout = rng.standard_normal(out.shape).astype(dtype)
                    calls = [
                        lambda: _C.max_pool_forward(x, ph, pw, stride, False),
                        lambda: _C.max_pool_backward(dout, winners, H, W),
                    ]
                calls.append(x.copy)
                if args.torch:
                    calls += torch_calls(x, dout, ph, pw, stride, args.average)
                times = [best_ms(call, args.calls, args.rounds) for call in calls]
                per_plane = [f"{1e6 * ms / planes:.1f}" for ms in times] + ["", ""]
                print(ROW.format(plane, f"{ph}x{pw} s{stride}", dtype, *per_plane[:5]))


if __name__ == "__main__":
    main()
