"""Data-parallel training (graphnet.interop.distributed): two processes on 127.0.0.1, started
by torchrun (on one node, or on two 'nodes' in folders of their own), or by hand with the
variables torchrun sets, end where one process ends with the same seed and global batch,
up to the order of the float sums."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

TORCHRUN_VARIABLES = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "GROUP_RANK",
    "ROLE_RANK",
    "TORCHELASTIC_RUN_ID",
)
TIMEOUT = 240  # seconds for one run; a hang fails the test instead of the suite
# The parameters of 2 and of 1 process differ only by the order of float32 sums; adam
# divides each step by the root of the gradient's running square, so an element whose
# gradient is nearly 0 (a digits pixel that is almost constant) magnifies that rounding:
# measured up to 1.2e-5 in a W1 of max |w| 0.4 after 25 steps. Hence a tolerance scaled
# by each array's largest element.
RTOL, ATOL_OF_MAX = 1e-5, 1e-5
# The runs compared with one process use momentum SGD: Adam turns a gradient's rounding
# into a step of full size wherever the gradient is nearly zero (a digit's edge pixels),
# so one process and two, which sum a batch in another order, drift apart in float32 by up
# to 1e-3 of a weight; with momentum SGD they stay within rounding (3e-8 measured), which
# lets the comparison be tight enough to see a shard weighted wrongly.
SAME_MATH = ("--update-rule", "sgd_momentum", "--lr", "0.05")


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _environment(**extra):
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARIABLES}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def _train_command(*args):
    return ["-m", "graphnet", "train", *args]


def _one_process(out, *args):
    return subprocess.run(
        [sys.executable, *_train_command("--quiet", "--out", str(out), *args)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=_environment(),
    )


def _torchrun_command(*args, nproc=2):
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(nproc),
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(_free_port()),
        *args,
    ]


def _torchrun(out, *args, nproc=2):
    return subprocess.run(
        _torchrun_command(*_train_command("--quiet", "--out", str(out), *args), nproc=nproc),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=_environment(),
    )


def _by_hand(rank, world_size, port, cwd, *args):
    """One process of a group started without torchrun: its variables set by hand."""
    env = _environment(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    return subprocess.Popen(
        [sys.executable, *_train_command(*args)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _ok(result):
    assert result.returncode == 0, (
        f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
    )
    return result


def _state(out):
    """{array name: array} of a run's checkpoint (params, optimizer state, best params)
    and its solver document."""
    with np.load(out / "checkpoint.npz") as archive:
        arrays = {k: archive[k] for k in archive.files if k != "__graphnet__.json"}
        doc = json.loads(bytes(archive["__graphnet__.json"]).decode())
    return arrays, doc["solver"]


def _assert_same_run(out_a, out_b):
    arrays_a, solver_a = _state(out_a)
    arrays_b, solver_b = _state(out_b)
    assert sorted(arrays_a) == sorted(arrays_b)
    for key in arrays_a:
        scale = float(np.abs(arrays_a[key]).max(initial=0))
        np.testing.assert_allclose(
            arrays_a[key], arrays_b[key], rtol=RTOL, atol=ATOL_OF_MAX * scale, err_msg=key
        )
    for key in ("epoch", "iteration", "rng"):
        assert solver_a[key] == solver_b[key], key
    np.testing.assert_allclose(solver_a["loss_history"], solver_b["loss_history"], rtol=RTOL)
    for key in ("train_acc_history", "val_acc_history"):
        np.testing.assert_allclose(solver_a[key], solver_b[key], atol=0.01)


@pytest.fixture
def torch_distributed():
    return pytest.importorskip("torch.distributed")


def two_processes(test):
    """Marks of a test that starts processes with PyTorch: torch, slow."""
    return pytest.mark.torch(pytest.mark.slow(pytest.mark.usefixtures("torch_distributed")(test)))


@two_processes
@pytest.mark.parametrize("model, batch", [("fc", 50), ("twolayer", 49), ("convnet", 50)])
def test_two_processes_end_with_the_params_of_one(tmp_path, model, batch):
    # batch 49: shards of 25 and 24 samples, weighted 25/49 and 24/49
    args = (
        "--model",
        model,
        "--epochs",
        "1",
        "--batch-size",
        str(batch),
        "--seed",
        "3",
        *SAME_MATH,
    )
    one = _ok(_one_process(tmp_path / "one", *args))
    two = _ok(_torchrun(tmp_path / "two", *args))
    _assert_same_run(tmp_path / "one", tmp_path / "two")
    assert two.stdout.count("test accuracy:") == 1  # process 0 alone prints
    assert two.stdout.splitlines()[-1] == one.stdout.splitlines()[-1]


def _run_on_two_nodes(tmp_path, *args):
    """torchrun's multi-node form, two 'machines' of one process each, each in a folder of
    its own (the same relative --out names two folders); their (returncode, stdout,
    stderr)."""
    port = _free_port()
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--node-rank",
                str(node),
                "--nproc-per-node",
                "1",
                "--master-addr",
                "127.0.0.1",
                "--master-port",
                str(port),
                *_train_command("--quiet", *args),
            ],
            cwd=tmp_path / f"host{node}",
            env=_environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for node in range(2)
    ]
    outputs = [node.communicate(timeout=TIMEOUT) for node in nodes]
    return [(node.returncode, *output) for node, output in zip(nodes, outputs)]


@two_processes
def test_process_0_alone_writes_and_alone_needs_the_checkpoint_to_resume(tmp_path):
    for rank in range(2):
        (tmp_path / f"host{rank}").mkdir()
    args = ("--model", "fc", "--batch-size", "40", "--seed", "1", "--out", "run", *SAME_MATH)
    for code, _, err in _run_on_two_nodes(tmp_path, *args, "--epochs", "1"):
        assert code == 0, err
    written = sorted(p.name for p in (tmp_path / "host0" / "run").iterdir())
    assert {"checkpoint.npz", "model.npz", "run.json"} <= set(written)
    assert list((tmp_path / "host1").iterdir()) == []
    # Process 1's machine has no checkpoint: process 0 sends it the resumed state.
    results = _run_on_two_nodes(tmp_path, *args, "--epochs", "2", "--resume")
    for code, _, err in results:
        assert code == 0, err
    assert "resuming" in results[0][1] and results[1][1] == ""
    assert list((tmp_path / "host1").iterdir()) == []
    _ok(
        _one_process(
            tmp_path / "one",
            *("--model", "fc", "--batch-size", "40", "--seed", "1", "--epochs", "2", *SAME_MATH),
        )
    )
    _assert_same_run(tmp_path / "one", tmp_path / "host0" / "run")


@two_processes
def test_ctrl_c_stops_every_process_after_the_same_step_and_resume_continues(tmp_path):
    args = ("--model", "twolayer", "--epochs", "8", "--batch-size", "20", "--seed", "2", *SAME_MATH)
    out = tmp_path / "two"
    run = subprocess.Popen(
        _torchrun_command("-m", "graphnet", "train", "--out", str(out), *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_environment(),
    )
    for line in run.stdout:  # the first iteration's line: training is under way
        if line.startswith("(Iteration 1 /"):
            break
    run.send_signal(signal.SIGINT)  # what Ctrl-C sends torchrun, which passes it on
    stdout, stderr = run.communicate(timeout=TIMEOUT)
    assert run.returncode != 0
    assert "SIGINT: stopped at epoch" in stderr and "checkpoint saved" in stderr, stderr
    assert f"resume with: the same torchrun command with --out {out} --resume" in stderr
    _, stopped = _state(out)
    total = 8 * (1257 // 20)
    assert 0 < stopped["iteration"] < total
    _ok(_torchrun(out, "--resume"))
    _ok(_one_process(tmp_path / "one", *args))
    _assert_same_run(tmp_path / "one", out)


@two_processes
def test_a_process_that_dies_ends_the_others_with_a_clear_error(tmp_path):
    for rank in range(2):
        (tmp_path / f"host{rank}").mkdir()
    port = _free_port()
    args = ("--model", "fc", "--epochs", "200", "--batch-size", "20", "--out", "run")
    procs = [_by_hand(rank, 2, port, tmp_path / f"host{rank}", *args) for rank in range(2)]
    try:
        for line in procs[0].stdout:
            if line.startswith("(Iteration 1 /"):
                break
        procs[1].kill()
        start = time.monotonic()
        _, stderr = procs[0].communicate(timeout=60)
    finally:
        for proc in procs:
            proc.kill()
            proc.communicate()
    assert time.monotonic() - start < 30
    assert procs[0].returncode == 1
    last = stderr.strip().splitlines()[-1]
    assert re.match(
        r"graphnet: error: process 0 of 2: the (gradient all-reduce|accuracy "
        r"count) failed: .*Another process has probably failed",
        last,
    ), stderr


@two_processes
def test_a_process_that_hangs_ends_the_others_after_the_timeout(tmp_path):
    script = tmp_path / "hang.py"
    script.write_text(
        textwrap.dedent("""
        import sys, time
        from graphnet.interop import DataParallel, DistributedError
        group = DataParallel(timeout=3)
        if group.rank == 1:
            time.sleep(120)  # hangs: never joins the collective call
        start = time.monotonic()
        try:
            group.count_correct(1)
        except DistributedError as err:
            print(f"after {time.monotonic() - start:.0f} s: {err}", flush=True)
            sys.exit(1)
    """)
    )
    result = subprocess.run(
        _torchrun_command(str(script)),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=_environment(),
    )
    assert result.returncode != 0
    assert re.search(
        r"after [345] s: process 0 of 2: the accuracy count failed: Timed out .*"
        "Another process has probably failed, been stopped or hung",
        result.stdout,
    ), result.stdout + result.stderr


@two_processes
def test_solver_from_python_and_batchnorm_running_averages(tmp_path):
    """Solver(distributed=True) in a script under torchrun. With batchnorm, each process
    normalizes by its own shard's statistics; the running mean after a step is the whole
    batch's, the running variance the shards' variances averaged by shard size."""
    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent(f"""
        import numpy as np
        import graphnet as gn
        from graphnet.models import FullyConnectedNet
        rng = np.random.default_rng(0)
        data = {{"X_train": rng.normal(size=(21, 6)), "y_train": rng.integers(0, 3, 21),
                 "X_val": rng.normal(size=(5, 6)), "y_val": rng.integers(0, 3, 5)}}
        np.random.seed(0)
        model = FullyConnectedNet([4], input_dim=6, num_classes=3,
                                  normalization="batchnorm", dtype=np.float64)
        solver = gn.Solver(model, data, batch_size=21, num_epochs=1, seed=0, verbose=False,
                           distributed=True)
        solver.train()
        bn = next(n for n in model.graph.nodes if n.op == "batchnorm")
        if solver.distributed.rank == 0:
            np.savez({str(tmp_path / "bn.npz")!r}, mean=bn.state["running_mean"],
                     var=bn.state["running_var"], momentum=bn.gate.momentum,
                     loss=solver.loss_history[0])
    """)
    )
    _ok(
        subprocess.run(
            _torchrun_command(str(script)),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env=_environment(),
        )
    )
    from graphnet.models import FullyConnectedNet

    rng = np.random.default_rng(0)
    X = rng.normal(size=(21, 6))
    np.random.seed(0)
    model = FullyConnectedNet(
        [4], input_dim=6, num_classes=3, normalization="batchnorm", dtype=np.float64
    )
    batch = np.random.default_rng(0).choice(21, 21)  # the Solver's first minibatch
    hidden = X[batch] @ model.params["W1"] + model.params["b1"]
    shards = (hidden[:11], hidden[11:])  # process 0 takes the extra sample
    saved = np.load(tmp_path / "bn.npz")
    keep = float(saved["momentum"])
    np.testing.assert_allclose(saved["mean"], (1 - keep) * hidden.mean(axis=0), rtol=1e-12)
    shard_var = sum(len(s) * s.var(axis=0) for s in shards) / 21
    np.testing.assert_allclose(saved["var"], keep * 0 + (1 - keep) * shard_var, rtol=1e-12)
    assert not np.allclose(shard_var, hidden.var(axis=0), rtol=1e-3)


def test_without_torch_torchrun_is_a_clear_error():
    code = textwrap.dedent("""
        import sys
        sys.modules["torch"] = None  # as if PyTorch were not installed
        from graphnet.cli import main
        sys.exit(main(["train", "--quiet", "--epochs", "1"]))
    """)
    env = _environment(
        RANK="0",
        WORLD_SIZE="2",
        LOCAL_RANK="0",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(_free_port()),
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT, env=env
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "graphnet: error: started by torchrun (RANK, WORLD_SIZE, LOCAL_RANK and MASTER_ADDR "
        "are set), so training data-parallel, but data-parallel training (torchrun -m "
        "graphnet, Solver(distributed=True)) needs the 'torch' package, which is not "
        'installed: pip install "graphnet[torch]"'
    )


def _tiny_model_and_data():
    from graphnet.models import TwoLayerNet

    rng = np.random.default_rng(0)
    data = {
        "X_train": rng.normal(size=(8, 4)),
        "y_train": rng.integers(0, 2, 8),
        "X_val": rng.normal(size=(2, 4)),
        "y_val": rng.integers(0, 2, 2),
    }
    return TwoLayerNet(input_dim=4, hidden_dim=3, num_classes=2), data


def _quiet_solver(model, data, **kwargs):
    import graphnet as gn

    return gn.Solver(model, data, verbose=False, **kwargs)


@pytest.mark.torch
def test_solver_distributed_outside_torchrun_is_a_clear_error(monkeypatch):
    pytest.importorskip("torch.distributed")
    from graphnet.interop import DistributedError

    for name in TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    model, data = _tiny_model_and_data()
    with pytest.raises(
        DistributedError,
        match="needs the processes started by torchrun .*"
        r"\(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR "
        "not set",
    ):
        _quiet_solver(model, data, distributed=True)


def test_solver_distributed_takes_true_false_none_or_a_data_parallel():
    model, data = _tiny_model_and_data()
    assert _quiet_solver(model, data, distributed=False).distributed is None
    with pytest.raises(
        TypeError,
        match="distributed must be True, False, None or a graphnet.interop.DataParallel, got 'yes'",
    ):
        _quiet_solver(model, data, distributed="yes")
