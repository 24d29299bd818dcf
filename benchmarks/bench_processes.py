"""A zoo model's training step in many fresh processes: how its CPU time spreads.

    python benchmarks/bench_processes.py [--model narrow_deep] [--batch 16] [--dtype float32]
                                         [--processes 30] [--rounds 7] [--steps 5]
                                         [--after MODEL:BATCH,...] [--no-aslr]
                                         [--cpu N [--neighbour KB]]

Each process (after 3 steps of each --after model at its batch: the history a zoo run
leaves in the array pool and the heap) builds the model (benchmarks/zoo_models.py), runs
bench_zoo.py's training step (model.loss, then adam on every param) on one thread, warms
up, and times --rounds blocks of --steps steps in its own CPU time; it reports the median
block's ms per step and how many times per step another task took its core while it was
timed (getrusage's involuntary context switches). The processes run one after the
other; the table lists them by time, then the medians and how many took more than 1.15x
the median time.

A process's CPU time includes refilling its caches after each turn of another task on its
core, so on a machine shared with other jobs the same step takes longer in a process that
shares its core for its whole life (the scheduler keeps a one-thread process on its core)
than in one that does not, by how much depends on what the other task does
(docs/performance/zoo.md, "How the step times spread"). --no-aslr runs each process under
`setarch -R` (address-space layout randomization off), --cpu pins each to one core, and
--neighbour KB shares that core with a task that copies KB of memory every 100 us, the
two sides of the question whether a slow process is its memory layout's or its core's.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

# The task that shares the measured processes' core: sleeps 100 us, then copies its KB.
NEIGHBOUR = """
import sys, time
import numpy as np
source = np.ones(int(sys.argv[1]) * 1024 // 8)
target = np.empty_like(source)
while True:
    time.sleep(1e-4)
    np.copyto(target, source)
"""


def child(args):
    """Runs in the measured process: prints one JSON line."""
    from bench_zoo import graphnet_contenders
    from zoo_models import BY_NAME

    from graphnet.kernels import _C

    _C.set_num_threads(1)
    for before in filter(None, args.after.split(",")):
        name, batch = before.split(":")
        earlier = graphnet_contenders(BY_NAME[name], int(batch), args.dtype)["graphnet step"]
        for _ in range(3):
            earlier()
        del earlier
    step = graphnet_contenders(BY_NAME[args.model], args.batch, args.dtype)["graphnet step"]
    for _ in range(args.steps):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF)
    blocks = []
    for _ in range(args.rounds):
        start = time.process_time()
        for _ in range(args.steps):
            step()
        blocks.append((time.process_time() - start) * 1e3 / args.steps)
    switches = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw - before.ru_nivcsw
    print(json.dumps({"ms": statistics.median(blocks),
                      "switches_per_step": switches / (args.rounds * args.steps)}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="narrow_deep")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--processes", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5, help="per round, and to warm up")
    parser.add_argument("--after", default="", help="MODEL:BATCH,... to step before")
    parser.add_argument("--no-aslr", action="store_true", help="run each under setarch -R")
    parser.add_argument("--cpu", type=int, help="pin each process to this core")
    parser.add_argument("--neighbour", type=int, default=0,
                        help="KB the task sharing --cpu's core copies every 100 us")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})  # the children inherit it
    if args.child:
        child(args)
        return
    if args.neighbour and args.cpu is None:
        parser.error("--neighbour needs --cpu")
    command = [sys.executable, os.path.abspath(__file__), "--child", "--model", args.model,
               "--batch", str(args.batch), "--dtype", args.dtype, "--after", args.after, "--rounds",
               str(args.rounds), "--steps", str(args.steps)]
    if args.no_aslr:
        command = ["setarch", "-R", *command]
    neighbour = subprocess.Popen([sys.executable, "-c", NEIGHBOUR, str(args.neighbour)]
                                 ) if args.neighbour else None
    try:
        runs = [json.loads(subprocess.run(command, check=True, capture_output=True,
                                          text=True).stdout.splitlines()[-1])
                for _ in range(args.processes)]
    finally:
        if neighbour is not None:
            neighbour.kill()
    print(f"{args.model} batch {args.batch} {args.dtype}, one thread, CPU time; "
          f"{args.processes} processes{' without ASLR' if args.no_aslr else ''}"
          f"{f', each after {args.after}' if args.after else ''}"
          f"{f' on core {args.cpu}' if args.cpu is not None else ''}"
          f"{f', a neighbour copying {args.neighbour} KB every 100 us' if args.neighbour else ''}")
    print("step ms  switches/step")
    for run in sorted(runs, key=lambda run: run["ms"]):
        print(f"{run['ms']:7.2f}  {run['switches_per_step']:13.1f}")
    median = statistics.median(run["ms"] for run in runs)
    slow = sum(run["ms"] > 1.15 * median for run in runs)
    switches = statistics.median(run["switches_per_step"] for run in runs)
    print(f"median {median:.2f} ms, {switches:.1f} switches per step; {slow} of {len(runs)} "
          "over 1.15x the median")


if __name__ == "__main__":
    main()
