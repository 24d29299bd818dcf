"""Throughput of data-parallel training: 1 process against 2 (torchrun, gloo) on this
machine.

    python benchmarks/bench_distributed.py [--rounds 5] [--steps 30]

Each setting trains a ThreeLayerConvNet with the Solver's steps (the global minibatch
drawn, forward, backward, the gradient all-reduce when distributed, adam) for --steps
steps (10 times as many on the digits), after 3 warm-up steps, and reports training
samples per second (global batch x steps / time of process 0). Two workloads: the 8x8
digits (32 filters 3x3, hidden 100, batch 50: small steps, where per-step overhead
counts) and CIFAR-shaped float32 random data (3x32x32, 32 filters 7x7, hidden 100,
batch 50: the kernels dominate). Three settings
share the same cores:
  1 process x 1 thread, 1 process x 2 threads (graphnet's own parallelism, the peer that
  counts on a 2-core machine), 2 processes x 1 thread each (torchrun; graphnet's thread
  count is set to 1 per process, so the two processes do not fight over the cores).
The settings take turns round by round; the table shows medians over --rounds.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

import numpy as np

WORKLOADS = ("digits", "cifar-shaped")
SETTINGS = (("1 process x 1 thread", 1, 1), ("1 process x 2 threads", 1, 2),
            ("2 processes x 1 thread", 2, 1))


def worker(workload, steps, threads):
    """Run in each process: time `steps` Solver steps; process 0 prints samples/s."""
    import graphnet as gn
    from graphnet.kernels import _C
    from graphnet.models import ThreeLayerConvNet
    _C.set_num_threads(threads)
    if workload == "digits":
        data = gn.data.get_digits_data()
        shape = dict(input_dim=(1, 8, 8), filter_size=3)
    else:
        rng = np.random.default_rng(0)
        data = {"X_train": rng.normal(size=(500, 3, 32, 32)).astype(np.float32),
                "y_train": rng.integers(0, 10, 500),
                "X_val": rng.normal(size=(10, 3, 32, 32)).astype(np.float32),
                "y_val": rng.integers(0, 10, 10)}
        shape = dict(input_dim=(3, 32, 32), filter_size=7)
    np.random.seed(0)
    model = ThreeLayerConvNet(num_filters=32, hidden_dim=100, dtype=np.float32, **shape)
    distributed = "RANK" in os.environ
    solver = gn.Solver(model, data, update_rule="adam", optim_config={"learning_rate": 1e-3},
                       batch_size=50, seed=0, verbose=False, distributed=distributed)
    for _ in range(3):
        solver._step()  # warm-up; in 2 processes the last all-reduce also lines them up
    start = time.perf_counter()
    for _ in range(steps):
        solver._step()
    elapsed = time.perf_counter() - start
    if not distributed or solver.distributed.rank == 0:
        print(json.dumps({"samples_per_s": steps * solver.batch_size / elapsed}))
    if distributed:
        solver.distributed.close()


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def measure(workload, processes, threads, steps):
    command = [__file__, "--worker", workload, "--steps", str(steps), "--threads", str(threads)]
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")}
    if processes == 1:
        command = [sys.executable, *command]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node",
                   str(processes), "--master-addr", "127.0.0.1", "--master-port",
                   str(_free_port()), *command]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    if result.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    line = [ln for ln in result.stdout.splitlines() if ln.startswith("{")][-1]
    return json.loads(line)["samples_per_s"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--worker", choices=WORKLOADS)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.steps, args.threads)
    results = {(w, s[0]): [] for w in WORKLOADS for s in SETTINGS}
    for round_ in range(args.rounds):
        for workload in WORKLOADS:
            for name, processes, threads in SETTINGS:
                steps = args.steps * (10 if workload == "digits" else 1)
                results[workload, name].append(measure(workload, processes, threads, steps))
        print(f"round {round_ + 1} of {args.rounds} done", file=sys.stderr, flush=True)
    print(f"{os.cpu_count()} cores; medians of {args.rounds} rounds of {args.steps} steps "
          f"({10 * args.steps} on the digits), global batch 50")
    print("| workload | setting | samples/s | vs 1 process x 1 thread |")
    print("|---|---|---:|---:|")
    for workload in WORKLOADS:
        base = statistics.median(results[workload, SETTINGS[0][0]])
        for name, _, _ in SETTINGS:
            value = statistics.median(results[workload, name])
            print(f"| {workload} | {name} | {value:.0f} | {value / base:.2f}x |")


if __name__ == "__main__":
    main()
