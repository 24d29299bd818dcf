"""Every general gate a student reaches for, against PyTorch autograd (issue 15: no gate a
cliff).

    python benchmarks/bench_gates.py [--gates gelu,softmax] [--dtypes float32,float64]
                                     [--rounds 5] [--repeat 5] [--markdown]

Each case is a graph of one gate (plus the sum that makes the loss) on a (32, 32, 32, 32)
input (1M elements; the softmaxes see it as 1024 rows of 1024, attention as 32 x 16 heads
of 64 queries of 32 features, also the keys and values), timed as forward + backward
against PyTorch's forward + backward of the same operation on one thread
(graphnet._C.set_num_threads(1), torch.set_num_threads(1)). Time is the process's CPU time
(the machine is shared: waits for a core are left out); the two take turns, `--repeat`
steps each, `--rounds` times; the medians are printed with their ratio graphnet / PyTorch
(goal: <= 1.2 for every gate).
The first row, identity, is the sum alone: what every row pays for feeding x and for the
sum's forward and backward (graphnet's backward of a sum writes its gradient out, PyTorch's
expands a view), so a gate's own cost is its row less that one.
"""
import argparse
import math
import statistics
import time

import numpy as np

import graphnet as gn
from graphnet.kernels import _C

SHAPE = (32, 32, 32, 32)


def cases(torch):
    F = torch.nn.functional
    rows = (1024, 1024)
    heads = (32, 16, 64, 32)

    def attention(t):  # one input as queries, keys and values (fan-out)
        q = t.reshape(heads)
        weights = torch.softmax(q @ q.transpose(-1, -2) / math.sqrt(heads[-1]), -1)
        return weights @ q

    def g_groupnorm(g, x):  # 8 groups of the 32 channels, gamma and beta learned
        C = SHAPE[1]
        return g.spatial_groupnorm(x, g.param("gamma", np.ones(C)), g.param("beta", np.zeros(C)), 8)

    def groupnorm(t):
        C = SHAPE[1]
        gamma = torch.ones(C, dtype=t.dtype, requires_grad=True)
        return F.group_norm(t, 8, gamma, torch.zeros(C, dtype=t.dtype, requires_grad=True))

    def g_attention(g, x):
        q = g.reshape(x, heads)
        return g.attention(q, q, q)

    return {
        # the harness alone: feeding x, the sum and its backward (a fixed cost every row pays)
        "identity": (lambda g, x: x, lambda t: t),
        "relu": (lambda g, x: g.relu(x), F.relu),
        "leaky_relu": (lambda g, x: g.leaky_relu(x, alpha=0.1), lambda t: F.leaky_relu(t, 0.1)),
        "gelu": (lambda g, x: g.gelu(x), F.gelu),
        "gelu_tanh": (lambda g, x: g.gelu(x, approximate="tanh"),
                      lambda t: F.gelu(t, approximate="tanh")),
        "softplus": (lambda g, x: g.softplus(x), F.softplus),
        "tanh": (lambda g, x: g.tanh(x), torch.tanh),
        "sigmoid": (lambda g, x: g.sigmoid(x), torch.sigmoid),
        "exp": (lambda g, x: g.exp(x), torch.exp),
        "log_abs": (lambda g, x: g.log(abs(x)), lambda t: torch.log(torch.abs(t))),
        "abs": (lambda g, x: abs(x), torch.abs),
        "negate": (lambda g, x: -x, lambda t: -t),
        "pow2": (lambda g, x: x ** 2, lambda t: t ** 2),
        "pow3": (lambda g, x: x ** 3, lambda t: t ** 3),
        "sqrt_abs": (lambda g, x: g.sqrt(abs(x)), lambda t: torch.sqrt(torch.abs(t))),
        "clip": (lambda g, x: g.clip(x, -1.0, 1.0), lambda t: torch.clamp(t, -1, 1)),
        "max_self": (lambda g, x: g.max(x, -x), lambda t: torch.maximum(t, -t)),
        "mul_self": (lambda g, x: x * x, lambda t: t * t),
        "add_self": (lambda g, x: x + x, lambda t: t + t),
        "div": (lambda g, x: x / (abs(x) + 1.0), lambda t: t / (torch.abs(t) + 1)),
        "groupnorm": (g_groupnorm, groupnorm),
        # one fused step each way (passes/norm_activation.py)
        "groupnorm_gelu": (lambda g, x: g.gelu(g_groupnorm(g, x)), lambda t: F.gelu(groupnorm(t))),
        "avg_pool": (lambda g, x: g.avg_pool(x, 2, 2, 2), lambda t: F.avg_pool2d(t, 2)),
        "avg_pool3s1": (lambda g, x: g.avg_pool(x, 3, 3, 1), lambda t: F.avg_pool2d(t, 3, 1)),
        "max_pool": (lambda g, x: g.max_pool(x, 2, 2, 2), lambda t: F.max_pool2d(t, 2)),
        "mean_hw": (lambda g, x: g.mean(x, axis=(2, 3)), lambda t: t.mean((2, 3))),
        "sum_c": (lambda g, x: g.sum(x, axis=1), lambda t: t.sum(1)),
        "log_softmax": (lambda g, x: g.log_softmax(g.reshape(x, rows)),
                        lambda t: F.log_softmax(t.reshape(rows), -1)),
        "softmax": (lambda g, x: g.softmax(g.reshape(x, rows)),
                    lambda t: F.softmax(t.reshape(rows), -1)),
        "attention": (g_attention, attention),
        "transpose": (lambda g, x: g.transpose(x, (0, 2, 3, 1)),
                      lambda t: t.permute(0, 2, 3, 1).contiguous()),
    }


def cpu_ms(step, repeat):
    start = time.process_time()
    for _ in range(repeat):
        step()
    return (time.process_time() - start) / repeat * 1e3


def main():
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gates", default="")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    _C.set_num_threads(1)
    torch.set_num_threads(1)
    table = cases(torch)
    names = args.gates.split(",") if args.gates else list(table)
    rng = np.random.default_rng(0)
    results = {}
    for dtype in args.dtypes.split(","):
        X = rng.standard_normal(SHAPE).astype(dtype)
        for name in names:
            build, torch_op = table[name]
            g = gn.Graph(dtype=np.dtype(dtype))
            x = g.input("x", shape=(None,) + SHAPE[1:])
            g.sum(build(g, x))
            xt = torch.tensor(X, requires_grad=True)

            def ours(g=g, X=X):
                g.forward(x=X)
                g.backward()

            def theirs(xt=xt, torch_op=torch_op):
                xt.grad = None
                torch_op(xt).sum().backward()

            ours(), theirs()  # warm-up: first allocations, thread pools
            times = {"graphnet": [], "torch": []}
            for _ in range(args.rounds):
                times["graphnet"].append(cpu_ms(ours, args.repeat))
                times["torch"].append(cpu_ms(theirs, args.repeat))
            a, b = (statistics.median(times[k]) for k in ("graphnet", "torch"))
            results[(name, dtype)] = (a, b)
            if not args.markdown:
                print(f"{name:12s} {dtype:8s} graphnet {a:8.2f} ms  torch {b:7.2f} ms  "
                      f"ratio {a / b:6.2f}", flush=True)
    if args.markdown:
        dtypes = args.dtypes.split(",")
        head = " | ".join(f"{d} graphnet ms | torch ms | ratio" for d in dtypes)
        print(f"| gate | {head} |")
        print("|---" * (1 + 3 * len(dtypes)) + "|")
        for name in names:
            cells = []
            for d in dtypes:
                a, b = results[(name, d)]
                cells += [f"{a:.2f}", f"{b:.2f}", f"{a / b:.2f}"]
            print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
