"""What one eval-mode inference call costs around its gates, per zoo network (batch 1).

    python benchmarks/bench_call.py [--models twolayer,fc] [--dtype float32] [--rounds 7]
                                    [--unfused] [--batch 1] [--steps] [--parts]

For each network of benchmarks/zoo_models.py, on one thread, in CPU time (medians of
--rounds turns, the three measured in turns within each):

- graphnet: `model.loss(X)` (eval mode: the input checks, the feed, the plan, the walk,
  the result);
- gates alone: the same forward plan's steps called in a bare loop on the values of the
  last walk (what the gates and their kernels cost, without anything around them);
- PyTorch: `net.eval()` and `net(X)` under `torch.inference_mode()`, same weights;
- with --unfused, also the same call with the graph's fusion off (`g.fuse = False`: every
  gate on its own, without the small-batch plan's conv chains, passes/conv_chain.py).

--batch times another batch size (from 4 the call runs the fused plan, not the small-batch
plan); --steps also prints each step of the gates-alone loop, its CPU time per call, and
each PyTorch module's (from forward hooks, in calls of their own after the rounds);
--parts also times the parts of graphnet's call, each in a loop of its own on the last
call's plan and feeds: the model's wrapper around the graph's run (the input check, the
lock, the switch to eval mode and back), the plan's lookup, the feed (its checks and
store), the walk (run_forward: the gates and its bookkeeping) and the gates alone. The
network first takes one train-mode forward and backward (no update), so that its
batchnorms have running averages, as after training.

The call's own cost is graphnet minus gates alone. The ratio is PyTorch / graphnet time
(throughput graphnet / PyTorch; issue 15's goal at batch 1 is >= 2), and what it would be
if the call cost nothing around its gates.
"""
import argparse
import os
import sys
import time

import numpy as np

from graphnet.kernels import _C

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from zoo_models import BY_NAME, ZOO, batch_of, build_graphnet, build_torch  # noqa: E402


def per_call_us(run, calls):
    start = time.process_time()
    for _ in range(calls):
        run()
    return (time.process_time() - start) / calls * 1e6


def measure(model, dtype, rounds, unfused=False, batch=1, modules=False):
    """(steps, the medians in us by name, each step's CPU time in us per gates-alone call,
    with `modules` each PyTorch module's per call, timed by hooks in calls of their own)."""
    import torch

    ours = build_graphnet(model, dtype)
    X, y = batch_of(model, batch, dtype, np.random.default_rng(0))
    ours.loss(X, y)  # the batchnorms' running averages, as after training
    net, _ = build_torch(model, ours)
    Xt = torch.from_numpy(X)
    graph = ours.graph
    ours.loss(X)
    plan, store = graph.executor.last_forward, graph.store
    values = store.values
    step_ns = [0] * len(plan.loop)
    clock = time.thread_time_ns

    def gates_alone():
        graph.training = False  # as the call runs them
        for k, (_, run, inputs, fused) in enumerate(plan.loop):
            start = clock()
            if fused:  # a fused step reads and writes the store itself
                run(store)
            else:
                run(*[values[j] for j in inputs])
            step_ns[k] += clock() - start
        graph.training = True

    def torch_infer():
        net.eval()
        with torch.inference_mode():
            net(Xt)

    runs = {"graphnet": lambda: ours.loss(X), "gates": gates_alone, "torch": torch_infer}
    if unfused:
        gate_by_gate = build_graphnet(model, dtype)
        gate_by_gate.graph.fuse = False
        runs["unfused"] = lambda: gate_by_gate.loss(X)
    calls = max(20, int(0.05 / (per_call_us(runs["graphnet"], 5) * 1e-6)))
    times = {name: [] for name in runs}
    step_ns[:] = [0] * len(step_ns)
    for _ in range(rounds):
        for name, run in runs.items():
            times[name].append(per_call_us(run, calls))
    steps = [(step.label, ns / (rounds * calls) / 1e3) for step, ns in zip(plan.steps, step_ns)]
    if modules:
        steps += torch_modules_us(net, torch_infer, calls)
    return len(plan.steps), {name: float(np.median(t)) for name, t in times.items()}, steps


def call_parts_us(model, dtype, rounds, batch=1):
    """[(part, median us)]: the parts of an eval call of `model`, each in calls of its own.
    The plan's inputs are fed what the last call fed them, and its sink is the target."""
    ours = build_graphnet(model, dtype)
    X, y = batch_of(model, batch, dtype, np.random.default_rng(0))
    ours.loss(X, y)  # the batchnorms' running averages, as after training
    ours.loss(X)
    graph = ours.graph
    executor, store = graph.executor, graph.store
    plan = executor.last_forward
    feeds = {node.name: store.values[node.index] for node in plan.inputs}
    targets = [plan.steps[-1].node]

    def plan_lookup():
        executor.forward_plan(targets, executor.fusing_forward(executor.active_hooks(), feeds))

    def gates_alone():
        values = store.values
        for _, run, inputs, fused in plan.loop:
            if fused:
                run(store)
            else:
                run(*[values[j] for j in inputs])

    parts = {
        "graph.run": lambda: graph.run(targets, feeds),
        "plan lookup": plan_lookup,
        "feed": lambda: graph._feed(plan, feeds, []),
        "walk": lambda: executor.run_forward(plan, []),
        "gates alone": gates_alone,
    }
    calls = max(20, int(0.05 / (per_call_us(lambda: ours.loss(X), 5) * 1e-6)))
    times = {"model.loss": [], **{name: [] for name in parts}}
    for _ in range(rounds):
        times["model.loss"].append(per_call_us(lambda: ours.loss(X), calls))
        graph.eval()  # the mode model.loss runs its graph in
        try:
            for name, run in parts.items():
                times[name].append(per_call_us(run, calls))
        finally:
            graph.train()
    return [(name, float(np.median(t))) for name, t in times.items()]


def torch_modules_us(net, infer, calls):
    """[(name, us)]: each leaf module's CPU time per call of `infer`, from forward hooks
    (not in the call's timing above: the hooks cost time of their own)."""
    clock = time.thread_time_ns
    leaves = [m for m in net.modules() if not list(m.children())]
    spent, started = dict.fromkeys(leaves, 0), {}
    hooks = []
    for m in leaves:
        hooks.append(m.register_forward_pre_hook(lambda m, _: started.__setitem__(m, clock())))
        hooks.append(m.register_forward_hook(
            lambda m, *_: spent.__setitem__(m, spent[m] + clock() - started[m])))
    for _ in range(calls):
        infer()
    for hook in hooks:
        hook.remove()
    return [(f"torch {m}", ns / calls / 1e3) for m, ns in spent.items()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(m.name for m in ZOO))
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--unfused", action="store_true",
                        help="also time the call with the graph's fusion off")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", action="store_true",
                        help="also print each step's CPU time in the gates-alone loop, "
                        "and each PyTorch module's")
    parser.add_argument("--parts", action="store_true",
                        help="also time the parts of graphnet's call, each on its own")
    args = parser.parse_args()
    import torch

    _C.set_num_threads(1)
    torch.set_num_threads(1)
    print(f"batch {args.batch}, {args.dtype}, one thread, CPU time, medians of {args.rounds} "
          "rounds (us)")
    print(f"{'model':12s} {'steps':>5s} {'graphnet':>9s} {'gates':>9s} {'call':>6s} "
          f"{'torch':>9s} {'torch/graphnet':>15s} {'torch/gates':>12s}"
          + (f" {'unfused':>9s} {'torch/unfused':>14s}" if args.unfused else ""))
    for name in args.models.split(","):
        steps, us, step_us = measure(BY_NAME[name], args.dtype, args.rounds, args.unfused,
                                     args.batch, args.steps)
        print(f"{name:12s} {steps:5d} {us['graphnet']:9.1f} {us['gates']:9.1f} "
              f"{us['graphnet'] - us['gates']:6.1f} {us['torch']:9.1f} "
              f"{us['torch'] / us['graphnet']:15.2f} {us['torch'] / us['gates']:12.2f}"
              + (f" {us['unfused']:9.1f} {us['torch'] / us['unfused']:14.2f}"
                 if args.unfused else ""),
              flush=True)
        if args.steps:
            for label, took in step_us:
                print(f"    {took:9.1f}  {label}")
        if args.parts:
            for part, took in call_parts_us(BY_NAME[name], args.dtype, args.rounds, args.batch):
                print(f"    {took:9.2f}  {part}")


if __name__ == "__main__":
    main()
