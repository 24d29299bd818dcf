"""Data-parallel training on torch.distributed (gloo, CPU): graphnet's engine in every
process, PyTorch only to start the processes and to add up their gradients.

    torchrun --nproc-per-node 2 -m graphnet train --batch-size 50       # one machine
    Solver(model, data, batch_size=50, seed=0, distributed=True)         # from Python

Each process takes its share of every global minibatch (the same minibatch a one-process
run with the same seed draws: every process draws it from the same random stream, then
keeps its slice), runs graphnet's forward and backward on it, and puts its gradients,
weighted by its share of the batch, into one flat float64 buffer that one all-reduce adds
up. Each process then holds the gradient of the whole batch, equal to a one-process run's
up to the order of the float sums, even when the batch does not divide evenly, and takes
the same update step; the parameters stay identical, which is checked at the start and
after every epoch.

Also in the step's buffer: the weighted losses (the batch loss every process records),
the batchnorm running averages (each process's, weighted like the gradients, so the
running mean is the one-process run's and the running variance the weighted mean of the
processes' batch variances) and the stop flag (a Ctrl-C or SIGTERM seen by any process
stops all of them after the same iteration). Accuracy checks are split between the
processes the same way and their counts added up.

At the start of training process 0's whole training state (params, optimizer state,
random streams, counters; a resumed run's checkpoint) goes to the others through the
checkpoint format (graphnet.save / graphnet.load, so it is checked the same way). Every
collective call has a timeout: a process that dies or hangs ends the others with a
DistributedError naming what they were waiting for, never a hang.

`import graphnet` never imports torch: this module imports it when a DataParallel is made.
"""

import atexit
import hashlib
import os
import re
import tempfile
from datetime import timedelta
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ._common import require

__all__ = ["DataParallel", "DistributedError", "torchrun_environment", "TORCHRUN_VARIABLES"]

#: The environment variables torchrun (torch.distributed.run) sets in every process it
#: starts: all four present means graphnet was started by torchrun.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")

#: Seconds a process waits for the others in one collective call before it gives up. A
#: step waits at most for the slowest process's share of the batch, an epoch's end for
#: process 0's checkpoint.
DEFAULT_TIMEOUT = 300.0


class DistributedError(RuntimeError):
    """Data-parallel training cannot go on: a process failed, hung or disagrees."""


def torchrun_environment() -> Optional[Dict[str, str]]:
    """torchrun's variables if this process was started by torchrun, else None."""
    found = {key: os.environ.get(key) for key in TORCHRUN_VARIABLES}
    if all(found.values()):
        return found  # type: ignore[return-value]
    return None


class DataParallel:
    """This process's place in a torch.distributed group (gloo) and the collective calls
    the Solver makes. `DataParallel()` joins the default process group: the one already
    initialized, or else one started from torchrun's environment variables (the
    `timeout` applies to each collective call then)."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        torch = require(
            "torch", "data-parallel training (torchrun -m graphnet, Solver(distributed=True))"
        )
        dist = require("torch.distributed", "data-parallel training")
        self._torch, self._dist = torch, dist
        self.owns_group = False
        if not dist.is_initialized():
            if torchrun_environment() is None:
                missing = [k for k in TORCHRUN_VARIABLES if not os.environ.get(k)]
                raise DistributedError(
                    "data-parallel training needs the processes started by torchrun (e.g. "
                    "torchrun --nproc-per-node 2 -m graphnet train ...) or an initialized "
                    "torch.distributed process group; this process has neither ("
                    f"{', '.join(missing)} not set)"
                )
            try:
                dist.init_process_group("gloo", timeout=timedelta(seconds=timeout))
            except (RuntimeError, ValueError) as err:
                raise DistributedError(
                    f"cannot join the torch.distributed group at {os.environ['MASTER_ADDR']}:"
                    f"{os.environ.get('MASTER_PORT', '?')} as process {os.environ['RANK']} of "
                    f"{os.environ['WORLD_SIZE']}: {_first_line(err)}"
                ) from None
            self.owns_group = True
            # A group left to the interpreter's exit can abort the process (gloo's threads
            # are still running when the C++ runtime is torn down), so leave it explicitly.
            atexit.register(self.close)
        backend = dist.get_backend()
        if backend != "gloo":
            raise DistributedError(
                f"graphnet's data parallelism runs on the gloo backend "
                f"(CPU arrays); the process group uses {backend!r}"
            )
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()

    def __repr__(self) -> str:
        return f"DataParallel(rank={self.rank}, world_size={self.world_size})"

    @property
    def is_writer(self) -> bool:
        """Process 0 alone writes checkpoints and outputs and prints progress."""
        return self.rank == 0

    def close(self) -> None:
        """Leave the process group if this object started it."""
        if self.owns_group and self._dist.is_initialized():
            self._dist.destroy_process_group()
            self.owns_group = False

    # ----- collective calls ----------------------------------------------------------

    def _collective(self, what: str, call, *args, **kwargs):
        try:
            return call(*args, **kwargs)
        except RuntimeError as err:  # gloo's timeouts and lost connections
            raise DistributedError(
                f"process {self.rank} of {self.world_size}: {what} failed: {_first_line(err)}."
                " Another process has probably failed, been stopped or hung (see its "
                "output); training cannot go on without it"
            ) from None

    def broadcast_object(self, value: Any, what: str) -> Any:
        """Process 0's `value`, on every process (pickled: the processes of one run trust
        each other)."""
        box = [value if self.rank == 0 else None]
        self._collective(what, self._dist.broadcast_object_list, box, src=0)
        return box[0]

    def _gather_objects(self, value: Any, what: str) -> list:
        values = [None] * self.world_size
        self._collective(what, self._dist.all_gather_object, values, value)
        return values

    def _sum(self, buffer: np.ndarray, what: str) -> np.ndarray:
        """Add up the float64 `buffer` over all processes, in place."""
        self._collective(what, self._dist.all_reduce, self._torch.from_numpy(buffer))
        return buffer

    # ----- what the Solver calls -----------------------------------------------------

    def share(self, n: int) -> Tuple[int, int]:
        """This process's slice [first, last) of n samples: consecutive slices, the first
        n % world_size processes one sample more."""
        base, extra = divmod(n, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (self.rank < extra)

    def loss_and_grads(
        self, model: Any, X: np.ndarray, y: np.ndarray, stop: bool
    ) -> Tuple[float, Dict[str, np.ndarray], bool]:
        """The loss and gradients of the whole minibatch (X, y), computed on this process's
        share; and whether any process asked to stop (`stop`: this one did)."""
        first, last = self.share(X.shape[0])
        params = model.params
        loss, grads = model.loss(X[first:last], y[first:last])
        states = _running_averages(model)
        parts = [np.asarray(grads[name]) for name in params] + [a for _, _, a in states]
        weight = (last - first) / X.shape[0]
        buffer = np.empty(sum(p.size for p in parts) + 2)
        offset = 0
        for part in parts:
            np.multiply(part.ravel(), weight, out=buffer[offset : offset + part.size])
            offset += part.size
        buffer[-2:] = weight * float(loss), float(stop)
        self._sum(buffer, "the gradient all-reduce")
        summed, offset = [], 0
        for part in parts:
            summed.append(
                buffer[offset : offset + part.size].reshape(part.shape).astype(part.dtype)
            )
            offset += part.size
        for (state, key, _), value in zip(states, summed[len(params) :]):
            state[key] = value
        return float(buffer[-2]), dict(zip(params, summed)), bool(buffer[-1])

    def count_correct(self, correct: int) -> int:
        """The number of correct predictions summed over the processes."""
        return int(self._sum(np.array([correct], dtype=np.float64), "the accuracy count")[0])

    def synchronize(self, solver: Any) -> None:
        """Give every process process 0's training state (through the checkpoint format),
        then check that all hold the same."""
        from ..training.checkpoint import load, save

        with tempfile.TemporaryDirectory(prefix="graphnet-dp-") as folder:
            path = os.path.join(folder, "state.npz")
            if self.rank == 0:
                save(solver, path)
                with open(path, "rb") as file:
                    payload = file.read()
            payload = self.broadcast_object(
                payload if self.rank == 0 else None, "sending process 0's training state"
            )
            if self.rank != 0:
                with open(path, "wb") as file:
                    file.write(payload)
                load(path, into=solver)
        self.check_identical(solver, "at the start")

    def check_identical(self, solver: Any, when: str) -> None:
        """Raise DistributedError unless every process holds the same params, iteration
        and random state as process 0."""
        digests = self._gather_objects(_fingerprint(solver), "comparing the params")
        differing = [rank for rank, digest in enumerate(digests) if digest != digests[0]]
        if differing:
            raise DistributedError(
                f"{when}, process{'es' if len(differing) > 1 else ''} "
                f"{', '.join(map(str, differing))} hold{'s' * (len(differing) == 1)} other "
                f"params, iteration or random state than process 0 (of {self.world_size}); "
                "the processes must run the same graphnet, model and settings"
            )

    def threads_per_process(self) -> int:
        """The C++ kernels' threads for one process: this machine's cores shared among
        the processes torchrun started on it."""
        local = int(os.environ.get("LOCAL_WORLD_SIZE", self.world_size))
        return max(1, (os.cpu_count() or 1) // max(local, 1))


def _running_averages(model):
    """(state dict, key, array) of every float array in the graph's node states: the
    batchnorm running mean and variance."""
    graph = getattr(model, "graph", None)
    if graph is None:
        return []
    return [
        (node.state, key, value)
        for node in graph.nodes
        for key, value in sorted(node.state.items())
        if isinstance(value, np.ndarray) and value.dtype.kind == "f"
    ]


def _fingerprint(solver):
    digest = hashlib.sha256(str(solver.iteration).encode())
    for name, value in solver.model.params.items():
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    for _, key, value in _running_averages(solver.model):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    digest.update(repr(solver.rng.bit_generator.state).encode())
    return digest.hexdigest()


def _first_line(err):
    """The gist of an error from torch or gloo: its first line, without gloo's source
    location and advice."""
    text = str(err).strip()
    text = text.splitlines()[0] if text else type(err).__name__
    text = re.sub(r"\[[^\]]*\.(cc|cpp|h):\d+\] ", "", text)
    return text.split(" This is typically caused")[0].rstrip(".")
