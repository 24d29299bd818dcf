"""Per-gate Python costs: graphnet's builder and scheduler against a pure-Python scalar
autograd.

The peer is written here in the micrograd style (one Python object per value, a closure
per node for its backward, a recursive topological sort), the way a student writes one.
Both run the same random circuit of add, multiply, tanh and relu gates. The contenders
take turns, one run each per round, and the medians over the rounds are compared per
gate. Also timed: building that circuit as a graph, and building a model (a
FullyConnectedNet of 50 hidden layers with batchnorm and dropout: shapes inferred and
checked, params made), per gate.

    python benchmarks/bench_scalar.py [--gates 10000] [--repeats 15] [--clock wall|cpu]

Wall-clock times on a shared machine are noisy (--clock cpu times the process's CPU
time instead, which leaves out the waits for a core); instruction counts are not:

    python benchmarks/bench_scalar.py --callgrind [--gates 3000]

runs each part under `valgrind --tool=callgrind`, once and three times in a process,
and prints (instructions of 3 runs - instructions of 1 run) / 2 per gate.
"""
import argparse
import gc
import math
import os
import random
import re
import statistics
import subprocess
import sys
import time

import graphnet as gn


class Value:
    """A scalar with a gradient and a closure that pushes it to its children."""

    def __init__(self, data, children=()):
        self.data, self.grad, self._children = data, 0.0, children
        self._backward = lambda: None

    def __add__(self, other):
        out = Value(self.data + other.data, (self, other))

        def backward():
            self.grad += out.grad
            other.grad += out.grad
        out._backward = backward
        return out

    def __mul__(self, other):
        out = Value(self.data * other.data, (self, other))

        def backward():
            self.grad += other.data * out.grad
            other.grad += self.data * out.grad
        out._backward = backward
        return out

    def tanh(self):
        t = math.tanh(self.data)
        out = Value(t, (self,))

        def backward():
            self.grad += (1 - t * t) * out.grad
        out._backward = backward
        return out

    def relu(self):
        out = Value(max(self.data, 0.0), (self,))

        def backward():
            self.grad += (out.data > 0) * out.grad
        out._backward = backward
        return out

    def backward(self):
        order, seen = [], set()

        def visit(v):
            if v not in seen:
                seen.add(v)
                for child in v._children:
                    visit(child)
                order.append(v)
        visit(self)
        self.grad = 1.0
        for v in reversed(order):
            v._backward()


def random_circuit(n_gates, n_inputs, seed):
    """A recipe: each gate (op, i, j) reads earlier values, mostly recent ones; the
    outputs no gate reads are summed at the end, so every gate matters to the result."""
    rnd = random.Random(seed)
    recipe, used = [], set()
    for k in range(n_gates):
        available = n_inputs + k
        i, j = (rnd.randrange(max(0, available - 50), available) for _ in range(2))
        op = rnd.choice(["add", "multiply", "tanh", "relu"])
        used.update((i, j) if op in ("add", "multiply") else (i,))
        recipe.append((op, i, j))
    total = next(k for k in range(n_inputs, n_inputs + n_gates) if k not in used)
    for k in range(total + 1, n_inputs + n_gates):
        if k not in used:
            recipe.append(("add", total, k))
            total = n_inputs + len(recipe) - 1
    return recipe


def micrograd_forward(recipe, inputs):
    """The peer's forward pass, which is also how it builds its graph."""
    values = [Value(x) for x in inputs]
    for op, i, j in recipe:
        a, b = values[i], values[j]
        values.append(a + b if op == "add" else a * b if op == "multiply"
                      else a.tanh() if op == "tanh" else a.relu())
    return values


def run_micrograd(recipe, inputs):
    values = micrograd_forward(recipe, inputs)
    values[-1].backward()
    return values[-1].data, [v.grad for v in values[:len(inputs)]]


def build_graphnet(recipe, n_inputs):
    g = gn.Graph()
    nodes = [g.input(f"x{i}") for i in range(n_inputs)]
    for op, i, j in recipe:
        args = (nodes[i], nodes[j]) if op in ("add", "multiply") else (nodes[i],)
        nodes.append(getattr(g, op)(*args))
    return g


def build_model():
    """A FullyConnectedNet of 50 hidden layers of 16 units with batchnorm and dropout."""
    return gn.models.FullyConnectedNet([16] * 50, input_dim=16, num_classes=4,
                                       normalization="batchnorm", dropout=0.5, reg=0.1,
                                       seed=0)


def contenders(args):
    """{name: (function, gates it handles)} and a check that both engines agree."""
    recipe = random_circuit(args.gates, args.inputs, seed=0)
    rnd = random.Random(1)
    inputs = [rnd.uniform(-1, 1) for _ in range(args.inputs)]
    feeds = {f"x{i}": x for i, x in enumerate(inputs)}
    graph = build_graphnet(recipe, args.inputs)

    def graphnet_step():
        graph.forward(feeds)
        graph.backward()

    graphnet_step()
    reference_value, reference_grads = run_micrograd(recipe, inputs)
    assert math.isclose(graph.sinks[0].value, reference_value, rel_tol=1e-9)
    assert all(math.isclose(graph[f"x{i}"].grad or 0.0, g, rel_tol=1e-9, abs_tol=1e-12)
               for i, g in enumerate(reference_grads)), "the two engines disagree"
    model_gates = sum(n.gate is not None for n in build_model().graph.nodes)
    n = len(recipe)
    return {
        "micrograd": (lambda: run_micrograd(recipe, inputs), n),
        "micrograd_forward": (lambda: micrograd_forward(recipe, inputs), n),
        "step": (graphnet_step, n),
        "build": (lambda: build_graphnet(recipe, args.inputs), n),
        "model": (build_model, model_gates),
    }


def timed(parts, rounds, clock):
    """{name: median seconds per gate}, the parts taking turns, one run each per round.
    Each run starts on a collected heap: the peer's closures make reference cycles, whose
    collection would otherwise land on whichever part runs next."""
    times = {name: [] for name in parts}
    for _ in range(rounds):
        for name, (function, _) in parts.items():
            gc.collect()
            start = clock()
            function()
            times[name].append(clock() - start)
    return {name: statistics.median(t) / parts[name][1] for name, t in times.items()}


def instructions_per_gate(part, gates):
    """Run `part` under callgrind once and three times; the difference per gate."""
    counts = []
    for times in (1, 3):
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
        result = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
             sys.executable, __file__, "--only", part, "--times", str(times),
             "--gates", str(gates)], env=env, capture_output=True, text=True, check=True)
        counts.append(int(re.search(r"Collected : (\d+)", result.stderr).group(1)))
    return (counts[1] - counts[0]) / 2


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gates", type=int, default=10_000)
    parser.add_argument("--inputs", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--callgrind", action="store_true",
                        help="count instructions per gate under valgrind instead of timing")
    parser.add_argument("--only", help=argparse.SUPPRESS)  # one part, for --callgrind
    parser.add_argument("--times", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.setrecursionlimit(max(10_000, 4 * args.gates))  # micrograd's sort recurses
    if args.only:
        function, _ = contenders(args)[args.only]
        for _ in range(args.times):
            function()
        return
    parts = contenders(args)
    n_gates = parts["step"][1]
    if args.callgrind:
        per_gate = {name: instructions_per_gate(name, args.gates) / gates
                    for name, (_, gates) in parts.items()}
        unit, scale = "instructions/gate", 1.0
    else:
        clock = time.perf_counter if args.clock == "wall" else time.process_time
        per_gate = timed(parts, args.repeats, clock)
        unit, scale = "us/gate", 1e6
        print(f"scalar circuit: {n_gates} gates, {args.inputs} inputs; model: "
              f"{parts['model'][1]} gates; median of {args.repeats} rounds, {args.clock} clock")
    peer = per_gate["micrograd"]
    rows = [("micrograd-style, forward + backward", "micrograd"),
            ("micrograd-style, forward only", "micrograd_forward"),
            ("graphnet, forward + backward", "step"),
            ("graphnet, building the circuit (once)", "build"),
            ("graphnet, building the model (once)", "model")]
    print(f"{'':40s}{unit:>18s}{'vs micrograd':>15s}")
    for label, name in rows:
        print(f"{label:40s}{per_gate[name] * scale:18.2f}{per_gate[name] / peer:14.2f}x")


if __name__ == "__main__":
    main()
