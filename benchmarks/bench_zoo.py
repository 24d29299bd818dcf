"""The model zoo against PyTorch CPU and against the machine's floor (issue 15).

    python benchmarks/bench_zoo.py [--models vgg,resnet] [--batches 1,16,64,256]
                                   [--dtypes float32,float64] [--rounds 3] [--threads N]
                                   [--clock wall|cpu] [--markdown] [--random N --seed S]

For each network of benchmarks/zoo_models.py (built through the graph API, and as a
PyTorch module holding the same weights), each batch size and each dtype the course uses
it in (--dtypes narrows that), it measures in one run (--random N: instead the first N
random networks of seed S, zoo_models.random_network, each named random-S-I, which
--models and profile_step.py take too; the table then lists the worst step/PyTorch
ratio first):

- the training step: forward, backward and the adam update, softmax loss, 3x32x32 (or
  3072-feature) synthetic inputs (the language models: random words, the temporal softmax
  loss of the next word at every step; the transformer: random words, a class per
  sequence); graphnet's Solver-style step (model.loss(X, y),
  then optim.adam per param) against torch.optim.Adam's (--optim: sgd, sgd_momentum or
  rmsprop instead, against torch.optim's SGD, SGD with momentum 0.9, RMSprop with alpha
  0.99; the floor still counts adam's pass over the params);
- eval-mode inference (graphnet: model.loss(X), which runs the scores in eval mode;
  PyTorch: net.eval() under torch.inference_mode());
- the floor: the step's multiply-adds (conv and affine forward, both weight and input
  gradients, none for the data; an LSTM's as an affine map of [x_t | h_(t-1)] to its 4H
  gates at every step; an encoder's attention as its two products per head) at the
  machine's sgemm (dgemm for float64) rate, plus its unavoidable memory traffic at the
  machine's copy bandwidth: the data read once,
  every conv/affine output written once and read once, its gradient likewise (anything
  between two such layers counted as fused, hence free), and adam's pass over the params
  (read w, dw, m, v; write w, m, v). The rates are a numpy matmul of two 1536x1536
  matrices and a 128 MB array copy, on the same thread count, measured at the start and
  the end of the run (medians).

graphnet and PyTorch run on the same number of threads, PyTorch in a process of its own
with the C library's default memory behaviour (peer.py: importing graphnet changes it for
its whole process), and take turns in blocks of about --block seconds (a block of steps,
never single steps: their thread teams would fight for the cores), --rounds turns each
after a warm-up; every time printed is a median, each measured in its own process. On a
machine loaded by other jobs, wall-clock times mostly measure the waits for a core (worst
with two or more threads, whose every barrier waits for the slowest); --threads 1 --clock
cpu then measures each process's CPU time instead, which leaves those waits out (with
more threads it would add up their CPU time, spinning included). The table's ratios (nan
where PyTorch refuses: its BatchNorm1d does not train on a batch of one sample): graphnet
/ PyTorch step time (goal <= 0.5), graphnet step / floor (goal <= 1.5), and inference
throughput graphnet / PyTorch (goal >= 2 at batch 1, >= 1 at 256).
"""
import argparse
import functools
import os
import resource
import sys
import time

import numpy as np

from graphnet import optim
from graphnet.kernels import _C

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer import CLOCKS, Peer, timed_calls  # noqa: E402
from zoo_models import (BY_NAME, ZOO, batch_of, build_graphnet, build_torch,  # noqa: E402
                        conv_layer, model_named, random_network, shapes, torch_loss)

DEFAULT_BATCHES = (1, 64)


# ----- the floor --------------------------------------------------------------------------

def step_cost(model, batch):
    """(flops, elements moved) of one training step at the floor (see the docstring)."""
    walk, _ = shapes(model, batch)
    flops = moved = 0
    params = 0
    first_weighted = True

    def weighted(outputs, fan_in, out_features):
        nonlocal flops, moved, params, first_weighted
        forward = 2 * outputs * fan_in
        # forward, weight gradient, input gradient (the data needs none)
        flops += forward * (2 if first_weighted else 3)
        first_weighted = False
        moved += 4 * outputs
        params += fan_in * out_features + out_features

    for layer, shape in walk:
        kind = layer[0]
        if kind == "embed":  # a lookup: no flops, its gradient (scattered rows) is counted
            first_weighted = False  # the layer after it needs its input gradient
            params += model.vocabulary * layer[1]
        elif kind == "positions":
            params += shape[1] * shape[2]
        elif kind == "encoder":  # q, k, v, output projections; attention; feed-forward
            N, T, D = shape
            for _ in range(4):
                weighted(N * T * D, D, D)
            # q kᵀ and the weights times v, forward and both gradients of each; the
            # weights (N, heads, T, T) written and read once, their gradient likewise
            flops += 3 * 2 * (2 * N * T * T * D)
            moved += 4 * N * layer[1] * T * T
            weighted(N * T * 4 * D, D, 4 * D)
            weighted(N * T * D, 4 * D, D)
            params += 2 * 2 * D  # the layernorms
        elif kind == "lstm":  # per step [x_t | h_(t-1)] (D + H) times the 4H gate columns
            H = layer[1]
            weighted(batch * shape[1] * 4 * H, shape[2] + H, 4 * H)
        elif kind == "temporal_affine":
            weighted(batch * shape[1] * layer[1], shape[2], layer[1])
        elif kind == "conv":
            F, k, stride, pad = conv_layer(layer)
            Ho = 1 + (shape[2] + 2 * pad - k) // stride
            Wo = 1 + (shape[3] + 2 * pad - k) // stride
            weighted(batch * F * Ho * Wo, shape[1] * k * k, F)
        elif kind == "bneck":
            F, M = shape[1], layer[1]
            pixels = batch * shape[2] * shape[3]
            weighted(pixels * M, F, M)
            weighted(pixels * M, M * 9, M)
            weighted(pixels * F, M, F)
            params += 2 * (2 * M + F)
        elif kind == "res":
            F = shape[1]
            for _ in range(2):
                weighted(int(np.prod(shape)), F * 9, F)
                params += 2 * F
        elif kind == "affine":
            weighted(batch * layer[1], int(np.prod(shape[1:])), layer[1])
        elif kind in ("sbn", "bn", "ln", "gn"):
            params += 2 * shape[1]
    moved += batch * int(np.prod(model.input_shape)) + 7 * params
    return flops, moved


clock = time.perf_counter  # set by --clock


def machine_rates(threads, repeats=5):
    """{"float32": flop/s, "float64": flop/s, "bandwidth": bytes/s}: medians of `repeats`."""
    try:
        from threadpoolctl import threadpool_limits
        limits = threadpool_limits(threads)
    except ImportError:  # numpy's BLAS then uses its default thread count
        limits = None
    rng = np.random.default_rng(0)
    rates = {}
    n = 1536
    for dtype in ("float32", "float64"):
        a = rng.standard_normal((n, n)).astype(dtype)
        b = rng.standard_normal((n, n)).astype(dtype)
        a @ b
        times = []
        for _ in range(repeats):
            start = clock()
            a @ b
            times.append(clock() - start)
        rates[dtype] = 2 * n ** 3 / np.median(times)
    src = np.ones(32 * 2 ** 20, np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    times = []
    for _ in range(repeats):
        start = clock()
        np.copyto(dst, src)
        times.append(clock() - start)
    rates["bandwidth"] = 2 * src.nbytes / np.median(times)  # read + write
    if limits is not None:
        limits.restore_original_limits()
    return rates


# ----- the contenders ---------------------------------------------------------------------

# torch.optim's twin of each graphnet.optim rule: its class and the hyperparameters that
# make it graphnet.optim's defaults.
TORCH_RULES = {
    "adam": ("Adam", {}),
    "sgd": ("SGD", {}),
    "sgd_momentum": ("SGD", {"momentum": 0.9}),
    "rmsprop": ("RMSprop", {"alpha": 0.99, "eps": 1e-8}),
}


def torch_optimizer(torch, rule, params, lr):
    name, hyperparameters = TORCH_RULES[rule]
    return getattr(torch.optim, name)(params, lr=lr, **hyperparameters)


def training_step(model, inputs, rule, learning_rate):
    """A function running one training step of a graphnet model: model.loss(*inputs), then
    graphnet.optim's `rule` on every param, as the course's Solver does."""
    configs = {name: {"learning_rate": learning_rate} for name in model.params}
    update = getattr(optim, rule)

    def step():
        _, grads = model.loss(*inputs)
        for name in model.params:
            model.params[name], configs[name] = update(model.params[name], grads[name],
                                                       configs[name])

    return step


def graphnet_contenders(model, batch, dtype, rule="adam"):
    """{name: function running one step (or one inference)} for graphnet."""
    ours = build_graphnet(model, dtype)
    X, y = batch_of(model, batch, dtype, np.random.default_rng(0))
    graphnet_step = training_step(ours, (X, y), rule, 1e-3)

    def graphnet_infer():
        ours.loss(X)

    return {"graphnet step": graphnet_step, "graphnet infer": graphnet_infer}


def torch_contenders(model_name, batch, dtype, rule="adam"):
    """The same for PyTorch, with graphnet's weights and batch (built in the peer process)."""
    import torch

    model = model_named(model_name)
    net, _ = build_torch(model, build_graphnet(model, dtype))
    X, y = batch_of(model, batch, dtype, np.random.default_rng(0))
    opt = torch_optimizer(torch, rule, net.parameters(), lr=1e-3)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)

    def torch_step():
        net.train()
        opt.zero_grad(set_to_none=True)
        torch_loss(model, net(Xt), yt).backward()
        opt.step()

    def torch_infer():
        net.eval()
        with torch.inference_mode():
            net(Xt)

    runs = {"torch infer": torch_infer}
    try:
        torch_step()
        runs["torch step"] = torch_step
    except ValueError:  # BatchNorm1d refuses to train on a batch of one sample
        pass
    return runs


def medians_in_turns(blocks, rounds, block_seconds, warmup=1):
    """{name: median ms}: blocks {name: run(calls) -> the seconds of each call}, each
    warmed up, then `rounds` turns, in each turn a block of calls of about block_seconds
    per contender (at least one call)."""
    sizes = {}
    for name, run in blocks.items():
        first = run(warmup)[-1]
        sizes[name] = max(1, min(50, int(block_seconds / max(first, 1e-9))))
    times = {name: [] for name in blocks}
    for _ in range(rounds):
        for name, run in blocks.items():
            times[name] += run(sizes[name])
    return {name: 1e3 * float(np.median(t)) for name, t in times.items()}


def taken_per_second(before):
    """How often per second of this process's CPU time since getrusage `before` another
    task took its core (involuntary context switches): a few hundred are a busy job taking
    turns of a few ms, thousands one that wakes often, whose turns cost a step like
    narrow_deep's at batch 16 up to a quarter more CPU time in refilled caches
    (docs/performance/zoo.md, "How the step times spread")."""
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return (after.ru_nivcsw - before.ru_nivcsw) / max(cpu, 1e-9)


# ----- the table --------------------------------------------------------------------------

COLUMNS = ("model", "batch", "dtype", "graphnet step ms", "torch step ms", "ratio", "floor ms",
           "ratio to floor", "inference graphnet/torch")


def row(model, batch, dtype, ms, rates):
    flops, moved = step_cost(model, batch)
    floor = 1e3 * (flops / rates[dtype] + moved * np.dtype(dtype).itemsize / rates["bandwidth"])
    ours, theirs = ms["graphnet step"], ms.get("torch step", float("nan"))  # nan: torch refused
    infer = ms.get("torch infer", float("nan")) / ms["graphnet infer"]
    return (model.name, str(batch), dtype, f"{ours:.2f}", f"{theirs:.2f}",
            f"{ours / theirs:.2f}", f"{floor:.2f}", f"{ours / floor:.1f}", f"{infer:.2f}")


def print_table(rows, markdown):
    if markdown:
        print("| " + " | ".join(COLUMNS) + " |")
        print("|" + "|".join("---" if i < 3 else "--:" for i in range(len(COLUMNS))) + "|")
        for r in rows:
            print("| " + " | ".join(r) + " |")
        return
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]
    for r in (COLUMNS, *rows):
        print("  ".join(v.ljust(w) if i < 3 else v.rjust(w)
                        for i, (v, w) in enumerate(zip(r, widths))))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(m.name for m in ZOO),
                        help="comma-separated, of: " + ", ".join(BY_NAME) + ", random-SEED-INDEX")
    parser.add_argument("--random", type=int, default=0, metavar="N",
                        help="time the first N random networks of --seed instead, worst first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batches", default=",".join(map(str, DEFAULT_BATCHES)))
    parser.add_argument("--dtypes", default="float32,float64",
                        help="each model runs in those of these the course uses it in")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--block", type=float, default=0.2, help="seconds per turn")
    parser.add_argument("--threads", type=int, default=_C.get_num_threads())
    parser.add_argument("--clock", choices=CLOCKS, default="wall",
                        help="wall-clock time, or the process's CPU time (see above)")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument("--optim", choices=tuple(TORCH_RULES), default="adam",
                        help="the update rule of the step (the floor counts adam's)")
    parser.add_argument("--winograd", choices=("auto", "off"), default="auto",
                        help="off: 3x3 convs without Winograd (_C.set_winograd_conv), to compare")
    args = parser.parse_args()
    _C.set_winograd_conv(args.winograd)
    if args.random:
        models = [random_network(args.seed, index) for index in range(args.random)]
    else:
        models = [model_named(name) for name in args.models.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    dtypes = args.dtypes.split(",")
    global clock
    clock = CLOCKS[args.clock]

    _C.set_num_threads(args.threads)
    try:
        import torch
        torch_version = torch.__version__
        peer = Peer(args.threads, args.clock)
    except ImportError:
        torch_version, peer = "absent", None
    load = os.getloadavg()[0]
    start = machine_rates(args.threads)
    measured = []
    for model in models:
        for dtype in (d for d in model.dtypes if d in dtypes):
            for batch in batches:
                blocks = {name: functools.partial(timed_calls, run, clock=clock)
                          for name, run in graphnet_contenders(model, batch, dtype,
                                                               args.optim).items()}
                if peer is not None:
                    for name in peer.build(torch_contenders, model.name, batch, dtype,
                                           args.optim):
                        blocks[name] = functools.partial(peer.block, name)
                before = resource.getrusage(resource.RUSAGE_SELF)
                ms = medians_in_turns(blocks, args.rounds, args.block)
                measured.append((model, batch, dtype, ms))
                print(f"  measured {model.name} batch {batch} {dtype}; "
                      f"{taken_per_second(before):.0f} times a CPU second another task took "
                      "graphnet's core", file=sys.stderr)
    if peer is not None:
        peer.close()
    end = machine_rates(args.threads)
    rates = {key: float(np.median([start[key], end[key]])) for key in start}
    print(f"{os.cpu_count()} cores, {args.threads} thread(s) for graphnet and PyTorch; numpy "
          f"{np.__version__}, torch {torch_version}; load average {load:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end")
    print(f"machine: sgemm {rates['float32'] / 1e9:.1f} GFLOP/s, dgemm "
          f"{rates['float64'] / 1e9:.1f} GFLOP/s, copy {rates['bandwidth'] / 1e9:.1f} GB/s "
          f"(read + write); {args.rounds} rounds, blocks of ~{args.block} s; {args.clock} "
          "clock\n")
    rows = [row(m, b, d, ms, rates) for m, b, d, ms in measured]
    if args.random:  # worst first (nan, where PyTorch refused, last)
        rows.sort(key=lambda r: -float(r[5]) if r[5] != "nan" else np.inf)
    print_table(rows, args.markdown)
    print("\nmodels:")
    for model in models:
        print(f"  {model.name}: {model.what}")


if __name__ == "__main__":
    main()
