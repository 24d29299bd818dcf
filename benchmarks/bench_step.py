"""Training speed of the CIFAR-10 ThreeLayerConvNet through the graph API (issue 6).

    python benchmarks/bench_step.py [--steps 30] [--epoch-steps 980] [--threads N]

Prints, for graphnet and PyTorch CPU on the same number of threads:
(1) the median training step (batch 50, 3x32x32 float32, 32 filters 7x7, relu, 2x2 pool,
    affine 8192->100, relu, affine 100->10, softmax loss, adam) and the ratio;
(2) one CIFAR-sized epoch (49,000 synthetic uint8 images, shuffled, batch 50 = 980 steps)
    timed whole, and the peak resident memory of that run, each framework in a fresh
    process (peak RSS of the process, and its growth over the RSS right after the imports,
    the model and the data set);
(3) the executor's own overhead: each step is timed through the executor's hooks
    (graphnet.core.profile), and overhead = time in graph.forward/backward outside the
    steps; the same timers give where the step's time goes, gate by gate;
(4) for the record: the FullyConnectedNet [100]*5 with batchnorm, batch 200, step against
    PyTorch, and the scalar-circuit cost per gate against a micrograd-style autograd
    (benchmarks/bench_scalar.py).
Times are medians (the epoch: one run). The two frameworks take turns in blocks of steps,
three blocks each, so that a slow spell of the shared machine hits both; never step by
step: their thread teams would fight over the cores.
"""
import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time

import numpy as np

import graphnet as gn
from graphnet import optim
from graphnet.core.profile import Profile
from graphnet.kernels import _C
from cnn_steps import adam_step, cifar_batch, graphnet_step, median_ms_in_turns, torch_step  # noqa: E402  (same folder)

HAVE_TORCH = importlib.util.find_spec("torch") is not None


def status_mb(field):
    """VmRSS (resident now) or VmHWM (its peak) of this process, in MB. Not ru_maxrss:
    Linux carries that over from the parent through fork and exec."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def epoch_worker(framework, steps, threads):
    """Run in a fresh process: one epoch of `steps` training steps, each on the next batch
    of a shuffled synthetic data set held as uint8 pixels like the real CIFAR-10, turned
    into a standardised float32 batch per step; print JSON."""
    X, y = cifar_batch()
    if framework == "torch":
        import torch
        torch.set_num_threads(threads)
        step = torch_step(X, y)
    else:
        _C.set_num_threads(threads)
        step = graphnet_step(X, y)
    rng = np.random.default_rng(1)
    images = rng.integers(256, size=(steps * len(X),) + X.shape[1:], dtype=np.uint8)
    labels = rng.integers(10, size=steps * len(X))
    step()  # the model and its buffers exist from here on
    baseline = status_mb("VmRSS")
    start = time.perf_counter()
    order = rng.permutation(len(images))
    for batch in np.split(order, steps):
        np.multiply(images[batch], np.float32(1 / 64), out=X, casting="unsafe")
        X -= 2  # pixels 0..255 to about -2..2
        y[...] = labels[batch]
        step()
    elapsed = time.perf_counter() - start
    peak = status_mb("VmHWM")
    print(json.dumps({"seconds": elapsed, "peak_mb": peak, "baseline_mb": baseline}))


def run_epoch(framework, steps, threads):
    result = subprocess.run([sys.executable, __file__, "--worker", framework,
                             "--epoch-steps", str(steps), "--threads", str(threads)],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def scheduler_overhead(steps):
    """(median step ms, median ms inside gate calls, median ms in the walks, median ms in
    adam, {(gate op, "forward" | "backward"): median ms per step})."""
    np.random.seed(0)
    model = gn.models.ThreeLayerConvNet(dtype=np.float32)
    X, y = cifar_batch()
    configs = {name: {"learning_rate": 1e-3} for name in model.params}
    model.loss(X, y)  # builds and caches the plans
    rows, gate_rows = [], []
    for _ in range(steps + 3):
        # The executor's hooks time each step (a fused step is one row, under its label).
        with Profile(model.graph) as prof:
            start = time.perf_counter()
            _, grads = model.loss(X, y)
            walked = time.perf_counter()
        for name in model.params:
            model.params[name], configs[name] = optim.adam(model.params[name], grads[name],
                                                           configs[name])
        done = time.perf_counter()
        per_gate = {}
        for row in prof.steps.values():
            for direction, seconds in (("forward", row.forward_s), ("backward", row.backward_s)):
                if seconds:
                    key = (row.label, direction)
                    per_gate[key] = per_gate.get(key, 0.0) + seconds
        rows.append((done - start, sum(per_gate.values()), walked - start, done - walked))
        gate_rows.append(per_gate)
    step_s, gates_s, walk_s, adam_s = (1e3 * float(np.median(col)) for col in zip(*rows[3:]))
    by_gate = {key: 1e3 * float(np.median([r.get(key, 0.0) for r in gate_rows[3:]]))
               for key in gate_rows[-1]}
    return step_s, gates_s, walk_s, adam_s, by_gate


def fc_steps(threads):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 3 * 32 * 32)).astype(np.float32)
    y = rng.integers(10, size=200).astype(np.int64)
    np.random.seed(0)
    model = gn.models.FullyConnectedNet([100] * 5, use_batchnorm=True, weight_scale=5e-2,
                                        dtype=np.float32)
    steps = {"graphnet": adam_step(model, X, y)}
    if HAVE_TORCH:
        import torch
        layers, width = [], 3 * 32 * 32
        for _ in range(5):
            layers += [torch.nn.Linear(width, 100), torch.nn.BatchNorm1d(100), torch.nn.ReLU()]
            width = 100
        net = torch.nn.Sequential(*layers, torch.nn.Linear(100, 10))
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        Xt, yt = torch.from_numpy(X), torch.from_numpy(y)

        def theirs():
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(net(Xt), yt).backward()
            opt.step()
        steps["torch"] = theirs
    return steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--epoch-steps", type=int, default=980, help="0 skips the epoch")
    parser.add_argument("--threads", type=int, default=_C.get_num_threads())
    parser.add_argument("--worker", choices=["graphnet", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return epoch_worker(args.worker, args.epoch_steps, args.threads)
    _C.set_num_threads(args.threads)
    torch_version = "absent"
    if HAVE_TORCH:
        import torch
        torch.set_num_threads(args.threads)
        torch_version = torch.__version__
    print(f"{os.cpu_count()} cores, {args.threads} thread(s) for graphnet's kernels and for "
          f"PyTorch; numpy {np.__version__}; torch {torch_version}")

    X, y = cifar_batch()
    contenders = {"graphnet": graphnet_step(X, y)}
    if HAVE_TORCH:
        contenders["torch"] = torch_step(X, y)
    medians = median_ms_in_turns(contenders, args.steps, turn=max(1, args.steps // 3))
    ours, theirs = medians["graphnet"], medians.get("torch")
    print("\n(1) ThreeLayerConvNet training step, batch 50 (median ms)")
    print(f"    graphnet {ours:7.1f}   PyTorch {theirs or float('nan'):7.1f}   "
          f"ratio {ours / theirs if theirs else float('nan'):.2f}x (goal <= 0.5x)")

    if args.epoch_steps > 0:
        print(f"\n(2) one epoch = {args.epoch_steps} steps of 50 (goal < 25 s for 980 steps), "
              "each in a fresh process")
        for framework in ["graphnet"] + (["torch"] if HAVE_TORCH else []):
            r = run_epoch(framework, args.epoch_steps, args.threads)
            print(f"    {framework:9s} {r['seconds']:6.1f} s   peak RSS {r['peak_mb']:6.0f} MB "
                  f"(+{r['peak_mb'] - r['baseline_mb']:.0f} MB over the {r['baseline_mb']:.0f} MB "
                  "after imports, model and data)")

    step_ms, gates_ms, walk_ms, adam_ms, by_gate = scheduler_overhead(args.steps)
    overhead = walk_ms - gates_ms
    print("\n(3) executor overhead outside the steps (goal < 5% of the step)")
    print(f"    step {step_ms:.1f} ms: forward+backward walks {walk_ms:.1f} ms, of which inside "
          f"gate calls {gates_ms:.1f} ms; overhead {overhead:.2f} ms = "
          f"{100 * overhead / step_ms:.1f}% of the step")
    print("    where the step goes (ms, summed over the gates of each kind; medians):")
    ranked = sorted(by_gate.items(), key=lambda kv: -kv[1]) + [(("adam", "update"), adam_ms)]
    print("    " + ", ".join(f"{op} {way} {ms:.2f}" for (op, way), ms in ranked if ms >= 0.05))

    fc = median_ms_in_turns(fc_steps(args.threads), args.steps, turn=max(1, args.steps // 3))
    print("\n(4) FullyConnectedNet [100]*5 + batchnorm, batch 200, adam (median ms)")
    print(f"    graphnet {fc['graphnet']:7.2f}   PyTorch {fc.get('torch', float('nan')):7.2f}   "
          f"ratio {fc['graphnet'] / fc['torch'] if 'torch' in fc else float('nan'):.2f}x")
    print("    scalar circuit, per gate (benchmarks/bench_scalar.py):")
    sys.stdout.flush()
    subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "bench_scalar.py"),
                    "--repeats", "9"], check=True)


if __name__ == "__main__":
    main()
