"""Scalar-circuit overhead: graphnet's scheduler against a pure-Python scalar autograd.

The peer is written here in the micrograd style (one Python object per value, a closure
per node for its backward, a recursive topological sort), the way a student writes one.
Both run the same random circuit of add, multiply, tanh and relu gates; each is timed
over repeated runs and the medians are compared per gate.

    python benchmarks/bench_scalar.py [--gates 10000] [--repeats 15]
"""
import argparse
import math
import random
import statistics
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


def run_micrograd(recipe, inputs):
    values = [Value(x) for x in inputs]
    for op, i, j in recipe:
        a, b = values[i], values[j]
        values.append(a + b if op == "add" else a * b if op == "multiply"
                      else a.tanh() if op == "tanh" else a.relu())
    values[-1].backward()
    return values[-1].data, [v.grad for v in values[:len(inputs)]]


def build_graphnet(recipe, n_inputs):
    g = gn.Graph()
    nodes = [g.input(f"x{i}") for i in range(n_inputs)]
    for op, i, j in recipe:
        args = (nodes[i], nodes[j]) if op in ("add", "multiply") else (nodes[i],)
        nodes.append(getattr(g, op)(*args))
    return g


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gates", type=int, default=10_000)
    parser.add_argument("--inputs", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    sys.setrecursionlimit(max(10_000, 4 * args.gates))  # micrograd's sort recurses
    recipe = random_circuit(args.gates, args.inputs, seed=0)
    rnd = random.Random(1)
    inputs = [rnd.uniform(-1, 1) for _ in range(args.inputs)]
    feeds = {f"x{i}": x for i, x in enumerate(inputs)}

    graph = build_graphnet(recipe, args.inputs)
    n_gates = len(recipe)

    def graphnet_step():
        graph.forward(feeds)
        graph.backward()

    graphnet_step()
    reference_value, reference_grads = run_micrograd(recipe, inputs)
    assert math.isclose(graph.sinks[0].value, reference_value, rel_tol=1e-9)
    assert all(math.isclose(graph[f"x{i}"].grad or 0.0, g, rel_tol=1e-9, abs_tol=1e-12)
               for i, g in enumerate(reference_grads)), "the two engines disagree"
    build = median_time(lambda: build_graphnet(recipe, args.inputs), max(3, args.repeats // 3))
    ours = median_time(graphnet_step, args.repeats)
    peer = median_time(lambda: run_micrograd(recipe, inputs), args.repeats)
    per_gate = lambda t: t / n_gates * 1e6  # noqa: E731
    print(f"scalar circuit: {n_gates} gates, {args.inputs} inputs, median of {args.repeats} runs")
    print(f"{'':38s}{'us/gate':>10s}{'vs micrograd':>15s}")
    print(f"{'micrograd-style, forward + backward':38s}{per_gate(peer):10.2f}{1.0:14.2f}x")
    print(f"{'graphnet, forward + backward':38s}{per_gate(ours):10.2f}{ours / peer:14.2f}x")
    print(f"{'graphnet, building the graph (once)':38s}{per_gate(build):10.2f}{build / peer:14.2f}x")


if __name__ == "__main__":
    main()
