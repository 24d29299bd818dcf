"""The command line: `graphnet train`, `graphnet render`, `graphnet bench`.

    graphnet train                          # a small convnet on the 8x8 digits, ~97-98 %
    graphnet train --data cifar10 --download --epochs 1
    graphnet train --out runs/a --resume    # continue an interrupted run
    graphnet train --model lstm             # caption handwritten numbers in words
    torchrun --nproc-per-node 2 -m graphnet train   # data-parallel (interop/distributed.py)

`train` writes into --out: checkpoint.npz (after every epoch, and on Ctrl-C / SIGTERM),
model.npz (the final model: the best validation params), run.json (the settings, so
--resume continues with the same ones), training.png (loss and accuracy curves),
filters.png (the first conv layer's filters, for the convnet) and graph.svg (the model's
graph drawn by graphnet.viz, with the values and gradients of a training step). Every
file is written atomically (graphnet.training.atomic), so an interrupted run or a full
disk never leaves a half-written one; a run that diverges stops at once and keeps its
last good checkpoint. It ends with the line
`test accuracy: 0.xxx`: for rnn and lstm (CaptioningRNN on graphnet.data's number
captions), the fraction of test numbers whose caption the model says word for word.

A user's mistake (a bad argument, a damaged file, missing data, a full disk) is one line,
`graphnet: error: ...`, never a traceback.
"""

import argparse
import contextlib
import difflib
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .training.atomic import remove_stale_temporaries, write_atomically
from .training.captioning_solver import CaptioningSolver
from .training.solver import Solver

# Bad arguments exit with 2, through argparse's parser.error.
EXIT_OK, EXIT_ERROR, EXIT_SIGINT, EXIT_SIGTERM = 0, 1, 130, 143
DEFAULT_OUT = os.path.join("runs", "latest")
CHECKPOINT, FINAL_MODEL, RUN_FILE = "checkpoint.npz", "model.npz", "run.json"
PLOT_FILE, FILTERS_FILE, GRAPH_FILE = "training.png", "filters.png", "graph.svg"
OUTPUT_FILES = (CHECKPOINT, FINAL_MODEL, RUN_FILE, PLOT_FILE, FILTERS_FILE, GRAPH_FILE, "graph.dot")
CAPTION_MODELS = ("rnn", "lstm")  # CaptioningRNN; they train on the number captions
MODELS, DATA_SETS = ("convnet", "fc", "twolayer") + CAPTION_MODELS, ("digits", "cifar10", "numbers")
UPDATE_RULES = ("sgd", "sgd_momentum", "rmsprop", "adam")

# Settings tuned per data set (listed by `graphnet train --help`). Keys not given on the
# command line come from here.
DEFAULTS = {
    "digits": {
        "common": dict(epochs=15, batch_size=50, update_rule="adam", lr_decay=0.9),
        "convnet": dict(
            lr=3e-3, reg=0.0, weight_scale=0.1, num_filters=32, filter_size=3, hidden_dim=100
        ),
        "fc": dict(lr=3e-3, reg=0.0, weight_scale=0.1, hidden_dims=[100, 100]),
        "twolayer": dict(lr=3e-3, reg=0.0, weight_scale=0.1, hidden_dim=100),
    },
    "cifar10": {
        "common": dict(epochs=1, batch_size=50, update_rule="adam", lr_decay=0.95),
        "convnet": dict(
            lr=1e-3, reg=1e-3, weight_scale=1e-3, num_filters=32, filter_size=7, hidden_dim=100
        ),
        "fc": dict(lr=1e-3, reg=0.0, weight_scale=5e-2, hidden_dims=[100, 100]),
        "twolayer": dict(lr=1e-3, reg=0.0, weight_scale=1e-3, hidden_dim=100),
    },
    "numbers": {  # graphnet.data.load_number_captions(): 5000 train, 500 val, 500 test
        "common": dict(epochs=10, batch_size=50, update_rule="adam", lr_decay=0.95, reg=0.0),
        "rnn": dict(lr=5e-3, wordvec_dim=64, hidden_dim=128),
        "lstm": dict(lr=5e-3, wordvec_dim=64, hidden_dim=128),
    },
}
# Kernel threads when --threads is not given: the digits' 8x8 images are too small for a
# second thread to pay for its start-up and spinning (None: graphnet's default, all cores);
# so are the number captions' batches of 50 x 128 hidden units (an lstm epoch: 10 and 25 s
# on one thread, 52 s on two, on a shared 2-core machine).
DEFAULT_THREADS = {"digits": 1, "cifar10": None, "numbers": 1}
# Settings a resumed run must keep (changing them would not continue the same run).
FIXED_ON_RESUME = ("model", "data", "batch_size", "update_rule", "lr", "lr_decay", "reg", "seed")


# =========================================================================== arguments


def _positive_int(text):
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _thread_count(text):
    from .kernels import _C

    value, most = _number(text, int), _C.max_num_threads()
    if not 1 <= value <= most:
        raise argparse.ArgumentTypeError(f"must be between 1 and {most}, got {text}")
    return value


def _seed(text):
    value = _number(text, int)
    if not _is_seed(value):
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**32 - 1], got {text}")
    return value


def _is_seed(value):
    """What numpy's global generator takes: the course's models draw their weights there."""
    return _is_count(value, 0) and value < 2**32


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


def _named(what, instead):
    """The argument type of a path option: the path as given, an empty one refused. An
    empty path is more likely an unset shell variable (--out "$RUN") than a wish: Path("")
    is the current folder, so train would spread checkpoint.npz and run.json among
    whatever is there, and render drew under the checkpoint's name as if -o were left
    out. `instead` says how to ask for what the empty string might have meant."""

    def parse(text):
        if not text:
            raise argparse.ArgumentTypeError(f"must name a {what}, got an empty string ({instead})")
        return text

    return parse


def _number(text, kind):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a{'n integer' if kind is int else ' number'}: {text!r}"
        ) from None


class _Parser(argparse.ArgumentParser):
    """argparse, guessing what was meant when an option, a command or a choice is
    mistyped."""

    def error(self, message):
        super().error(message + _did_you_mean(self, message))


def _parsers(parser):
    """parser and every subcommand's parser under it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def _did_you_mean(parser, message):
    unknown = re.match(r"unrecognized arguments: (.*)", message)
    if unknown:
        options = {o for p in _parsers(parser) for a in p._actions for o in a.option_strings}
        guesses = [
            (word.split("=")[0], match[0])
            for word in unknown.group(1).split()
            if word.startswith("--")
            for match in [difflib.get_close_matches(word.split("=")[0], options, 1)]
            if match
        ]
        if len(guesses) == 1:
            return f" (did you mean {guesses[0][1]}?)"
        return (
            (
                " (did you mean "
                + ", ".join(f"{right} for {wrong}" for wrong, right in guesses)
                + "?)"
            )
            if guesses
            else ""
        )
    choice = re.search(r"invalid choice: '([^']*)'", message)
    if choice:
        choices = {str(c) for p in _parsers(parser) for a in p._actions for c in a.choices or ()}
        match = difflib.get_close_matches(choice.group(1), choices, 1)
        return f"; did you mean {match[0]!r}?" if match else ""
    return ""


def _default(key):
    """A setting's default as --help shows it: one value, or one per data set and model."""
    per_data = {}
    for data, table in DEFAULTS.items():
        by_model = {m: _show({**table["common"], **table[m]}[key]) for m in MODELS if m in table}
        if len(set(by_model.values())) == 1:
            per_data[data] = next(iter(by_model.values()))
        else:
            per_data[data] = ", ".join(f"{v} ({m})" for m, v in by_model.items())
    if len(set(per_data.values())) == 1:
        return f"default: {per_data[DATA_SETS[0]]}"
    return "default: " + "; ".join(f"{v} on {d}" for d, v in per_data.items())


def _show(value):
    return f"{value:g}" if isinstance(value, float) else str(value)


def build_parser():
    parser = _Parser(
        prog="graphnet", description="graphnet: a computational-graph engine with explicit gates"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    train = commands.add_parser(
        "train",
        help="train a model (default: a small convnet on the 8x8 digits)",
        description="Train a model with the Solver; writes checkpoints, the final model, "
        "a training plot and the graph drawing into --out.",
    )
    train.add_argument(
        "--model",
        choices=MODELS,
        default=None,
        help="ThreeLayerConvNet, FullyConnectedNet, TwoLayerNet, or "
        "CaptioningRNN with a vanilla RNN or an LSTM (default: convnet)",
    )
    train.add_argument(
        "--data",
        choices=DATA_SETS,
        default=None,
        help="the 8x8 digits from scikit-learn, CIFAR-10, or numbers written "
        "with the digits to caption in words (the rnn and lstm's; "
        "default: digits, numbers for rnn and lstm)",
    )
    train.add_argument(
        "--data-dir",
        metavar="DIR",
        default=None,
        help="folder of CIFAR-10: cifar-10-batches-py or its parent (default: "
        "$GRAPHNET_DATA, else ~/.graphnet/data/cifar-10-batches-py)",
    )
    train.add_argument(
        "--download",
        action="store_true",
        help="download CIFAR-10 into --data-dir if it is not there",
    )
    train.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        metavar="N",
        help=f"passes over the training set ({_default('epochs')})",
    )
    train.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        metavar="N",
        help=f"images per step ({_default('batch_size')})",
    )
    train.add_argument(
        "--update-rule",
        choices=UPDATE_RULES,
        default=None,
        help=f"the optimizer ({_default('update_rule')})",
    )
    train.add_argument(
        "--lr",
        type=_positive_float,
        default=None,
        metavar="X",
        help=f"learning rate ({_default('lr')})",
    )
    train.add_argument(
        "--lr-decay",
        type=_positive_float,
        default=None,
        metavar="X",
        help=f"learning-rate factor per epoch ({_default('lr_decay')})",
    )
    train.add_argument(
        "--reg",
        type=_non_negative_float,
        default=None,
        metavar="X",
        help=f"L2 regularization strength ({_default('reg')})",
    )
    train.add_argument(
        "--seed",
        type=_seed,
        default=None,
        metavar="N",
        help="seeds the initial weights and the minibatches (default: 0)",
    )
    train.add_argument(
        "--out",
        type=_named("folder", "--out . writes into the current folder"),
        metavar="DIR",
        default=DEFAULT_OUT,
        help=f"output folder (default: {DEFAULT_OUT})",
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its checkpoint, with its saved "
        "settings (--epochs may raise the number of epochs)",
    )
    train.add_argument(
        "--threads",
        type=_thread_count,
        default=None,
        metavar="N",
        help="threads for the C++ kernels (default: 1 on the digits, all cores on CIFAR-10)",
    )
    train.add_argument(
        "--quiet", action="store_true", help="only the final lines (default: progress as it trains)"
    )
    train.set_defaults(handler=cmd_train)

    render = commands.add_parser(
        "render",
        help="draw the graph of a saved model",
        description="Draw the graph of a model saved with graphnet.save (or graphnet train).",
    )
    render.add_argument("checkpoint", help="a .npz written by graphnet.save")
    render.add_argument(
        "-o",
        "--output",
        type=_named("file", "without -o the drawing goes to the checkpoint's name with .svg"),
        default=None,
        help="output file: .svg, .png, .pdf, .dot or .html "
        "(default: the checkpoint's name with .svg)",
    )
    render.set_defaults(handler=cmd_render)

    bench = commands.add_parser(
        "bench",
        help="time training steps against PyTorch",
        description="Run benchmarks/bench_train.py from a source "
        "checkout (arguments are passed on).",
    )
    bench.add_argument("args", nargs=argparse.REMAINDER)
    bench.set_defaults(handler=cmd_bench)
    return parser


def main(argv=None):
    """Entry point of the `graphnet` console script; returns the exit code."""
    from . import GraphError
    from .data import DataError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args, parser)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_SIGINT
    # A user's mistake or a broken file, disk or network: one line. (GraphError covers
    # CheckpointError; anything else is a bug in graphnet and keeps its traceback.)
    except (_UserError, GraphError, DataError) as err:
        return _fail(err)
    except OSError as err:
        return _fail(_os_error(err))
    except MemoryError:
        return _fail("out of memory")


def _fail(message, code=EXIT_ERROR):
    print(f"graphnet: error: {' '.join(str(message).split())}", file=sys.stderr)
    return code


def _warn(message):
    print(f"graphnet: warning: {message}", file=sys.stderr)


def _os_error(err):
    """An OSError as 'cannot write run/checkpoint.npz: No space left on device'."""
    if err.filename is None or err.strerror is None:
        return str(err)
    return f"{err.filename}: {err.strerror}"


class _UserError(Exception):
    """A problem to report in one line, without a traceback."""


# =========================================================================== train


def resolve_settings(args, parser):
    """The run's settings: --resume takes them from run.json, else from the command
    line with per-data-set defaults. Returns a dict."""
    out = Path(args.out)
    given = {
        key: getattr(args, key)
        for key in (
            "model",
            "data",
            "epochs",
            "batch_size",
            "update_rule",
            "lr",
            "lr_decay",
            "reg",
            "seed",
        )
        if getattr(args, key) is not None
    }
    if args.resume:
        run_file = out / RUN_FILE
        if not (out / CHECKPOINT).is_file() or not run_file.is_file():
            parser.error(
                f"--resume: no run to resume in {out} (it needs {CHECKPOINT} and "
                f"{RUN_FILE} written by an earlier `graphnet train --out {out}`)"
            )
        settings = _read_run_file(run_file)
        _check_sizes_against_checkpoint(settings, run_file, out / CHECKPOINT)
        for key in FIXED_ON_RESUME:
            if key in given and given[key] != settings.get(key):
                parser.error(
                    f"--resume continues the run in {out} with its saved settings; "
                    f"it cannot change --{key.replace('_', '-')} "
                    f"(saved: {settings.get(key)!r}, given: {given[key]!r})"
                )
        if "epochs" in given:
            settings["epochs"] = given["epochs"]
        return settings
    model = given.get("model", "convnet")
    data = given.get("data", "numbers" if model in CAPTION_MODELS else "digits")
    if (model in CAPTION_MODELS) != (data == "numbers"):
        parser.error(
            f"--model {model} does not train on --data {data}: rnn and lstm caption "
            "the numbers, the other models classify the digits or CIFAR-10"
        )
    if model in CAPTION_MODELS and given.get("reg"):
        parser.error(f"--reg: CaptioningRNN ({model}) has no L2 regularization")
    settings = {
        "model": model,
        "data": data,
        "seed": 0,
        **DEFAULTS[data]["common"],
        **DEFAULTS[data][model],
    }
    settings.update(given)
    return settings


def _positive(value):
    return _is_number(value) and value > 0 and math.isfinite(value)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(value, low):
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


# What run.json must hold: each setting and the test its value must pass.
_RUN_SETTINGS = {
    "model": ("one of " + ", ".join(MODELS), lambda v: v in MODELS),
    "data": ("one of " + ", ".join(DATA_SETS), lambda v: v in DATA_SETS),
    "update_rule": ("one of " + ", ".join(UPDATE_RULES), lambda v: v in UPDATE_RULES),
    "epochs": ("a positive integer", lambda v: _is_count(v, 1)),
    "batch_size": ("a positive integer", lambda v: _is_count(v, 1)),
    "seed": ("an integer in [0, 2**32 - 1]", _is_seed),
    "lr": ("a positive number", _positive),
    "lr_decay": ("a positive number", _positive),
    "weight_scale": ("a positive number", _positive),
    "reg": ("a number >= 0", lambda v: _is_number(v) and 0 <= v < math.inf),
}
_MODEL_SETTINGS = {
    "convnet": {"num_filters": 1, "filter_size": 1, "hidden_dim": 1},
    "twolayer": {"hidden_dim": 1},
    "fc": {},
    **{cell: {"wordvec_dim": 1, "hidden_dim": 1} for cell in CAPTION_MODELS},
}


def _read_run_file(run_file):
    """run.json's settings, checked: a damaged or hand-edited file is one clear error."""
    try:
        settings = json.loads(run_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise _UserError(f"--resume: cannot read {run_file}: {err}") from None
    problem = None
    if not isinstance(settings, dict):
        problem = f"it holds {type(settings).__name__ if settings is not None else 'null'}"
    else:
        checks = dict(_RUN_SETTINGS)
        # the model's own settings are looked up by its name, once "model" holds a name
        model = settings.get("model") if isinstance(settings.get("model"), str) else None
        if model in CAPTION_MODELS:
            del checks["weight_scale"]  # CaptioningRNN draws its weights the course's way
        for key in _MODEL_SETTINGS.get(model, {}):
            checks[key] = ("a positive integer", lambda v: _is_count(v, 1))
        if model == "fc":
            checks["hidden_dims"] = (
                "a list of positive integers",
                lambda v: isinstance(v, list) and all(_is_count(h, 1) for h in v),
            )
        if settings.get("data") == "cifar10" and "data_dir" in settings:
            checks["data_dir"] = ("a folder name", lambda v: isinstance(v, str))
        for key, (what, ok) in checks.items():
            if key not in settings:
                problem = f"it lacks {key!r}"
            elif not ok(settings[key]):
                problem = f"{key!r} is {str(settings[key])[:40]!r}, not {what}"
            if problem:
                break
    if problem:
        raise _UserError(
            f"--resume: {run_file} does not hold a run's settings ({problem}); "
            f"it was damaged or edited by hand: start a new run with another "
            "--out, or fix the file"
        )
    return settings


def _check_sizes_against_checkpoint(settings, run_file, checkpoint_file):
    """run.json's model sizes against the checkpoint's model, read from its document before
    a model of those sizes is built: an edited or damaged run.json asking for 10**30
    hidden units is refused here, not drawn (or refused inside numpy)."""
    from .training.checkpoint import CheckpointError, saved_model_config

    try:
        config = saved_model_config(checkpoint_file)
    except CheckpointError as err:
        raise _UserError(f"cannot resume: {err}") from None
    model = settings["model"]
    for key in [*_MODEL_SETTINGS[model], *(["hidden_dims"] if model == "fc" else [])]:
        if settings[key] != config.get(key):
            raise _UserError(
                f"cannot resume: wrong architecture: {run_file} has {key} "
                f"{str(settings[key])[:40]}, the model in {checkpoint_file} "
                f"{str(config.get(key))[:40]}"
            )


def load_data(settings, args, parser):
    from . import data as datasets

    if settings["data"] == "numbers":
        try:
            return datasets.load_number_captions()
        except ImportError as err:
            raise _UserError(str(err)) from None
    if settings["data"] == "digits":
        if args.download or args.data_dir:
            _warn(
                "--data-dir and --download are for CIFAR-10 and are ignored: the digits "
                "ship with scikit-learn"
            )
        try:
            return datasets.get_digits_data()
        except ImportError as err:
            raise _UserError(str(err)) from None
    folder = Path(args.data_dir or settings.get("data_dir") or datasets.default_cifar10_dir())
    folder = folder.expanduser()
    if args.download:
        print(
            f"downloading CIFAR-10 into {folder} (170 MB; skipped if it is already there)",
            flush=True,
        )
        folder = datasets.download_cifar10(folder)
    elif not _has_cifar(folder):
        parser.error(
            f"CIFAR-10 not found in {folder}: pass --data-dir DIR (the "
            "cifar-10-batches-py folder or its parent) or add --download"
        )
    settings["data_dir"] = str(folder)
    return datasets.get_CIFAR10_data(cifar10_dir=folder)


def _has_cifar(folder):
    return any((f / "test_batch").is_file() for f in (folder, folder / "cifar-10-batches-py"))


def build_model(settings, data):
    from . import models

    # The course's models draw their initial weights from numpy's global generator: seed
    # it for the build, and put back whatever state the caller had.
    state = np.random.get_state()
    np.random.seed(settings["seed"])
    try:
        return _build_model(models, settings, data)
    finally:
        np.random.set_state(state)


def _build_model(models, settings, data):
    if settings["model"] in CAPTION_MODELS:
        return models.CaptioningRNN(
            data["word_to_idx"],
            input_dim=data["train_features"].shape[1],
            wordvec_dim=settings["wordvec_dim"],
            hidden_dim=settings["hidden_dim"],
            cell_type=settings["model"],
            dtype=np.float32,
        )
    input_dim = data["X_train"].shape[1:]
    common = dict(
        reg=settings["reg"],
        weight_scale=settings["weight_scale"],
        num_classes=int(max(data["y_train"].max(), data["y_val"].max())) + 1,
    )
    if settings["model"] == "convnet":
        return models.ThreeLayerConvNet(
            input_dim=input_dim,
            num_filters=settings["num_filters"],
            filter_size=settings["filter_size"],
            hidden_dim=settings["hidden_dim"],
            dtype=np.float32,
            **common,
        )
    features = int(np.prod(input_dim))
    if settings["model"] == "fc":
        return models.FullyConnectedNet(
            settings["hidden_dims"], input_dim=features, dtype=np.float32, **common
        )
    return models.TwoLayerNet(
        input_dim=features, hidden_dim=settings["hidden_dim"], dtype=np.float32, **common
    )


def cmd_train(args, parser):
    from .interop.distributed import DistributedError

    group = _data_parallel()
    try:
        return _train_command(args, parser, group)
    except DistributedError as err:
        return _fail(err)
    finally:
        if group is not None:
            group.close()


def _train_command(args, parser, group):
    start = time.perf_counter()
    writer = group is None or group.is_writer
    # Process 0 alone reads --out (run.json on --resume) and writes there.
    settings = resolve_settings(args, parser) if writer else None
    if group is not None:
        settings = group.broadcast_object(settings, "receiving the run's settings")
        if settings["batch_size"] < group.world_size:
            parser.error(
                f"--batch-size {settings['batch_size']} is smaller than the "
                f"{group.world_size} processes: each needs a sample of every batch"
            )
        if settings["model"] in CAPTION_MODELS:
            parser.error(
                f"--model {settings['model']} trains in one process only: data-parallel "
                "training (torchrun) takes the classifiers (convnet, fc, twolayer)"
            )
    out = Path(args.out)
    if writer and out.is_dir():
        for stale in remove_stale_temporaries(out, OUTPUT_FILES):
            _warn(f"removed {stale}, left by a write that was interrupted")
    data = load_data(settings, args, parser)  # before --out exists: a failure leaves nothing
    threads = args.threads or DEFAULT_THREADS[settings["data"]]
    restore_threads = _limit_threads(threads or (group and group.threads_per_process()))
    try:
        with _quiet_unless(writer):
            return _train(args, settings, data, out, start, group)
    except OSError as err:
        raise _UserError(f"cannot write {_os_error(err)}; {_checkpoint_note(out)}") from None
    finally:
        restore_threads()


def _data_parallel():
    """The DataParallel of a process started by torchrun (torch imported only then), or
    None."""
    from .interop import MissingDependencyError
    from .interop.distributed import DataParallel, DistributedError, torchrun_environment

    if torchrun_environment() is None:
        return None
    try:
        return DataParallel()
    except MissingDependencyError as err:
        raise _UserError(
            f"started by torchrun (RANK, WORLD_SIZE, LOCAL_RANK and MASTER_ADDR "
            f"are set), so training data-parallel, but {err}"
        ) from None
    except DistributedError as err:
        raise _UserError(str(err)) from None


@contextlib.contextmanager
def _quiet_unless(writer):
    """Silence stdout in every process but the one that writes (process 0)."""
    if writer:
        yield
        return
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield


def _checkpoint_note(out):
    if (out / CHECKPOINT).is_file():
        return (
            f"the last checkpoint, {out / CHECKPOINT}, is as it was (resume with: "
            f"graphnet train --out {out} --resume)"
        )
    return "no checkpoint was written"


def _write_json(path, settings):
    write_atomically(
        path,
        lambda tmp: Path(tmp).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8"),
    )


def _train(args, settings, data, out, start, group):
    from . import CheckpointError, load, save

    writer = group is None or group.is_writer
    model = build_model(settings, data)
    captioning = settings["model"] in CAPTION_MODELS
    run_solver, extra = (
        (_RunCaptioningSolver, {"record_accuracy": True}) if captioning else (_RunSolver, {})
    )
    try:
        solver = run_solver(
            model,
            data,
            checkpoint_file=out / CHECKPOINT,
            update_rule=settings["update_rule"],
            optim_config={"learning_rate": settings["lr"]},
            lr_decay=settings["lr_decay"],
            batch_size=settings["batch_size"],
            num_epochs=settings["epochs"],
            seed=settings["seed"],
            verbose=not args.quiet,
            print_every=50,
            distributed=group,
            **extra,
        )
    except ValueError as err:  # the settings are checked: a minibatch beyond memory, say
        raise _UserError(str(err)) from None
    if args.resume and writer:
        try:
            load(out / CHECKPOINT, into=solver)
        except CheckpointError as err:
            raise _UserError(f"cannot resume: {err}") from None
        except OSError as err:
            raise _UserError(f"cannot resume: {_os_error(err)}") from None
    if group is not None:  # process 0's state (the checkpoint resumed) to every process
        group.synchronize(solver)
    if args.resume:
        if solver.iteration >= solver.num_iterations:
            print(
                f"nothing to train: the run in {out} has finished its {solver.num_epochs} "
                f"epoch{'s' * (solver.num_epochs != 1)} ({solver.iteration} iterations); to "
                f"train longer, pass --epochs with more than {solver.epoch}. Nothing was "
                "written."
            )
            return EXIT_OK
        print(
            f"resuming {out}: epoch {solver.epoch}, iteration {solver.iteration} of "
            f"{solver.num_iterations}",
            flush=True,
        )
    if writer:
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / RUN_FILE, settings)
    if not args.quiet:
        print(
            f"training {type(model).__name__} on {settings['data']} "
            f"({_size(data, 'train')} train / {_size(data, 'val')} val / "
            f"{_size(data, 'test')} test), {settings['update_rule']} lr {settings['lr']:g}, "
            f"{settings['epochs']} epochs of {solver.iterations_per_epoch} iterations, "
            f"batch {settings['batch_size']}, seed {settings['seed']}",
            flush=True,
        )

    received = []

    def on_signal(signum, frame):
        received.append(signum)
        solver.request_stop()
        if signum == signal.SIGINT:  # a second Ctrl-C stops at once
            signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with np.errstate(all="ignore"):  # a diverging step is reported once, as _Diverged
            solver.train()
    except KeyboardInterrupt:
        return _interrupted(out, solver, signal.SIGINT, saved=False)
    except _Diverged as diverged:
        return _fail(
            f"training diverged at epoch {solver.epoch + 1}, iteration "
            f"{solver.iteration + 1}: {diverged}. Nothing of this epoch was saved; "
            f"{_checkpoint_note(out) if solver.epoch else 'no checkpoint was written'}"
            f". Try a smaller --lr than {settings['lr']:g} in a new run."
        )
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if solver.interrupted:
        signum = received[0] if received else signal.SIGINT  # (another process's signal)
        try:
            if writer:
                save(solver, out / CHECKPOINT)
        except KeyboardInterrupt:
            return _interrupted(out, solver, signum, saved=False)
        if group is None:
            return _interrupted(out, solver, signum, saved=True)
        # The others end only after the checkpoint is written: torchrun stops every
        # process as soon as one ends with an error code.
        group.broadcast_object(None, "waiting for process 0's checkpoint")
        if writer:
            return _interrupted(out, solver, signum, saved=True)
        return EXIT_SIGTERM if signum == signal.SIGTERM else EXIT_SIGINT

    if captioning:  # the fraction of test numbers said exactly
        test_acc = solver.caption_accuracy("test")
    else:
        test_acc = solver.check_accuracy(data["X_test"], data["y_test"])
    if not writer:
        return EXIT_OK
    save(model, out / FINAL_MODEL)
    if captioning:
        _print_captions(model, data)
    elapsed = time.perf_counter() - start
    pictures = _write_pictures(solver, model, out, settings)
    drawing = _write_graph(model, data, out / GRAPH_FILE)
    print(f"best validation accuracy: {solver.best_val_acc:.3f}")
    written = [out / FINAL_MODEL, out / CHECKPOINT, out / RUN_FILE, *pictures]
    print("wrote " + ", ".join(str(f) for f in written + ([drawing] if drawing else [])))
    print(f"time: {elapsed:.1f} s")
    print(f"test accuracy: {test_acc:.3f}", flush=True)
    return EXIT_OK


def _size(data, split):
    """The number of samples (images, or captions) of a split."""
    return len(data[f"X_{split}"] if f"X_{split}" in data else data[f"{split}_captions"])


def _print_captions(model, data, count=3):
    """A few test numbers and the captions the model says for them."""
    from .data.number_captions import decode_captions

    captions = data["test_captions"][:count]
    said = model.sample(
        data["test_features"][data["test_image_idxs"][:count]], max_length=captions.shape[1]
    )
    for number, words in zip(
        data["test_numbers"][:count], decode_captions(said, data["idx_to_word"])
    ):
        print(f"test image of {number}: {words.replace(' <END>', '')!r}")


def _interrupted(out, solver, signum, saved):
    name = "SIGTERM" if signum == signal.SIGTERM else "SIGINT"
    where = f"epoch {solver.epoch}, iteration {solver.iteration} of {solver.num_iterations}"
    if saved:
        print(
            f"\n{name}: stopped at {where}; checkpoint saved to {out / CHECKPOINT}", file=sys.stderr
        )
    else:
        state = (
            "the last epoch's checkpoint is in " + str(out / CHECKPOINT)
            if (out / CHECKPOINT).is_file()
            else "no checkpoint was written yet"
        )
        print(f"\n{name}: stopped at once at {where}; {state}", file=sys.stderr)
    again = "the same torchrun command with" if solver.distributed else "graphnet train"
    print(f"resume with: {again} --out {out} --resume", file=sys.stderr, flush=True)
    return EXIT_SIGTERM if signum == signal.SIGTERM else EXIT_SIGINT


def _limit_threads(threads):
    """--threads sets the C++ kernels' thread count (every gate of the models runs on that
    team; numpy's BLAS is not used). Returns a function that puts it back."""
    from .kernels import _C

    before = _C.get_num_threads()
    if threads:
        _C.set_num_threads(threads)
    return lambda: _C.set_num_threads(before)


class _Diverged(Exception):
    """The loss or a param went NaN or Inf: training cannot recover from it."""


class _RunSolver(Solver):
    """A Solver whose epoch checkpoints all go to one file (replaced atomically), and that
    stops at the first step whose loss or params are not finite, so that the checkpoint
    of the last epoch stays the last good state."""

    def __init__(self, model, data, *, checkpoint_file, **kwargs):
        self.checkpoint_file = checkpoint_file  # (the Solver checks the name it makes)
        super().__init__(model, data, checkpoint_name=str(checkpoint_file), **kwargs)

    def checkpoint_path(self, epoch):
        return self.checkpoint_file

    def _step(self):
        super()._step()
        loss = self.loss_history[-1]
        if not math.isfinite(loss):
            raise _Diverged(f"the loss is {loss}")
        for name, value in self.model.params.items():
            if not np.isfinite(value).all():
                raise _Diverged(f"param {name} holds NaN or Inf after the update")


class _RunCaptioningSolver(_RunSolver, CaptioningSolver):
    """The same checkpoints and divergence checks, on the captioning data."""


def _write_pictures(solver, model, out, settings):
    """The training curves, and the first layer's filters for a convnet; the files written."""
    from . import viz

    write_atomically(
        out / PLOT_FILE,
        lambda tmp: viz.plot_training(
            solver,
            path=tmp,
            title=f"{settings['model']} on {settings['data']}",
            accuracy=(
                "Caption accuracy (whole caption right)"
                if settings["model"] in CAPTION_MODELS
                else "Classification accuracy"
            ),
        ),
    )
    written = [out / PLOT_FILE]
    if settings["model"] == "convnet":
        write_atomically(
            out / FILTERS_FILE,
            lambda tmp: viz.plot_filters(
                model.params["W1"], path=tmp, title="first-layer conv filters"
            ),
        )
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
    if "train_captions" in data:
        model.loss(data["train_features"][data["train_image_idxs"][:8]], data["train_captions"][:8])
    else:
        graph.run("loss", X=data["X_train"][:8], y=data["y_train"][:8])  # the whole loss,
        graph.backward("loss")  # L2 branch included
    try:
        return write_atomically(
            path,
            lambda tmp: viz.export(model.graph, tmp, format="svg", title=f"{type(model).__name__}"),
        )
    except viz.GraphvizNotFoundError:
        dot = path.with_suffix(".dot")
        write_atomically(dot, lambda tmp: viz.export(model.graph, tmp, format="dot"))
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
    except viz.GraphvizNotFoundError as err:
        return _fail(str(err))
    except ValueError as err:  # dot refusing a name the file holds, among others
        return _fail(f"cannot draw {args.checkpoint}: {err}")
    print(f"wrote {output}")
    return EXIT_OK


def cmd_bench(args, parser):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_train.py"
    if not script.is_file():
        print(
            "graphnet bench runs benchmarks/bench_train.py from a source checkout of "
            "graphnet: clone the repository and run `python benchmarks/bench_train.py`"
        )
        return EXIT_ERROR
    extra = [a for a in args.args if a != "--"]
    return subprocess.call([sys.executable, str(script), *extra])


if __name__ == "__main__":
    sys.exit(main())
