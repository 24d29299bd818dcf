"""The command line: `graphnet train`, `graphnet render`, `graphnet bench`.

    graphnet train                          # a small convnet on the 8x8 digits, ~97-98 %
    graphnet train --data cifar10 --download --epochs 1
    graphnet train --out runs/a --resume    # continue an interrupted run

`train` writes into --out: checkpoint.npz (after every epoch, and on Ctrl-C / SIGTERM),
model.npz (the final model: the best validation params), run.json (the settings, so
--resume continues with the same ones), training.png (loss and accuracy curves),
filters.png (the first conv layer's filters, for the convnet) and graph.svg (the model's
graph drawn by graphnet.viz, with the values and gradients of a training step). It ends
with the line
`test accuracy: 0.xxx`.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .training.solver import Solver

# Bad arguments exit with 2, through argparse's parser.error.
EXIT_OK, EXIT_ERROR, EXIT_SIGINT, EXIT_SIGTERM = 0, 1, 130, 143
DEFAULT_OUT = os.path.join("runs", "latest")
CHECKPOINT, FINAL_MODEL, RUN_FILE = "checkpoint.npz", "model.npz", "run.json"
PLOT_FILE, FILTERS_FILE, GRAPH_FILE = "training.png", "filters.png", "graph.svg"

# Settings tuned per data set (measured: see docs/training.md). Keys not given on the
# command line come from here.
DEFAULTS = {
    "digits": {
        "common": dict(epochs=15, batch_size=50, update_rule="adam", lr_decay=0.9),
        "convnet": dict(lr=3e-3, reg=0.0, weight_scale=0.1, num_filters=32, filter_size=3,
                        hidden_dim=100),
        "fc": dict(lr=3e-3, reg=0.0, weight_scale=0.1, hidden_dims=[100, 100]),
        "twolayer": dict(lr=3e-3, reg=0.0, weight_scale=0.1, hidden_dim=100),
    },
    "cifar10": {
        "common": dict(epochs=1, batch_size=50, update_rule="adam", lr_decay=0.95),
        "convnet": dict(lr=1e-3, reg=1e-3, weight_scale=1e-3, num_filters=32, filter_size=7,
                        hidden_dim=100),
        "fc": dict(lr=1e-3, reg=0.0, weight_scale=5e-2, hidden_dims=[100, 100]),
        "twolayer": dict(lr=1e-3, reg=0.0, weight_scale=1e-3, hidden_dim=100),
    },
}
# Kernel threads when --threads is not given: the digits' 8x8 images are too small for a
# second thread to pay for its start-up and spinning (None: graphnet's default, all cores).
DEFAULT_THREADS = {"digits": 1, "cifar10": None}
# Settings a resumed run must keep (changing them would not continue the same run).
FIXED_ON_RESUME = ("model", "data", "batch_size", "update_rule", "lr", "lr_decay", "reg",
                   "seed")


# =========================================================================== arguments

def _positive_int(text):
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text):
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _positive_float(text):
    value = _number(text, float)
    if not value > 0 or not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _non_negative_float(text):
    value = _number(text, float)
    if not value >= 0 or not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _number(text, kind):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a{'n integer' if kind is int else ' number'}: "
                                         f"{text!r}") from None


def build_parser():
    parser = argparse.ArgumentParser(
        prog="graphnet", description="graphnet: a computational-graph engine with explicit gates")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    train = commands.add_parser(
        "train", help="train a model (default: a small convnet on the 8x8 digits)",
        description="Train a model with the Solver; writes checkpoints, the final model, "
                    "a training plot and the graph drawing into --out.")
    train.add_argument("--model", choices=("convnet", "fc", "twolayer"), default=None,
                       help="ThreeLayerConvNet, FullyConnectedNet or TwoLayerNet (convnet)")
    train.add_argument("--data", choices=("digits", "cifar10"), default=None,
                       help="the 8x8 digits from scikit-learn, or CIFAR-10 (digits)")
    train.add_argument("--data-dir", metavar="DIR", default=None,
                       help="folder of CIFAR-10 (cifar-10-batches-py or its parent)")
    train.add_argument("--download", action="store_true",
                       help="download CIFAR-10 into --data-dir if it is not there")
    train.add_argument("--epochs", type=_positive_int, default=None, metavar="N")
    train.add_argument("--batch-size", type=_positive_int, default=None, metavar="N")
    train.add_argument("--update-rule", choices=("sgd", "sgd_momentum", "rmsprop", "adam"),
                       default=None, help="(adam)")
    train.add_argument("--lr", type=_positive_float, default=None, metavar="X",
                       help="learning rate (tuned per model and data set)")
    train.add_argument("--lr-decay", type=_positive_float, default=None, metavar="X",
                       help="learning-rate factor per epoch")
    train.add_argument("--reg", type=_non_negative_float, default=None, metavar="X",
                       help="L2 regularization strength")
    train.add_argument("--seed", type=_non_negative_int, default=None, metavar="N",
                       help="seeds the initial weights and the minibatches (0)")
    train.add_argument("--out", metavar="DIR", default=DEFAULT_OUT,
                       help=f"output folder ({DEFAULT_OUT})")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its checkpoint")
    train.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                       help="threads for the C++ kernels (default: 1 on the digits, "
                            "all cores on CIFAR-10)")
    train.add_argument("--quiet", action="store_true", help="only the final lines")
    train.set_defaults(handler=cmd_train)

    render = commands.add_parser("render", help="draw the graph of a saved model",
                                 description="Draw the graph of a model saved with "
                                             "graphnet.save (or graphnet train).")
    render.add_argument("checkpoint", help="a .npz written by graphnet.save")
    render.add_argument("-o", "--output", default=None,
                        help="output file: .svg, .png, .pdf, .dot or .html "
                             "(default: the checkpoint's name with .svg)")
    render.set_defaults(handler=cmd_render)

    bench = commands.add_parser("bench", help="time training steps against PyTorch",
                                description="Run benchmarks/bench_train.py from a source "
                                            "checkout (arguments are passed on).")
    bench.add_argument("args", nargs=argparse.REMAINDER)
    bench.set_defaults(handler=cmd_bench)
    return parser


def main(argv=None):
    """Entry point of the `graphnet` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args, parser)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_SIGINT


def _fail(message, code=EXIT_ERROR):
    print(f"graphnet: error: {message}", file=sys.stderr)
    return code


# =========================================================================== train

def resolve_settings(args, parser):
    """The run's settings: --resume takes them from run.json, else from the command
    line with per-data-set defaults. Returns a dict."""
    out = Path(args.out)
    given = {key: getattr(args, key) for key in
             ("model", "data", "epochs", "batch_size", "update_rule", "lr", "lr_decay",
              "reg", "seed") if getattr(args, key) is not None}
    if args.resume:
        run_file = out / RUN_FILE
        if not (out / CHECKPOINT).is_file() or not run_file.is_file():
            parser.error(f"--resume: no run to resume in {out} (it needs {CHECKPOINT} and "
                         f"{RUN_FILE} written by an earlier `graphnet train --out {out}`)")
        try:
            settings = json.loads(run_file.read_text())
        except (OSError, ValueError) as err:
            parser.error(f"--resume: cannot read {run_file}: {err}")
        for key in FIXED_ON_RESUME:
            if key in given and given[key] != settings.get(key):
                parser.error(f"--resume continues the run in {out} with its saved settings; "
                             f"it cannot change --{key.replace('_', '-')} "
                             f"(saved: {settings.get(key)!r}, given: {given[key]!r})")
        if "epochs" in given:
            settings["epochs"] = given["epochs"]
        return settings
    model = given.get("model", "convnet")
    data = given.get("data", "digits")
    settings = {"model": model, "data": data, "seed": 0,
                **DEFAULTS[data]["common"], **DEFAULTS[data][model]}
    settings.update(given)
    return settings


def load_data(settings, args, parser):
    from . import data as datasets
    if settings["data"] == "digits":
        if args.download or args.data_dir:
            print("note: the digits ship with scikit-learn; --download and --data-dir are "
                  "not needed")
        try:
            return datasets.get_digits_data()
        except ImportError as err:
            raise _UserError(str(err)) from None
    folder = Path(args.data_dir or settings.get("data_dir") or datasets.default_cifar10_dir())
    folder = folder.expanduser()
    if args.download:
        print(f"downloading CIFAR-10 into {folder} (170 MB; skipped if it is already there)",
              flush=True)
        folder = datasets.download_cifar10(folder)
    elif not _has_cifar(folder):
        parser.error(f"CIFAR-10 not found in {folder}: pass --data-dir DIR (the "
                     "cifar-10-batches-py folder or its parent) or add --download")
    settings["data_dir"] = str(folder)
    return datasets.get_CIFAR10_data(cifar10_dir=folder)


def _has_cifar(folder):
    return any((f / "test_batch").is_file() for f in (folder, folder / "cifar-10-batches-py"))


def build_model(settings, data):
    from . import models
    input_dim = data["X_train"].shape[1:]
    common = dict(reg=settings["reg"], weight_scale=settings["weight_scale"],
                  num_classes=int(max(data["y_train"].max(), data["y_val"].max())) + 1)
    # The course's models draw their initial weights from numpy's global generator: seed
    # it for the build, and put back whatever state the caller had.
    state = np.random.get_state()
    np.random.seed(settings["seed"])
    try:
        return _build_model(models, settings, input_dim, common)
    finally:
        np.random.set_state(state)


def _build_model(models, settings, input_dim, common):
    if settings["model"] == "convnet":
        return models.ThreeLayerConvNet(
            input_dim=input_dim, num_filters=settings["num_filters"],
            filter_size=settings["filter_size"], hidden_dim=settings["hidden_dim"],
            dtype=np.float32, **common)
    features = int(np.prod(input_dim))
    if settings["model"] == "fc":
        return models.FullyConnectedNet(settings["hidden_dims"], input_dim=features,
                                        dtype=np.float32, **common)
    return models.TwoLayerNet(input_dim=features, hidden_dim=settings["hidden_dim"],
                              dtype=np.float32, **common)


class _UserError(Exception):
    """A problem to report in one line, without a traceback."""


def cmd_train(args, parser):
    start = time.perf_counter()
    settings = resolve_settings(args, parser)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        return _fail(f"cannot create the output folder {out}: {err}")
    from .data import DataError
    try:
        data = load_data(settings, args, parser)
    except (_UserError, DataError, OSError) as err:
        return _fail(str(err))
    restore_threads = _limit_threads(args.threads or DEFAULT_THREADS[settings["data"]])
    try:
        return _train(args, settings, data, out, start)
    finally:
        restore_threads()


def _train(args, settings, data, out, start):
    from . import CheckpointError, GraphError, load, save
    model = build_model(settings, data)
    solver = _RunSolver(
        model, data, checkpoint_file=out / CHECKPOINT, update_rule=settings["update_rule"],
        optim_config={"learning_rate": settings["lr"]}, lr_decay=settings["lr_decay"],
        batch_size=settings["batch_size"], num_epochs=settings["epochs"],
        seed=settings["seed"], verbose=not args.quiet, print_every=50)
    if args.resume:
        try:
            load(out / CHECKPOINT, into=solver)
        except (CheckpointError, GraphError, OSError) as err:
            return _fail(f"cannot resume: {err}")
        print(f"resuming {out}: epoch {solver.epoch}, iteration {solver.iteration} of "
              f"{solver.num_iterations}", flush=True)
    (out / RUN_FILE).write_text(json.dumps(settings, indent=2) + "\n")
    if not args.quiet:
        print(f"training {type(model).__name__} on {settings['data']} "
              f"({len(data['X_train'])} train / {len(data['X_val'])} val / "
              f"{len(data['X_test'])} test), {settings['update_rule']} lr {settings['lr']:g}, "
              f"{settings['epochs']} epochs of {solver.iterations_per_epoch} iterations, "
              f"batch {settings['batch_size']}, seed {settings['seed']}", flush=True)

    received = []

    def on_signal(signum, frame):
        received.append(signum)
        solver.request_stop()
        if signum == signal.SIGINT:  # a second Ctrl-C stops at once
            signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        solver.train()
    except KeyboardInterrupt:
        return _interrupted(out, solver, signal.SIGINT, saved=False)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if solver.interrupted:
        try:
            save(solver, out / CHECKPOINT)
        except KeyboardInterrupt:
            return _interrupted(out, solver, received[0], saved=False)
        return _interrupted(out, solver, received[0] if received else signal.SIGINT, saved=True)

    save(model, out / FINAL_MODEL)
    test_acc = solver.check_accuracy(data["X_test"], data["y_test"])
    elapsed = time.perf_counter() - start
    pictures = _write_pictures(solver, model, out, settings)
    drawing = _write_graph(model, data, out / GRAPH_FILE)
    print(f"best validation accuracy: {solver.best_val_acc:.3f}")
    print("wrote " + ", ".join(str(f) for f in [out / FINAL_MODEL, out / CHECKPOINT, *pictures]
                               + ([drawing] if drawing else [])))
    print(f"time: {elapsed:.1f} s")
    print(f"test accuracy: {test_acc:.3f}", flush=True)
    return EXIT_OK


def _interrupted(out, solver, signum, saved):
    name = "SIGTERM" if signum == signal.SIGTERM else "SIGINT"
    where = (f"epoch {solver.epoch}, iteration {solver.iteration} of {solver.num_iterations}")
    if saved:
        print(f"\n{name}: stopped at {where}; checkpoint saved to {out / CHECKPOINT}",
              file=sys.stderr)
    else:
        state = ("the last epoch's checkpoint is in " + str(out / CHECKPOINT)
                 if (out / CHECKPOINT).is_file() else "no checkpoint was written yet")
        print(f"\n{name}: stopped at once at {where}; {state}", file=sys.stderr)
    print(f"resume with: graphnet train --out {out} --resume", file=sys.stderr, flush=True)
    return EXIT_SIGTERM if signum == signal.SIGTERM else EXIT_SIGINT


def _limit_threads(threads):
    """--threads sets the C++ kernels' thread count (every gate of the models runs on that
    team; numpy's BLAS is not used). Returns a function that puts it back."""
    from .kernels import _C
    before = _C.get_num_threads()
    if threads:
        _C.set_num_threads(threads)
    return lambda: _C.set_num_threads(before)


class _RunSolver(Solver):
    """A Solver whose epoch checkpoints all go to one file (replaced atomically)."""

    def __init__(self, model, data, *, checkpoint_file, **kwargs):
        super().__init__(model, data, checkpoint_name=str(checkpoint_file), **kwargs)
        self.checkpoint_file = checkpoint_file

    def checkpoint_path(self, epoch):
        return self.checkpoint_file


def _write_pictures(solver, model, out, settings):
    """The training curves, and the first layer's filters for a convnet; the files written."""
    from . import viz
    viz.plot_training(solver, path=out / PLOT_FILE,
                      title=f"{settings['model']} on {settings['data']}")
    written = [out / PLOT_FILE]
    if settings["model"] == "convnet":
        viz.plot_filters(model.params["W1"], path=out / FILTERS_FILE,
                         title="first-layer conv filters")
        written.append(out / FILTERS_FILE)
    return written


def _write_graph(model, data, path):
    """Draw the model's graph after one forward and backward on a few training images, so
    the drawing shows values and gradients. Returns the file written, or None."""
    try:
        from . import viz
    except ImportError as err:
        print(f"note: graph drawing skipped (graphnet.viz is not available: {err})")
        return None
    graph = model.graph
    graph.run("loss", X=data["X_train"][:8], y=data["y_train"][:8])  # the whole loss,
    graph.backward("loss")                                          # L2 branch included
    try:
        viz.export(model.graph, path, title=f"{type(model).__name__}")
        return path
    except viz.GraphvizNotFoundError:
        dot = path.with_suffix(".dot")
        viz.export(model.graph, dot)
        print(f"note: the Graphviz program `dot` is not installed; wrote the DOT source {dot}")
        return dot


# =========================================================================== render, bench

def cmd_render(args, parser):
    from . import CheckpointError, Graph, load
    try:
        loaded = load(args.checkpoint)
    except (CheckpointError, OSError) as err:
        return _fail(str(err))
    graph = loaded if isinstance(loaded, Graph) else loaded.graph
    output = Path(args.output) if args.output else Path(args.checkpoint).with_suffix(".svg")
    try:
        from . import viz
    except ImportError as err:
        return _fail(f"graphnet.viz is not available: {err}")
    try:
        viz.export(graph, output, title=type(loaded).__name__)
    except (viz.GraphvizNotFoundError, ValueError) as err:
        return _fail(str(err))
    print(f"wrote {output}")
    return EXIT_OK


def cmd_bench(args, parser):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_train.py"
    if not script.is_file():
        print("graphnet bench runs benchmarks/bench_train.py from a source checkout of "
              "graphnet: clone the repository and run `python benchmarks/bench_train.py`")
        return EXIT_ERROR
    extra = [a for a in args.args if a != "--"]
    return subprocess.call([sys.executable, str(script), *extra])


if __name__ == "__main__":
    sys.exit(main())
