"""Each layer kind a student builds, over a grid of shapes off the zoo, against PyTorch
(issue 15: fast on any network, not only the tuned zoo shapes).

    python benchmarks/bench_layers.py [--kinds conv,pool,norm,dropout,affine,act,loss]
        [--only REGEX] [--rounds 5] [--block 0.004] [--slow 1.2] [--min-us 10]
        [--csv out.csv]

Each case is one gate in a graph of its own (its input and parameters held in the graph,
as a param, or a const where no gradient is wanted), timed
two ways against PyTorch's same layer on one thread (graphnet._C.set_num_threads(1),
torch.set_num_threads(1)), in the process's CPU time:
- train: forward + backward in train mode from a random upstream gradient on the layer's
  output (g.backward(out, grad=dout); out.backward(dout) with autograd), every gradient a
  layer inside a network needs (the input's too, except for a first conv layer on 1 or 3
  channels, as in a network);
- eval: forward in eval mode (g.eval(); g.forward(x=X); PyTorch under inference_mode).
The four take turns, each a block of calls of about --block CPU seconds, --rounds times;
the medians per call are printed with the ratios graphnet / PyTorch. A case is flagged
when a ratio exceeds --slow and graphnet takes --min-us longer (a graphnet call costs a
few us more than one PyTorch op: docs/performance/overhead.md; a network pays that once,
not per layer). The grid (see `cases`): conv with kernels 1, 3, 5, 7, stride
1 and 2, pad 0 and "same" (k // 2), on channels 1 to 100 and square, odd and non-square
images at batch 16, and a subset at batches 1 and 64 and in float64 (the course's dtype
for its checks), and a few shapes the grid leaves out (a 7x7 stride-2 stem, one-channel
inputs at batch 64, batch 256 on small images, 5x5 on 4 and 8 pixels, float64 5x5 and
7x7); max and average pooling (2x2 s2, 3x3 s2, 3x3 s1, global; average 2x2 s1 too) and the mean
over the image; batchnorm, spatial batchnorm, layernorm, groupnorm; dropout; affine with
odd sizes; relu, leaky relu, tanh, sigmoid, gelu; softmax and SVM losses; float32, and
float64 where the course uses it. What it found: docs/performance/kernels.md ("Layers off
the zoo against PyTorch").
"""
import argparse
import csv
import re
import statistics
import time

import numpy as np

import graphnet as gn
from graphnet.kernels import _C

BATCH = 16
F32, F64 = "float32", "float64"


class Case:
    """One layer: graphnet's gate built on x (and the params), PyTorch's on the tensors."""

    def __init__(self, kind, label, dtype, x_shape, ours, theirs, params=None, x_grad=True,
                 classes=None):
        self.kind, self.label, self.dtype, self.x_shape = kind, label, dtype, x_shape
        self.ours, self.theirs = ours, theirs
        self.params = params or {}
        self.x_grad = x_grad
        self.classes = classes  # a loss: the number of classes of its integer labels


def conv_cases():
    """Conv layers: (C, F, H, W) a network plausibly has, each with every kernel, stride and
    pad that fits, at batch 16; the common ones also at batches 1 and 64, and float64."""
    layers = [(1, 10, 28, 28), (3, 10, 32, 32), (3, 17, 13, 17), (10, 17, 15, 15),
              (17, 48, 13, 17), (48, 48, 7, 7), (48, 100, 15, 15), (100, 100, 7, 7)]
    max_channels = {5: 48, 7: 17}  # wider layers with such kernels are rare (and slow to time)
    for C, F, H, W in layers:
        for k in (1, 3, 5, 7):
            if max(C, F) > max_channels.get(k, 1000) or min(H, W) < k:
                continue
            for stride in (1, 2):
                for pad in sorted({0, k // 2}):
                    yield conv_case(BATCH, C, F, H, W, k, stride, pad, F32)
    for C, F, H, W in layers:
        for k, stride, pad in ((3, 1, 1), (3, 2, 1), (1, 1, 0), (5, 1, 2)):
            if max(C, F) > max_channels.get(k, 1000):
                continue
            for N in (1, 64):
                yield conv_case(N, C, F, H, W, k, stride, pad, F32)
            if C <= 48:
                yield conv_case(BATCH, C, F, H, W, k, stride, pad, F64)
    yield conv_case(100, 3, 25, 31, 31, 3, 2, 1, F64)  # the course's fast-layers check
    # What the grid leaves out: a 7x7 stride-2 stem on 3 channels, one-channel inputs at
    # batch 64, batch 256 on small images, 5x5 on 4 and 8 pixels, float64 5x5 and 7x7.
    for N, C, F, H, W, k, stride, pad, dtype in (
            (64, 3, 32, 48, 48, 7, 2, 3, F32), (16, 3, 17, 32, 32, 7, 2, 3, F32),
            (64, 1, 32, 28, 28, 3, 1, 1, F32), (64, 1, 16, 28, 28, 5, 1, 2, F32),
            (256, 16, 32, 8, 8, 3, 1, 1, F32), (256, 32, 64, 4, 4, 3, 1, 1, F32),
            (256, 10, 10, 7, 7, 1, 1, 0, F32), (64, 32, 32, 8, 8, 5, 1, 2, F32),
            (64, 64, 64, 4, 4, 5, 1, 2, F32), (16, 3, 16, 32, 32, 5, 1, 2, F64),
            (16, 3, 10, 32, 32, 7, 2, 3, F64), (16, 16, 16, 14, 14, 5, 1, 2, F64)):
        yield conv_case(N, C, F, H, W, k, stride, pad, dtype)


def conv_case(N, C, F, H, W, k, stride, pad, dtype):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((F, C, k, k)) / np.sqrt(C * k * k)
    return Case("conv", f"{C}->{F} {H}x{W} k{k} s{stride} p{pad} N{N}", dtype, (N, C, H, W),
                lambda g, x, p: g.conv(x, p["w"], p["b"], stride=stride, pad=pad),
                lambda tF, t, p: tF.conv2d(t, p["w"], p["b"], stride=stride, padding=pad),
                {"w": w, "b": np.zeros(F)}, x_grad=C > 3)


def pool_cases():
    for C, H, W in ((10, 28, 28), (17, 15, 15), (48, 13, 17), (100, 7, 7), (3, 32, 32)):
        for N in (1, BATCH, 64):
            shape, size = (N, C, H, W), f"{C}x{H}x{W} N{N}"
            for k, s in ((2, 2), (3, 2), (3, 1), (2, 1)):
                if (k, s) != (2, 1):
                    yield Case("max_pool", f"{k}x{k} s{s} {size}", F32, shape,
                               lambda g, x, p, k=k, s=s: g.max_pool(x, k, k, s),
                               lambda tF, t, p, k=k, s=s: tF.max_pool2d(t, k, s))
                yield Case("avg_pool", f"{k}x{k} s{s} {size}", F32, shape,
                           lambda g, x, p, k=k, s=s: g.avg_pool(x, k, k, s),
                           lambda tF, t, p, k=k, s=s: tF.avg_pool2d(t, k, s))
            yield Case("max_pool", f"global {size}", F32, shape,
                       lambda g, x, p, H=H, W=W: g.max_pool(x, H, W, 1),
                       lambda tF, t, p, H=H, W=W: tF.max_pool2d(t, (H, W), 1))
            yield Case("avg_pool", f"global {size}", F32, shape,
                       lambda g, x, p, H=H, W=W: g.avg_pool(x, H, W, 1),
                       lambda tF, t, p, H=H, W=W: tF.avg_pool2d(t, (H, W), 1))
            yield Case("mean_hw", size, F32, shape, lambda g, x, p: g.mean(x, axis=(2, 3)),
                       lambda tF, t, p: t.mean((2, 3)))


def affine_params(D, M):
    return {"w": np.random.default_rng(0).standard_normal((D, M)) / np.sqrt(D),
            "b": np.zeros(M)}


def norm_params(D):
    return {"gamma": np.ones(D), "beta": np.zeros(D)}


def batchnorm(tF, t, p):
    return tF.batch_norm(t, p["mean"], p["var"], p["gamma"], p["beta"], training=p["training"])


def norm_cases():
    for dtype in (F32, F64):
        for N, D in ((16, 17), (64, 100), (200, 100), (64, 1000), (1, 100)):
            if N > 1:  # batch statistics of one sample are undefined (PyTorch refuses)
                yield Case("batchnorm", f"{N}x{D}", dtype, (N, D),
                           lambda g, x, p: g.batchnorm(x, p["gamma"], p["beta"]), batchnorm,
                           norm_params(D))
            yield Case("layernorm", f"{N}x{D}", dtype, (N, D),
                       lambda g, x, p: g.layernorm(x, p["gamma"], p["beta"]),
                       lambda tF, t, p, D=D: tF.layer_norm(t, (D,), p["gamma"], p["beta"]),
                       norm_params(D))
        yield Case("layernorm", "16x17x48 (a sequence)", dtype, (16, 17, 48),
                   lambda g, x, p: g.layernorm(x, p["gamma"], p["beta"]),
                   lambda tF, t, p: tF.layer_norm(t, (48,), p["gamma"], p["beta"]),
                   norm_params(48))
    for N, C, H, W in ((16, 10, 28, 28), (16, 17, 15, 15), (64, 48, 13, 17), (16, 100, 7, 7),
                       (64, 3, 32, 32), (2, 48, 7, 7)):
        size = f"{N}x{C}x{H}x{W}"
        for dtype in (F32, F64):
            yield Case("spatial_batchnorm", size, dtype, (N, C, H, W),
                       lambda g, x, p: g.spatial_batchnorm(x, p["gamma"], p["beta"]), batchnorm,
                       norm_params(C))
        for G in sorted({1, C // 4 if C % 4 == 0 else 1, C}):
            yield Case("groupnorm", f"{size} G{G}", F32, (N, C, H, W),
                       lambda g, x, p, G=G: g.spatial_groupnorm(x, p["gamma"], p["beta"], G),
                       lambda tF, t, p, G=G: tF.group_norm(t, G, p["gamma"], p["beta"]),
                       norm_params(C))


ACTIVATIONS = {
    "relu": (lambda g, x, p: g.relu(x), lambda tF, t, p: tF.relu(t)),
    "leaky_relu": (lambda g, x, p: g.leaky_relu(x, 0.1), lambda tF, t, p: tF.leaky_relu(t, 0.1)),
    "tanh": (lambda g, x, p: g.tanh(x), lambda tF, t, p: tF.tanh(t)),
    "sigmoid": (lambda g, x, p: g.sigmoid(x), lambda tF, t, p: tF.sigmoid(t)),
    "gelu": (lambda g, x, p: g.gelu(x), lambda tF, t, p: tF.gelu(t)),
}


def elementwise_cases():
    shapes = ((1, 100), (16, 17), (64, 100), (200, 1000), (16, 17, 15, 15), (64, 48, 13, 17))
    for shape in shapes:
        size = "x".join(map(str, shape))
        for dtype in (F32, F64):
            for name, (ours, theirs) in ACTIVATIONS.items():
                yield Case("act", f"{name} {size}", dtype, shape, ours, theirs)
            for p in (0.5, 0.1):
                yield Case("dropout", f"p{p} {size}", dtype, shape,
                           lambda g, x, _, p=p: g.dropout(x, p),
                           lambda tF, t, _, p=p: tF.dropout(t, p, training=_["training"]))


def affine_cases():
    shapes = [((1, 3072), 100), ((16, 3072), 100), ((64, 3072), 100), ((16, 17), 10),
              ((64, 100), 17), ((200, 100), 100), ((100, 1000), 10), ((16, 48, 7, 7), 10),
              ((64, 17, 13, 17), 100), ((16, 17, 48), 17)]
    for shape, M in shapes:
        D = int(np.prod(shape[1:]))
        for dtype in (F32, F64):
            yield Case("affine", f"{'x'.join(map(str, shape))} -> {M}", dtype, shape,
                       lambda g, x, p: g.affine(x, p["w"], p["b"]),
                       lambda tF, t, p: tF.linear(t.reshape(t.shape[0], -1), p["w"].T, p["b"]),
                       affine_params(D, M))


def loss_cases():
    for N, C in ((1, 10), (16, 10), (64, 17), (200, 10), (100, 1000)):
        for dtype in (F32, F64):
            yield Case("softmax_loss", f"{N}x{C}", dtype, (N, C),
                       lambda g, x, p: g.softmax_loss(x, p["y"]),
                       lambda tF, t, p: tF.cross_entropy(t, p["y"]), classes=C)
            yield Case("svm_loss", f"{N}x{C}", dtype, (N, C),
                       lambda g, x, p: g.svm_loss(x, p["y"]),
                       lambda tF, t, p: tF.multi_margin_loss(t, p["y"]), classes=C)


KINDS = {"conv": conv_cases, "pool": pool_cases, "norm": norm_cases,
         "act": elementwise_cases, "dropout": elementwise_cases, "affine": affine_cases,
         "loss": loss_cases}


def cases(kinds):
    seen = set()
    for kind in kinds:
        if KINDS[kind] not in seen:
            seen.add(KINDS[kind])
            yield from KINDS[kind]()


def contenders(case, torch):
    """{name: fn} of one case: graphnet's and PyTorch's train step and eval forward."""
    rng = np.random.default_rng(1)
    dtype = np.dtype(case.dtype)
    X = rng.standard_normal(case.x_shape).astype(dtype)
    g = gn.Graph(dtype=dtype)
    # x held in the graph, as a layer's input inside a network is: not a feed, which each
    # call would check for NaN and Inf (a pass over x that PyTorch's layer does not make)
    x = g.param("x", X) if case.x_grad else g.const(X, name="x")
    params = {name: g.param(name, value.astype(dtype)) for name, value in case.params.items()}
    feeds = {}
    torch_params = {name: torch.tensor(value, dtype=getattr(torch, case.dtype),
                                       requires_grad=True)
                    for name, value in case.params.items()}
    if "gamma" in case.params:  # batchnorm's running averages
        torch_params["mean"] = torch.zeros(len(case.params["gamma"]), dtype=torch_params[
            "gamma"].dtype)
        torch_params["var"] = torch.ones_like(torch_params["mean"])
    if case.classes is not None:
        labels = rng.integers(0, case.classes, case.x_shape[0])
        params["y"] = g.input("y", shape=(None,), dtype=np.int64, requires_grad=False)
        feeds["y"] = labels
        torch_params["y"] = torch.from_numpy(labels)
    out = case.ours(g, x, params)
    g.forward(**feeds)
    scalar = np.ndim(g.store.value(out.index)) == 0
    dout = None if scalar else rng.standard_normal(np.shape(out.value)).astype(dtype)
    xt = torch.tensor(X, requires_grad=case.x_grad)
    dout_t = None if scalar else torch.from_numpy(dout)
    tF = torch.nn.functional

    def ours_train():
        g.train()
        g.forward(**feeds)
        g.backward(out, grad=dout)

    def ours_eval():
        g.eval()
        g.forward(**feeds)

    def theirs_train():
        torch_params["training"] = True
        xt.grad = None
        for t in torch_params.values():
            if isinstance(t, torch.Tensor) and t.requires_grad:
                t.grad = None
        case.theirs(tF, xt, torch_params).backward(dout_t)

    def theirs_eval():
        torch_params["training"] = False
        with torch.inference_mode():
            case.theirs(tF, xt, torch_params)

    return {"ours train": ours_train, "torch train": theirs_train,
            "ours eval": ours_eval, "torch eval": theirs_eval}


def block_ms(fn, calls):
    start = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - start) / calls * 1e3


def medians(runs, rounds, block):
    """{name: median ms per call}: each run warmed up, then `rounds` turns of a block of
    about `block` CPU seconds each."""
    calls = {}
    for name, fn in runs.items():
        fn()
        calls[name] = max(1, min(200, int(block / max(block_ms(fn, 1) * 1e-3, 1e-7))))
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            times[name].append(block_ms(fn, calls[name]))
    return {name: statistics.median(t) for name, t in times.items()}


ROW = "{:<18}{:<34}{:<8}{:>10}{:>10}{:>7}{:>10}{:>10}{:>7}  {}"


def row_text(r):
    return ROW.format(r["kind"], r["layer"], r["dtype"], f"{r['train_ms']:.3f}",
                      f"{r['torch_train_ms']:.3f}", f"{r['train_ratio']:.2f}",
                      f"{r['eval_ms']:.3f}", f"{r['torch_eval_ms']:.3f}",
                      f"{r['eval_ratio']:.2f}", r["slow"])


def main():
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default=",".join(KINDS), help="of " + ", ".join(KINDS))
    parser.add_argument("--only", default="", help="a regular expression on 'kind label dtype'")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--block", type=float, default=0.004, help="CPU seconds per turn")
    parser.add_argument("--slow", type=float, default=1.2, help="flag ratios above this")
    parser.add_argument("--min-us", type=float, default=10,
                        help="... where graphnet takes at least this many us longer")
    parser.add_argument("--csv", help="write every case's numbers to this file")
    args = parser.parse_args()
    _C.set_num_threads(1)
    torch.set_num_threads(1)
    only = re.compile(args.only)
    print(f"one thread, CPU time, medians of {args.rounds} turns (ms per call); torch "
          f"{torch.__version__}")
    print(ROW.format("kind", "layer", "dtype", "train", "torch", "ratio", "eval", "torch",
                     "ratio", ""))
    rows = []
    for case in cases(args.kinds.split(",")):
        if not only.search(f"{case.kind} {case.label} {case.dtype}"):
            continue
        ms = medians(contenders(case, torch), args.rounds, args.block)
        train, evaluation = (ms["ours train"] / ms["torch train"],
                             ms["ours eval"] / ms["torch eval"])
        flags = ",".join(name for name in ("train", "eval")
                         if ms[f"ours {name}"] > max(args.slow * ms[f"torch {name}"],
                                                     ms[f"torch {name}"] + args.min_us / 1e3))
        row = {"kind": case.kind, "layer": case.label, "dtype": case.dtype,
               "train_ms": ms["ours train"], "torch_train_ms": ms["torch train"],
               "train_ratio": train, "eval_ms": ms["ours eval"],
               "torch_eval_ms": ms["torch eval"], "eval_ratio": evaluation, "slow": flags}
        rows.append(row)
        print(row_text(row), flush=True)
    flagged = sorted((r for r in rows if r["slow"]),
                     key=lambda r: -max(r["train_ratio"], r["eval_ratio"]))
    print(f"\n{len(flagged)} of {len(rows)} cases slower than {args.slow}x PyTorch and by "
          f"{args.min_us:g} us or more, worst first:")
    for r in flagged:
        print(row_text(r))
    if args.csv and rows:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
