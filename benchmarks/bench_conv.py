"""Benchmark graphnet's C++ conv and max-pool kernels.

    python benchmarks/bench_conv.py [--repeats 21]

(a) The CS231n timing case (float64): conv x (100, 3, 31, 31), w (25, 3, 3, 3), stride 2,
    pad 1; max pool 2x2 stride 2 on (100, 3, 32, 32). Compared with the course's naive
    loops (one python iteration per output pixel, numpy on the window; timed on a slice
    of the batch and scaled linearly to the full batch, as marked) and PyTorch CPU.
(b) The CIFAR-10 CNN conv (float32): x (50, 3, 32, 32), w (32, 3, 7, 7), stride 1, pad 3:
    forward; forward + backward (dx, dw, db); and forward + backward without dx (the
    first layer of a net, as in training), each on the direct AVX2 kernels and on the
    im2col + GEMM path, against PyTorch CPU and against the machine's ceiling, taken as
    numpy's float32 2048 x 2048 matmul rate measured in this run. Conv GFLOP/s counts
    useful flops only: 2*N*F*C*HH*WW*H'*W' for each of forward, dx and dw (padding
    zeros included, as every conv benchmark does; db is ignored).
(c) The affine gate's forward product (50 x 8192) @ (8192 x 100), float32: the AVX-512
    kernel (where the CPU has it) and the skinny AVX2 kernel against OpenBLAS and
    PyTorch. OpenBLAS's time on this shape depends on what ran before it in the process
    (3.7 ms first thing in a fresh process, 1.5 ms after the conv's GEMMs above, 4.1 ms
    inside the training step).
(d) Other float32 stride-1 layer shapes (deeper, narrower), direct against im2col + GEMM
    for forward, dw and dx: where the direct kernels win and where they are not used.
(e) The CIFAR layer as the chain conv -> relu -> 2x2 max pool, first layer of a net
    (no dx): the fused kernels (graphnet/passes/conv_relu_pool.py's steps) against the three
    kernels one by one and against PyTorch's conv2d -> relu -> max_pool2d, forward, and forward +
    the weight and bias gradients from a gradient on the pooled output.
(f) The model zoo's strided and 5x5 conv layers (benchmarks/zoo_models.py), float32,
    batch --zoo-batch: forward, and backward (dw, db, and dx where the layer is not the
    first), in CPU time of the process (time.process_time, so waits for a core on a
    loaded machine do not count: run it with OMP_NUM_THREADS=1), graphnet's default path
    against im2col + GEMM (set_direct_conv(False)) and PyTorch's conv2d with autograd,
    taking turns for --repeats rounds. `--zoo-only` runs this section alone.

    python benchmarks/bench_conv.py --passes [--batches 16,64] [--fma-peak 244] [--winograd off]

(g) Per pass (forward; dx; dw + db) of the zoo's float32 stride-1 layers
    (benchmarks/zoo_models.py: vgg, resnet, convnet, conv1x1) on one thread, CPU time,
    graphnet and PyTorch (conv2d; aten.convolution_backward asked for that one gradient)
    interleaved, medians; GFLOP/s and the share of the FMA peak, as measured by
    benchmarks/fma_peak.cpp (--fma-peak, GFLOP/s of one core, AVX-512 where the conv
    kernels use it). Prints only this table.

    python benchmarks/bench_conv.py --layer N,C,H,W,F,k,stride,pad [--layer ...] [--no-dx]

(h) Any layers' passes (forward; dx; dw + db) one at a time, float32, one thread, CPU
    time, graphnet and PyTorch interleaved (as (g)), with each pass's floor: its FLOPs
    at --sgemm GFLOP/s plus x and dout read once at --bandwidth GB/s. --no-dx leaves dx
    out (a net's first layer needs none). Prints only this table.

All times are medians of --repeats runs after a warm-up. PyTorch runs with as many
threads as graphnet (graphnet._C.get_num_threads(), set by OMP_NUM_THREADS); its
columns are skipped if torch is not installed.
"""
import argparse
import time

import numpy as np

from graphnet.kernels import _C
from graphnet.fast_layers import (conv_backward_fast, conv_forward_fast,
                                  max_pool_backward_fast, max_pool_forward_fast)

try:
    import torch
    import torch.nn.functional as tF
except ImportError:
    torch = None


def median_time(fn, repeats):
    fn()  # warm-up: first-touch page faults, thread start-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


# ---- the course's naive loops (the 1000x baseline) ---------------------------------

def conv_forward_naive(x, w, b, stride, pad):
    N, _, H, W = x.shape
    F, _, HH, WW = w.shape
    Ho, Wo = 1 + (H + 2 * pad - HH) // stride, 1 + (W + 2 * pad - WW) // stride
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.empty((N, F, Ho, Wo), x.dtype)
    for n in range(N):
        for f in range(F):
            for i in range(Ho):
                for j in range(Wo):
                    win = xp[n, :, i * stride:i * stride + HH, j * stride:j * stride + WW]
                    out[n, f, i, j] = np.sum(win * w[f]) + b[f]
    return out


def conv_backward_naive(dout, x, w, stride, pad):
    N, _, H, W = x.shape
    F, _, HH, WW = w.shape
    _, _, Ho, Wo = dout.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    db = dout.sum(axis=(0, 2, 3))
    for n in range(N):
        for f in range(F):
            for i in range(Ho):
                for j in range(Wo):
                    hs, ws = i * stride, j * stride
                    dw[f] += xp[n, :, hs:hs + HH, ws:ws + WW] * dout[n, f, i, j]
                    dxp[n, :, hs:hs + HH, ws:ws + WW] += w[f] * dout[n, f, i, j]
    return dxp[:, :, pad:pad + H, pad:pad + W], dw, db


def max_pool_forward_naive(x, ph, pw, stride):
    N, C, H, W = x.shape
    Ho, Wo = 1 + (H - ph) // stride, 1 + (W - pw) // stride
    out = np.empty((N, C, Ho, Wo), x.dtype)
    for n in range(N):
        for c in range(C):
            for i in range(Ho):
                for j in range(Wo):
                    out[n, c, i, j] = x[n, c, i * stride:i * stride + ph,
                                        j * stride:j * stride + pw].max()
    return out


def max_pool_backward_naive(dout, x, ph, pw, stride):
    dx = np.zeros_like(x)
    N, C, Ho, Wo = dout.shape
    for n in range(N):
        for c in range(C):
            for i in range(Ho):
                for j in range(Wo):
                    win = x[n, c, i * stride:i * stride + ph, j * stride:j * stride + pw]
                    a, b = np.unravel_index(np.argmax(win), win.shape)
                    dx[n, c, i * stride + a, j * stride + b] += dout[n, c, i, j]
    return dx


def naive_time(fn, batch, slice_size, repeats=3):
    """Time fn(k) on the first k images and scale to the whole batch if k < batch."""
    k = min(batch, slice_size)
    return median_time(lambda: fn(k), repeats) * batch / k, k < batch


# ---- table ---------------------------------------------------------------------------

ROWS = []


def row(name, ours, naive=None, naive_scaled=False, torch_t=None, extra=""):
    ROWS.append((name, ours, naive, naive_scaled, torch_t, extra))


def print_table():
    print(f"{'case':<42}{'graphnet ms':>12}{'naive ms':>13}{'x naive':>9}"
          f"{'torch ms':>10}{'torch/ours':>11}  notes")
    for name, ours, naive, scaled, torch_t, extra in ROWS:
        naive_s = "-" if naive is None else f"{naive * 1e3:.0f}{'*' if scaled else ''}"
        speedup = "-" if naive is None else f"{naive / ours:.0f}"
        torch_s = "-" if torch_t is None else f"{torch_t * 1e3:.3f}"
        ratio = "-" if torch_t is None else f"{torch_t / ours:.2f}"
        print(f"{name:<42}{ours * 1e3:>12.3f}{naive_s:>13}{speedup:>9}{torch_s:>10}{ratio:>11}"
              f"  {extra}")
    if any(r[3] for r in ROWS):
        print("* naive loops timed on a slice of the batch and scaled linearly")
    if torch is None:
        print("(torch not installed: torch columns skipped)")


def bench_course(repeats, naive_slice):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((100, 3, 31, 31))
    w = rng.standard_normal((25, 3, 3, 3))
    b = rng.standard_normal(25)
    conv_param = {"stride": 2, "pad": 1}
    out, cache = conv_forward_fast(x, w, b, conv_param)
    dout = rng.standard_normal(out.shape)

    fwd = median_time(lambda: conv_forward_fast(x, w, b, conv_param), repeats)
    bwd = median_time(lambda: conv_backward_fast(dout, cache), repeats)
    nf, nf_scaled = naive_time(lambda k: conv_forward_naive(x[:k], w, b, 2, 1), 100, naive_slice)
    nb, nb_scaled = naive_time(lambda k: conv_backward_naive(dout[:k], x[:k], w, 2, 1), 100,
                               naive_slice)
    tf = tb = None
    if torch is not None:
        xt, wt, bt = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
        with torch.no_grad():
            tf = median_time(lambda: tF.conv2d(xt, wt, bt, stride=2, padding=1), repeats)
        ot, gt = tF.conv2d(xt, wt, bt, stride=2, padding=1), torch.from_numpy(dout)
        tb = median_time(lambda: torch.autograd.grad(ot, (xt, wt, bt), gt, retain_graph=True),
                         repeats)
    row("(a) conv forward f64", fwd, nf, nf_scaled, tf)
    row("(a) conv backward f64", bwd, nb, nb_scaled, tb)

    x = rng.standard_normal((100, 3, 32, 32))
    pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    out, cache = max_pool_forward_fast(x, pool_param)
    dout = rng.standard_normal(out.shape)
    fwd = median_time(lambda: max_pool_forward_fast(x, pool_param), repeats)
    bwd = median_time(lambda: max_pool_backward_fast(dout, cache), repeats)
    nf, nf_scaled = naive_time(lambda k: max_pool_forward_naive(x[:k], 2, 2, 2), 100, naive_slice)
    nb, nb_scaled = naive_time(lambda k: max_pool_backward_naive(dout[:k], x[:k], 2, 2, 2), 100,
                               naive_slice)
    tf = tb = None
    if torch is not None:
        xt = torch.from_numpy(x).requires_grad_()
        with torch.no_grad():
            tf = median_time(lambda: tF.max_pool2d(xt, 2, 2), repeats)
        ot, gt = tF.max_pool2d(xt, 2, 2), torch.from_numpy(dout)
        tb = median_time(lambda: torch.autograd.grad(ot, xt, gt, retain_graph=True), repeats)
    row("(a) max pool forward f64", fwd, nf, nf_scaled, tf)
    row("(a) max pool backward f64", bwd, nb, nb_scaled, tb)


def bench_cifar(repeats):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 3, 32, 32), dtype=np.float32)
    w = rng.standard_normal((32, 3, 7, 7), dtype=np.float32)
    b = rng.standard_normal(32, dtype=np.float32)
    conv_param = {"stride": 1, "pad": 3}
    dout = rng.standard_normal((50, 32, 32, 32), dtype=np.float32)
    flops_per_pass = 2 * 50 * 32 * 3 * 7 * 7 * 32 * 32

    a = rng.standard_normal((2048, 2048), dtype=np.float32)
    matmul = median_time(lambda: a @ a, repeats)
    ceiling = 2 * 2048 ** 3 / matmul / 1e9

    def forward_backward(need_dx):
        out, cache = conv_forward_fast(x, w, b, conv_param)
        return conv_backward_fast(dout, cache, need_dx=need_dx)

    def rate(t, passes):
        gflops = flops_per_pass * passes / t / 1e9
        return f"{gflops:.1f} GFLOP/s = {gflops / ceiling:.2f} of ceiling"

    tf = tboth = ttrain = None
    if torch is not None:
        xt, wt, bt = (torch.from_numpy(v).requires_grad_() for v in (x, w, b))
        x_data, gt = torch.from_numpy(x), torch.from_numpy(dout)
        with torch.no_grad():
            tf = median_time(lambda: tF.conv2d(xt, wt, bt, padding=3), repeats)
        tboth = median_time(
            lambda: torch.autograd.grad(tF.conv2d(xt, wt, bt, padding=3), (xt, wt, bt), gt),
            repeats)
        ttrain = median_time(
            lambda: torch.autograd.grad(tF.conv2d(x_data, wt, bt, padding=3), (wt, bt), gt),
            repeats)
    # The direct AVX2 kernels (the default for float32 stride 1), then the im2col + GEMM
    # path they replace, which float64, strides above 1 and dx still take.
    for direct, path in ((True, "direct"), (False, "im2col+GEMM")):
        if direct and not _C.direct_conv_active():
            continue  # no AVX2 here: only the GEMM path exists
        _C.set_direct_conv(direct)
        try:
            fwd = median_time(lambda: conv_forward_fast(x, w, b, conv_param), repeats)
            both = median_time(lambda: forward_backward(True), repeats)
            train = median_time(lambda: forward_backward(False), repeats)
        finally:
            _C.set_direct_conv(True)
        row(f"(b) forward [{path}]", fwd, torch_t=tf, extra=rate(fwd, 1))
        row(f"(b) fwd + dx, dw, db [{path}]", both, torch_t=tboth, extra=rate(both, 3))
        row(f"(b) fwd + dw, db (1st layer) [{path}]", train, torch_t=ttrain, extra=rate(train, 2))
    return ceiling


def bench_affine(repeats):
    """The affine gate's forward product in the CIFAR net, (50 x 8192) @ (8192 x 100):
    graphnet._C.matmul (the AVX-512 kernel where the CPU has it, then with it switched off:
    the skinny AVX2 kernel), the same product through OpenBLAS (asked for as x @ (W^T)^T,
    which neither kernel takes), and PyTorch."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 8192), dtype=np.float32)
    w = rng.standard_normal((8192, 100), dtype=np.float32)
    w_t = np.ascontiguousarray(w.T)
    avx512 = median_time(lambda: _C.matmul(x, w), repeats) if _C.avx512_matmul_active() else None
    _C.set_avx512_matmul(False)
    try:
        ours = median_time(lambda: _C.matmul(x, w), repeats)
    finally:
        _C.set_avx512_matmul(True)
    blas = median_time(lambda: _C.matmul(x, w_t, transpose_b=True), repeats)
    theirs = None
    if torch is not None:
        xt, wt = torch.from_numpy(x), torch.from_numpy(w)
        theirs = median_time(lambda: xt @ wt, repeats)
    gflops = 2 * 50 * 8192 * 100 / 1e9
    if avx512 is not None:
        row("(c) affine x @ W [AVX-512]", avx512, torch_t=theirs,
            extra=f"{gflops / avx512:.1f} GFLOP/s")
    row("(c) affine x @ W [skinny]", ours, torch_t=theirs, extra=f"{gflops / ours:.1f} GFLOP/s")
    row("(c) affine x @ W [OpenBLAS]", blas, torch_t=theirs, extra=f"{gflops / blas:.1f} GFLOP/s")


LAYERS = [  # N, C, H (= W), F, kernel: a first layer, then deeper, narrower ones
    (50, 3, 32, 32, 7), (50, 3, 32, 32, 3), (50, 16, 32, 16, 3), (50, 32, 32, 32, 3),
    (50, 16, 32, 32, 5), (50, 32, 16, 32, 3), (50, 64, 16, 64, 3), (50, 64, 8, 64, 3),
    (50, 128, 8, 128, 3)]


def bench_layers(repeats):
    """Float32 stride-1 convs of other shapes (pad kernel // 2): forward, dw + db, dx + db,
    on the direct kernels and on im2col + GEMM. Rows under 16 pixels take im2col + GEMM
    either way, so their two columns time the same code."""
    print(f"\n(d) float32 stride-1 layers, ms, direct / im2col+GEMM (medians of {repeats})")
    print(f"{'N, C, H=W, F, kernel':<26}{'forward':>20}{'dw, db':>20}{'dx, db':>20}")
    rng = np.random.default_rng(0)
    for N, C, H, F, K in LAYERS:
        x = rng.standard_normal((N, C, H, H), dtype=np.float32)
        w = rng.standard_normal((F, C, K, K), dtype=np.float32)
        b = np.zeros(F, np.float32)
        dout = rng.standard_normal((N, F, H, H), dtype=np.float32)
        times = {}
        for direct in (True, False):
            _C.set_direct_conv(direct)
            try:
                times[direct] = (
                    median_time(lambda: _C.conv_forward(x, w, b, 1, K // 2), repeats),
                    median_time(lambda: _C.conv_backward(dout, x, w, 1, K // 2, need_dx=False),
                                repeats),
                    median_time(lambda: _C.conv_backward(dout, x, w, 1, K // 2, need_dw=False),
                                repeats))
            finally:
                _C.set_direct_conv(True)
        cells = "".join(f"{1e3 * a:>10.2f} / {1e3 * g:<7.2f}"
                        for a, g in zip(times[True], times[False]))
        print(f"{str((N, C, H, F, K)):<26}{cells}")


def bench_chain(repeats):
    """The CIFAR layer as conv -> relu -> 2x2 max pool: fused, one by one, and PyTorch."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 3, 32, 32), dtype=np.float32)
    w = rng.standard_normal((32, 3, 7, 7), dtype=np.float32)
    b = rng.standard_normal(32, dtype=np.float32)
    dpool = rng.standard_normal((50, 32, 16, 16), dtype=np.float32)

    def fused_forward():
        return _C.conv_relu_pool_forward(x, w, b, 1, 3, 2, 2, 2)

    def fused_training():
        pooled, winners = fused_forward()
        return _C.conv_pooled_backward(dpool, pooled, winners, x, w, 1, 3)

    def separate_forward():
        out = _C.conv_forward(x, w, b, 1, 3)
        relu, keep = _C.relu_forward(out)
        return (out, keep) + _C.max_pool_forward(relu, 2, 2, 2)

    def separate_training():
        _, keep, _, winners = separate_forward()
        drelu = _C.max_pool_backward(dpool, winners, 32, 32)
        return _C.conv_backward(_C.relu_backward(drelu, keep), x, w, 1, 3, need_dx=False)

    passing = float((fused_forward()[0] > 0).mean())
    t_forward = t_training = None
    if torch is not None:
        xt, gt = torch.from_numpy(x), torch.from_numpy(dpool)
        wt, bt = (torch.from_numpy(v).requires_grad_() for v in (w, b))

        def chain():
            return tF.max_pool2d(tF.relu(tF.conv2d(xt, wt, bt, padding=3)), 2)
        with torch.no_grad():
            t_forward = median_time(chain, repeats)
        t_training = median_time(lambda: torch.autograd.grad(chain(), (wt, bt), gt), repeats)
    note = f"{100 * passing:.0f}% of windows pass the relu"
    row("(e) conv-relu-pool forward [fused]", median_time(fused_forward, repeats),
        torch_t=t_forward)
    row("(e) conv-relu-pool forward [one by one]", median_time(separate_forward, repeats),
        torch_t=t_forward)
    row("(e) fwd + dw, db [fused]", median_time(fused_training, repeats), torch_t=t_training,
        extra=note)
    row("(e) fwd + dw, db [one by one]", median_time(separate_training, repeats),
        torch_t=t_training)


# The zoo's layers: (name, C, H=W, F, kernel, stride, needs dx). Pad (kernel - 1) // 2.
ZOO_LAYERS = [
    ("strided 3x3/2 32->64 @32", 32, 32, 64, 3, 2, True),
    ("strided 3x3/2 64->128 @16", 64, 16, 128, 3, 2, True),
    ("conv5x5 3->32 @32 (first)", 3, 32, 32, 5, 1, False),
    ("conv5x5 32->64 @16", 32, 16, 64, 5, 1, True),
]


def cpu_time(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return float(np.median(times))


def zoo_layer_times(rng, batch, repeats, C, H, F, K, stride, need_dx):
    """{path: (forward ms, backward ms)} of one zoo layer, the paths taking turns."""
    pad = (K - 1) // 2
    x = rng.standard_normal((batch, C, H, H), dtype=np.float32)
    w = rng.standard_normal((F, C, K, K), dtype=np.float32)
    b = np.zeros(F, np.float32)
    dout = rng.standard_normal(_C.conv_forward(x, w, b, stride, pad).shape, dtype=np.float32)

    def ours_fwd():
        _C.conv_forward(x, w, b, stride, pad)

    def ours_bwd():
        _C.conv_backward(dout, x, w, stride, pad, need_dx=need_dx)

    timed = {"ours": (ours_fwd, ours_bwd), "im2col": (ours_fwd, ours_bwd)}
    if torch is not None:
        xt = torch.from_numpy(x).requires_grad_(need_dx)
        wt, bt = torch.from_numpy(w).requires_grad_(), torch.from_numpy(b).requires_grad_()

        def torch_fwd():
            with torch.no_grad():
                tF.conv2d(xt, wt, bt, stride=stride, padding=pad)

        def torch_both():
            tF.conv2d(xt, wt, bt, stride=stride, padding=pad).backward(torch.from_numpy(dout))

        timed["torch"] = (torch_fwd, torch_both)
    results = {key: ([], []) for key in timed}
    for _ in range(repeats):
        for key, (fwd, bwd) in timed.items():
            _C.set_direct_conv(key != "im2col")
            try:
                results[key][0].append(cpu_time(fwd, 3))
                results[key][1].append(cpu_time(bwd, 3))
            finally:
                _C.set_direct_conv(True)
    med = {key: [1e3 * float(np.median(v)) for v in pair] for key, pair in results.items()}
    if "torch" in med:
        med["torch"][1] -= med["torch"][0]  # its backward: forward + backward less the forward
    else:
        med["torch"] = [float("nan")] * 2
    return med


def bench_zoo_layers(batch, repeats):
    """(f): the zoo's strided and 5x5 layers against im2col + GEMM and PyTorch, CPU time."""
    print(f"\n(f) zoo conv layers, float32, batch {batch}, CPU ms (medians of {repeats} "
          "rounds; backward = dw, db and dx where needed)")
    print(f"{'layer':<28}{'forward: ours / im2col / torch':>34}"
          f"{'backward: ours / im2col / torch':>36}")
    rng = np.random.default_rng(0)
    for name, C, H, F, K, stride, need_dx in ZOO_LAYERS:
        med = zoo_layer_times(rng, batch, repeats, C, H, F, K, stride, need_dx)
        cells = ["{:>9.2f} / {:>6.2f} / {:>6.2f}".format(*(med[k][i] for k in
                                                           ("ours", "im2col", "torch")))
                 for i in (0, 1)]
        print(f"{name:<28}{cells[0]:>34}{cells[1]:>36}")


STRIDE1_LAYERS = [  # C, H (= W), F, kernel, pad, needs dx: the zoo's stride-1 convs
    (3, 32, 32, 3, 1, False), (32, 32, 32, 3, 1, True), (32, 16, 64, 3, 1, True),
    (64, 16, 64, 3, 1, True), (3, 32, 32, 7, 3, False), (3, 32, 64, 3, 1, False),
    (64, 32, 32, 1, 0, True), (32, 16, 64, 3, 1, True), (64, 16, 32, 1, 0, True)]


def pass_functions(x, w, b, dout, stride, pad):
    """Each pass of a float32 conv ("forward", "dx", "dw" with db) as a call of graphnet's
    kernels, and of PyTorch's (empty without torch): conv2d, and
    aten.convolution_backward asked for that one gradient and the bias's."""
    ours = {"forward": lambda: _C.conv_forward(x, w, b, stride, pad),
            "dx": lambda: _C.conv_backward(dout, x, w, stride, pad, need_dw=False),
            "dw": lambda: _C.conv_backward(dout, x, w, stride, pad, need_dx=False)}
    if torch is None:
        return ours, {}
    xt, wt, bt, gt = (torch.from_numpy(v) for v in (x, w, b, dout))

    def backward(mask):
        return torch.ops.aten.convolution_backward(
            gt, xt, wt, [w.shape[0]], [stride] * 2, [pad] * 2, [1, 1], False, [0, 0], 1, mask)
    theirs = {"forward": lambda: tF.conv2d(xt, wt, bt, stride=stride, padding=pad),
              "dx": lambda: backward([True, False, True]),
              "dw": lambda: backward([False, True, True])}
    return ours, theirs


def cpu_medians(fns, repeats):
    """Medians of the process CPU time of each function, called in turns."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, t in zip(fns, times):
            start = time.process_time()
            fn()
            t.append(time.process_time() - start)
    return [float(np.median(t)) for t in times]


def bench_passes(batches, repeats, fma_peak):
    """(g): each pass of the zoo's stride-1 layers against PyTorch, one thread, CPU time."""
    _C.set_num_threads(1)
    if torch is not None:
        torch.set_num_threads(1)
    print(f"(g) float32 stride-1 zoo layers per pass, one thread, CPU time, medians of {repeats}; "
          f"ms graphnet / torch, GFLOP/s and % of {fma_peak:.0f} GFLOP/s FMA peak")
    print(f"{'N, C, H=W, F, k':<24}{'pass':<9}{'graphnet':>10}{'torch':>10}{'ratio':>7}"
          f"{'GFLOP/s':>9}{'% peak':>8}")
    rng = np.random.default_rng(0)
    totals = {}
    for N in batches:
        for C, H, F, K, pad, needs_dx in STRIDE1_LAYERS:
            x = rng.standard_normal((N, C, H, H), dtype=np.float32)
            w = (rng.standard_normal((F, C, K, K)) / np.sqrt(C * K * K)).astype(np.float32)
            b = np.zeros(F, np.float32)
            dout = rng.standard_normal((N, F, H, H), dtype=np.float32)
            flops = 2 * N * F * C * K * K * H * H
            ours, theirs = pass_functions(x, w, b, dout, 1, pad)
            for name in ("forward", "dx", "dw"):
                if name == "dx" and not needs_dx:
                    continue
                fns = [ours[name]] + ([theirs[name]] if theirs else [])
                times = cpu_medians(fns, repeats)
                mine, other = times[0], times[1] if theirs else float("nan")
                totals.setdefault(N, [0.0, 0.0])
                totals[N][0] += mine
                totals[N][1] += other
                rate = flops / mine / 1e9
                print(f"{str((N, C, H, F, K)):<24}{name:<9}{1e3 * mine:>10.3f}{1e3 * other:>10.3f}"
                      f"{mine / other:>7.2f}{rate:>9.1f}{100 * rate / fma_peak:>8.0f}")
    for N, (mine, other) in totals.items():
        print(f"batch {N}: all passes {1e3 * mine:.2f} ms, torch {1e3 * other:.2f} ms, "
              f"ratio {mine / other:.2f}")


def bench_layer_passes(layers, repeats, need_dx, sgemm, bandwidth):
    """(h): each pass of the given layers against PyTorch and the floor, one thread."""
    _C.set_num_threads(1)
    if torch is not None:
        torch.set_num_threads(1)
    print(f"(h) float32 layers per pass, one thread, CPU time, medians of {repeats}; floor: "
          f"FLOPs at {sgemm:.0f} GFLOP/s + x and dout at {bandwidth:.0f} GB/s")
    print(f"{'N, C, H, W, F, k, stride, pad':<34}{'pass':<9}{'us':>9}{'torch':>9}{'floor':>8}"
          f"{'/ torch':>9}{'/ floor':>9}")
    rng = np.random.default_rng(0)
    for N, C, H, W, F, K, stride, pad in layers:
        Ho, Wo = 1 + (H + 2 * pad - K) // stride, 1 + (W + 2 * pad - K) // stride
        x = rng.standard_normal((N, C, H, W), dtype=np.float32)
        w = (rng.standard_normal((F, C, K, K)) / np.sqrt(C * K * K)).astype(np.float32)
        b = np.zeros(F, np.float32)
        dout = rng.standard_normal((N, F, Ho, Wo), dtype=np.float32)
        floor = 2 * N * F * C * K * K * Ho * Wo / (sgemm * 1e9) + (x.nbytes + dout.nbytes) / (
            bandwidth * 1e9)
        ours, theirs = pass_functions(x, w, b, dout, stride, pad)
        for name in ("forward", "dx", "dw") if need_dx else ("forward", "dw"):
            times = cpu_medians([ours[name]] + ([theirs[name]] if theirs else []), repeats)
            mine, other = times[0], times[1] if theirs else float("nan")
            print(f"{str((N, C, H, W, F, K, stride, pad)):<34}{name:<9}{1e6 * mine:>9.1f}"
                  f"{1e6 * other:>9.1f}{1e6 * floor:>8.1f}{mine / other:>9.2f}{mine / floor:>9.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--naive-slice", type=int, default=10,
                        help="images the naive loops run on before scaling (default 10)")
    parser.add_argument("--zoo-batch", type=int, default=64)
    parser.add_argument("--zoo-only", action="store_true", help="run section (f) alone")
    parser.add_argument("--passes", action="store_true",
                        help="only (g): per-pass times of the zoo's layers, one thread")
    parser.add_argument("--batches", default="16,64", help="batch sizes for --passes")
    parser.add_argument("--fma-peak", type=float, default=244.0,
                        help="one core's FMA peak, GFLOP/s (benchmarks/fma_peak.cpp)")
    parser.add_argument("--winograd", choices=("auto", "off"), default="auto",
                        help="off: 3x3 convs without Winograd (_C.set_winograd_conv), to compare")
    parser.add_argument("--layer", action="append", default=[],
                        help="only (h): a layer N,C,H,W,F,k,stride,pad (repeatable)")
    parser.add_argument("--no-dx", action="store_true", help="(h) without dx (a first layer)")
    parser.add_argument("--sgemm", type=float, default=100.0,
                        help="(h) the floor's GFLOP/s (one core's sgemm rate)")
    parser.add_argument("--bandwidth", type=float, default=22.0,
                        help="(h) the floor's GB/s (one core's copy rate)")
    args = parser.parse_args()
    _C.set_winograd_conv(args.winograd)
    if args.layer:
        layers = [tuple(int(v) for v in spec.split(",")) for spec in args.layer]
        if any(len(layer) != 8 for layer in layers):
            parser.error("--layer takes N,C,H,W,F,k,stride,pad")
        bench_layer_passes(layers, max(5, args.repeats // 2), not args.no_dx, args.sgemm,
                           args.bandwidth)
        return
    if args.passes:
        bench_passes([int(b) for b in args.batches.split(",")], max(5, args.repeats // 2),
                     args.fma_peak)
        return
    threads = _C.get_num_threads()
    if torch is not None:
        torch.set_num_threads(threads)
    print(f"graphnet threads: {threads}; torch: "
          f"{torch.__version__ if torch is not None else 'not installed'}; "
          f"medians of {args.repeats} runs\n")
    if args.zoo_only:
        bench_zoo_layers(args.zoo_batch, args.repeats)
        return
    bench_course(args.repeats, args.naive_slice)
    ceiling = bench_cifar(args.repeats)
    bench_affine(args.repeats)
    if _C.direct_conv_active():
        bench_chain(args.repeats)
    print_table()
    print(f"ceiling: numpy float32 2048x2048 matmul = {ceiling:.1f} GFLOP/s")
    if _C.direct_conv_active():
        bench_layers(max(5, args.repeats // 3))
    bench_zoo_layers(args.zoo_batch, max(3, args.repeats // 7))


if __name__ == "__main__":
    main()
