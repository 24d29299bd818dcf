"""Where a zoo network's float32 step departs from float64: for every node, graphnet's
float32 value and gradient against graphnet's float64 ones on the same (float32-rounded)
weights, batch and dropout masks, as a relative error in norm, for each conv path; and
for each relu and leaky relu, the units whose sign differs from float64's, and for each
max pool, the windows whose maximum is at another position (a kink flip: the float32 step
sends that gradient elsewhere, and a norm before it spreads the difference to every
gradient upstream).

paths: auto (the default kernels), off (Winograd off: the direct and tap kernels), plain
(the direct kernels off too).

    python benchmarks/trace_float32.py --model random-21-8 --batch 16 --paths auto,off,plain
"""

import argparse

import numpy as np
from zoo_models import batch_of, build_graphnet, model_named

from graphnet.kernels import _C

SOURCES = ("param", "input")


def relu_sides(x, attrs):
    return x > 0


def window_maxima(x, attrs):
    """The position of each window's maximum (the first on a tie, as the gate takes)."""
    kh, kw, stride = attrs["pool_height"], attrs["pool_width"], attrs["stride"]
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
    windows = windows[:, :, ::stride, ::stride]
    return windows.reshape(*windows.shape[:4], -1).argmax(axis=-1)


# What decides where each kink's gradient goes, per op.
KINKS = {"relu": relu_sides, "leaky_relu": relu_sides, "max_pool": window_maxima}


def use_path(path):
    _C.set_direct_conv(path != "plain")
    _C.set_winograd_conv("auto" if path == "auto" else "off", "auto")


def step(spec, dtype, batch, seed, path):
    """{node: (op, value, gradient, its first input's name)} after one training step; the
    dropout masks drawn from numpy's global state, seeded here (the same for any dtype)."""
    use_path(path)
    np.random.seed(seed)
    model = build_graphnet(spec, dtype, seed=seed)
    for key in model.params:  # float64 on the float32 weights
        model.params[key] = model.params[key].astype(np.float32).astype(dtype)
    X, y = batch_of(spec, batch, np.float32, np.random.default_rng(seed + 1))
    model.loss(X.astype(dtype), y)

    def array(a):
        return None if a is None else np.asarray(a, np.float64)

    return {
        n.name: (
            n.op,
            array(n.value),
            array(n.grad),
            n.inputs[0].name if n.inputs else None,
            n.gate.attrs() if n.gate is not None else None,
        )
        for n in model.graph.nodes
    }


def relative(got, exact):
    if got is None or exact is None or exact.dtype.kind != "f":
        return "-"
    return f"{np.linalg.norm(got - exact) / max(np.linalg.norm(exact), 1e-300):.1e}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a zoo name, random-SEED-INDEX too")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=8, help="weights, batch and masks")
    parser.add_argument("--paths", default="auto,off,plain")
    args = parser.parse_args()
    spec, paths = model_named(args.model), args.paths.split(",")
    exact = step(spec, np.float64, args.batch, args.seed, "auto")
    runs = {path: step(spec, np.float32, args.batch, args.seed, path) for path in paths}
    use_path("auto")
    print(f"{spec.name} at batch {args.batch}, seed {args.seed}: {spec.what}")
    header = "".join(f"{path + ' value':>12s}{path + ' grad':>12s}" for path in paths)
    print(f"{'node':14s}{'op':18s}{header}  kink flips")
    for name, (op, value, grad, source, attrs) in exact.items():
        if op in SOURCES:  # their gradients below
            continue
        cells = "".join(
            f"{relative(runs[p][name][1], value):>12s}{relative(runs[p][name][2], grad):>12s}"
            for p in paths
        )
        flips = ""
        if op in KINKS:
            side = KINKS[op](exact[source][1], attrs)
            flips = "  " + " ".join(
                str(int(np.sum(KINKS[op](runs[p][source][1], attrs) != side))) for p in paths
            )
        print(f"{name:14s}{op:18s}{cells}{flips}")
    for name, (op, _, grad, _, _) in exact.items():
        if op == "param":
            cells = "".join(f"{'':>12s}{relative(runs[p][name][2], grad):>12s}" for p in paths)
            print(f"{'d' + name:14s}{'param':18s}{cells}")


if __name__ == "__main__":
    main()
