"""graphnet.Solver: the course's training loop (its sampling, its printed lines, its
`model.params = best_params`), and graphnet's additions (a seeded stream of its own,
resuming, a progress bar on a terminal)."""

import builtins

import numpy as np
import pytest

from graphnet import GraphError, optim
from graphnet.models import FullyConnectedNet, TwoLayerNet
from graphnet.solver import Solver
from graphnet.training.checkpoint import load, save


pytestmark = pytest.mark.usefixtures("one_kernel_thread")


def blobs(n_train=60, n_val=30, dim=8, classes=3, seed=0, dtype=np.float32):
    """Separable Gaussian blobs: a problem a small net learns in a few steps."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim)) * 3

    def split(n):
        y = rng.integers(classes, size=n)
        return (centres[y] + rng.standard_normal((n, dim))).astype(dtype), y

    (X_train, y_train), (X_val, y_val) = split(n_train), split(n_val)
    return dict(X_train=X_train, y_train=y_train, X_val=X_val, y_val=y_val)


def make_model(seed=0, **kwargs):
    np.random.seed(seed)
    return FullyConnectedNet([16], input_dim=8, num_classes=3, weight_scale=0.1, **kwargs)


def test_unknown_keyword_rejected():
    with pytest.raises(ValueError, match="Unrecognized arguments.*learning_rate"):
        Solver(make_model(), blobs(), learning_rate=1e-3)


def test_invalid_update_rule_rejected():
    with pytest.raises(ValueError, match="Invalid update_rule"):
        Solver(make_model(), blobs(), update_rule="nesterov")
    with pytest.raises(ValueError, match="update_rule"):
        Solver(make_model(), blobs(), update_rule=42)


def test_histories_lengths_and_best_params_restored():
    data = blobs()
    model = make_model()
    solver = Solver(
        model,
        data,
        update_rule="adam",
        optim_config={"learning_rate": 1e-2},
        num_epochs=4,
        batch_size=20,
        verbose=False,
        seed=0,
    )
    solver.train()
    per_epoch = 60 // 20
    assert solver.iterations_per_epoch == per_epoch
    assert len(solver.loss_history) == solver.iteration == 4 * per_epoch
    assert len(solver.train_acc_history) == len(solver.val_acc_history) == 4 + 1
    assert solver.epoch == 4
    assert solver.best_val_acc == max(solver.val_acc_history)
    assert set(solver.best_params) == set(model.params)
    for name, value in solver.best_params.items():
        np.testing.assert_array_equal(model.params[name], value)
    assert solver.check_accuracy(data["X_val"], data["y_val"]) == solver.best_val_acc
    assert solver.loss_history[-1] < solver.loss_history[0]


def test_best_params_are_a_snapshot_not_the_live_arrays():
    data = blobs()
    model = make_model()
    solver = Solver(
        model,
        data,
        update_rule="sgd",
        optim_config={"learning_rate": 0.5},
        num_epochs=3,
        batch_size=20,
        verbose=False,
        seed=1,
    )
    solver.train()
    for name, value in solver.best_params.items():
        assert not np.shares_memory(value, model.params[name])


def test_per_parameter_optimizer_state_and_lr_decay():
    config = {"learning_rate": 1e-2}
    model = make_model()
    solver = Solver(
        model,
        blobs(),
        update_rule="adam",
        optim_config=config,
        lr_decay=0.5,
        num_epochs=3,
        batch_size=20,
        verbose=False,
        seed=0,
    )
    assert all(c is not config and c == config for c in solver.optim_configs.values())
    solver.train()
    assert config == {"learning_rate": 1e-2}  # the caller's dict is left alone
    assert len({id(c) for c in solver.optim_configs.values()}) == len(model.params)
    for name, c in solver.optim_configs.items():
        assert c["learning_rate"] == pytest.approx(1e-2 * 0.5**3)
        assert c["t"] == solver.iteration
        assert c["m"].shape == model.params[name].shape
        assert c["m"].dtype == np.float32  # float32 training stays float32
    assert all(v.dtype == np.float32 for v in model.params.values())


def test_callable_update_rule():
    calls = []

    def rule(w, dw, config):
        calls.append(w.shape)
        return optim.sgd(w, dw, config)

    solver = Solver(
        make_model(), blobs(), update_rule=rule, num_epochs=1, batch_size=30, verbose=False
    )
    solver.train()
    assert len(calls) == 2 * 4  # 2 iterations x 4 params (W1, b1, W2, b2)
    assert solver.update_rule is rule


def test_same_seed_same_run_and_numpy_global_state_untouched():
    data = blobs()
    runs = []
    for _ in range(2):
        model = make_model(seed=3, dropout=0.3)
        state = np.random.get_state()
        solver = Solver(
            model,
            data,
            update_rule="rmsprop",
            num_epochs=2,
            batch_size=10,
            num_train_samples=20,
            verbose=False,
            seed=7,
        )
        solver.train()
        after = np.random.get_state()
        assert after[0] == state[0] and np.array_equal(after[1], state[1]) and after[2] == state[2]
        runs.append((solver.loss_history, solver.train_acc_history, dict(model.params)))
    assert runs[0][0] == runs[1][0] and runs[0][1] == runs[1][1]
    for name in runs[0][2]:
        np.testing.assert_array_equal(runs[0][2][name], runs[1][2][name])
    other = Solver(
        make_model(seed=3, dropout=0.3),
        data,
        update_rule="rmsprop",
        num_epochs=2,
        batch_size=10,
        verbose=False,
        seed=8,
    )
    other.train()
    assert other.loss_history != runs[0][0]


def test_check_accuracy_subsamples_and_batches():
    data = blobs(n_val=250)
    model = TwoLayerNet(input_dim=8, hidden_dim=10, num_classes=3)
    solver = Solver(model, data, verbose=False, seed=0)
    seen = []
    original = model.loss

    def spy(X, y=None):
        seen.append(len(X))
        return original(X, y)

    model.loss = spy
    acc = solver.check_accuracy(data["X_val"], data["y_val"], batch_size=100)
    assert seen == [100, 100, 50] and 0 <= acc <= 1
    seen.clear()
    solver.check_accuracy(data["X_val"], data["y_val"], num_samples=30, batch_size=100)
    assert seen == [30]
    scores = original(data["X_val"])
    expected = np.mean(np.argmax(scores, axis=1) == data["y_val"])
    assert acc == pytest.approx(expected)


def test_request_stop_returns_after_the_current_iteration():
    model = make_model()
    solver = Solver(model, blobs(), num_epochs=5, batch_size=10, verbose=False, seed=0)
    original = model.loss

    def loss(X, y=None):
        if y is not None and len(solver.loss_history) == 7:
            solver.request_stop()  # as a signal handler would, in the middle of a step
        return original(X, y)

    model.loss = loss
    solver.train()
    assert solver.interrupted
    assert solver.iteration == len(solver.loss_history) == 8
    assert solver.epoch == 1
    model.loss = original
    solver.train()  # continues where it stopped
    assert not solver.interrupted
    assert solver.iteration == 30 and len(solver.train_acc_history) == 6


def test_plain_prints_when_not_a_terminal(capsys):
    solver = Solver(make_model(), blobs(), num_epochs=2, batch_size=20, print_every=2, seed=0)
    solver.train()
    out = capsys.readouterr().out
    assert "(Iteration 1 / 6) loss:" in out and "(Iteration 3 / 6) loss:" in out
    assert "(Epoch 0 / 2) train acc:" in out and "(Epoch 2 / 2) train acc:" in out
    assert "\r" not in out  # no progress bar in a pipe


def test_progress_bar_in_a_terminal(monkeypatch, capsys):
    import graphnet.training.solver as solver_module

    monkeypatch.setattr(solver_module, "_stdout_is_a_terminal", lambda: True)
    solver = Solver(make_model(), blobs(), num_epochs=1, batch_size=20, seed=0)
    solver.train()
    out = capsys.readouterr().out
    assert "(Epoch 1 / 1) train acc:" in out and "3/3" in out
    assert "(Iteration" not in out
    Solver(make_model(), blobs(), num_epochs=1, batch_size=20, seed=0, progress_bar=False).train()
    assert "(Iteration 1 / 3) loss:" in capsys.readouterr().out


def test_a_notebook_gets_the_courses_lines(monkeypatch, capsys):
    class ZMQInteractiveShell:  # what get_ipython() returns in a Jupyter kernel
        pass

    monkeypatch.setattr(builtins, "get_ipython", ZMQInteractiveShell, raising=False)
    solver = Solver(make_model(), blobs(), num_epochs=2, batch_size=20, print_every=2, seed=0)
    solver.train()
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(")")[0] for line in lines] == [
        "(Iteration 1 / 6",
        "(Epoch 0 / 2",
        "(Iteration 3 / 6",
        "(Epoch 1 / 2",
        "(Iteration 5 / 6",
        "(Epoch 2 / 2",
    ]
    assert lines[0].startswith("(Iteration 1 / 6) loss: ")
    assert lines[1].startswith("(Epoch 0 / 2) train acc: ") and "; val_acc: " in lines[1]


def test_a_progress_bar_when_asked_for(capsys):
    Solver(make_model(), blobs(), num_epochs=1, batch_size=20, seed=0, progress_bar=True).train()
    out = capsys.readouterr().out
    assert "3/3" in out and "(Iteration" not in out
    with pytest.raises(ValueError, match="progress_bar must be None"):
        Solver(make_model(), blobs(), progress_bar="yes")


# ----- the course's sampling: numpy's global random state --------------------------------


def course_draws(num_train, batch_size, num_epochs, num_train_samples):
    """The minibatches the course's Solver draws after np.random.seed, in order, with the
    training-accuracy subsamples in between (its train(), _step() and check_accuracy();
    the validation set, num_val_samples=None, is checked whole: no draw)."""
    per_epoch = max(num_train // batch_size, 1)
    batches = []
    for t in range(num_epochs * per_epoch):
        batches.append(np.random.choice(num_train, batch_size))
        if (t == 0 or (t + 1) % per_epoch == 0) and num_train > num_train_samples:
            np.random.choice(num_train, num_train_samples)
    return batches


def test_without_a_seed_the_minibatches_are_the_courses_draws():
    data = blobs(n_train=60)
    model = make_model()
    seen = []
    original = model.loss

    def spy(X, y=None):
        if y is not None:
            seen.append(y.copy())
        return original(X, y)

    model.loss = spy
    np.random.seed(231)
    Solver(model, data, num_epochs=3, batch_size=16, num_train_samples=25, verbose=False).train()
    np.random.seed(231)
    expected = course_draws(60, 16, 3, 25)
    assert len(seen) == len(expected) == 9
    for labels, batch in zip(seen, expected):
        np.testing.assert_array_equal(labels, data["y_train"][batch])


def test_np_random_seed_repeats_a_run_without_a_seed():
    runs = []
    for _ in range(2):
        np.random.seed(5)
        model = FullyConnectedNet([16], input_dim=8, num_classes=3, weight_scale=0.1)
        solver = Solver(
            model,
            blobs(),
            update_rule="adam",
            num_epochs=2,
            batch_size=10,
            num_train_samples=20,
            verbose=False,
        )
        solver.train()
        runs.append((solver.loss_history, solver.train_acc_history, model.params["W1"].copy()))
    assert runs[0][:2] == runs[1][:2]
    np.testing.assert_array_equal(runs[0][2], runs[1][2])


def test_an_unseeded_run_resumes_exactly_from_a_checkpoint(tmp_path):
    def run(epochs, stop_after=None):
        model = make_model(seed=4)  # seeds numpy's global state, then draws the weights
        solver = Solver(
            model,
            blobs(),
            update_rule="adam",
            num_epochs=epochs,
            batch_size=10,
            num_train_samples=25,
            verbose=False,
        )
        if stop_after is not None:
            original = model.loss

            def loss(X, y=None):
                if y is not None and len(solver.loss_history) == stop_after - 1:
                    solver.request_stop()
                return original(X, y)

            model.loss = loss
        solver.train()
        return model, solver

    straight_model, straight = run(3)
    _, stopped = run(3, stop_after=8)
    assert stopped.interrupted and stopped.iteration == 8
    save(stopped, tmp_path / "mid.npz")
    np.random.seed(99)  # whatever numpy's state is now, the checkpoint holds the run's
    resumed_model = make_model(seed=123)
    resumed = Solver(
        resumed_model,
        blobs(),
        update_rule="adam",
        num_epochs=3,
        batch_size=10,
        num_train_samples=25,
        verbose=False,
    )
    load(tmp_path / "mid.npz", into=resumed)
    resumed.train()
    assert resumed.loss_history == straight.loss_history
    assert resumed.train_acc_history == straight.train_acc_history
    for name, value in straight_model.params.items():
        np.testing.assert_array_equal(resumed_model.params[name], value)


# ----- model.params, as the course's Solver and notebooks use it -------------------------


def test_model_params_assignment_as_the_courses_solver_ends_train():
    model = make_model()
    new = {
        name: np.full(value.shape, 0.5, dtype=np.float64) for name, value in model.params.items()
    }
    model.params = new
    for value in model.params.values():
        np.testing.assert_array_equal(value, 0.5)
        assert value.dtype == np.float32  # the model's dtype, as for model.params[k] = v
    scores = model.loss(blobs()["X_val"][:2])
    assert np.all(np.isfinite(scores))
    model.params = model.params  # assigning the same dict changes nothing


def test_model_params_assignment_checks_everything_before_changing_anything():
    model = make_model()
    before = {name: value.copy() for name, value in model.params.items()}
    good = {name: np.zeros_like(value) for name, value in before.items()}
    bad_shape = {**good, "W2": np.zeros((3, 3))}
    with pytest.raises(
        GraphError,
        match=r"param 'W2' is a float array of shape \(16, 3\), "
        r"got float64 \(3, 3\); no param was changed",
    ):
        model.params = bad_shape
    with pytest.raises(GraphError, match="missing: b2; not params of the model: W9"):
        model.params = {**{k: v for k, v in good.items() if k != "b2"}, "W9": np.zeros(2)}
    with pytest.raises(GraphError, match="must be assigned a dict"):
        model.params = [np.zeros(3)]
    with pytest.raises(GraphError, match="param 'b1' is a float array"):
        model.params = {**good, "b1": np.zeros(16, dtype=np.int64)}
    for name, value in model.params.items():
        np.testing.assert_array_equal(value, before[name])


def test_model_params_behaves_as_a_dict():
    model = make_model()
    assert list(model.params) == list(model.params.keys()) == ["W1", "b1", "W2", "b2"]
    assert dict(model.params.items()).keys() == model.params.keys()
    assert len(model.params) == 4 and "W1" in model.params and model.params.get("W9") is None
    assert model.params is model.graph.params
    # a notebook keeps its best params with copy() and puts them back by assignment
    best = {name: value.copy() for name, value in model.params.copy().items()}
    assert type(model.params.copy()) is dict
    model.params["W1"] = np.zeros_like(best["W1"])
    model.params = best
    np.testing.assert_array_equal(model.params["W1"], best["W1"])


def test_checkpoint_each_epoch(tmp_path):
    from graphnet.training.checkpoint import load

    model = make_model()
    solver = Solver(
        model,
        blobs(),
        update_rule="adam",
        num_epochs=2,
        batch_size=20,
        checkpoint_name=str(tmp_path / "run"),
        verbose=False,
        seed=0,
    )
    solver.train()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run_epoch_1.npz", "run_epoch_2.npz"]
    restored = load(tmp_path / "run_epoch_2.npz")
    assert type(restored) is FullyConnectedNet


def test_a_checkpoint_name_too_long_for_the_file_system_is_refused_when_built(tmp_path):
    """At 10 epochs, the last checkpoint's temporary name (. + name + _epoch_10.npz + . +
    8 random characters + .tmp.npz) fits the file system's 255 bytes up to a name of 224
    bytes; one byte more, or a folder name of more than 255, used to fail only at the end
    of the first epoch (OSError ENAMETOOLONG), now when the Solver is built."""
    settings = dict(num_epochs=10, batch_size=30, verbose=False, seed=0)
    for path, length in ((tmp_path / ("r" * 225), 256), (tmp_path / ("r" * 256) / "run", 256)):
        with pytest.raises(ValueError, match=f"checkpoint_name: .* {length} bytes .* the 255"):
            Solver(make_model(), blobs(), checkpoint_name=str(path), **settings)
    assert list(tmp_path.iterdir()) == []
    Solver(make_model(), blobs(), checkpoint_name=str(tmp_path / ("r" * 224)), **settings).train()
    assert sorted(len(p.name) for p in tmp_path.iterdir()) == [236] * 9 + [237]


def test_a_checkpoint_name_too_long_for_an_extended_runs_epochs_is_refused_when_it_starts(
    tmp_path,
):
    """A name of 225 bytes fits epoch 9's temporary name, not epoch 10's: a Solver built
    for 9 epochs, then given more (num_epochs raised, as a resumed run is) used to train
    its 9 epochs and fail writing the 10th (OSError ENAMETOOLONG); train() now refuses it
    before the first step, having checked the epochs it will really write."""
    name = str(tmp_path / ("r" * 225))
    solver = Solver(make_model(), blobs(), checkpoint_name=name, num_epochs=9, batch_size=30,
                    verbose=False, seed=0)  # fmt: skip
    solver.num_epochs = 10
    with pytest.raises(ValueError, match="checkpoint_name: .* 256 bytes .* the 255"):
        solver.train()
    assert solver.iteration == 0 and list(tmp_path.iterdir()) == []
    solver.num_epochs = 9
    solver.train()
    assert sorted(len(p.name) for p in tmp_path.iterdir()) == [237] * 9


HOSTILE_SETTINGS = (0, -1, 2**31, 2**64, 1.5, float("nan"), float("inf"), True, None, "2", b"x")
SETTINGS = dict(
    update_rule="adam",
    optim_config={"learning_rate": 1e-3},
    lr_decay=0.9,
    batch_size=10,
    num_epochs=1,
    num_train_samples=20,
    num_val_samples=None,
    print_every=1,
    seed=0,
)


@pytest.mark.parametrize(
    "key", [*SETTINGS, "checkpoint_name", "learning_rate", "beta1", "beta2", "epsilon", "t"]
)
def test_hostile_settings_train_or_are_refused_when_built(key, capsys, tmp_path, monkeypatch):
    """Each setting (and each optim_config key) replaced by each hostile value: the Solver
    is refused when built (a ValueError or TypeError with a message) or trains without
    error (print_every=0 used to raise ZeroDivisionError at the first loss line,
    batch_size=2**31 to run without end, 2**64 to raise OverflowError, checkpoint_name=b'x'
    to write b'x'_epoch_1.npz); an update rule refusing its config names the key."""
    monkeypatch.chdir(tmp_path)  # where a checkpoint_name that is not a path would write
    outcomes = []
    for value in HOSTILE_SETTINGS:
        if key in SETTINGS or key == "checkpoint_name":
            settings = {**SETTINGS, key: value}
        else:
            settings = {**SETTINGS, "optim_config": {"learning_rate": 1e-3, key: value}}
        if key == "num_epochs" and value in (2**31, 2**64):
            continue  # a long run is what it asks for
        try:
            solver = Solver(make_model(), blobs(), **settings)
        except (ValueError, TypeError) as err:
            assert str(err), (key, value)
            outcomes.append("refused")
            continue
        try:
            solver.train()
            outcomes.append("trained")
        except (ValueError, TypeError) as err:  # an update rule refusing its config
            assert key in str(err), (key, value, err)
            outcomes.append("refused by the rule")
    assert "refused" in outcomes or "refused by the rule" in outcomes
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["2_epoch_1.npz"])
    capsys.readouterr()
