"""The normalization kernels (cpp/norm.h), the sigmoid and dropout gates, against the
numpy versions they replaced and PyTorch.

    python benchmarks/bench_kernels.py [--rounds 15] [--threads N] [--no-steps]
                                       [--clock wall|cpu]

Prints, in one run:
(1) per kernel and shape, the median time of forward + backward (train mode, float32) of
    the numpy reference (graphnet.layers: batchnorm_forward / batchnorm_backward_alt,
    spatial_batchnorm_*, layernorm_*, spatial_groupnorm_*), the C++ kernels the gates use
    (graphnet.kernels.norm) and PyTorch CPU (F.batch_norm, F.layer_norm, F.group_norm with
    autograd) on the same threads, and the ratios; then the forward of the sigmoid gate
    (numpy's exp(-logaddexp(0, -x)) before) and of the unseeded dropout gate (the C++
    kernel; before it, numpy's Generator drew uniforms in x's dtype, then a compare, the
    mask's product and x * mask), against torch.sigmoid and F.dropout;
(2) training steps (forward, backward, adam) of graphs whose gates run either kernel: a
    VGG-style CNN ([conv3x3 - spatial batchnorm - relu] x 2 - pool, twice, then affine -
    batchnorm - relu - dropout - affine - softmax loss; batch 64, 3x32x32), and the
    FullyConnectedNet [100] x 5 with batchnorm and with layernorm (batch 200).
The contenders take turns, one call each per round, so a slow spell of the shared machine
hits them alike; times are medians over the rounds. --clock cpu times the process's CPU
time instead of the wall clock: with --threads 1 it leaves out the waits for a core of a
loaded machine. The gates' numpy variant is the same
graph with graphnet.kernels.norm.native switched off (then the norm gates call the
reference and the dropout gate its RandomState path).
"""
import argparse
import importlib.util
import time

import numpy as np

import graphnet as gn
from graphnet import gates, layers, optim
from graphnet.kernels import _C, norm

HAVE_TORCH = importlib.util.find_spec("torch") is not None
rng = np.random.default_rng(0)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]


def medians(contenders, rounds, warmup=2):
    """{name: median ms} of the callables, called in turns, `rounds` times each."""
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            start = clock()
            fn()
            times[name].append(clock() - start)
    return {name: 1e3 * float(np.median(t)) for name, t in times.items()}


def kernel_cases():
    """(label, before, now, torch or None) per kernel and shape: calls of the numpy version
    replaced, of what the gates run now, and of PyTorch's equivalent."""
    def arrays(shape, C):
        x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
        return (x, rng.standard_normal(shape).astype(np.float32),
                rng.uniform(0.5, 1.5, C).astype(np.float32),
                rng.standard_normal(C).astype(np.float32))

    def torch_case(fn, x, dout, gamma, beta):
        if not HAVE_TORCH:
            return None
        import torch
        xt = torch.from_numpy(x).requires_grad_()
        gt, bt = (torch.from_numpy(a).requires_grad_() for a in (gamma, beta))
        dt = torch.from_numpy(dout)

        def run():
            fn(xt, gt, bt).backward(dt)
            xt.grad = gt.grad = bt.grad = None
        return run

    cases = []
    for shape in [(64, 100), (200, 1024), (64, 32, 32, 32), (64, 64, 16, 16), (64, 256, 4, 4)]:
        x, dout, gamma, beta = arrays(shape, shape[1])
        spatial = len(shape) == 4
        fwd = layers.spatial_batchnorm_forward if spatial else layers.batchnorm_forward
        bwd = layers.spatial_batchnorm_backward if spatial else layers.batchnorm_backward_alt

        def reference(x=x, dout=dout, gamma=gamma, beta=beta, fwd=fwd, bwd=bwd):
            bwd(dout, fwd(x, gamma, beta, {"mode": "train"})[1])

        def native(x=x, dout=dout, gamma=gamma, beta=beta):
            norm.batchnorm_backward(dout, norm.batchnorm_forward(
                x, gamma, beta, 1e-5, 0.9, None, None, True)[1])

        def torch_bn(xt, gt, bt):
            import torch.nn.functional as F
            return F.batch_norm(xt, None, None, gt, bt, training=True, eps=1e-5)
        label = f"{'spatial_batchnorm' if spatial else 'batchnorm'} {shape}"
        cases.append((label, reference, native, torch_case(torch_bn, x, dout, gamma, beta)))
    for shape in [(200, 100), (2048, 64), (64, 4096)]:
        x, dout, gamma, beta = arrays(shape, shape[1])

        def reference(x=x, dout=dout, gamma=gamma, beta=beta):
            layers.layernorm_backward(dout, layers.layernorm_forward(x, gamma, beta, {})[1])

        def native(x=x, dout=dout, gamma=gamma, beta=beta):
            norm.layernorm_backward(dout, norm.layernorm_forward(x, gamma, beta, 1e-5)[1])

        def torch_ln(xt, gt, bt, D=shape[1]):
            import torch.nn.functional as F
            return F.layer_norm(xt, (D,), gt, bt, eps=1e-5)
        cases.append((f"layernorm {shape}", reference, native,
                      torch_case(torch_ln, x, dout, gamma, beta)))
    for shape, G in [((64, 32, 32, 32), 8), ((64, 64, 8, 8), 4)]:
        x, dout, gamma, beta = arrays(shape, shape[1])

        def reference(x=x, dout=dout, gamma=gamma, beta=beta, G=G):
            layers.spatial_groupnorm_backward(
                dout, layers.spatial_groupnorm_forward(x, gamma, beta, G, {})[1])

        def native(x=x, dout=dout, gamma=gamma, beta=beta, G=G):
            norm.groupnorm_backward(dout, norm.groupnorm_forward(x, gamma, beta, G, 1e-5)[1])

        def torch_gn(xt, gt, bt, G=G):
            import torch.nn.functional as F
            return F.group_norm(xt, G, gt, bt, eps=1e-5)
        cases.append((f"groupnorm G={G} {shape}", reference, native,
                      torch_case(torch_gn, x, dout, gamma, beta)))
    sigmoid = gates.elementwise.Sigmoid()
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal((64, 4096)).astype(dtype)
        cases.append((f"sigmoid (64, 4096) {np.dtype(dtype).name}",
                      lambda x=x: np.exp(-np.logaddexp(0, -x)),
                      lambda x=x: sigmoid.forward(x),
                      torch_forward(lambda torch, t: t.sigmoid(), x)))
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal((64, 32, 16, 16)).astype(dtype)
        dropout, state = gates.norm.Dropout(0.5), {"rng": np.random.default_rng(1)}

        def before(x=x, state=state):
            draws = state["rng"].random(x.shape, dtype=x.dtype)
            x * np.multiply(draws < 0.5, x.dtype.type(2), dtype=x.dtype)
        cases.append((f"dropout (64, 32, 16, 16) {np.dtype(dtype).name}", before,
                      lambda x=x, d=dropout, s=state: d.forward(s, True, x),
                      torch_forward(lambda torch, t: torch.nn.functional.dropout(t, 0.5), x)))
    return cases


def torch_forward(fn, x):
    """A call of fn(torch, tensor of x) without autograd, or None without PyTorch."""
    if not HAVE_TORCH:
        return None
    import torch
    xt = torch.from_numpy(x)

    def run():
        with torch.no_grad():
            fn(torch, xt)
    return run


def vgg_graph(batch=64):
    """[conv3x3 - sbn - relu] x 2 - pool, twice; affine - bn - relu - dropout - affine."""
    g = gn.Graph(dtype=np.float32)
    h = g.input("x", shape=(None, 3, 32, 32))
    y = g.input("y", shape=(None,), dtype=np.int64, requires_grad=False)
    C = 3
    for block, F in enumerate((32, 64)):
        for layer in range(2):
            name = f"{block}{layer}"
            w = g.param(f"w{name}", rng.standard_normal((F, C, 3, 3)) * np.sqrt(2 / (9 * C)))
            h = g.conv(h, w, g.param(f"b{name}", np.zeros(F)), stride=1, pad=1)
            h = g.spatial_batchnorm(h, g.param(f"gamma{name}", np.ones(F)),
                                    g.param(f"beta{name}", np.zeros(F)))
            h = g.relu(h)
            C = F
        h = g.max_pool(h, 2, 2, 2)
    features = C * 8 * 8
    h = g.affine(h, g.param("w_fc", rng.standard_normal((features, 256)) / np.sqrt(features)),
                 g.param("b_fc", np.zeros(256)))
    h = g.relu(g.batchnorm(h, g.param("gamma_fc", np.ones(256)), g.param("beta_fc",
                                                                          np.zeros(256))))
    h = g.dropout(h, 0.5)
    scores = g.affine(h, g.param("w_out", rng.standard_normal((256, 10)) / 16),
                      g.param("b_out", np.zeros(10)))
    g.softmax_loss(scores, y, name="loss")
    X = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    labels = rng.integers(10, size=batch)
    params = [g[name] for name in g.params]
    configs = {p.name: {"learning_rate": 1e-3} for p in params}

    def step():
        g.forward(x=X, y=labels)
        g.backward()
        for p in params:
            p.value, configs[p.name] = optim.adam(p.value, p.grad, configs[p.name])
    return step


def fc_step(normalization, batch=200):
    np.random.seed(0)
    model = gn.models.FullyConnectedNet([100] * 5, input_dim=3 * 32 * 32,
                                        normalization=normalization, dtype=np.float32)
    X = rng.standard_normal((batch, 3 * 32 * 32)).astype(np.float32)
    y = rng.integers(10, size=batch)
    configs = {name: {"learning_rate": 1e-3} for name in model.params}

    def step():
        _, grads = model.loss(X, y)
        for name in model.params:
            model.params[name], configs[name] = optim.adam(model.params[name], grads[name],
                                                           configs[name])
    return step


_NATIVE = norm.native


def with_kernels(step, use_cpp):
    """The step with the norm gates on the C++ kernels or on the numpy reference."""
    def run():
        norm.native = _NATIVE if use_cpp else (lambda *arrays: False)
        try:
            step()
        finally:
            norm.native = _NATIVE
    return run


def _sbn(use_cpp):
    x = rng.standard_normal((16, 32, 16, 16)).astype(np.float32)
    dout = rng.standard_normal(x.shape).astype(np.float32)
    gamma, beta = np.ones(32, np.float32), np.zeros(32, np.float32)
    if use_cpp:
        return lambda: norm.batchnorm_backward(dout, norm.batchnorm_forward(
            x, gamma, beta, 1e-5, 0.9, None, None, True)[1])
    return lambda: layers.spatial_batchnorm_backward(dout, layers.spatial_batchnorm_forward(
        x, gamma, beta, {"mode": "train"})[1])


# What --run builds, for instruction counts that a loaded machine does not disturb.
_RUNS = {"fc-batchnorm": lambda: fc_step("batchnorm"),
         "fc-layernorm": lambda: fc_step("layernorm"),
         "sbn-numpy": lambda: _sbn(False), "sbn-cpp": lambda: _sbn(True)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=_C.get_num_threads())
    parser.add_argument("--no-steps", action="store_true", help="only the kernels")
    parser.add_argument("--run", choices=sorted(_RUNS),
                        help="only build this and call it 1 + --calls times (run under "
                        "valgrind --tool=callgrind with two --calls, the difference is "
                        "the instructions of that many calls)")
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    _C.set_num_threads(args.threads)
    if args.run:
        fn = _RUNS[args.run]()
        for _ in range(args.calls + 1):
            fn()
        return
    if HAVE_TORCH:
        import torch
        torch.set_num_threads(args.threads)
    print(f"{args.threads} threads, {args.clock} clock, medians of {args.rounds} rounds (ms); "
          "norms: float32, "
          "forward + backward; sigmoid, dropout: forward\n")
    print(f"{'kernel, shape':42} {'before':>8} {'now':>8} {'torch':>8} {'before/now':>10} "
          f"{'now/torch':>10}")
    for label, reference, native, torch_fn in kernel_cases():
        contenders = {"numpy": reference, "cpp": native}
        if torch_fn is not None:
            contenders["torch"] = torch_fn
        t = medians(contenders, args.rounds)
        torch_ms = t.get("torch", float("nan"))
        print(f"{label:42} {t['numpy']:8.3f} {t['cpp']:8.3f} {torch_ms:8.3f} "
              f"{t['numpy'] / t['cpp']:10.2f} {t['cpp'] / torch_ms:10.2f}")
    if args.no_steps:
        return
    print(f"\n{'training step (adam)':42} {'before':>8} {'now':>8} {'before/now':>10}")
    steps = {"VGG-style CNN, batch 64": vgg_graph(),
             "FC [100]x5 batchnorm, batch 200": fc_step("batchnorm"),
             "FC [100]x5 layernorm, batch 200": fc_step("layernorm")}
    results = {}
    contenders = {}
    for label, step in steps.items():
        contenders[(label, "numpy")] = with_kernels(step, False)
        contenders[(label, "cpp")] = with_kernels(step, True)
    t = medians(contenders, args.rounds)
    for label in steps:
        results[label] = t[(label, "cpp")]
        print(f"{label:42} {t[(label, 'numpy')]:8.2f} {t[(label, 'cpp')]:8.2f} "
              f"{t[(label, 'numpy')] / t[(label, 'cpp')]:10.2f}")
    ln, bn = (results[f"FC [100]x5 {n}, batch 200"] for n in ("layernorm", "batchnorm"))
    print(f"\nFC layernorm step / batchnorm step (C++): {ln / bn:.2f}")


if __name__ == "__main__":
    main()
