"""What `gn.from_onnx` and `gn.to_onnx` cost on large files: CPU time and peak memory.

    python benchmarks/bench_onnx_import.py [--models vgg_wide,mlp] [--rounds 3]

Each model is exported (float32) by `gn.to_onnx` into a temporary folder in a child
process of its own, whose peak RSS during the export above its RSS with the graph built
is printed; then, in another child per model, the file is loaded with `onnx.load` and
imported --rounds times. Printed per model: the file's size, the import's CPU time (min
and all rounds) and the process's peak RSS during the imports above its RSS with the
model loaded (Linux: the peak reset through /proc/self/clear_refs). Each round's graph is
collected before the next (a graph holds reference cycles: without gc.collect() the last
round's weights would count in this round's peak).

Models: a zoo network by name (benchmarks/zoo_models.py, say vgg_wide: 20 MB) or `mlp`, a
3072-4096-4096-10 relu MLP (118 MB: two weights of 50 and 67 MB).
"""

import argparse
import gc
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def export(name, path):
    """Build the model's graph, then print the export's CPU time and peak RSS above it."""
    import graphnet as gn

    if name == "mlp":
        rng = np.random.default_rng(0)
        g = gn.Graph(dtype=np.float32)
        h = g.input("x", shape=(None, 3072))
        sizes = [3072, 4096, 4096, 10]
        for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
            w = g.param(f"W{i}", rng.standard_normal((fan_in, fan_out)) * fan_in**-0.5)
            last = i == len(sizes) - 2
            h = g.affine(h, w, g.param(f"b{i}", np.zeros(fan_out)), name="scores" if last else None)
            h = h if last else g.relu(h)
        graph = g
    else:
        from zoo_models import build_graphnet, model_named

        graph = build_graphnet(model_named(name), np.float32, seed=0).graph
    import onnx  # noqa: F401  (loaded before the measure: the export's cost, not the module's)

    built = _rss_kb("VmRSS")
    _reset_peak()
    began = time.process_time()
    gn.to_onnx(graph, path, outputs="scores", dtype=np.float32)
    print(
        f"{name}: export {(time.process_time() - began) * 1e3:.0f} ms, peak RSS "
        f"+{(_rss_kb('VmHWM') - built) / 1e3:.0f} MB above the built graph",
        flush=True,
    )


def _reset_peak():
    with open("/proc/self/clear_refs", "w") as clear:  # VmHWM from here on
        clear.write("5")


def _rss_kb(field):
    """This process's resident set (VmRSS) or its peak (VmHWM) in kB, from /proc."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def measure(path, rounds):
    """In this process: load the file, import it `rounds` times; print the line."""
    import onnx

    import graphnet as gn

    model = onnx.load(path)
    loaded = _rss_kb("VmRSS")
    _reset_peak()  # the peak from here: the imports'
    times = []
    for _ in range(rounds):
        began = time.process_time()
        gn.from_onnx(model)
        times.append(time.process_time() - began)
        gc.collect()
    peak = _rss_kb("VmHWM")
    print(
        f"{os.path.basename(path)}: {model.ByteSize() / 1e6:.1f} MB, import min "
        f"{min(times) * 1e3:.1f} ms (rounds {', '.join(f'{t * 1e3:.0f}' for t in times)}), "
        f"peak RSS +{(peak - loaded) / 1e3:.0f} MB above the loaded model",
        flush=True,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="vgg_wide,mlp")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # the child's file
    parser.add_argument("--export", help=argparse.SUPPRESS)  # the child's model
    args = parser.parse_args()
    if args.measure:
        measure(args.measure, args.rounds)
        return
    if args.export:
        name, path = args.export.split(",", 1)
        export(name, path)
        return
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models.split(","):
            path = os.path.join(folder, f"{name}.onnx")
            subprocess.run([sys.executable, __file__, "--export", f"{name},{path}"], check=True)
            child = [sys.executable, __file__, "--measure", path, "--rounds", str(args.rounds)]
            subprocess.run(child, check=True)


if __name__ == "__main__":
    main()
