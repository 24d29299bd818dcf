"""Reliability (issue 7): anomaly mode on a model, hypothesis fuzzing of the Graph builder,
interrupting training inside a checkpoint write, determinism across thread counts, and
graphs of 100,000 nodes."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphnet as gn
from graphnet import viz
from graphnet.core.gradcheck import numerical_gradient
from graphnet.kernels import _C
from graphnet.training.checkpoint import DOC_KEY
from graphnet.models import FullyConnectedNet, ThreeLayerConvNet
from graphnet.solver import Solver

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


# =========================================================================== anomaly mode


def small_fc():
    np.random.seed(0)
    return FullyConnectedNet([5], input_dim=12, num_classes=3, dtype=np.float64)


def test_anomaly_mode_names_the_node_of_a_model_whose_weights_overflow_forward():
    model = small_fc()
    model.params["W1"] = np.full((12, 5), 1e308)
    X, y = np.ones((4, 12)), np.array([0, 1, 2, 1])
    loss, _ = model.loss(X, y)  # outside anomaly mode: silently not finite
    assert not np.isfinite(loss)
    with gn.detect_anomaly():
        with pytest.raises(gn.AnomalyError) as err:
            model.loss(X, y)
    message = str(err.value)
    for part in (
        "Inf in the value of node 'affine1'",
        "gate 'affine'",
        "shape (4, 5)",
        "step 1 of forward",
        "'X', 'W1', 'b1'",
    ):
        assert part in message, message
    assert model.graph.training  # the mode is restored after the error


def test_anomaly_mode_names_the_param_whose_gradient_overflows_in_backward():
    # A finite forward pass (hidden units of 1e-300 times weights of 1e308) whose backward
    # pass overflows: dW1 = X^T (dscores W2^T) sums several terms of 10 * 1e308.
    model = small_fc()
    model.params["W1"] = np.zeros((12, 5))
    model.params["b1"] = np.full(5, 1e-300)
    W2 = np.zeros((5, 3))
    W2[:, 0] = 1e308
    model.params["W2"] = W2
    X, y = np.full((4, 12), 10.0), np.array([1, 2, 1, 2])
    loss, grads = model.loss(X, y)
    assert np.isfinite(loss) and not np.isfinite(grads["W1"]).all()
    with gn.detect_anomaly():
        with pytest.raises(gn.AnomalyError) as err:
            model.loss(X, y)
    message = str(err.value)
    for part in (
        "Inf in the gradient from 'affine1' of node 'W1'",
        "gate 'param'",
        "shape (12, 5)",
        "of backward",
    ):
        assert part in message, message


def test_anomaly_mode_names_a_nan_param():
    model = small_fc()
    W2 = model.params["W2"].copy()
    W2[0, 0] = np.nan
    model.params["W2"] = W2  # params accept NaN (a diverged run stays inspectable) ...
    with gn.detect_anomaly():  # ... and anomaly mode says where it first shows
        with pytest.raises(
            gn.AnomalyError,
            match=r"NaN in the value of node 'scores' "
            r"\(gate 'affine', shape \(2, 3\)\) "
            r"at step 3 of forward",
        ):
            model.loss(np.ones((2, 12)))


# =========================================================================== fuzzing the builder

UNARY = ("relu", "exp_tanh", "softplus", "sigmoid", "tanh", "neg")
BINARY = ("add", "subtract", "multiply", "divide_safe", "max")
GRAPH_FUZZ = settings(max_examples=60, deadline=None)


def _apply(g, op, a, b):
    if op == "relu":
        return g.relu(a)
    if op == "exp_tanh":  # exp of a bounded value: no overflow
        return g.exp(g.tanh(a))
    if op == "softplus":  # log of a value >= 1
        return g.log(g.add(g.exp(g.tanh(a)), 1.0))
    if op == "sigmoid":
        return g.sigmoid(a)
    if op == "tanh":
        return g.tanh(a)
    if op == "neg":
        return -a
    if op == "divide_safe":  # a denominator >= 1
        return g.divide(a, g.add(g.multiply(b, b), 1.0))
    return getattr(g, op)(a, b)


@GRAPH_FUZZ
@given(
    shapes=st.lists(st.sampled_from([(), (3,), (2, 3)]), min_size=1, max_size=3),
    ops=st.lists(
        st.tuples(st.sampled_from(UNARY + BINARY), st.integers(0, 100), st.integers(0, 100)),
        min_size=1,
        max_size=8,
    ),
    seed=st.integers(0, 2**16),
)
@pytest.mark.slow
def test_random_graphs_of_elementwise_gates_match_numerical_gradients(shapes, ops, seed):
    g = gn.Graph()
    rng = np.random.default_rng(seed)
    nodes = [g.input(f"x{i}") for i in range(len(shapes))]
    feeds = {f"x{i}": np.asarray(rng.uniform(-2, 2, size=s)) for i, s in enumerate(shapes)}
    used = set()
    for op, i, j in ops:
        a, b = nodes[i % len(nodes)], nodes[j % len(nodes)]
        if op == "max" and a is b:
            op = "add"  # max(a, a) is a tie everywhere: no derivative to compare
        used.update({id(a), id(b)} if op in BINARY else {id(a)})
        nodes.append(_apply(g, op, a, b))
    loose = [n for n in nodes if id(n) not in used]
    total = loose[0]
    for n in loose[1:]:
        total = g.add(total, g.sum(n))
    g.sum(total, name="out")
    assert gn.gradcheck(g, feeds), "no input reached the output"
    # max and relu have kinks; a value within h of one is (rarely) a legitimate mismatch
    near_kink = (
        any(op in ("max", "relu") for op, _, _ in ops)
        and min(
            (
                np.min(np.abs(np.asarray(n.value)))
                for n in g.nodes
                if n.value is not None and np.size(n.value)
            ),
            default=1,
        )
        < 1e-4
    )
    if near_kink:
        return
    g.forward(feeds)
    g.backward()
    analytic = {name: g[name].grad for name in feeds if g[name].grad is not None}
    for name, grad in analytic.items():
        numeric = numerical_gradient(lambda _: float(g.run("out", feeds)), feeds[name], 1e-5)
        # Entry by entry, relative or absolute: where terms nearly cancel (x - x/(1 + x^2)
        # near 0) the walk's gradient is small and exact, and the centred difference's own
        # error (h^2/6 times the third derivative, about 1e-10) is a large share of it;
        # where they cancel exactly it is all of it.
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-8, err_msg=name)


@GRAPH_FUZZ
@given(
    ops=st.lists(
        st.sampled_from(
            [
                "add",
                "multiply",
                "conv",
                "max_pool",
                "affine",
                "relu",
                "batchnorm",
                "sum",
                "softmax",
                "dropout",
            ]
        ),
        min_size=1,
        max_size=5,
    ),
    shape=st.lists(st.integers(0, 5), min_size=1, max_size=4),
    seed=st.integers(0, 99),
)
def test_random_gate_stacks_on_random_shapes_fail_only_with_graph_errors(ops, shape, seed):
    """Any shape into any stack of gates: either it builds and runs forward and backward,
    or it raises GraphError (at build or run time) - never another exception or a crash."""
    g = gn.Graph()
    h = g.input("x", shape=[None] + shape[1:])
    x = np.random.default_rng(seed).standard_normal(shape)
    try:
        for k, op in enumerate(ops):
            if op == "add":
                h = g.add(h, g.param(f"p{k}", np.ones(shape[-1:])))
            elif op == "multiply":
                h = g.multiply(h, 0.5)
            elif op == "conv":
                channels = shape[1] if len(shape) > 1 else 1
                h = g.conv(
                    h,
                    g.param(f"w{k}", np.ones((2, channels, 2, 2))),
                    g.param(f"b{k}", np.zeros(2)),
                    stride=1,
                    pad=1,
                )
            elif op == "max_pool":
                h = g.max_pool(h, 2, 2, 1)
            elif op == "affine":
                h = g.affine(
                    h,
                    g.param(f"w{k}", np.ones((int(np.prod(shape[1:])) or 1, 3))),
                    g.param(f"b{k}", np.zeros(3)),
                )
            elif op == "batchnorm":
                h = g.batchnorm(
                    h,
                    g.param(f"g{k}", np.ones(shape[-1:])),
                    g.param(f"be{k}", np.zeros(shape[-1:])),
                )
            elif op == "sum":
                h = g.sum(h)
            else:
                h = getattr(g, op)(h, 0.5, seed=1) if op == "dropout" else getattr(g, op)(h)
        out = g.sum(h, name="out")
        g.run(out, x=x)
        g.backward(out)
    except gn.GraphError:
        pass


# =========================================================================== interruption

CLI_ARGS = ["train", "--model", "fc", "--epochs", "3", "--threads", "1", "--quiet"]
SLOW_SAVE = textwrap.dedent("""
    import os, sys, time
    import graphnet.training.checkpoint as checkpoint
    from graphnet import cli
    real, calls = checkpoint._write_npz, []

    def slow_write(file, arrays):          # the 2nd checkpoint (after epoch 2) is slow:
        calls.append(1)                    # half of it is written, a marker appears, and
        if len(calls) != 2:                # the signal arrives while it sleeps
            return real(file, arrays)
        import io
        buffer = io.BytesIO()
        real(buffer, arrays)
        data = buffer.getvalue()
        file.write(data[: len(data) // 2])
        file.flush()
        open(os.environ["MARKER"], "w").close()
        time.sleep(3)
        file.write(data[len(data) // 2:])

    checkpoint._write_npz = slow_write
    sys.exit(cli.main(sys.argv[1:]))
""")


def _env(**extra):
    return {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", **extra}


def _final_state(path):
    with np.load(path, allow_pickle=False) as archive:
        doc = json.loads(archive[DOC_KEY].tobytes())
        params = {k: archive[k].copy() for k in archive.files if k.startswith("param/")}
        optim = {k: archive[k].copy() for k in archive.files if k.startswith("optim/")}
    return doc["solver"], params, optim


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    pytest.importorskip("sklearn")
    out = tmp_path_factory.mktemp("straight")
    result = subprocess.run(
        [sys.executable, "-m", "graphnet", *CLI_ARGS, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
        env=_env(),
    )
    assert result.returncode == 0, result.stderr
    return _final_state(out / "checkpoint.npz")


@pytest.mark.parametrize(
    "sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGKILL, -9)]
)
@pytest.mark.slow
def test_a_signal_during_a_checkpoint_write_leaves_a_loadable_checkpoint_and_resume_is_exact(
    tmp_path, uninterrupted, sig, code
):
    out, marker = tmp_path / "run", tmp_path / "inside-save"
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_SAVE, *CLI_ARGS, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(MARKER=str(marker)),
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marker.exists(), proc.communicate()[1]
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    # the checkpoint loads: the one from epoch 1 (SIGKILL: the write never finished) or
    # the one the signal handler's stop wrote after finishing the epoch-2 write
    state, _, _ = _final_state(out / "checkpoint.npz")
    assert state["epoch"] == (1 if sig == signal.SIGKILL else 2)
    assert type(gn.load(out / "checkpoint.npz")).__name__ == "FullyConnectedNet"
    resumed = subprocess.run(
        [
            sys.executable,
            "-m",
            "graphnet",
            "train",
            "--out",
            str(out),
            "--resume",
            "--threads",
            "1",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=_env(),
    )
    assert resumed.returncode == 0, resumed.stderr
    state, params, optim = _final_state(out / "checkpoint.npz")
    straight_state, straight_params, straight_optim = uninterrupted
    assert state["loss_history"] == straight_state["loss_history"]
    assert state["iteration"] == straight_state["iteration"]
    assert params.keys() == straight_params.keys() and optim.keys() == straight_optim.keys()
    for key in params:
        assert params[key].tobytes() == straight_params[key].tobytes(), key  # bitwise
    for key in optim:
        assert optim[key].tobytes() == straight_optim[key].tobytes(), key


# =========================================================================== determinism


def _blob_data(shape, n=200, classes=10):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, *shape)).astype(np.float32)
    y = rng.integers(classes, size=n)
    return dict(X_train=X[:150], y_train=y[:150], X_val=X[150:], y_val=y[150:])


def _train_bytes(kind):
    np.random.seed(0)
    if kind == "convnet":
        model = ThreeLayerConvNet(
            input_dim=(3, 16, 16),
            num_filters=16,
            filter_size=5,
            hidden_dim=256,
            num_classes=10,
            weight_scale=1e-2,
            reg=1e-3,
        )
        data = _blob_data((3, 16, 16))
    else:
        model = FullyConnectedNet(
            [256, 256],
            input_dim=3 * 16 * 16,
            num_classes=10,
            use_batchnorm=True,
            dropout=0.3,
            weight_scale=5e-2,
            reg=1e-3,
        )
        data = _blob_data((3 * 16 * 16,))
    solver = Solver(
        model,
        data,
        update_rule="adam",
        optim_config={"learning_rate": 1e-3},
        batch_size=50,
        num_epochs=3,
        verbose=False,
        seed=3,
    )
    solver.train()
    return {k: np.array(v).tobytes() for k, v in model.params.items()}, solver.loss_history


def _kernel_blas():
    """The file of the OpenBLAS the C++ kernels link (scipy-openblas32), not numpy's."""
    import scipy_openblas32

    return os.path.realpath(scipy_openblas32.get_lib_dir())


def _blas_libraries(threadpoolctl):
    info = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    kernels = [i for i in info if os.path.realpath(i["filepath"]).startswith(_kernel_blas())]
    return kernels, [i for i in info if i not in kernels]


def _digest(params):
    import hashlib

    h = hashlib.sha256()
    for name in sorted(params):
        h.update(name.encode() + params[name])
    return h.hexdigest()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["convnet", "fc"])
def test_same_seed_is_bitwise_identical_for_any_thread_count(kind):
    """Kernel threads 1 and 2 (graphnet._C.set_num_threads) times numpy's BLAS threads 1
    and 2 (threadpoolctl): the same losses and final params, bit for bit."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    kernels, numpy_blas = _blas_libraries(threadpoolctl)
    assert kernels and all(i["num_threads"] == 1 for i in kernels)  # pinned by graphnet
    before = _C.get_num_threads()
    results = {}
    try:
        for blas in (1, 2):
            with threadpoolctl.threadpool_limits(limits={i["filepath"]: blas for i in numpy_blas}):
                for kernel in (1, 2):
                    _C.set_num_threads(kernel)
                    results[blas, kernel] = _train_bytes(kind)
    finally:
        _C.set_num_threads(before)
    reference = results[1, 1]
    for setting, (params, losses) in results.items():
        assert losses == reference[1], setting
        for name in params:
            assert params[name] == reference[0][name], (setting, name)


@pytest.mark.slow
def test_thread_environment_variables_do_not_change_a_run():
    """OMP_NUM_THREADS / OPENBLAS_NUM_THREADS 1 or 2 in a fresh process: the same params as
    this process, bit for bit (the kernels' OpenBLAS stays pinned to one thread)."""
    script = textwrap.dedent("""
        import sys, json
        sys.path.insert(0, %r)
        from test_reliability import _train_bytes, _digest, _blas_libraries
        import threadpoolctl
        kernels, _ = _blas_libraries(threadpoolctl)
        print(json.dumps({"pinned": [i["num_threads"] for i in kernels],
                          **{k: _digest(_train_bytes(k)[0]) for k in ("convnet", "fc")}}))
    """) % os.path.dirname(__file__)
    expected = {k: _digest(_train_bytes(k)[0]) for k in ("convnet", "fc")}
    for threads in ("1", "2"):
        result = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads},
        )
        assert result.returncode == 0, result.stderr
        got = json.loads(result.stdout.strip().splitlines()[-1])
        assert got.pop("pinned") == [1]
        assert got == expected, threads


def test_matmul_is_bitwise_when_the_kernels_openblas_gets_more_threads():
    """threadpoolctl can raise the thread count of the kernels' own OpenBLAS after import;
    every kernel entry point pins it back to 1, so the bits do not change."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    kernels, _ = _blas_libraries(threadpoolctl)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((50, 768)).astype(np.float32)
    b = rng.standard_normal((768, 256)).astype(np.float32)
    out = {}
    for threads in (1, 2):
        with threadpoolctl.threadpool_limits(limits={i["filepath"]: threads for i in kernels}):
            out[threads] = _C.matmul(a, b).tobytes()
    assert out[1] == out[2]


# =========================================================================== scale


def _chain_of_blocks(blocks):
    """4 nodes per block (tanh, a const, multiply, add) on a vector input: a residual
    chain of `blocks` blocks named block<i>/..."""
    g = gn.Graph()
    h = g.input("x")
    for i in range(blocks):
        a = g.tanh(h, name=f"block{i}/tanh")
        scaled = g.multiply(a, g.const(0.5, name=f"block{i}/half"), name=f"block{i}/scaled")
        h = g.add(h, scaled, name=f"block{i}/out")
    return g


def _build_run_peak(blocks):
    tracemalloc.start()
    try:
        g = _chain_of_blocks(blocks)
        value = g.forward(x=np.linspace(-1, 1, 4))
        g.backward(g.sinks[0], grad=np.ones(4))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return g, value, peak


@pytest.mark.slow
def test_a_graph_of_100000_nodes_builds_runs_and_draws_in_linear_memory():
    small_graph, _, small_peak = _build_run_peak(6250)  # 25,001 nodes
    del small_graph
    g, value, peak = _build_run_peak(25000)  # 100,001 nodes
    assert len(g) == 100001
    assert np.isfinite(value).all() and np.isfinite(g["x"].grad).all()
    assert peak / small_peak < 6, (small_peak, peak)  # ~4 when memory is linear
    drawing = viz.draw(g)  # collapse='auto' past 120 nodes
    node_lines = [
        line for line in drawing.source.splitlines() if "label=" in line and "->" not in line
    ]
    assert len(node_lines) < 60, len(node_lines)
    assert len(drawing.source) < 50_000


# =========================================================================== memory layouts


@settings(max_examples=50, deadline=None)
@given(
    N=st.integers(1, 3),
    C=st.integers(1, 3),
    H=st.integers(3, 7),
    W=st.integers(3, 7),
    layout=st.sampled_from(["sliced", "transposed", "fortran", "negative"]),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
@pytest.mark.slow
def test_kernels_on_non_contiguous_views_match_contiguous_copies(N, C, H, W, layout, dtype, seed):
    """tests/kernels/test_fuzz.py fuzzes shapes, strides (the conv/pool step), pads and
    dtypes on contiguous arrays; here the arrays are views with odd memory strides."""
    from graphnet.fast_layers import (
        conv_backward_fast,
        conv_forward_fast,
        max_pool_backward_fast,
        max_pool_forward_fast,
    )

    rng = np.random.default_rng(seed)
    base = rng.standard_normal((N, C, H, W) if layout != "sliced" else (N, C, 2 * H, W + 3))
    x = {
        "sliced": lambda a: a[:, :, ::2, 1 : W + 1],
        "transposed": lambda a: np.ascontiguousarray(a.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2),
        "fortran": np.asfortranarray,
        "negative": lambda a: a[:, :, ::-1, ::-1],
    }[layout](base.astype(dtype))
    assert x.shape == (N, C, H, W)
    w = rng.standard_normal((2, C, 3, 3)).astype(dtype)[..., ::-1]
    b = np.zeros(2, dtype)
    cp = {"stride": 1, "pad": 1}
    out, cache = conv_forward_fast(x, w, b, cp)
    ref, ref_cache = conv_forward_fast(np.ascontiguousarray(x), np.ascontiguousarray(w), b, cp)
    np.testing.assert_array_equal(out, ref)
    dout = rng.standard_normal(out.shape).astype(dtype)
    dout = dout.transpose(0, 1, 3, 2).copy().transpose(0, 1, 3, 2)
    for got, want in zip(
        conv_backward_fast(dout, cache), conv_backward_fast(np.ascontiguousarray(dout), ref_cache)
    ):
        np.testing.assert_array_equal(got, want)
    pp = {"pool_height": 2, "pool_width": 2, "stride": 1}
    pooled, pcache = max_pool_forward_fast(x, pp)
    ref_pooled, ref_pcache = max_pool_forward_fast(np.ascontiguousarray(x), pp)
    np.testing.assert_array_equal(pooled, ref_pooled)
    np.testing.assert_array_equal(
        max_pool_backward_fast(np.ones_like(pooled), pcache),
        max_pool_backward_fast(np.ones_like(pooled), ref_pcache),
    )
