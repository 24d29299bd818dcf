"""`graphnet` as a careless user or a broken machine drives it: mistyped options, damaged
run folders, a full disk, a run that diverges, files killed mid-write. Every failure is
one `graphnet: error:` line with no traceback, and nothing the user had is lost."""

import contextlib
import errno
import json
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

from graphnet import cli, load
from graphnet.training import checkpoint

pytest.importorskip("sklearn")  # the digits data set

QUICK = ["train", "--model", "twolayer", "--epochs", "1", "--quiet", "--threads", "1"]


def run_main(capsys, *args):
    """cli.main(args) in this process: (exit code, stdout, stderr)."""
    code = cli.main(list(map(str, args)))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_cli(*args, timeout=120):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "graphnet", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def assert_one_error_line(err, *fragments):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("graphnet: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A one-epoch run of the two-layer net on the digits: {file name: bytes}."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert cli.main([*QUICK, "--out", str(out)]) == 0
    return {p.name: p.read_bytes() for p in out.iterdir()}


def restore(files, out):
    out.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (out / name).write_bytes(content)
    return out


# ---- arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, suggestion",
    [
        (["train", "--epcohs", "3"], "did you mean --epochs?"),
        (["train", "--bach-size=3", "--lr", "0.1"], "did you mean --batch-size?"),
        (["trian"], "did you mean 'train'?"),
        (["train", "--model", "convent"], "did you mean 'convnet'?"),
        (["train", "--update-rule", "adma"], "did you mean 'adam'?"),
    ],
)
def test_a_mistyped_option_suggests_the_right_one(capsys, args, suggestion):
    with pytest.raises(SystemExit) as info:
        cli.main(args)
    assert info.value.code == 2
    assert suggestion in capsys.readouterr().err


def test_train_help_shows_every_default():
    train = next(a for a in cli.build_parser()._actions if a.dest == "command").choices["train"]
    for action in train._actions:
        if action.option_strings and action.nargs != 0:  # options that take a value
            assert "default:" in action.help, action.option_strings
    epochs = next(a for a in train._actions if a.dest == "epochs")
    assert "default: 15 on digits; 1 on cifar10" in epochs.help


@pytest.mark.slow
def test_data_dir_with_the_digits_is_a_warning(tmp_path, capsys):
    code, out, err = run_main(
        capsys, *QUICK, "--out", tmp_path / "run", "--data-dir", tmp_path / "cifar"
    )
    assert code == 0 and "test accuracy" in out
    assert err.startswith("graphnet: warning: --data-dir and --download are for CIFAR-10")
    assert not (tmp_path / "cifar").exists()


# ---- resuming --------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_resume_with_nothing_left_to_train_writes_nothing(tmp_path, capsys, finished_run):
    out = restore(finished_run, tmp_path / "run")
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    code, stdout, err = run_main(capsys, "train", "--out", out, "--resume")
    assert code == 0 and err == ""
    assert "nothing to train" in stdout and "--epochs with more than 1" in stdout
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    assert {p.name: p.read_bytes() for p in out.iterdir()} == finished_run


@pytest.mark.parametrize(
    "content, message",
    [
        ("[]", "does not hold a run's settings (it holds list)"),
        ("null", "(it holds null)"),
        ("{}", "it lacks 'model'"),
        ('{"model": "twolayer", "data": "digits"}', "it lacks 'update_rule'"),
        ("{not json", "cannot read"),
        ("[" * 100_000, "cannot read"),
    ],
)
def test_a_damaged_run_json_is_one_line(tmp_path, capsys, finished_run, content, message):
    out = restore(finished_run, tmp_path / "run")
    (out / "run.json").write_text(content)
    code, _, err = run_main(capsys, "train", "--out", out, "--resume", "--epochs", "2")
    assert code == 1
    assert_one_error_line(err, "--resume", "run.json", message)


def test_run_json_values_of_the_wrong_kind(tmp_path, capsys, finished_run):
    settings = json.loads(finished_run["run.json"])
    for key, value in [
        ("epochs", -3),
        ("lr", "fast"),
        ("hidden_dim", 0),
        ("seed", 1.5),
        ("model", "resnet"),
    ]:
        out = restore(finished_run, tmp_path / f"run-{key}")
        (out / "run.json").write_text(json.dumps({**settings, key: value}))
        code, _, err = run_main(capsys, "train", "--out", out, "--resume", "--epochs", "2")
        assert code == 1
        assert_one_error_line(err, f"{key!r} is")


@pytest.mark.parametrize("key, value", [("seed", 2**32), ("seed", 10**30)])
def test_a_seed_numpy_cannot_take_is_refused(tmp_path, capsys, finished_run, key, value):
    """The course's models draw their weights from numpy's global generator, seeded with
    it (before: numpy's ValueError and a traceback, on the command line too)."""
    out = restore(finished_run, tmp_path / "run")
    settings = json.loads(finished_run["run.json"])
    (out / "run.json").write_text(json.dumps({**settings, key: value}))
    code, _, err = run_main(capsys, "train", "--out", out, "--resume", "--epochs", "2")
    assert code == 1
    assert_one_error_line(err, "'seed' is", "not an integer in [0, 2**32 - 1]")
    with pytest.raises(SystemExit) as info:
        cli.main([*QUICK, "--out", str(tmp_path / "new"), "--seed", str(value)])
    assert info.value.code == 2
    assert "must be an integer in [0, 2**32 - 1]" in capsys.readouterr().err


@pytest.mark.parametrize("value", [10**30, 2**62, 10**9])
def test_model_sizes_beyond_the_checkpoints_are_refused_before_building(
    tmp_path, capsys, finished_run, value
):
    """Before: 10**30 and 2**62 hidden units failed inside numpy with a traceback, 10**9
    as 'out of memory' after trying, and any size that fit in memory was drawn before the
    checkpoint refused it."""
    out = restore(finished_run, tmp_path / "run")
    settings = json.loads(finished_run["run.json"])
    (out / "run.json").write_text(json.dumps({**settings, "hidden_dim": value}))
    tracemalloc.start()
    try:
        code, _, err = run_main(capsys, "train", "--out", out, "--resume", "--epochs", "2")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code == 1 and peak < 50 << 20
    assert_one_error_line(err, "cannot resume: wrong architecture", f"hidden_dim {value}", "100")


#: What a seeded mutation of run.json puts in place of a setting's value.
HOSTILE_VALUES = [
    2**32, 2**63, 10**30, -1, 0, 1.5, 1e308, 5e-324, float("inf"), float("nan"), "x", "",
    [], [3, 2], {}, None, True, "9" * 10_000, [[[[[[[[1]]]]]]]], {"model": "fc"},
]  # fmt: skip


@pytest.mark.slow
def test_seeded_mutations_of_run_json_are_one_line_or_resume(tmp_path, capsys, finished_run):
    """60 run.json files, each with one setting (a quarter of them three) deleted, replaced
    by a hostile value or another setting's, or a key added: each resume either finds
    nothing to train (exit 0) or stops with one error line (exit 1, argparse's 2), never a
    traceback. (Before, a "model" of [3, 2] failed so: its settings were looked up by it;
    20 of the 60 resume, 40 are refused.)"""
    rng = np.random.default_rng(33)
    settings = json.loads(finished_run["run.json"])
    keys = [*settings, "hidden_dims", "num_filters", "data_dir", "unknown"]
    for i in range(60):
        mutated = dict(settings)
        for _ in range(1 if rng.random() < 0.75 else 3):
            key, how = keys[rng.integers(len(keys))], rng.integers(3)
            if how == 0:
                mutated.pop(key, None)
            elif how == 1:
                mutated[key] = HOSTILE_VALUES[rng.integers(len(HOSTILE_VALUES))]
            else:
                mutated[key] = settings[keys[rng.integers(len(settings))]]
        out = restore(finished_run, tmp_path / f"run-{i}")
        (out / "run.json").write_text(json.dumps(mutated))
        try:
            code, _, err = run_main(capsys, "train", "--out", out, "--resume", "--epochs", "1")
        except SystemExit as exit:
            code, err = exit.code, capsys.readouterr().err
            assert code == 2 and "Traceback" not in err and "error: " in err, (mutated, err)
            continue
        assert code in (0, 1), (mutated, err)
        if code == 1:
            assert_one_error_line(err)


def test_resume_against_a_checkpoint_of_another_model(tmp_path, capsys, finished_run):
    out = restore(finished_run, tmp_path / "run")
    settings = json.loads(finished_run["run.json"])
    (out / "run.json").write_text(json.dumps({**settings, "hidden_dim": 7}))
    code, _, err = run_main(capsys, "train", "--out", out, "--resume", "--epochs", "2")
    assert code == 1
    assert_one_error_line(err, "cannot resume", "wrong architecture")


# ---- render ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_text("my notes\n"), "not a graphnet checkpoint (a text file)"),
        (lambda p: p.write_bytes(b""), "not a graphnet checkpoint (an empty file)"),
        (lambda p: p.mkdir(), "not a regular file"),
        (lambda p: None, "No such file"),
    ],
)
def test_render_of_something_that_is_not_a_checkpoint(tmp_path, capsys, make, message):
    target = tmp_path / "notes.txt"
    make(target)
    code, _, err = run_main(capsys, "render", target)
    assert code == 1
    assert_one_error_line(err, message)


@pytest.mark.parametrize(
    "name, problem",
    [("a\x00b", "a control character (U+0000)"), ("a" * 100_000, "longer than 4096 characters")],
    ids=["NUL", "100,000 characters"],
)
def test_render_of_a_name_dot_cannot_carry_is_one_line(tmp_path, capsys, name, problem):
    """A crafted checkpoint whose node's name holds what DOT cannot carry (Graph refuses
    to build it): refused at load, one line naming the name's problem (before: graphviz's
    CalledProcessError and a traceback; 'Broken pipe')."""
    import graphnet as gn
    from tests.training.test_checkpoint import rewrite

    g = gn.Graph()
    g.relu(g.input("x", shape=(None, 3)), name="r")
    gn.save(g, tmp_path / "g.npz")
    rewrite(tmp_path / "g.npz", lambda arrays, doc: doc["graph"]["nodes"][-1].update(name=name))
    code, _, err = run_main(capsys, "render", tmp_path / "g.npz", "-o", tmp_path / "g.svg")
    assert code == 1
    assert_one_error_line(err, "cannot rebuild the saved graph: node name", problem)
    assert not (tmp_path / "g.svg").exists()


# ---- downloads --------------------------------------------------------------------------------


def test_a_failed_download_names_the_url_and_creates_no_folder(tmp_path, capsys, monkeypatch):
    from graphnet import data

    url = "http://127.0.0.1:9/cifar-10-python.tar.gz"  # nothing listens on the discard port
    real = data.download_cifar10
    monkeypatch.setattr(data, "download_cifar10", lambda root: real(root, url=url, progress=False))
    code, _, err = run_main(
        capsys,
        "train",
        "--data",
        "cifar10",
        "--download",
        "--data-dir",
        tmp_path / "data" / "cifar",
        "--out",
        tmp_path / "run",
    )
    assert code == 1
    assert_one_error_line(err, f"cannot download {url}", "by hand")
    assert os.listdir(tmp_path) == []


# ---- diverging runs ------------------------------------------------------------------------


@pytest.mark.slow
def test_a_run_that_diverges_at_once_stops_with_an_error(tmp_path):
    """--lr 1e30 (once: exit 0, an accuracy, and a checkpoint --resume refused)."""
    result = run_cli(*QUICK, "--lr", "1e30", "--out", tmp_path / "run")
    assert result.returncode == 1
    assert_one_error_line(
        result.stderr, "training diverged at epoch 1", "smaller --lr", "no checkpoint was written"
    )
    assert "test accuracy" not in result.stdout
    assert not (tmp_path / "run" / "checkpoint.npz").exists()


@pytest.mark.slow
def test_divergence_after_a_good_epoch_keeps_its_checkpoint_and_resume_works(
    tmp_path, capsys, monkeypatch
):
    """The loss turns NaN in epoch 2: the run stops with exit 1, the checkpoint of epoch 1
    is kept as it was, and --resume (with the fault gone) continues from it."""
    from graphnet.models import TwoLayerNet

    out = tmp_path / "run"
    real_loss, calls = TwoLayerNet.loss, []

    def loss_turning_nan(self, X, y=None):
        result = real_loss(self, X, y)
        if y is not None:
            calls.append(1)
            if len(calls) > 30:  # epoch 1 is 25 steps
                return np.float32(np.nan), result[1]
        return result

    monkeypatch.setattr(TwoLayerNet, "loss", loss_turning_nan)
    code, stdout, err = run_main(capsys, *QUICK, "--epochs", "3", "--out", out)
    assert code == 1 and "test accuracy" not in stdout
    assert_one_error_line(
        err,
        "training diverged at epoch 2, iteration 31: the loss is nan",
        "checkpoint.npz, is as it was",
    )
    kept = (out / "checkpoint.npz").read_bytes()
    monkeypatch.undo()
    with np.load(out / "checkpoint.npz") as archive:
        assert json.loads(archive[checkpoint.DOC_KEY].tobytes())["solver"]["epoch"] == 1
    assert not [p for p in os.listdir(out) if ".tmp" in p]
    code, stdout, _ = run_main(capsys, "train", "--out", out, "--resume")
    assert code == 0 and "resuming" in stdout and "test accuracy" in stdout
    assert (out / "checkpoint.npz").read_bytes() != kept


# ---- files: atomic, stale temporaries, the closing line ------------------------------------


@pytest.mark.slow
def test_the_closing_line_lists_every_file_written(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = run_main(
        capsys,
        "train",
        "--model",
        "convnet",
        "--epochs",
        "1",
        "--quiet",
        "--threads",
        "1",
        "--out",
        out,
    )
    assert code == 0
    wrote = next(line for line in stdout.splitlines() if line.startswith("wrote "))
    listed = {os.path.basename(p) for p in wrote[len("wrote ") :].split(", ")}
    assert listed == set(os.listdir(out))
    assert {"model.npz", "checkpoint.npz", "run.json", "training.png", "filters.png"} <= listed


@pytest.mark.slow
def test_temporary_files_of_a_killed_write_are_removed_at_the_next_start(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    stale = [".checkpoint.npz.k3j2_x.tmp.npz", ".training.png.abc.tmp.png", ".run.json.z.tmp.json"]
    for name in stale:
        (out / name).write_bytes(b"half a file")
    (out / ".my-notes.tmp").write_text("not graphnet's")
    code, _, err = run_main(capsys, *QUICK, "--out", out)
    assert code == 0
    assert err.count("graphnet: warning: removed") == 3
    assert not any((out / name).exists() for name in stale)
    assert (out / ".my-notes.tmp").exists()


def test_a_failed_picture_write_keeps_the_previous_picture(
    tmp_path, capsys, finished_run, monkeypatch
):
    from graphnet import viz

    out = restore(finished_run, tmp_path / "run")

    def broken_plot(solver, path, **kwargs):
        with open(path, "wb") as f:
            f.write(b"\x89PNG half")
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(viz, "plot_training", broken_plot)
    code, _, err = run_main(capsys, "train", "--out", out, "--resume", "--epochs", "2")
    assert code == 1
    assert_one_error_line(err, "cannot write", "training.png: Input/output error")
    assert (out / "training.png").read_bytes() == finished_run["training.png"]
    assert not [p for p in os.listdir(out) if ".tmp" in p]


@contextlib.contextmanager
def small_disk(folder, size):
    """A tmpfs of `size` bytes mounted on `folder`, if this machine lets the tests mount
    one (root in a container that allows it); else None."""
    folder.mkdir()
    try:
        mounted = (
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                capture_output=True,
            ).returncode
            == 0
        )
    except OSError:
        mounted = False
    try:
        yield folder if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=True)


def test_a_full_disk_is_one_line_and_the_previous_checkpoint_stays_loadable(
    tmp_path, capsys, finished_run, monkeypatch
):
    """In a tmpfs just larger than the run folder where the machine allows mounting one;
    elsewhere ENOSPC is simulated at the checkpoint write."""
    size = sum(len(c) for c in finished_run.values()) + 64 * 1024
    with small_disk(tmp_path / "disk", size) as disk:
        if disk is None:

            def full(file, arrays):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            monkeypatch.setattr(checkpoint, "_write_npz", full)
        out = restore(finished_run, (disk or tmp_path) / "run")
        code, _, err = run_main(capsys, "train", "--out", out, "--resume", "--epochs", "3")
        assert code == 1
        assert_one_error_line(
            err,
            "cannot write",
            "checkpoint.npz: No space left on device",
            "the last checkpoint",
            "is as it was",
        )
        assert (out / "checkpoint.npz").read_bytes() == finished_run["checkpoint.npz"]
        monkeypatch.undo()
        assert type(load(out / "checkpoint.npz")).__name__ == "TwoLayerNet"
        assert not [p for p in os.listdir(out) if ".tmp" in p]


@pytest.mark.parametrize("size", [2**40, 2**64])
def test_a_batch_size_beyond_memory_is_one_line_and_writes_nothing(tmp_path, capsys, size):
    """The Solver refuses a minibatch the machine cannot hold (before: 2**40 ran without
    end, 2**64 raised numpy's OverflowError); the command line says so in one line."""
    out = tmp_path / "run"
    code, _, err = run_main(capsys, *QUICK, "--out", out, "--batch-size", size)
    assert code == 1
    assert_one_error_line(err, f"batch_size {size}", "more than this machine's memory")
    assert not out.exists() or not any(out.iterdir())


def test_an_empty_out_is_refused_and_writes_nothing(tmp_path, capsys, monkeypatch):
    """--out "" (an unset shell variable: --out "$RUN") used to train into the current
    folder, spreading checkpoint.npz, run.json and the pictures among whatever is there;
    the current folder is --out ., said outright."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        cli.main([*QUICK, "--out", ""])
    assert info.value.code == 2
    assert "--out: must name a folder, got an empty string" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_an_empty_render_output_is_refused_as_train_refuses_an_empty_out(
    tmp_path, capsys, monkeypatch
):
    """render -o "" (an unset shell variable: -o "$SVG") used to draw into the checkpoint's
    name with .svg as if -o were left out, the way --out "" trained into the current
    folder; both refuse an empty path now, each saying what to write instead."""
    import graphnet as gn

    g = gn.Graph()
    g.relu(g.input("x", shape=(None, 3)), name="r")
    gn.save(g, tmp_path / "g.npz")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        cli.main(["render", "g.npz", "-o", ""])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "-o/--output: must name a file, got an empty string (without -o the drawing" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.npz"]
