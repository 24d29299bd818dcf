"""What each fusion pass (graphnet/passes/) saves, measured A/B in one run.

    python benchmarks/bench_fusion.py [--rounds 7] [--steps 3] [--threads N] [--dtype float32]
                                      [--batch 64] [--networks vgg residual fc_bn]
                                      [--without NormActivation ConvBatchnormActivation]

For each pass and each network it applies to, the same graph runs with all passes and
with all but that one, in turns (blocks of --steps steps, --rounds rounds each, so that a
slow spell of the shared machine hits both); the last row of a network compares all
passes with none (`fuse=False`). With --without, one row per network instead: all passes
against all but those named (passes that work together, measured as one). Printed: the
median step of each and their ratio (with --threads 1 in CPU time, the steadier measure
on a shared machine). The training step is forward + backward in train mode; inference is
forward in eval mode. The networks (batch 64 unless --batch):
  vgg       conv3x3-sbn-relu, conv3x3-sbn-relu, max_pool, affine (3x32x32, 32 filters)
  residual  conv3x3-sbn-relu, then a block conv3x3-sbn-relu, conv3x3-sbn, the skip add,
            relu, then max_pool, affine
  fc_bn     3072 -> [affine-batchnorm-relu] x 3 (100 units) -> affine
  res_skip  conv3x3-sbn-relu (16 filters), then two blocks conv3x3-sbn-relu, conv3x3-sbn,
            the skip add, relu (the zoo's res_strided: no pool after them; the first
            block's relu read by the second's conv and add), affine
  fc_res    3072 -> affine-batchnorm-relu (512 units), then two blocks affine-batchnorm-
            relu, affine-batchnorm, the skip add, relu, then affine
  vgg_plain vgg without the batchnorms: conv3x3-relu, conv3x3-relu, max_pool, affine
  nin       the zoo's conv1x1: [conv3x3(64)-relu-conv1x1(32)-relu-max_pool] x 2, affine
and, named only, any network of benchmarks/zoo_models.py (zoo_models.model_named: the zoo's
res_strided, resnet, modern, ..., the students' nets, random-SEED-INDEX).
"""
import argparse
import time

import numpy as np

import graphnet as gn
from graphnet.core import plan
from graphnet.kernels import _C

BATCH, CLASSES = 64, 10


def conv_block(g, h, name, channels, filters, rng, relu=True, norm=True, k=3):
    w = g.param(f"w_{name}", rng.standard_normal((filters, channels, k, k))
                * np.sqrt(2 / (k * k * channels)))
    h = g.conv(h, w, g.param(f"b_{name}", np.zeros(filters)), pad=(k - 1) // 2,
               name=f"conv_{name}")
    if norm:
        h = g.spatial_batchnorm(h, g.param(f"gamma_{name}", np.ones(filters)),
                                g.param(f"beta_{name}", np.zeros(filters)), name=f"sbn_{name}")
    return g.relu(h, name=f"relu_{name}") if relu else h


def head(g, h, features, rng):
    w = g.param("w_out", rng.standard_normal((features, CLASSES)) * 0.01)
    scores = g.affine(h, w, g.param("b_out", np.zeros(CLASSES)), name="scores")
    return g.softmax_loss(scores, g.input("y", dtype=np.int64), name="loss")


def vgg(g, rng):
    x = g.input("x", requires_grad=False)
    h = conv_block(g, conv_block(g, x, "1", 3, 32, rng), "2", 32, 32, rng)
    head(g, g.max_pool(h, name="pool"), 32 * 16 * 16, rng)
    return rng.standard_normal((BATCH, 3, 32, 32))


def residual(g, rng):
    x = g.input("x", requires_grad=False)
    h = conv_block(g, x, "in", 3, 32, rng)
    block = conv_block(g, conv_block(g, h, "a", 32, 32, rng), "b", 32, 32, rng, relu=False)
    h = g.max_pool(g.relu(g.add(h, block, name="skip"), name="relu_skip"), name="pool")
    head(g, h, 32 * 16 * 16, rng)
    return rng.standard_normal((BATCH, 3, 32, 32))


def fc_bn(g, rng):
    h, width = g.input("x", requires_grad=False), 3072
    for layer in range(1, 4):
        w = g.param(f"W{layer}", rng.standard_normal((width, 100)) * np.sqrt(2 / width))
        h = g.affine(h, w, g.param(f"b{layer}", np.zeros(100)), name=f"affine{layer}")
        h = g.batchnorm(h, g.param(f"gamma{layer}", np.ones(100)),
                        g.param(f"beta{layer}", np.zeros(100)), name=f"bn{layer}")
        h, width = g.relu(h, name=f"relu{layer}"), 100
    head(g, h, width, rng)
    return rng.standard_normal((BATCH, 3072))


def res_skip(g, rng):
    h = conv_block(g, g.input("x", requires_grad=False), "in", 3, 16, rng)
    for block in ("1", "2"):
        inner = conv_block(g, conv_block(g, h, f"{block}a", 16, 16, rng), f"{block}b", 16, 16,
                           rng, relu=False)
        h = g.relu(g.add(inner, h, name=f"skip{block}"), name=f"relu_skip{block}")
    head(g, h, 16 * 32 * 32, rng)
    return rng.standard_normal((BATCH, 3, 32, 32))


def fc_res(g, rng):
    def unit(h, name, width, relu=True):
        w = g.param(f"W{name}", rng.standard_normal((width, 512)) * np.sqrt(2 / width))
        h = g.affine(h, w, g.param(f"b{name}", np.zeros(512)), name=f"affine{name}")
        h = g.batchnorm(h, g.param(f"gamma{name}", np.ones(512)),
                        g.param(f"beta{name}", np.zeros(512)), name=f"bn{name}")
        return g.relu(h, name=f"relu{name}") if relu else h

    h = unit(g.input("x", requires_grad=False), "in", 3072)
    for block in ("1", "2"):
        inner = unit(unit(h, f"{block}a", 512), f"{block}b", 512, relu=False)
        h = g.relu(g.add(h, inner, name=f"skip{block}"), name=f"relu_skip{block}")
    head(g, h, 512, rng)
    return rng.standard_normal((BATCH, 3072))


def vgg_plain(g, rng):
    x = g.input("x", requires_grad=False)
    h = conv_block(g, conv_block(g, x, "1", 3, 32, rng, norm=False), "2", 32, 32, rng,
                   norm=False)
    head(g, g.max_pool(h, name="pool"), 32 * 16 * 16, rng)
    return rng.standard_normal((BATCH, 3, 32, 32))


def nin(g, rng):
    h, channels = g.input("x", requires_grad=False), 3
    for block in ("1", "2"):
        h = conv_block(g, h, f"{block}a", channels, 64, rng, norm=False)
        h = conv_block(g, h, f"{block}b", 64, 32, rng, norm=False, k=1)
        h, channels = g.max_pool(h, name=f"pool{block}"), 32
    head(g, h, 32 * 8 * 8, rng)
    return rng.standard_normal((BATCH, 3, 32, 32))


NETWORKS = {"vgg": vgg, "residual": residual, "fc_bn": fc_bn, "res_skip": res_skip,
            "fc_res": fc_res, "vgg_plain": vgg_plain, "nin": nin}


def build(network, dtype):
    rng = np.random.default_rng(0)
    if network not in NETWORKS:  # a graph of benchmarks/zoo_models.py
        import zoo_models

        model = zoo_models.model_named(network)
        x, y = zoo_models.batch_of(model, BATCH, dtype, rng)
        return zoo_models.build_graphnet(model, dtype).graph, {"x": x, "y": y}
    g = gn.Graph(dtype=dtype)
    x = NETWORKS[network](g, rng)
    return g, {"x": x.astype(dtype), "y": rng.integers(0, CLASSES, BATCH)}


def forget_plans(g):
    """The executor caches its plans until the graph grows; a benchmark switching passes
    must drop them itself."""
    g.executor._plans.clear()


def plans(g, rewrites):
    """The labels of the steps of the graph's forward and backward plans under `rewrites`."""
    everything = list(plan.REWRITES)
    plan.REWRITES[:] = rewrites
    forget_plans(g)
    try:
        return [[step.label for step in g.plan(g["loss"], direction, fuse=True).steps]
                for direction in ("forward", "backward")]
    finally:
        plan.REWRITES[:] = everything
        forget_plans(g)


def run_block(g, feeds, mode, steps, clock):
    start = clock()
    for _ in range(steps):
        g.forward(**feeds)
        if mode == "train":
            g.backward()
    return (clock() - start) / steps


def compare(g, feeds, without, mode, rounds, steps, clock):
    """Median seconds per step with all passes and with those but `without`, in turns."""
    everything = list(plan.REWRITES)
    variants = {"with": everything, "without": [r for r in everything if r not in without]}
    times = {name: [] for name in variants}
    g.train(mode == "train")
    try:
        for _ in range(rounds):
            for name, rewrites in variants.items():
                plan.REWRITES[:] = rewrites
                forget_plans(g)
                run_block(g, feeds, mode, 1, clock)  # the plans, and the first allocations
                times[name].append(run_block(g, feeds, mode, steps, clock))
    finally:
        plan.REWRITES[:] = everything
        forget_plans(g)
    return {name: float(np.median(t)) for name, t in times.items()}


def main():
    global BATCH
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--networks", nargs="*", default=list(NETWORKS))
    parser.add_argument("--without", nargs="*", default=None, metavar="PASS",
                        help="compare all passes with all but these (class names)")
    parser.add_argument("--batch", type=int, default=BATCH)
    args = parser.parse_args()
    BATCH = args.batch
    if args.threads:
        _C.set_num_threads(args.threads)
    # On one thread the process's CPU time is the steadier measure on a shared machine.
    clock = time.process_time if _C.get_num_threads() == 1 else time.perf_counter
    print(f"batch {BATCH}, {args.dtype}, {_C.get_num_threads()} threads, "
          f"{args.rounds} rounds of {args.steps} steps; ms per step (median, "
          f"{'CPU' if clock is time.process_time else 'wall'} time)")
    print(f"{'network':10} {'mode':6} {'pass':22} {'with':>9} {'without':>9} {'ratio':>7}")
    for network in args.networks:
        g, feeds = build(network, np.dtype(args.dtype))
        rows = [(type(r).__name__, [r]) for r in plan.REWRITES
                if plans(g, plan.REWRITES) != plans(g, [o for o in plan.REWRITES if o is not r])]
        rows += [("all (fuse=False)", list(plan.REWRITES))]
        if args.without is not None:
            named = [r for r in plan.REWRITES if type(r).__name__ in args.without]
            rows = [("+".join(args.without), named)]
        for name, without in rows:
            for mode in ("train", "eval"):
                ms = compare(g, feeds, without, mode, args.rounds, args.steps, clock)
                print(f"{network:10} {mode:6} {name:22} {1e3 * ms['with']:9.2f} "
                      f"{1e3 * ms['without']:9.2f} {ms['with'] / ms['without']:7.3f}",
                      flush=True)

if __name__ == "__main__":
    main()
