"""Page faults and system time of warm training steps (and eval calls) of zoo models.

    python benchmarks/bench_step_faults.py [--models vgg,resnet] [--batches 16,64]
                                           [--steps 5] [--warmup 3] [--infer]

For each model of benchmarks/zoo_models.py and batch: --warmup training steps (as
bench_zoo.py's: model.loss, then adam on every param), then --steps more, whose minor
page faults (getrusage's ru_minflt), system CPU time and process CPU time are printed
per step; one thread, float32. --infer times eval calls (model.loss(X)) instead. A warm
step should fault no pages in: the walks' arrays come from the array pool
(cpp/array_pool.h) and the kernels' scratch from their kept buffers (cpp/cache_line.h)
or the C library's heap, which keep the memory freed for the next step.
"""
import argparse
import resource
import time

from bench_zoo import graphnet_contenders
from zoo_models import BY_NAME

from graphnet.kernels import _C


def per_step(run, steps):
    """(minor faults, system ms, CPU ms) per call of run, over `steps` calls."""
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
    for _ in range(steps):
        run()
    cpu, after = time.process_time() - start, resource.getrusage(resource.RUSAGE_SELF)
    return ((after.ru_minflt - before.ru_minflt) / steps,
            (after.ru_stime - before.ru_stime) * 1e3 / steps, cpu * 1e3 / steps)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="vgg,resnet,strided,conv1x1,conv5x5,narrow_deep,"
                                            "res_strided,vgg_wide,modern")
    parser.add_argument("--batches", default="16,64")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--infer", action="store_true", help="eval calls, not training steps")
    args = parser.parse_args()
    _C.set_num_threads(1)
    what = "graphnet infer" if args.infer else "graphnet step"
    print("| model | batch | minor faults / call | system ms / call | CPU ms / call |")
    print("|---|--:|--:|--:|--:|")
    for name in args.models.split(","):
        for batch in map(int, args.batches.split(",")):
            run = graphnet_contenders(BY_NAME[name], batch, "float32")[what]
            for _ in range(args.warmup):
                run()
            faults, system, cpu = per_step(run, args.steps)
            print(f"| {name} | {batch} | {faults:.1f} | {system:.2f} | {cpu:.1f} |", flush=True)


if __name__ == "__main__":
    main()
