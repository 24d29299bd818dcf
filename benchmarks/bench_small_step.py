"""The fixed costs of a zoo network's training step at small batches (batch 1 by default).

    python benchmarks/bench_small_step.py [--models res_strided,modern] [--batch 1]
                                          [--rounds 200] [--top 12]
    python benchmarks/bench_small_step.py --parts [--models ...] [--batch 1] [--rounds 30]
    python benchmarks/bench_small_step.py --callgrind [--models ...] [--batch 1]

--dtype float64 runs the networks in float64 (float32 by default).

On one thread, in CPU time, for each network of benchmarks/zoo_models.py (a zoo or
student network's name, or random-SEED-INDEX; float32 unless --dtype says):

- `model.loss(X, y)` called in a loop by itself (forward + backward, no update between
  calls, first thing in the process), with the page faults and the system time of each
  call (getrusage);
- the update: one `optim.adam(w, dw, config)` per param (the zoo's and the Solver's
  call), and the same for sgd, sgd_momentum and rmsprop, us per call averaged over the
  network's params;
- each step of that walk timed twice in a row: its first call, as the walk runs it, and
  the same call again at once (the step's inputs and code then in cache). The top
  --top steps by first call are printed, and the sums.

--parts times, in turns (min of --rounds blocks of 20 calls), what a step runs around
its walks: the whole Solver-style step, `model.loss` alone, the graph's two walks alone
(`run_forward` and `run_backward` of the plans the loss ran, no feed, plan lookup or
gradient dict), `graph.grads`, the update loop (reading and assigning each param) and
the bare `_C.update_step` per param.

--callgrind instead counts the instructions of one training step as bench_zoo.py runs
it (`model.loss(X, y)`, then `optim.adam` per param, the result assigned back) under
`valgrind --tool=callgrind`: (a run of 12 steps - a run of 2) / 10, after 3 steps of
warm-up in each, with one OpenMP and BLAS thread and a fixed PYTHONHASHSEED, so that the
count repeats to a few instructions on a loaded machine.
"""
import argparse
import os
import re
import resource
import subprocess
import sys
import time

import numpy as np

from graphnet import optim
from graphnet.kernels import _C

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from zoo_models import batch_of, build_graphnet, model_named  # noqa: E402

RULES = (optim.adam, optim.sgd, optim.sgd_momentum, optim.rmsprop)


def update_us(model, grads, rule, rounds):
    """us per call of `rule` over the model's params (copies: the model is not changed)."""
    params = {name: value.copy() for name, value in model.params.items()}
    configs = {name: {"learning_rate": 1e-3} for name in params}

    def sweep():
        for name in params:
            params[name], configs[name] = rule(params[name], grads[name], configs[name])

    sweep()
    start = time.process_time()
    for _ in range(rounds):
        sweep()
    return (time.process_time() - start) / rounds / len(params) * 1e6


def loss_alone(model, X, y, rounds):
    """(us per model.loss call, page faults per call, system us per call)."""
    for _ in range(5):
        model.loss(X, y)
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
    for _ in range(rounds):
        model.loss(X, y)
    seconds, after = time.process_time() - start, resource.getrusage(resource.RUSAGE_SELF)
    return (
        seconds / rounds * 1e6,
        (after.ru_minflt - before.ru_minflt) / rounds,
        (after.ru_stime - before.ru_stime) / rounds * 1e6,
    )


def steps_twice(model, X, y, rounds):
    """{(direction, step label, node name): [first us, again us]} per call of the walk."""
    times = {}
    executor = model.graph.executor
    for plan in executor._plans.values():
        for i, entry in enumerate(plan.loop):
            key = (plan.direction, plan.steps[i].label, plan.steps[i].node.name)

            def twice(*args, run=entry[1], key=key):
                start = time.process_time()
                run(*args)
                middle = time.process_time()
                result = run(*args)
                row = times.setdefault(key, [0.0, 0.0])
                row[0] += middle - start
                row[1] += time.process_time() - middle
                return result

            plan.loop[i] = (entry[0], twice) + tuple(entry[2:])
    for _ in range(5):
        model.loss(X, y)
    times.clear()
    for _ in range(rounds):
        model.loss(X, y)
    return {key: [t / rounds * 1e6 for t in row] for key, row in times.items()}


def zoo_steps(name, batch, steps, dtype):
    """Run `steps` training steps of bench_zoo.py's kind (after 3 to warm up)."""
    spec = model_named(name)
    model = build_graphnet(spec, dtype)
    X, y = batch_of(spec, batch, dtype, np.random.default_rng(0))
    configs = {key: {"learning_rate": 1e-3} for key in model.params}
    for _ in range(3 + steps):
        _, grads = model.loss(X, y)
        for key in model.params:
            model.params[key], configs[key] = optim.adam(model.params[key], grads[key],
                                                         configs[key])


def parts_us(model, X, y, rounds):
    """{part: min us per call over `rounds` blocks of 20 calls, the parts in turns}."""
    graph, configs = model.graph, {key: {"learning_rate": 1e-3} for key in model.params}
    _, grads = model.loss(X, y)
    executor, store = graph.executor, graph.store
    forward, record = executor.last_forward, store.last_backward

    def walks():
        executor.run_forward(forward, [])
        executor.run_backward(record.plan, record.seed, store, [])

    def update():
        for key in model.params:
            model.params[key], configs[key] = optim.adam(model.params[key], grads[key],
                                                         configs[key])

    params = [(value, grads[key], configs[key]) for key, value in model.params.items()]

    def bare_update():
        for w, dw, config in params:
            _C.update_step("adam", w, dw, config)

    def step():
        model.loss(X, y)
        update()

    parts = {"step": step, "model.loss": lambda: model.loss(X, y), "the walks": walks,
             "graph.grads": lambda: graph.grads, "update loop": update,
             "bare update_step": bare_update}
    best = dict.fromkeys(parts, float("inf"))
    for _ in range(rounds):
        for label, part in parts.items():
            start = time.process_time()
            for _ in range(20):
                part()
            best[label] = min(best[label], (time.process_time() - start) / 20 * 1e6)
    return best


def instructions_per_step(name, batch, dtype):
    """(instructions of 12 steps - of 2 steps) / 10, each run under callgrind."""
    counts = []
    for steps in (2, 12):
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
                   PYTHONHASHSEED="0")
        result = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
             __file__, "--models", name, "--batch", str(batch), "--steps", str(steps),
             "--dtype", dtype],
            env=env, capture_output=True, text=True, check=True)
        counts.append(int(re.search(r"Collected : (\d+)", result.stderr).group(1)))
    return (counts[1] - counts[0]) / 10


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="res_strided,modern")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--callgrind", action="store_true",
                        help="count the instructions of a training step under valgrind")
    parser.add_argument("--parts", action="store_true",
                        help="time the step's parts around its walks, in turns")
    parser.add_argument("--steps", type=int, help=argparse.SUPPRESS)  # for --callgrind
    args = parser.parse_args()
    _C.set_num_threads(1)
    if args.steps is not None:
        return zoo_steps(args.models, args.batch, args.steps, np.dtype(args.dtype))
    if args.callgrind:
        for name in args.models.split(","):
            print(f"{name}, batch {args.batch}, {args.dtype}: "
                  f"{instructions_per_step(name, args.batch, args.dtype):,.0f} instructions a step")
        return None
    for name in args.models.split(","):
        spec = model_named(name)
        model = build_graphnet(spec, np.dtype(args.dtype))
        X, y = batch_of(spec, args.batch, np.dtype(args.dtype), np.random.default_rng(0))
        print(f"{name}, batch {args.batch}, {args.dtype}, {len(model.params)} params, "
              f"{sum(p.size for p in model.params.values())} weights")
        if args.parts:
            print("  " + ", ".join(f"{label} {us:.1f}" for label, us in
                                   parts_us(model, X, y, args.rounds).items()) + " us")
            continue
        us, faults, system = loss_alone(model, X, y, args.rounds)
        print(f"  model.loss alone: {us:.0f} us a call, {faults:.1f} page faults, "
              f"{system:.0f} us of it in the system")
        _, grads = model.loss(X, y)
        grads = {key: value.copy() for key, value in grads.items()}
        print("  update, us per call: " + ", ".join(
            f"{rule.__name__} {update_us(model, grads, rule, args.rounds):.2f}" for rule in RULES))
        rows = steps_twice(model, X, y, args.rounds)
        print(f"  {'walk':<9} {'step':<32} {'node':<10} {'first us':>9} {'again us':>9}")
        for (direction, label, node), (first, again) in sorted(
                rows.items(), key=lambda item: -item[1][0])[:args.top]:
            print(f"  {direction:<9} {label[:32]:<32} {node[:10]:<10} {first:9.1f} {again:9.1f}")
        print(f"  {'all steps':<53} {sum(r[0] for r in rows.values()):9.1f} "
              f"{sum(r[1] for r in rows.values()):9.1f}")


if __name__ == "__main__":
    main()
