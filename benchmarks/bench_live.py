"""What the widget's live mode costs a training run, measured in a real Jupyter kernel.

    python benchmarks/bench_live.py [--pairs 3] [--cli-epochs N] [--solver-epochs 20]

Runs, in one kernel started with nbclient (so every live update is serialized and sent
as a widget message, as in a notebook), the same training with a widget (made before the
clock starts, both times), with and without its live mode, taking turns (plain, live,
plain, live, ...) so a shared machine's load affects both alike, and prints the median
wall time of the training with and without it, the median of the pairs' ratios of wall
time and of CPU time (the process's threads and its children, such as `dot`: less moved
by other jobs than wall time), the layouts and redraws made during the training, the
share of the training's time the live mode itself spent (Live.overhead: the layout, the
redraws), and the time leaving the live mode took after the training to draw the final
state (Live.final: the cell waits for it; it is not part of the training's time):

(a) `graphnet train` (its defaults: the convnet on the 8x8 digits, 15 epochs, unless
    --cli-epochs) run in the kernel as graphnet.cli.main([...]), with
    `viz.Widget().live()` following it at the default N and budget;
(b) Solver.train() of a TwoLayerNet on the digits for --solver-epochs (a step of a few
    tens of microseconds: where a hook's fixed cost shows most), with
    `viz.Widget(model).live()`, the widget made before the training starts, from the
    model not yet run, as a notebook does.
"""
import argparse
import json
import statistics

import nbformat
from nbclient import NotebookClient

SETUP = """
import gc, json, resource, tempfile, time
import numpy as np
from graphnet import Solver, cli, viz
from graphnet.data import load_digits
from graphnet.models import TwoLayerNet
from graphnet.kernels import _C
_C.set_num_threads(1)   # what graphnet train does on the digits
X, y = load_digits()
X = X.reshape(len(X), -1)
data = dict(X_train=X[:1500], y_train=y[:1500], X_val=X[1500:], y_val=y[1500:])
OUT = tempfile.mkdtemp()

def cpu():  # CPU seconds of this process's threads and of its finished children (dot)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime

def watched(watcher, start, trained, cpu_start, cpu_trained):
    return dict(seconds=trained - start, cpu=cpu_trained - cpu_start,
                layouts=watcher.layouts, updates=watcher.updates, skipped=watcher.skipped,
                overhead=watcher.overhead, final=watcher.final)

def cli_run(live):
    args = ["train", *{cli_epochs}, "--quiet", "--seed", "0", "--out", OUT]
    w = viz.Widget()
    gc.collect()
    start, cpu_start = time.perf_counter(), cpu()
    if live:
        with w.live() as watcher:
            cli.main(args)
            trained, cpu_trained = time.perf_counter(), cpu()
        return watched(watcher, start, trained, cpu_start, cpu_trained)
    cli.main(args)
    return dict(seconds=time.perf_counter() - start, cpu=cpu() - cpu_start)

def solver_run(live):
    np.random.seed(0)
    model = TwoLayerNet(input_dim=64, hidden_dim=100, num_classes=10, weight_scale=0.1)
    solver = Solver(model, data, update_rule="adam", optim_config=dict(learning_rate=3e-3),
                    num_epochs={solver_epochs}, batch_size=50, verbose=False, seed=0)
    w = viz.Widget(model)
    gc.collect()
    start, cpu_start = time.perf_counter(), cpu()
    if live:
        with w.live() as watcher:
            solver.train()
            trained, cpu_trained = time.perf_counter(), cpu()
        return watched(watcher, start, trained, cpu_start, cpu_trained)
    solver.train()
    return dict(seconds=time.perf_counter() - start, cpu=cpu() - cpu_start)
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--cli-epochs", type=int, default=None)
    parser.add_argument("--solver-epochs", type=int, default=20)
    args = parser.parse_args()
    cli_epochs = [] if args.cli_epochs is None else ["--epochs", str(args.cli_epochs)]
    cells = [nbformat.v4.new_code_cell(SETUP.format(cli_epochs=cli_epochs,
                                                    solver_epochs=args.solver_epochs))]
    order = []
    for _ in range(args.pairs):
        for what in ("cli", "solver"):
            for live in (False, True):
                order.append((what, live))
                cells.append(nbformat.v4.new_code_cell(
                    f"print(json.dumps({what}_run({live})))"))
    notebook = nbformat.v4.new_notebook(cells=cells)
    NotebookClient(notebook, timeout=3600, kernel_name="python3").execute()
    results = {}
    for (what, live), cell in zip(order, notebook.cells[1:]):
        text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
        results.setdefault((what, live), []).append(json.loads(text.strip().splitlines()[-1]))
    for what, title in (("cli", "graphnet train " + " ".join(cli_epochs) + " (convnet, digits)"),
                        ("solver", f"Solver.train(), TwoLayerNet on the digits, "
                                   f"{args.solver_epochs} epochs")):
        plain_runs, live_runs = results[(what, False)], results[(what, True)]
        plain = statistics.median(r["seconds"] for r in plain_runs)
        live = statistics.median(r["seconds"] for r in live_runs)
        ratio = statistics.median(b["seconds"] / a["seconds"]
                                  for a, b in zip(plain_runs, live_runs))
        cpu_ratio = statistics.median(b["cpu"] / a["cpu"] for a, b in zip(plain_runs, live_runs))
        median = {key: statistics.median(r[key] for r in live_runs)
                  for key in ("layouts", "updates", "skipped", "overhead", "final")}
        print(f"{title}: plain {plain:.3f} s, live {live:.3f} s, ratio of the medians "
              f"{live / plain:.3f}, median of the pairs' ratios {ratio:.3f} (of "
              f"{args.pairs} pairs), of their CPU time {cpu_ratio:.3f}; during the "
              f"training {median['layouts']:.0f} layouts, "
              f"{median['updates']:.0f} redraws, {median['skipped']:.0f} skipped by the "
              f"budget, the live mode's own time {100 * median['overhead']:.1f} %; the "
              f"final drawing after it {median['final']:.3f} s")


if __name__ == "__main__":
    main()
