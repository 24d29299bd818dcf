"""graphnet.save / graphnet.load: safe, atomic, all-or-nothing checkpoints and exact resume."""

import io
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

from graphnet.training import checkpoint
from graphnet.training.checkpoint import CheckpointError, load, save
from graphnet import Graph
from graphnet.models import FullyConnectedNet, ThreeLayerConvNet, TwoLayerNet
from graphnet.solver import Solver


pytestmark = pytest.mark.usefixtures("one_kernel_thread")


def blobs(n_train=60, n_val=30, dim=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim)) * 3

    def split(n):
        y = rng.integers(classes, size=n)
        return (centres[y] + rng.standard_normal((n, dim))).astype(np.float32), y

    (X_train, y_train), (X_val, y_val) = split(n_train), split(n_val)
    return dict(X_train=X_train, y_train=y_train, X_val=X_val, y_val=y_val)


def fc_model(seed=0, **kwargs):
    np.random.seed(seed)
    options = dict(use_batchnorm=True, dropout=0.2, reg=1e-3, weight_scale=0.1)
    options.update(kwargs)
    return FullyConnectedNet([16, 12], input_dim=8, num_classes=3, **options)


def trained_solver(tmp_path=None, epochs=2, **kwargs):
    model = fc_model()
    solver = Solver(
        model,
        blobs(),
        update_rule="adam",
        optim_config={"learning_rate": 5e-3},
        lr_decay=0.9,
        num_epochs=epochs,
        batch_size=10,
        num_train_samples=25,
        verbose=False,
        seed=11,
        **kwargs,
    )
    solver.train()
    return model, solver


def snapshot(model):
    """Everything a load could change: params and node states, deep-copied."""
    params = {k: v.copy() for k, v in model.params.items()}
    states = {}
    for node in model.graph.nodes:
        for key, value in node.state.items():
            states[node.name, key] = (
                value.copy() if isinstance(value, np.ndarray) else value.bit_generator.state
            )
    return params, states


def assert_same(a, b):
    assert a[0].keys() == b[0].keys() and a[1].keys() == b[1].keys()
    for k in a[0]:
        np.testing.assert_array_equal(a[0][k], b[0][k])
        assert a[0][k].dtype == b[0][k].dtype
    for k in a[1]:
        if isinstance(a[1][k], np.ndarray):
            np.testing.assert_array_equal(a[1][k], b[1][k])
        else:
            assert a[1][k] == b[1][k]


def assert_refused_untouched(path, match):
    """Loading path into a fresh model raises CheckpointError matching `match`, and the
    model keeps every param and state it had."""
    target = fc_model(seed=1)
    before = snapshot(target)
    with pytest.raises(CheckpointError, match=match):
        load(path, into=target)
    assert_same(snapshot(target), before)


# --------------------------------------------------------------------------- round trips


def test_model_round_trip_rebuilds_the_model(tmp_path):
    model, _ = trained_solver()
    path = save(model, tmp_path / "model.npz")
    state = np.random.get_state()
    restored = load(path)
    after = np.random.get_state()
    assert np.array_equal(state[1], after[1]) and state[2] == after[2]  # global state untouched
    assert type(restored) is FullyConnectedNet and restored.config == model.config
    assert_same(snapshot(model), snapshot(restored))
    X = blobs()["X_val"]
    np.testing.assert_array_equal(restored.loss(X), model.loss(X))
    # the dropout stream continues identically
    y = blobs()["y_val"]
    np.testing.assert_array_equal(restored.loss(X, y)[1]["W1"], model.loss(X, y)[1]["W1"])


@pytest.mark.parametrize(
    "make",
    [
        lambda: TwoLayerNet(input_dim=5, hidden_dim=4, num_classes=3, reg=0.5),
        lambda: ThreeLayerConvNet(
            input_dim=(1, 6, 6), num_filters=2, filter_size=3, hidden_dim=4, dtype=np.float64
        ),
    ],
)
def test_other_models_round_trip(tmp_path, make):
    model = make()
    restored = load(save(model, tmp_path / "m.npz"))
    assert type(restored) is type(model) and restored.config == model.config
    assert restored.reg == model.reg
    assert_same(snapshot(model), snapshot(restored))


def test_load_into_existing_model(tmp_path):
    model, _ = trained_solver()
    save(model, tmp_path / "m.npz")
    fresh = fc_model(seed=99)
    assert load(tmp_path / "m.npz", into=fresh) is fresh
    assert_same(snapshot(model), snapshot(fresh))


def test_bare_graph_round_trip(tmp_path):
    g = Graph()
    x = g.input("x", shape=(None, 3))
    w = g.param("w", np.arange(6.0).reshape(3, 2))
    s = g.sum(g.relu(g.affine(x, w, np.zeros(2)) * 2.0), axis=(0, 1), name="out")
    restored = load(save(g, tmp_path / "g.npz"))
    assert isinstance(restored, Graph)
    assert [(n.name, n.op) for n in restored.nodes] == [(n.name, n.op) for n in g.nodes]
    feed = np.array([[1.0, -2.0, 0.5]])
    assert restored.run("out", x=feed) == g.run(s, x=feed)


def test_solver_round_trip(tmp_path):
    model, solver = trained_solver()
    save(solver, tmp_path / "s.npz")
    fresh_model = fc_model(seed=5)
    fresh = Solver(
        fresh_model, blobs(), update_rule="adam", num_epochs=2, batch_size=10, verbose=False, seed=0
    )
    load(tmp_path / "s.npz", into=fresh)
    assert_same(snapshot(model), snapshot(fresh_model))
    for attr in (
        "epoch",
        "iteration",
        "best_val_acc",
        "loss_history",
        "train_acc_history",
        "val_acc_history",
    ):
        assert getattr(fresh, attr) == getattr(solver, attr), attr
    assert fresh.rng.bit_generator.state == solver.rng.bit_generator.state
    for name, config in solver.optim_configs.items():
        restored = fresh.optim_configs[name]
        assert restored.keys() == config.keys()
        assert restored["t"] == config["t"] and type(restored["t"]) is int
        assert restored["learning_rate"] == config["learning_rate"]  # exact, via JSON repr
        for key in ("m", "v"):
            np.testing.assert_array_equal(restored[key], config[key])
            assert restored[key].dtype == np.float32 and restored[key].flags.writeable
        np.testing.assert_array_equal(fresh.best_params[name], solver.best_params[name])
    # a solver checkpoint without `into` gives back the model
    assert type(load(tmp_path / "s.npz")) is FullyConnectedNet


def test_file_is_plain_npz_with_a_json_document(tmp_path):
    _, solver = trained_solver(epochs=1)
    save(solver, tmp_path / "s.npz")
    with np.load(tmp_path / "s.npz", allow_pickle=False) as archive:
        doc = json.loads(archive[checkpoint.DOC_KEY].tobytes())
        assert all(archive[k].dtype != object for k in archive.files)
    assert doc["format"] == "graphnet-checkpoint" and doc["version"] == checkpoint.VERSION
    assert doc["kind"] == "solver" and doc["model"]["class"] == "FullyConnectedNet"
    assert doc["solver"]["update_rule"] == "adam"
    assert doc["solver"]["rng"]["bit_generator"] == "PCG64"


# --------------------------------------------------------------------------- resume


def fresh_solver(epochs, seed=11, **kwargs):
    model = fc_model(seed=123)  # other initial weights: the checkpoint must replace them
    return model, Solver(
        model,
        blobs(),
        update_rule="adam",
        optim_config={"learning_rate": 5e-3},
        lr_decay=0.9,
        num_epochs=epochs,
        batch_size=10,
        num_train_samples=25,
        verbose=False,
        seed=seed,
        **kwargs,
    )


def test_resume_at_an_epoch_boundary_is_bitwise_identical(tmp_path):
    straight_model, straight = trained_solver(epochs=2)
    # the same run, checkpointing each epoch; resume from epoch 1 in a fresh process state
    trained_solver(epochs=2, checkpoint_name=str(tmp_path / "run"))
    model, solver = fresh_solver(epochs=2, seed=None)
    load(tmp_path / "run_epoch_1.npz", into=solver)
    assert solver.epoch == 1 and solver.iteration == 6
    solver.train()
    assert solver.loss_history == straight.loss_history
    assert solver.val_acc_history == straight.val_acc_history
    assert_same(snapshot(model), snapshot(straight_model))


def test_resume_mid_epoch_is_bitwise_identical(tmp_path):
    straight_model, straight = trained_solver(epochs=3)
    # the same run (same initial weights and seed), stopped in the middle of epoch 2
    model = fc_model(seed=0)
    solver = Solver(
        model,
        blobs(),
        update_rule="adam",
        optim_config={"learning_rate": 5e-3},
        lr_decay=0.9,
        num_epochs=3,
        batch_size=10,
        num_train_samples=25,
        verbose=False,
        seed=11,
    )
    original = model.loss

    def stop_after_step_8(X, y=None):
        if y is not None and len(solver.loss_history) == 7:
            solver.request_stop()  # as the CLI's SIGINT handler does
        return original(X, y)

    model.loss = stop_after_step_8
    solver.train()
    assert solver.interrupted and solver.iteration == 8 and solver.epoch == 1
    save(solver, tmp_path / "mid.npz")
    resumed_model, resumed = fresh_solver(epochs=3, seed=None)
    load(tmp_path / "mid.npz", into=resumed)
    resumed.train()
    assert resumed.loss_history == straight.loss_history
    assert resumed.train_acc_history == straight.train_acc_history
    assert_same(snapshot(resumed_model), snapshot(straight_model))


# --------------------------------------------------------------------------- atomic write


def test_crash_mid_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model, _ = trained_solver(epochs=1)
    path = tmp_path / "model.npz"
    save(model, path)
    before = path.read_bytes()

    def crash(file, arrays):
        file.write(b"PK\x03\x04 half an archive")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(checkpoint, "_write_npz", crash)
    with pytest.raises(OSError, match="simulated"):
        save(fc_model(seed=7), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.npz"]  # no temporary file left behind
    monkeypatch.undo()
    assert_same(snapshot(load(path)), snapshot(model))


def test_interrupt_mid_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = fc_model()
    path = tmp_path / "model.npz"
    save(model, path)
    real = checkpoint._write_npz

    def interrupted(file, arrays):
        real(file, arrays)
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "_write_npz", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save(fc_model(seed=3), path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["model.npz"]
    assert_same(snapshot(load(path)), snapshot(model))


# --------------------------------------------------------------------------- refusing to load


def test_truncated_file_leaves_the_model_untouched(tmp_path):
    model, _ = trained_solver(epochs=1)
    path = tmp_path / "m.npz"
    save(model, path)
    data = path.read_bytes()
    target = fc_model(seed=42)
    before = snapshot(target)
    for cut in (0, 10, len(data) // 2, len(data) - 10):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="m.npz"):
            load(path, into=target)
        assert_same(snapshot(target), before)


def test_corrupted_bytes_are_detected(tmp_path):
    model = fc_model()
    path = tmp_path / "m.npz"
    save(model, path)
    data = bytearray(path.read_bytes())
    offset = data.index(b"param/W1.npy") + 200  # inside W1's stored bytes
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    assert_refused_untouched(path, "corrupted")


def _status_kb(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


@pytest.mark.slow
def test_zip_bomb_is_refused_before_it_inflates(tmp_path):
    """A valid checkpoint plus one deflated member of 400 MB of zeros (about 0.4 MB on
    disk): refused from the archive's directory, without inflating it."""
    model = fc_model()
    save(model, tmp_path / "good.npz")
    with np.load(tmp_path / "good.npz") as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays["param/W1"] = np.zeros(100_000_000, np.float32)
    np.savez_compressed(tmp_path / "bomb.npz", **arrays)
    del arrays
    assert os.path.getsize(tmp_path / "bomb.npz") < 2_000_000
    rss_before = _status_kb("VmRSS")
    assert_refused_untouched(tmp_path / "bomb.npz", "zip bomb")
    assert _status_kb("VmRSS") - rss_before < 100_000  # KB: nowhere near 400 MB


def test_array_header_claiming_more_than_the_member_holds(tmp_path):
    """An .npy member whose header declares 10^11 x 16 floats over a few bytes of data."""
    model = fc_model()
    save(model, tmp_path / "good.npz")
    lying = io.BytesIO()
    np.lib.format.write_array_header_2_0(
        lying, {"descr": "<f4", "fortran_order": False, "shape": (10**11, 16)}
    )
    lying.write(b"\0" * 64)
    with (
        zipfile.ZipFile(tmp_path / "good.npz") as good,
        zipfile.ZipFile(tmp_path / "lying.npz", "w") as out,
    ):
        for name in good.namelist():
            out.writestr(name, lying.getvalue() if name == "param/W1.npy" else good.read(name))
    assert_refused_untouched(tmp_path / "lying.npz", "lying.npz")


def test_wrong_architecture_leaves_the_model_untouched(tmp_path):
    model, solver = trained_solver(epochs=1)
    save(model, tmp_path / "m.npz")
    save(solver, tmp_path / "s.npz")
    wider = FullyConnectedNet([16, 13], input_dim=8, num_classes=3, use_batchnorm=True, dropout=0.2)
    before = snapshot(wider)
    with pytest.raises(
        CheckpointError,
        match=r"wrong architecture.*'W2'.*\(12, 3\)|"
        r"wrong architecture.*W2",
    ):
        load(tmp_path / "m.npz", into=wider)
    assert_same(snapshot(wider), before)
    no_bn = fc_model(use_batchnorm=False)
    before = snapshot(no_bn)
    with pytest.raises(CheckpointError, match="gamma1"):
        load(tmp_path / "m.npz", into=no_bn)
    assert_same(snapshot(no_bn), before)
    # a solver whose model differs keeps its model and its own state
    other = Solver(no_bn, blobs(), update_rule="adam", verbose=False)
    with pytest.raises(CheckpointError, match="wrong architecture"):
        load(tmp_path / "s.npz", into=other)
    assert_same(snapshot(no_bn), before) and other.iteration == 0


def test_wrong_dtype_and_wrong_update_rule(tmp_path):
    model, solver = trained_solver(epochs=1)
    save(solver, tmp_path / "s.npz")
    double = fc_model(dtype=np.float64)
    with pytest.raises(CheckpointError, match="wrong dtype.*float32.*float64"):
        load(tmp_path / "s.npz", into=double)
    sgd = Solver(fc_model(), blobs(), update_rule="sgd", verbose=False)
    before = snapshot(sgd.model)
    with pytest.raises(CheckpointError, match="update_rule 'adam'"):
        load(tmp_path / "s.npz", into=sgd)
    assert_same(snapshot(sgd.model), before) and sgd.iteration == 0


def rewrite(path, change):
    """Rewrite checkpoint `path` with change(arrays, doc) applied (doc: the parsed JSON),
    as a hostile or damaged file would be; graphnet.save itself refuses to write most of
    what the tests put there."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    doc = json.loads(arrays.pop(checkpoint.DOC_KEY).tobytes())
    change(arrays, doc)
    arrays[checkpoint.DOC_KEY] = np.frombuffer(json.dumps(doc).encode(), np.uint8)
    np.savez(path, **arrays)


def test_non_finite_values_are_refused(tmp_path):
    save(fc_model(), tmp_path / "m.npz")
    rewrite(tmp_path / "m.npz", lambda arrays, doc: arrays["param/W2"].fill(np.nan))
    assert_refused_untouched(tmp_path / "m.npz", "param/W2.*NaN")


def test_save_refuses_non_finite_params_and_keeps_the_good_checkpoint(tmp_path):
    model = fc_model()
    save(model, tmp_path / "m.npz")
    good = (tmp_path / "m.npz").read_bytes()
    model.params["W2"] = np.full_like(model.params["W2"], np.inf)
    with pytest.raises(CheckpointError, match=r"refusing to save: param/W2 holds Inf"):
        save(model, tmp_path / "m.npz")
    assert (tmp_path / "m.npz").read_bytes() == good
    assert os.listdir(tmp_path) == ["m.npz"]  # no temporary file left either


def test_other_files_are_refused(tmp_path):
    np.savez(tmp_path / "plain.npz", a=np.zeros(3))
    with pytest.raises(CheckpointError, match="not a graphnet checkpoint"):
        load(tmp_path / "plain.npz")
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(CheckpointError, match="not a graphnet checkpoint"):
        load(tmp_path / "single.npy")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(CheckpointError):
        load(tmp_path / "text.npz")
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.npz")


def test_future_version_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "VERSION", 99)
    save(fc_model(), tmp_path / "m.npz")
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match="version 99.*newer"):
        load(tmp_path / "m.npz")


class _Evil:
    """Unpickling this creates the marker file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Evil(marker))
    pickle.loads(payload).close()  # sanity: the payload really does run when unpickled
    assert marker.exists()
    marker.unlink()

    disguised = tmp_path / "checkpoint.npz"
    disguised.write_bytes(payload)
    with pytest.raises(CheckpointError, match="pickle"):
        load(disguised)
    assert not marker.exists()

    # an .npz holding an object array (loading it would unpickle), next to a valid document
    model = fc_model()
    save(model, tmp_path / "good.npz")
    with np.load(tmp_path / "good.npz") as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays["param/W1"] = np.array([_Evil(marker)], dtype=object)
    np.savez(tmp_path / "evil.npz", **arrays)
    target = fc_model(seed=1)
    before = snapshot(target)
    with pytest.raises(CheckpointError, match="pickle"):
        load(tmp_path / "evil.npz", into=target)
    assert not marker.exists()
    assert_same(snapshot(target), before)


def test_unknown_model_class_needs_into(tmp_path):
    class MyNet(FullyConnectedNet):
        pass

    np.random.seed(0)
    model = MyNet([4], input_dim=8, num_classes=3)
    save(model, tmp_path / "m.npz")
    with pytest.raises(CheckpointError, match="MyNet.*into="):
        load(tmp_path / "m.npz")
    target = FullyConnectedNet([4], input_dim=8, num_classes=3)
    load(tmp_path / "m.npz", into=target)
    np.testing.assert_array_equal(target.params["W1"], model.params["W1"])


def test_save_rejects_other_objects(tmp_path):
    with pytest.raises(TypeError, match="model"):
        save({"W1": np.zeros(3)}, tmp_path / "x.npz")
    with pytest.raises(TypeError, match="into"):
        load(save(fc_model(), tmp_path / "m.npz"), into={"W1": 1})


def test_a_course_edition_model_loads_without_into(tmp_path):
    """graphnet.cs231n's FullyConnectedNet (the 2018+ arguments) shares its config with
    graphnet.models': a checkpoint of it rebuilds as that, with the same scores."""
    from graphnet.cs231n.classifiers.fc_net import FullyConnectedNet as LaterEdition

    np.random.seed(4)
    model = LaterEdition(
        [6], input_dim=5, num_classes=3, dropout=0.75, normalization="layernorm", seed=2
    )
    loaded = load(save(model, tmp_path / "later.npz"))
    X = np.random.randn(3, 5)
    np.testing.assert_array_equal(loaded.loss(X), model.loss(X))
    assert loaded.config == model.config
