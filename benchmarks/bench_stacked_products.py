"""Stacks of small matrix products (attention written by hand with matmul) on one thread: the
matmul gate's one C++ call for the stack against a _C.matmul call per matrix.

    python benchmarks/bench_stacked_products.py [--shapes A;B ...] [--attention N,T,H,d ...]
                                                [--dtype float32] [--rounds 7]

--shapes: the gate's product a @ b (graphnet.gates.tensor.batched_matmul), each operand's
shape as comma-separated sizes; by default q @ kᵀ and weights @ v of attention over (8, 4)
heads of 16 positions, a ViT's q @ kᵀ over (2, 64) heads of 49 patches, and 256 products
of 16 x 32 x 16. --attention: a training pass (forward and backward) of a hand-written
attention layer on x (N, T, H * d): q, k and v projected, split into heads, softmax(q @
kᵀ / sqrt(d)) @ v, merged and projected, summed. Each is timed with the stack's one call
(`batched`) and with the per-matrix loop the gate ran before (`per matrix`, swapped in
for the gate's product), the two in turns, process CPU time, the best of --rounds blocks.
--broadcast: a @ b with an operand broadcast along batch axes (per-head weights (H, d, e)
shared by the batch, queries (1, H, T, d) shared by it), forward and backward: the
broadcast operand's gradient summed in C++ a product at a time (`summed`) against the
stack of all the products summed by the executor (`stack`, what the gate did before),
timed in turns, and each one's peak RSS in a child process of its own.
"""

import argparse
import subprocess
import sys
import time

import numpy as np

import graphnet as gn
from graphnet.gates import tensor
from graphnet.kernels import _C

DEFAULT_SHAPES = [
    "8,4,16,32;8,4,32,16",
    "8,4,16,16;8,4,16,32",
    "2,64,49,64;2,64,64,49",
    "2,64,49,49;2,64,49,64",
    "256,16,32;256,32,16",
]
DEFAULT_ATTENTION = ["8,16,4,32", "2,49,4,64", "64,16,4,16"]
DEFAULT_BROADCAST = ["64,4,16,64;4,64,64", "256,8,32,64;8,64,64", "1,4,16,64;64,4,64,16"]
BATCHED = tensor.batched_matmul  # the gate's product of stacks, one C++ call


def per_matrix(a, b, transpose_a=False, transpose_b=False):
    """The gate's product before the batched call: one _C.matmul per matrix of the batch."""
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a, b = np.broadcast_to(a, batch + a.shape[-2:]), np.broadcast_to(b, batch + b.shape[-2:])
    rows = a.shape[-1] if transpose_a else a.shape[-2]
    columns = b.shape[-2] if transpose_b else b.shape[-1]
    out = np.empty(batch + (rows, columns), dtype=a.dtype)
    for index in np.ndindex(*batch):
        out[index] = _C.matmul(a[index], b[index], transpose_a, transpose_b)
    return out


def gate_product_before(a, b, transpose_a=False, transpose_b=False, summed_to=None):
    """The gate's product of stacks before the batched call: per matrix, except where a
    stack of rows times a matrix was (and is) one product (the layer broadcasts nothing)."""
    assert summed_to is None
    if b.ndim == 2 and (a.ndim == 2 or not transpose_a):
        return BATCHED(a, b, transpose_a, transpose_b)
    return per_matrix(a, b, transpose_a, transpose_b)


def attention_pass(n, t, heads, d, dtype, rng):
    """A forward and backward of a hand-written attention layer, as a function."""
    g = gn.Graph()
    width = heads * d
    x = g.input("x", shape=(n, t, width))
    projections = [g.param(name, rng.standard_normal((width, width)) / np.sqrt(width), dtype)
                   for name in ("wq", "wk", "wv", "wo")]

    def split(z):  # (n, t, width) -> (n, heads, t, d)
        return g.transpose(g.reshape(z, (n, t, heads, d)), (0, 2, 1, 3))

    q, k, v = (split(x @ w) for w in projections[:3])
    weights = g.softmax((q @ g.transpose(k, (0, 1, 3, 2))) * (1 / np.sqrt(d)))
    merged = g.reshape(g.transpose(weights @ v, (0, 2, 1, 3)), (n, t, width))
    g.sum(merged @ projections[3])
    xs = rng.standard_normal((n, t, width)).astype(dtype)

    def run():
        g.forward(x=xs)
        g.backward()

    return run


def best_of_turns(fns, calls, rounds):
    """The best block's seconds per call of each function, the functions in turns."""
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            start = time.process_time()
            for _ in range(calls):
                fn()
            best[i] = min(best[i], (time.process_time() - start) / calls)
    return best


def with_product(product, fn):
    """fn run with the matmul gate's product of stacks swapped for `product`."""
    def run():
        kept, tensor.batched_matmul = tensor.batched_matmul, product
        try:
            fn()
        finally:
            tensor.batched_matmul = kept
    return run


def broadcast_pass(shapes, dtype):
    """Forward and backward of a @ b (every input a param), shapes "A;B"."""
    rng = np.random.default_rng(0)
    g = gn.Graph(dtype=dtype)
    a, b = (g.param(name, rng.standard_normal([int(s) for s in shape.split(",")]))
            for name, shape in zip("ab", shapes.split(";")))
    g.sum(g.matmul(a, b))

    def run():
        g.forward()
        g.backward()

    return run


def stacked(fn):
    """fn run with the gradients of broadcast operands left as the stack of all the
    products, for the executor to sum (the gate before summing them in C++)."""
    def run():
        kept, tensor.summed = tensor.summed, lambda operand, dout: None
        try:
            fn()
        finally:
            tensor.summed = kept
    return run


def peak_of_this_process_mb():
    """VmHWM, the peak RSS of this process's memory since its exec (getrusage's ru_maxrss
    would count the parent's, kept across fork and exec)."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def peak_rss_mb(shapes, dtype, mode):
    """The peak RSS (MB) of a child process that runs broadcast_pass once in `mode`."""
    child = subprocess.run(
        [sys.executable, __file__, "--child", mode, shapes, "--dtype", dtype],
        capture_output=True, text=True, check=True)
    return float(child.stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="*", default=DEFAULT_SHAPES, help="A;B each")
    parser.add_argument("--attention", nargs="*", default=DEFAULT_ATTENTION, help="N,T,H,d each")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--broadcast", nargs="*", default=DEFAULT_BROADCAST, help="A;B each")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)  # mode, shapes
    args = parser.parse_args()
    _C.set_num_threads(1)
    if args.child:
        mode, shapes = args.child
        run = broadcast_pass(shapes, args.dtype)
        {"summed": run, "stack": stacked(run)}[mode]()
        print(peak_of_this_process_mb())
        return
    rng = np.random.default_rng(0)
    print("product or pass | ms per matrix / batched | per matrix / batched | batched GFLOP/s")
    for shapes in args.shapes:
        a, b = (rng.standard_normal([int(s) for s in shape.split(",")]).astype(args.dtype)
                for shape in shapes.split(";"))
        np.testing.assert_array_equal(BATCHED(a, b), per_matrix(a, b))
        flops = 2 * np.prod(np.broadcast_shapes(a.shape[:-2], b.shape[:-2])) * a.shape[-2] * (
            a.shape[-1] * b.shape[-1])
        calls = max(3, min(2000, int(2e7 / flops)))
        old, new = best_of_turns([lambda: per_matrix(a, b), lambda: BATCHED(a, b)], calls,
                                 args.rounds)
        print(f"{args.dtype} {shapes:24} | {1e3 * old:7.3f} {1e3 * new:7.3f} | "
              f"{old / new:5.2f}x | {flops / new / 1e9:6.1f}", flush=True)
    for sizes in args.attention:
        n, t, heads, d = (int(s) for s in sizes.split(","))
        run = attention_pass(n, t, heads, d, args.dtype, rng)
        old, new = best_of_turns([with_product(gate_product_before, run), run], 20, args.rounds)
        print(f"{args.dtype} attention pass {sizes:14} | {1e3 * old:7.3f} {1e3 * new:7.3f} | "
              f"{old / new:5.2f}x |", flush=True)
    if args.broadcast:
        print("broadcast a @ b, forward + backward | ms stack / summed | stack / summed | "
              "peak RSS MB stack / summed")
    for shapes in args.broadcast:
        run = broadcast_pass(shapes, args.dtype)
        old, new = best_of_turns([stacked(run), run], 10, args.rounds)
        rss = [peak_rss_mb(shapes, args.dtype, mode) for mode in ("stack", "summed")]
        print(f"{args.dtype} {shapes:24} | {1e3 * old:7.3f} {1e3 * new:7.3f} | "
              f"{old / new:5.2f}x | {rss[0]:6.1f} {rss[1]:6.1f}", flush=True)


if __name__ == "__main__":
    main()
