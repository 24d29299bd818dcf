"""The rules of the strided paths off the tap kernels, on random layers: a pass on the lane
kernel (`_C.set_lane_conv("always")`), or with `--path columns` dx or dw as columns
(`_C.set_column_dx("always")`, `_C.set_column_dw("always")`), against the paths without it
("off": the tap kernels, or for dx of under 8 channels from twice as many filters im2col +
GEMM), and the path the rule picks ("auto": lane_forward_pays, lane_input_gradient_pays,
lane_weight_gradient_pays, column_input_gradient_pays, column_weight_gradient_pays).
Float32, one thread, CPU time.

    python benchmarks/bench_lane_rules.py [--pass dx] [--seed 2] [--layers 70]
                                          [--channels 8] [--batches 1,2,4] [--pixels 6,40]
    python benchmarks/bench_lane_rules.py --path columns [--pass dw] [--seed 1] [--layers 40]
                                          [--batches 1,1,2,4,16,64] [--layer N,C,H,W,F,k,s,pad]
    python benchmarks/bench_lane_rules.py --path columns [--pass dw] --networks 0,1,2
                                          [--batches 1,16,64]

The lane kernels' layers: 1-`--channels` channels, 3-24 filters, 3x3, 5x5 or 7x7 windows
with any pad up to half the window, stride 2, `--pixels` a side (the random student
networks' strided layers), a batch of `--batches`; for dx only batches holding under 16
channels (the small-batch rule). The columns': layers whose pass the columns can take,
1-256 channels and filters (half of each 1-48, odd counts too), 1x1-7x7 windows, stride 2
or 3, pad 0-3, 2-64 pixels a side, a batch of `--batches` (the rules were fitted on
1,1,2,4,16,64); or with `--networks` the strided layers the networks students build
have (the zoo's and those of the 100 random networks of each seed,
zoo_models.random_network) at each of `--batches`, those whose pass the columns can take.
`--pass dw` times dw and db (dx not asked for). Printed per layer: the
fastest of 5 blocks of calls of each (two turns each), us, and always / off, auto / off.
Last, the geomeans of the rule's time and of the better path's over "off"'s."""

import argparse
import math
import time

import numpy as np
from bench_attention import best_ms
from zoo_models import ZOO, conv_layer, random_network, shapes

from graphnet.kernels import _C


def random_layer(rng, channels, batches, pixels, under_16_channels):
    """(N, C, H, W, F, k, stride, pad) with an output of 2+ pixels a side (and N * C < 16)."""
    while True:
        k = int(rng.choice([3, 5, 7]))
        pad = int(rng.integers(0, (k - 1) // 2 + 1))
        H, W = (int(rng.integers(pixels[0], pixels[1] + 1)) for _ in range(2))
        N, C = int(rng.choice(batches)), int(rng.integers(1, channels + 1))
        if min(H, W) + 2 * pad - k >= 2 and (N * C < 16 or not under_16_channels):
            return N, C, H, W, int(rng.integers(3, 25)), k, 2, pad


def column_layer(rng, batches, which):
    """(N, C, H, W, F, k, stride, pad) of at most 2e8 multiply-adds whose dx (`which`
    "dx") or dw the columns can take (set_column_dx / set_column_dw "always"), drawn from
    the layers students build: channels and filters any count of 1-256 (half of each
    1-48, as the random networks' layers draw them, odd counts too, whose columns are
    padded to whole vectors; half 49-256), 1x1-7x7 windows, stride 2 or 3, pad 0-3 (at
    most half the window), 2-64 pixels a side."""

    def count():
        return int(rng.integers(1, 49) if rng.random() < 0.5 else rng.integers(49, 257))

    while True:
        C, F = count(), count()
        H = int(rng.choice([2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 20, 24, 32, 40, 48, 64]))
        W = H if rng.random() < 0.6 else int(rng.integers(2, 65))
        k, s = int(rng.integers(1, 8)), int(rng.choice([2, 2, 2, 3]))
        pad = int(rng.integers(0, min(3, k // 2) + 1))
        N = int(rng.choice(batches))
        if min(H, W) + 2 * pad < k or N * C * H * W * F * k * k > 2e8 * s * s:
            continue
        layer = N, C, H, W, F, k, s, pad
        if columns_can_take(layer, which):
            return layer


def columns_can_take(layer, which):
    """Whether the columns can take the layer's dx (`which` "dx") or dw
    (set_column_dx / set_column_dw "always"; the path reads the shapes alone)."""
    N, C, H, W, F, k, s, pad = layer
    setter = _C.set_column_dx if which == "dx" else _C.set_column_dw
    x, w = (np.broadcast_to(np.float32(0), shape) for shape in ((N, C, H, W), (F, C, k, k)))
    setter("always")
    try:
        paths = _C.strided_gradient_paths(x, w, s, pad)
    finally:
        setter("auto")
    return paths[0 if which == "dx" else 1] == "columns"


def network_layers(seeds, batches, which):
    """The strided layers (N, C, H, W, F, k, stride, pad) of the zoo's networks and of the
    100 random networks of each seed, at each batch, each once, whose pass the columns can
    take."""
    models = list(ZOO) + [random_network(seed, index) for seed in seeds for index in range(100)]
    layers = []
    for model in models:
        for N in batches:
            for layer, shape in shapes(model, N)[0]:
                if layer[0] != "conv" or conv_layer(layer)[2] < 2:
                    continue
                F, k, s, pad = conv_layer(layer)
                drawn = (N, *shape[1:], F, k, s, pad)
                if drawn not in layers and columns_can_take(drawn, which):
                    layers.append(drawn)
    return layers


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--path", choices=("lanes", "columns"), default="lanes")
    parser.add_argument("--pass", dest="which", choices=("forward", "dx", "dw"), default="dx")
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--layers", type=int, default=70)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--batches", default="1,2,4")
    parser.add_argument("--pixels", default="6,40", help="the least and most pixels a side")
    parser.add_argument(
        "--networks",
        metavar="SEEDS",
        help="--path columns: the strided layers of the zoo's and these seeds' random networks",
    )
    parser.add_argument(
        "--layer",
        action="append",
        default=[],
        metavar="N,C,H,W,F,k,stride,pad",
        help="time this layer (repeatable) instead of random ones",
    )
    args = parser.parse_args()
    if args.path == "columns" and args.which == "forward":
        parser.error("--path columns: dx or dw")
    _C.set_num_threads(1)
    setter = (
        _C.set_lane_conv
        if args.path == "lanes"
        else _C.set_column_dw
        if args.which == "dw"
        else _C.set_column_dx
    )
    rng = np.random.default_rng(args.seed)
    batches = [int(b) for b in args.batches.split(",")]
    print(
        f"{'N, C, H, W, F, k, stride, pad':34}{'off us':>8}{'always':>9}{'auto us':>9}"
        f"{'alw/off':>9}{'auto/off':>9}"
    )
    rule_ratios, best_ratios = [], []
    given = [tuple(int(v) for v in spec.split(",")) for spec in args.layer]
    if args.networks:
        if args.path != "columns":
            parser.error("--networks: with --path columns")
        seeds = [int(seed) for seed in args.networks.split(",")]
        given += network_layers(seeds, batches, args.which)
    for index in range(len(given) or args.layers):
        if given:
            N, C, H, W, F, k, s, p = layer = given[index]
        elif args.path == "columns":
            N, C, H, W, F, k, s, p = layer = column_layer(rng, batches, args.which)
        else:
            N, C, H, W, F, k, s, p = layer = random_layer(
                rng,
                args.channels,
                batches,
                [int(v) for v in args.pixels.split(",")],
                args.which == "dx",
            )
        Ho, Wo = 1 + (H + 2 * p - k) // s, 1 + (W + 2 * p - k) // s
        x = rng.standard_normal((N, C, H, W), dtype=np.float32)
        w = rng.standard_normal((F, C, k, k)).astype(np.float32)
        dout = rng.standard_normal((N, F, Ho, Wo), dtype=np.float32)

        b = np.zeros(F, np.float32)

        def run():
            if args.which == "forward":
                return _C.conv_forward(x, w, b, s, p)
            if args.which == "dw":
                return _C.conv_backward(dout, x, w, s, p, need_dx=False)[1]
            return _C.conv_backward(dout, x, w, s, p, need_dw=False)[0]

        start = time.thread_time()
        run()
        calls = max(3, min(300, int(2e-3 / max(time.thread_time() - start, 1e-6))))
        times = {"off": [], "always": [], "auto": []}
        try:
            for _turn in range(2):
                for mode in times:
                    setter(mode)
                    times[mode].append(1e3 * best_ms(run, calls, 5))
        finally:
            setter("auto")
        off, lane, rule = (min(times[mode]) for mode in ("off", "always", "auto"))
        rule_ratios.append(rule / off)
        best_ratios.append(min(off, lane) / off)
        print(
            f"{str(layer):34}{off:8.1f}{lane:9.1f}{rule:9.1f}{lane / off:9.2f}{rule / off:9.2f}",
            flush=True,
        )

    def geomean(values):
        return math.exp(sum(map(math.log, values)) / len(values))

    print(
        f"rule / off {geomean(rule_ratios):.3f}, the better path / off "
        f"{geomean(best_ratios):.3f} (geomeans over {len(rule_ratios)} layers)"
    )


if __name__ == "__main__":
    main()
