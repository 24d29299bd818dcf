"""The peer (PyTorch) in a process of its own, as its users run it.

In one process the two would share a heap, whose state (how much freed memory the C
library keeps, and where) one framework's step leaves for the other's: PyTorch's batch-256
CNN steps ran up to a half faster in a process whose allocator graphnet had tuned. So a
benchmark builds its PyTorch contenders in a child process and runs their blocks of calls
there, taking turns with graphnet's blocks in the parent; each call is timed in the
process that runs it, by that process's clock (so --clock cpu counts each side's own CPU
time).

    peer = Peer(threads=1, clock="cpu")
    names = peer.build(make_contenders, *args)   # make_contenders(*args) -> {name: fn}
    times = peer.block("torch step", calls=10)   # seconds of each call
    peer.close()
"""
import multiprocessing
import time

import numpy as np

CLOCKS = {
    "wall": time.perf_counter,
    "cpu": time.process_time,
    "both": lambda: np.array((time.perf_counter(), time.process_time())),  # (wall, cpu)
}


def timed_calls(fn, calls, clock):
    """Each of `calls` calls of fn(), timed by clock(): a list of seconds (of (wall, cpu)
    seconds with CLOCKS["both"])."""
    times = []
    for _ in range(calls):
        start = clock()
        fn()
        times.append(clock() - start)
    return times


class Peer:
    """A child process that builds contenders and runs blocks of their calls on request."""

    def __init__(self, threads, clock):
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no fork of ours
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, threads, clock),
                                        daemon=True)
        self._process.start()

    def build(self, make, *args):
        """Replace the child's contenders by make(*args) (a module-level function); returns
        their names."""
        return self._ask(("build", make, args))

    def block(self, name, calls):
        """Run contender `name` `calls` times in the child: the seconds of each call."""
        return self._ask(("run", name, calls))

    def close(self):
        self._conn.send(None)
        self._process.join()

    def _ask(self, message):
        self._conn.send(message)
        answer = self._conn.recv()
        if isinstance(answer, BaseException):
            raise answer
        return answer


def _serve(conn, threads, clock_name):
    import torch

    torch.set_num_threads(threads)
    clock, runs = CLOCKS[clock_name], {}
    while (message := conn.recv()) is not None:
        try:
            if message[0] == "build":
                _, make, args = message
                runs = make(*args)
                conn.send(sorted(runs))
            else:
                _, name, calls = message
                conn.send(timed_calls(runs[name], calls, clock))
        except Exception as error:  # sent back: the parent raises it
            conn.send(error)
