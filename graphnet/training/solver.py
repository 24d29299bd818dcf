"""Solver: trains a classification model with minibatch gradient descent, the course's way.

    solver = Solver(model, data, update_rule='adam', optim_config={'learning_rate': 1e-3},
                    lr_decay=0.95, num_epochs=10, batch_size=100, seed=0)
    solver.train()
    solver.best_val_acc, solver.loss_history, solver.train_acc_history, ...
    solver.last_grads          # the gradients of the last step ({param: array})

`model` needs `params` (a mapping name -> array that accepts assignment) and
`loss(X, y=None)` returning scores, or (loss, grads) when y is given. `data` is the
course's dict with 'X_train', 'y_train', 'X_val', 'y_val'. The same Solver serves every
edition of the course.

As the course's: without `seed`, the minibatches and the accuracy subsamples are drawn by
`np.random.choice` from numpy's global random state, call for call as the course's Solver
draws them, so `np.random.seed(...)` before training repeats a course run. With `verbose`,
the course's lines `(Iteration i / n) loss: ...` (every `print_every` iterations) and
`(Epoch e / E) train acc: ...; val_acc: ...` are printed, in a notebook too.

Beyond the course: `seed` gives the Solver its own np.random.Generator instead, so runs
repeat exactly whatever else draws random numbers, and numpy's global state is never
touched. A run resumed from a checkpoint (graphnet.save / graphnet.load) continues exactly
where it stopped, in either case. `progress_bar` shows a tqdm bar instead of the iteration
lines (by default only when stdout is a terminal). `request_stop()` (safe to call from a
signal handler) makes `train()` return after the current iteration, leaving a consistent
state to save. `distributed=True` trains data-parallel on torch.distributed: every process
that torchrun starts runs the same script (graphnet.interop.distributed says how).
"""

import copy
import numbers
import os
import sys
from collections.abc import Mapping
from typing import Any, Callable, Dict, Optional, Union

import numpy as np

from ..kernels.geometry import INT64_MAX, MEMORY_BYTES
from . import optim
from .atomic import check_name_length

__all__ = ["Solver"]


class _GlobalRandomState:
    """numpy's global random state, sampled as the course's Solver samples it, with the
    `bit_generator` (numpy's global MT19937) that a checkpoint saves."""

    @staticmethod
    def choice(n: int, size: int) -> np.ndarray:
        return np.random.choice(n, size)

    @property
    def bit_generator(self) -> np.random.BitGenerator:
        if hasattr(np.random, "get_bit_generator"):
            return np.random.get_bit_generator()
        return np.random.mtrand._rand._bit_generator  # numpy < 1.25 has no public accessor


class Solver:
    """Minibatch training of `model` on `data`, with the course's keyword arguments:

    update_rule: a name in graphnet.optim ('sgd', 'sgd_momentum', 'rmsprop', 'adam') or
        a callable (w, dw, config) -> (next_w, config).
    optim_config: hyperparameters for the update rule ({} by default); each param gets its
        own deep copy, which then also holds that param's optimizer state.
    lr_decay: the learning rate is multiplied by this after each epoch.
    batch_size, num_epochs: minibatch size and training length.
    num_train_samples, num_val_samples: accuracy is checked on random subsamples of this
        size (None: the whole set).
    checkpoint_name: if set, a checkpoint '{checkpoint_name}_epoch_{epoch}.npz' is
        written with graphnet.save after every epoch.
    print_every: print the loss every this many iterations (without a progress bar).
    verbose: False for silence.
    seed: seed of the Solver's own random generator; None (the default): numpy's global
        state, as the course's Solver (an addition to the course's arguments).
    progress_bar: True shows a tqdm progress bar (and the epoch lines) instead of the
        iteration lines; None (the default) shows it only when stdout is a terminal, not
        in a notebook or a pipe (an addition).
    distributed: True (or a graphnet.interop.DataParallel) trains data-parallel on
        torch.distributed: each process computes its share of every minibatch, the
        gradients are added up, process 0 alone prints and writes checkpoints; every
        process must call train() and check_accuracy() alike (an addition).
    """

    def __init__(
        self,
        model: Any,
        data: Mapping,
        *,
        update_rule: Union[str, Callable] = "sgd",
        optim_config: Optional[Mapping] = None,
        lr_decay: float = 1.0,
        batch_size: int = 100,
        num_epochs: int = 10,
        num_train_samples: Optional[int] = 1000,
        num_val_samples: Optional[int] = None,
        checkpoint_name: Optional[str] = None,
        print_every: int = 10,
        verbose: bool = True,
        seed: Optional[int] = None,
        progress_bar: Optional[bool] = None,
        distributed: Any = None,
        **unknown: Any,
    ) -> None:
        if unknown:
            raise ValueError("Unrecognized arguments " + ", ".join(sorted(unknown)))
        settings: Dict[str, Any] = dict(
            update_rule=update_rule,
            optim_config=optim_config,
            lr_decay=lr_decay,
            batch_size=batch_size,
            num_epochs=num_epochs,
            num_train_samples=num_train_samples,
            num_val_samples=num_val_samples,
            checkpoint_name=checkpoint_name,
            print_every=print_every,
            verbose=verbose,
            seed=seed,
        )
        if not hasattr(model, "params") or not callable(getattr(model, "loss", None)):
            raise TypeError(
                f"Solver needs a model with `params` and `loss(X, y=None)`, got "
                f"{type(model).__name__}"
            )
        self.model = model
        self._take_data(model, data)

        rule = settings["update_rule"]
        if isinstance(rule, str):
            if rule.startswith("_") or rule not in optim.__all__:
                raise ValueError(
                    f'Invalid update_rule "{rule}"; graphnet.optim has ' + ", ".join(optim.__all__)
                )
            self.update_rule_name, self.update_rule = rule, getattr(optim, rule)
        elif callable(rule):
            self.update_rule = rule
            self.update_rule_name = getattr(rule, "__qualname__", repr(rule))
        else:
            raise ValueError(
                f"update_rule must be a name in graphnet.optim or a callable, got {rule!r}"
            )
        if not isinstance(settings["optim_config"], (Mapping, type(None))):
            raise TypeError(
                f"optim_config must be a dict such as {{'learning_rate': 1e-3}}, "
                f"got {settings['optim_config']!r}"
            )
        self.optim_config = dict(settings["optim_config"] or {})
        lr_decay = settings["lr_decay"]
        if not _is_real(lr_decay) or not lr_decay > 0:
            raise ValueError(
                f"lr_decay must be a positive number (1.0: no decay), got {lr_decay!r}"
            )
        self.lr_decay = lr_decay
        for key in ("batch_size", "num_epochs"):
            if not _is_int(settings[key]):
                raise ValueError(f"{key} must be an integer, got {settings[key]!r}")
        for key in ("num_train_samples", "num_val_samples"):
            if settings[key] is not None and not (_is_int(settings[key]) and settings[key] >= 0):
                raise ValueError(
                    f"{key} must be a non-negative integer or None, got {settings[key]!r}"
                )
        self.batch_size = int(settings["batch_size"])
        self.num_epochs = int(settings["num_epochs"])
        if self.batch_size < 1 or self.num_epochs < 0:
            raise ValueError(
                f"batch_size must be >= 1 and num_epochs >= 0, got "
                f"{self.batch_size} and {self.num_epochs}"
            )
        minibatch_bytes = self.batch_size * self._sample_bytes()
        if self.batch_size > INT64_MAX or minibatch_bytes > MEMORY_BYTES:
            raise ValueError(
                f"batch_size {self.batch_size}: a minibatch of that many training samples "
                f"({self._sample_bytes()} bytes each) is {minibatch_bytes / 2**30:,.0f} GiB, "
                f"more than this machine's memory ({MEMORY_BYTES / 2**30:,.0f} GiB)"
            )
        self.num_train_samples = settings["num_train_samples"]
        self.num_val_samples = settings["num_val_samples"]
        self.checkpoint_name = _checkpoint_name(settings["checkpoint_name"])
        if not (_is_int(settings["print_every"]) and settings["print_every"] >= 1):
            raise ValueError(
                f"print_every must be a positive integer (iterations between the loss lines), "
                f"got {settings['print_every']!r}"
            )
        self.print_every = settings["print_every"]
        self.verbose = settings["verbose"]
        self.seed = settings["seed"]
        if progress_bar not in (None, True, False):
            raise ValueError(
                f"progress_bar must be None (only on a terminal), True or False, "
                f"got {progress_bar!r}"
            )
        self.progress_bar = progress_bar
        self.distributed = _data_parallel(distributed, model)
        if self.distributed is not None and self.batch_size < self.distributed.world_size:
            raise ValueError(
                f"batch_size {self.batch_size} is smaller than the "
                f"{self.distributed.world_size} processes training it: each "
                "process needs at least one sample of every minibatch"
            )
        if self.distributed is not None and not self.distributed.is_writer:
            self.verbose = False
        self._reset()
        self._check_checkpoint_names()

    def _take_data(self, model, data):
        """Check and keep the data (X_train, y_train, X_val, y_val)."""
        if not isinstance(data, Mapping):
            raise TypeError(
                f"data must be a dict with 'X_train', 'y_train', 'X_val', 'y_val', "
                f"got {type(data).__name__}"
            )
        missing = [k for k in ("X_train", "y_train", "X_val", "y_val") if k not in data]
        if missing:
            raise ValueError(
                f"data lacks {', '.join(missing)} (it has "
                f"{', '.join(map(str, data)) or 'nothing'}); the Solver needs "
                "'X_train', 'y_train', 'X_val' and 'y_val'"
            )
        self.X_train, self.y_train = _split(model, data, "train")
        self.X_val, self.y_val = _split(model, data, "val")
        if self.X_train.shape[0] == 0:
            raise ValueError(
                f"data['X_train'] is empty (shape {self.X_train.shape}); the Solver "
                "needs at least one training sample"
            )

    def _sample_bytes(self):
        """The bytes of one training sample as a minibatch holds it (X's row and label)."""
        return self.X_train[:1].nbytes + self.y_train[:1].nbytes

    def _reset(self):
        """Fresh bookkeeping: histories, best params, optimizer state and random stream."""
        self.epoch = 0
        self.iteration = 0  # steps taken so far; train() continues from here
        self.best_val_acc = 0
        self.best_params = {}
        self.loss_history = []
        # The accuracy checks' forwards clear the graph's gradients (they belong to other
        # values), so what the last step used is kept here for plots after training.
        self.last_grads = {}
        self.train_acc_history = []
        self.val_acc_history = []
        self.optim_configs = {p: copy.deepcopy(self.optim_config) for p in self.model.params}
        self.rng = _GLOBAL_RANDOM_STATE if self.seed is None else np.random.default_rng(self.seed)
        self.interrupted = False
        self._stop_requested = self._stop_agreed = False

    @property
    def rng(self) -> Any:
        """Where the minibatches and accuracy subsamples come from: the Solver's own
        np.random.Generator (with a seed), or numpy's global state (without). A checkpoint
        saves its state; assigning a Generator (what loading a checkpoint does) continues
        from it: a PCG64 one (a seeded run's) becomes the Solver's own, an MT19937 one (a run
        on numpy's global state) is copied into numpy's global state, so the resumed run
        draws exactly what the uninterrupted one would have."""
        return self._rng

    @rng.setter
    def rng(self, generator: Any) -> None:
        if generator is not _GLOBAL_RANDOM_STATE and isinstance(
            generator.bit_generator, np.random.MT19937
        ):
            _GLOBAL_RANDOM_STATE.bit_generator.state = generator.bit_generator.state
            generator = _GLOBAL_RANDOM_STATE
        self._rng = generator

    # ----- one step and the accuracy check --------------------------------------------

    def _step(self):
        num_train = self.X_train.shape[0]
        batch = self.rng.choice(num_train, self.batch_size)
        if self.distributed is None:
            self._update(*self.model.loss(self.X_train[batch], self.y_train[batch]))
        else:  # stopping is agreed in the step, so all processes stop after the same one
            loss, grads, self._stop_agreed = self.distributed.loss_and_grads(
                self.model, self.X_train[batch], self.y_train[batch], self._stop_requested
            )
            self._update(loss, grads)

    def _update(self, loss, grads):
        """Record the loss and take one step of the update rule on every param."""
        self.loss_history.append(float(loss))
        self.last_grads = grads
        params = self.model.params
        for name in list(params):
            next_w, next_config = self.update_rule(
                params[name], grads[name], self.optim_configs[name]
            )
            params[name] = next_w
            self.optim_configs[name] = next_config

    def check_accuracy(
        self, X: Any, y: Any, num_samples: Optional[int] = None, batch_size: int = 100
    ) -> float:
        """Fraction of (a random subsample of num_samples of) X classified as y."""
        X, y = np.asarray(X), np.asarray(y)
        if X.ndim == 0 or y.shape != X.shape[:1]:
            raise ValueError(
                f"check_accuracy: X of shape {X.shape} and y of shape {y.shape} "
                "must hold the same number of samples (y of shape (N,))"
            )
        if not _is_int(batch_size) or batch_size < 1:
            raise ValueError(
                f"check_accuracy: batch_size must be a positive integer, got {batch_size!r}"
            )
        N = X.shape[0]
        if num_samples is not None and N > num_samples:
            mask = self.rng.choice(N, num_samples)
            X, y = X[mask], y[mask]
            N = num_samples
        first, last = (0, N) if self.distributed is None else self.distributed.share(N)
        predictions = [
            np.argmax(self.model.loss(X[start : min(start + batch_size, last)]), axis=1)
            for start in range(first, last, batch_size)
        ]
        y_pred = np.concatenate(predictions) if predictions else np.zeros(0, dtype=int)
        correct = int(np.sum(y_pred == y[first:last]))
        if self.distributed is not None:
            correct = self.distributed.count_correct(correct)
        return correct / N if N else 0.0

    # ----- training ---------------------------------------------------------------------

    @property
    def num_train(self):
        """The number of training samples."""
        return self.X_train.shape[0]

    @property
    def iterations_per_epoch(self):
        """Minibatch steps per epoch: the training set's size // batch_size (at least 1)."""
        return max(self.num_train // self.batch_size, 1)

    @property
    def num_iterations(self):
        """Steps of the whole run: num_epochs * iterations_per_epoch."""
        return self.num_epochs * self.iterations_per_epoch

    def request_stop(self):
        """Ask train() to return after the current iteration (signal-handler safe)."""
        self._stop_requested = True

    def train(self) -> None:
        """Run the remaining iterations (all of them for a fresh Solver, the rest after a
        resume), then load the best validation params into the model. Returns early,
        with `interrupted` set and without restoring the best params, after
        request_stop()."""
        self._check_checkpoint_names()
        per_epoch, total = self.iterations_per_epoch, self.num_iterations
        self.interrupted = self._stop_requested = self._stop_agreed = False
        if self.distributed is not None:
            self.distributed.synchronize(self)
        bar = self._progress_bar(total)
        try:
            while self.iteration < total:
                t = self.iteration
                self._step()
                self.iteration = t + 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{self.loss_history[-1]:.4f}", refresh=False)
                elif self.verbose and t % self.print_every == 0:
                    self._print(f"(Iteration {t + 1} / {total}) loss: {self.loss_history[-1]:f}")

                epoch_end = self.iteration % per_epoch == 0
                if epoch_end:
                    self.epoch += 1
                    for config in self.optim_configs.values():
                        if "learning_rate" in config:
                            config["learning_rate"] *= self.lr_decay
                if t == 0 or epoch_end:
                    self._record_accuracy(bar)
                if epoch_end and self.distributed is not None:
                    self.distributed.check_identical(self, f"after epoch {self.epoch}")
                if epoch_end and self.checkpoint_name and self._writes:
                    self._save_checkpoint()
                if self._stop_agreed if self.distributed is not None else self._stop_requested:
                    self.interrupted = True
                    return
        finally:
            if bar is not None:
                bar.close()
        if self.best_params:
            for name, value in self.best_params.items():
                self.model.params[name] = value.copy()

    def _split_accuracy(self, split):
        """The accuracy train() records for split 'train' or 'val'."""
        if split == "train":
            return self.check_accuracy(
                self.X_train, self.y_train, num_samples=self.num_train_samples
            )
        return self.check_accuracy(self.X_val, self.y_val, num_samples=self.num_val_samples)

    def _record_accuracy(self, bar):
        train_acc, val_acc = self._split_accuracy("train"), self._split_accuracy("val")
        self.train_acc_history.append(train_acc)
        self.val_acc_history.append(val_acc)
        if self.verbose:
            self._print(
                f"(Epoch {self.epoch} / {self.num_epochs}) train acc: {train_acc:f}; "
                f"val_acc: {val_acc:f}",
                bar,
            )
        if val_acc > self.best_val_acc:
            self.best_val_acc = val_acc
            self.best_params = {k: np.array(v, copy=True) for k, v in self.model.params.items()}

    @property
    def _writes(self):
        """Whether this process writes checkpoints: the only one, or process 0 of many."""
        return self.distributed is None or self.distributed.is_writer

    def checkpoint_path(self, epoch):
        """Where the checkpoint after `epoch` goes (course naming, .npz instead of .pkl)."""
        return _checkpoint_file(self.checkpoint_name, epoch)

    def _check_checkpoint_names(self):
        """A ValueError naming checkpoint_name if the longest checkpoint file train() would
        write, its last epoch's, is too long for the file system: when the Solver is built,
        and again when train() starts, for the epochs of a resumed or extended run (a
        checkpoint's epoch, a raised num_epochs, another batch size) may outgrow those the
        Solver was built for. (Without checkpoints, or none to write: at least epoch 1's.)"""
        if not self.checkpoint_name:
            return
        per_epoch = self.iterations_per_epoch
        epoch_ends = self.num_iterations // per_epoch - self.iteration // per_epoch
        last = self.checkpoint_path(self.epoch + max(epoch_ends, 1))
        check_name_length(last, "checkpoint_name")

    def _save_checkpoint(self):
        from .checkpoint import save

        save(self, self.checkpoint_path(self.epoch))

    # ----- output -----------------------------------------------------------------------

    def _progress_bar(self, total):
        wanted = _stdout_is_a_terminal() if self.progress_bar is None else self.progress_bar
        if not (self.verbose and wanted) or self.iteration >= total:
            return None
        import shutil

        from tqdm.auto import tqdm

        # (a terminal that reports no size would otherwise get an invisible bar)
        columns, rows = shutil.get_terminal_size(fallback=(100, 24))
        return tqdm(
            total=total,
            initial=self.iteration,
            unit="it",
            file=sys.stdout,
            ncols=columns if columns >= 40 else 100,
            nrows=rows if rows >= 2 else 24,
            leave=True,
        )

    @staticmethod
    def _print(message, bar=None):
        if bar is not None:
            bar.write(message, file=sys.stdout)
        else:
            print(message, flush=True)


def _checkpoint_name(name):
    """The checkpoint_name as the Solver keeps it (a str, or None for no checkpoints):
    anything else would name the files after its repr (b'run'_epoch_1.npz) or fail only
    when the first epoch's checkpoint is written."""
    if name is None:
        return None
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(
            f"checkpoint_name must be a str (the files are <checkpoint_name>_epoch_<e>.npz) "
            f"or None, got {type(name).__name__} {name!r:.80}"
        )
    name = os.fspath(name)
    if not isinstance(name, str) or "\0" in name:
        raise ValueError(
            f"checkpoint_name must be a str path without NUL characters, got {name!r:.80}"
        )
    return name


def _checkpoint_file(name, epoch):
    return f"{name}_epoch_{epoch}.npz"


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _split(model, data, split):
    """data['X_<split>'], data['y_<split>'] as arrays, checked against each other and, for
    a graphnet model, against the model's input shape and number of classes, so a mistake
    is reported when the Solver is built rather than deep inside the first step."""
    kx, ky = f"X_{split}", f"y_{split}"
    try:
        X, y = np.asarray(data[kx]), np.asarray(data[ky])
    except (ValueError, TypeError) as err:
        raise ValueError(f"data[{kx!r}] / data[{ky!r}] are not arrays: {err}") from None
    if X.ndim == 0 or y.ndim != 1 or X.shape[0] != y.shape[0]:
        raise ValueError(
            f"data[{kx!r}] has shape {X.shape} and data[{ky!r}] shape {y.shape}: "
            f"they must hold the same number of samples, y of shape (N,)"
        )
    if X.shape[0] == 0:
        return X, y
    if X.dtype.kind == "f":
        rows = X.reshape(X.shape[0], -1)  # scanned in chunks: no full-size temporary
        finite = np.concatenate(
            [np.isfinite(rows[i : i + 4096]).all(axis=1) for i in range(0, rows.shape[0], 4096)]
        )
        if not finite.all():
            bad = np.flatnonzero(~finite)
            raise ValueError(
                f"data[{kx!r}] (shape {X.shape}) has NaN or Inf values in "
                f"{bad.size} samples (the first is sample {bad[0]}); clean or "
                "drop them before training"
            )
    check_input = getattr(model, "check_input", None)
    check_labels = getattr(model, "check_labels", None)
    if callable(check_input):
        check_input(X[:1], what=f"data[{kx!r}]")
    if callable(check_labels):
        check_labels(y, y.shape[0], what=f"data[{ky!r}]")
    return X, y


def _data_parallel(distributed, model):
    """The Solver's `distributed` argument as a DataParallel, or None."""
    if distributed is None or distributed is False:
        return None
    if distributed is True:
        from ..interop.distributed import DataParallel

        distributed = DataParallel()
    for method in ("share", "loss_and_grads", "count_correct", "synchronize", "check_identical"):
        if not callable(getattr(distributed, method, None)):
            raise TypeError(
                f"distributed must be True, False, None or a "
                f"graphnet.interop.DataParallel, got {distributed!r}"
            )
    if getattr(model, "graph", None) is None:
        raise TypeError(
            f"distributed training needs a graphnet model (one with a .graph, "
            f"such as graphnet.models'), got {type(model).__name__}"
        )
    return distributed


def _stdout_is_a_terminal():
    """True in a terminal, where a progress bar redraws in place (a notebook's or a pipe's
    stdout is not one)."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


_GLOBAL_RANDOM_STATE = _GlobalRandomState()
