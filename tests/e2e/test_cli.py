"""`graphnet train / render / bench` end to end, in subprocesses like a user runs them."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from graphnet import cli, load
from graphnet.training.checkpoint import DOC_KEY

pytest.importorskip("sklearn")  # the digits data set

TEST_LINE = re.compile(r"^test accuracy: (\d\.\d{3})$", re.MULTILINE)


def run_cli(*args, timeout=120):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "graphnet", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def saved_solver_state(path):
    with np.load(path, allow_pickle=False) as archive:
        return json.loads(archive[DOC_KEY].tobytes())["solver"]


@pytest.mark.slow
def test_train_digits_end_to_end(tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", "--epochs", "3", "--out", str(out))
    assert result.returncode == 0, result.stderr
    match = TEST_LINE.search(result.stdout)
    assert match, result.stdout
    assert float(match.group(1)) > 0.85
    assert "(Epoch 3 / 3) train acc:" in result.stdout
    assert result.stdout.rstrip().splitlines()[-1].startswith("test accuracy: ")
    for name in (
        "model.npz",
        "checkpoint.npz",
        "run.json",
        "training.png",
        "filters.png",
        "graph.svg",
    ):
        assert (out / name).is_file(), name
    for picture in ("training.png", "filters.png"):
        assert (out / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (out / "graph.svg").read_text()
    model = load(out / "model.npz")
    assert type(model).__name__ == "ThreeLayerConvNet"
    assert model.params["W1"].dtype == np.float32
    settings = json.loads((out / "run.json").read_text())
    assert settings["model"] == "convnet" and settings["data"] == "digits"
    assert settings["seed"] == 0 and settings["update_rule"] == "adam"


@pytest.mark.slow
@pytest.mark.parametrize("model", ["fc", "twolayer"])
def test_train_other_models_in_process(tmp_path, capsys, model):
    code = cli.main(
        [
            "train",
            "--model",
            model,
            "--epochs",
            "2",
            "--out",
            str(tmp_path),
            "--quiet",
            "--threads",
            "1",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert TEST_LINE.search(out)
    assert "(Epoch" not in out  # --quiet
    assert (
        type(load(tmp_path / "model.npz")).__name__
        == {"fc": "FullyConnectedNet", "twolayer": "TwoLayerNet"}[model]
    )


@pytest.mark.slow
@pytest.mark.parametrize("model", ["rnn", "lstm"])
def test_train_captioning_models_on_the_numbers_and_resume(tmp_path, capsys, model):
    assert (
        cli.main(
            ["train", "--model", model, "--epochs", "1", "--out", str(tmp_path), "--threads", "1"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "training CaptioningRNN on numbers (5000 train / 500 val / 500 test)" in out
    assert "(Epoch 1 / 1) train acc:" in out and re.search(r"test image of \d+: '", out)
    assert TEST_LINE.search(out)
    for name in ("model.npz", "checkpoint.npz", "run.json", "training.png", "graph.svg"):
        assert (tmp_path / name).is_file(), name
    assert f">{model} · (8, 5, 128)<" in (tmp_path / "graph.svg").read_text()
    loaded = load(tmp_path / "model.npz")
    assert type(loaded).__name__ == "CaptioningRNN" and loaded.cell_type == model
    settings = json.loads((tmp_path / "run.json").read_text())
    assert settings["data"] == "numbers" and settings["hidden_dim"] == 128

    assert (
        cli.main(
            [
                "train",
                "--resume",
                "--epochs",
                "2",
                "--out",
                str(tmp_path),
                "--quiet",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    assert saved_solver_state(tmp_path / "checkpoint.npz")["epoch"] == 2
    assert TEST_LINE.search(capsys.readouterr().out)


def test_in_process_run_leaves_numpy_and_threads_alone(tmp_path, capsys):
    from graphnet.kernels import _C

    threads = _C.get_num_threads()
    np.random.seed(1)
    expected = np.random.rand()
    np.random.seed(1)
    assert (
        cli.main(
            [
                "train",
                "--model",
                "twolayer",
                "--epochs",
                "1",
                "--quiet",
                "--threads",
                "1",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    assert np.random.rand() == expected
    assert _C.get_num_threads() == threads


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--model", "resnet"], "invalid choice: 'resnet'"),
        (["train", "--epochs", "-3"], "--epochs"),
        (["train", "--epochs", "two"], "--epochs"),
        (["train", "--lr", "0"], "--lr"),
        (["train", "--lr", "-0.1"], "--lr"),
        (["train", "--batch-size", "0"], "--batch-size"),
        (["train", "--threads", "2147483647"], "--threads: must be between 1 and 1024"),
        (["train", "--threads", "0"], "--threads: must be between 1 and 1024"),
        (["train", "--data", "mnist"], "invalid choice: 'mnist'"),
        (["train", "--model", "rnn", "--data", "digits"], "--model rnn does not train on --data"),
        (["train", "--data", "numbers"], "--model convnet does not train on --data numbers"),
        (["train", "--model", "lstm", "--reg", "0.1"], "has no L2 regularization"),
        (["train", "--data", "cifar10", "--data-dir", "/nonexistent/cifar"], "--download"),
        (["train", "--resume", "--out", "/nonexistent/run"], "no run to resume"),
        (["fly"], "invalid choice: 'fly'"),
        ([], "COMMAND"),
    ],
)
@pytest.mark.slow
def test_bad_arguments_give_a_message_not_a_traceback(args, message):
    result = run_cli(*args, timeout=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert message in result.stderr


@pytest.mark.slow
def test_resume_refuses_to_change_the_run(tmp_path):
    out = tmp_path / "run"
    assert (
        run_cli(
            "train", "--model", "twolayer", "--epochs", "1", "--out", str(out), "--quiet"
        ).returncode
        == 0
    )
    result = run_cli("train", "--resume", "--out", str(out), "--lr", "0.5")
    assert result.returncode == 2 and "cannot change --lr" in result.stderr
    assert "Traceback" not in result.stderr
    (out / "checkpoint.npz").write_bytes(b"garbage")
    result = run_cli("train", "--resume", "--out", str(out))
    assert result.returncode == 1 and "cannot resume" in result.stderr
    assert "Traceback" not in result.stderr


def interrupt_after_first_epoch(out, sig):
    """Start a long run, send `sig` once the first epoch is reported, return the result."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "graphnet", "train", "--epochs", "400", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        lines = []
        deadline = time.monotonic() + 90
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("(Epoch 1 /") or time.monotonic() > deadline:
                break
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, "".join(lines) + stdout, stderr


@pytest.mark.slow
def test_sigint_saves_a_checkpoint_and_resume_completes(tmp_path):
    out = tmp_path / "run"
    code, stdout, stderr = interrupt_after_first_epoch(out, signal.SIGINT)
    assert code == 130, stderr
    assert "Traceback" not in stderr
    assert "SIGINT" in stderr and f"graphnet train --out {out} --resume" in stderr
    assert not TEST_LINE.search(stdout)
    state = saved_solver_state(out / "checkpoint.npz")
    assert 1 <= state["epoch"] < 400 and state["iteration"] == len(state["loss_history"])
    assert type(load(out / "checkpoint.npz")).__name__ == "ThreeLayerConvNet"
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]

    result = run_cli("train", "--out", str(out), "--resume", "--epochs", str(state["epoch"] + 1))
    assert result.returncode == 0, result.stderr
    resuming = f"resuming {out}: epoch {state['epoch']}, iteration {state['iteration']}"
    assert resuming in result.stdout
    assert TEST_LINE.search(result.stdout)
    resumed = saved_solver_state(out / "checkpoint.npz")
    assert resumed["epoch"] == state["epoch"] + 1
    assert resumed["loss_history"][: state["iteration"]] == state["loss_history"]


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint(tmp_path):
    out = tmp_path / "run"
    code, _, stderr = interrupt_after_first_epoch(out, signal.SIGTERM)
    assert code == 143, stderr
    assert "SIGTERM" in stderr and "--resume" in stderr and "Traceback" not in stderr
    assert saved_solver_state(out / "checkpoint.npz")["epoch"] >= 1


@pytest.mark.slow
def test_render_a_saved_model(tmp_path):
    if shutil.which("dot") is None:
        pytest.skip("the Graphviz program dot is not installed")
    assert (
        cli.main(
            ["train", "--model", "twolayer", "--epochs", "1", "--quiet", "--out", str(tmp_path)]
        )
        == 0
    )
    target = tmp_path / "drawing.svg"
    assert cli.main(["render", str(tmp_path / "model.npz"), "-o", str(target)]) == 0
    assert "<svg" in target.read_text()
    assert cli.main(["render", str(tmp_path / "missing.npz")]) == 1


@pytest.mark.slow
def test_console_script_is_installed():
    exe = shutil.which("graphnet")
    if exe is None:
        pytest.skip("the graphnet console script is not on PATH")
    result = subprocess.run([exe, "train", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--resume" in result.stdout
