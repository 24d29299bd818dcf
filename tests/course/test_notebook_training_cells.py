"""The training cells of the course's notebooks (FullyConnectedNets, BatchNormalization,
Dropout, ConvolutionalNetworks), which course_cells.py leaves out for their CIFAR-10 data:
each as its editions write it (the settings, the Solver's keywords, the histories the
plotting cells read, visualize_grid of the first filters), on random data of CIFAR-10's
shapes, with fewer samples and epochs. They found no defect (2017, 2019 and 2024); they
keep the calling conventions of every edition's cells working."""

import numpy as np
import pytest

from .course_cells import notebook_namespace

pytestmark = pytest.mark.usefixtures("one_kernel_thread")

EDITIONS = (2017, 2019, 2024)


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    return {
        f"{kind}_{split}": rng.randn(n, 3, 32, 32) if kind == "X" else rng.randint(10, size=n)
        for split, n in (("train", 60), ("val", 20), ("test", 20))
        for kind in ("X", "y")
    }


def small(data, num_train):
    return {
        "X_train": data["X_train"][:num_train],
        "y_train": data["y_train"][:num_train],
        "X_val": data["X_val"],
        "y_val": data["y_val"],
    }


def adam_epoch(nb, model, data, learning_rate, batch_size, **options):
    """The Solver of the notebooks' adam cells, one epoch, trained: its call as they make
    it (num_epochs, batch_size, update_rule, optim_config and verbose by keyword)."""
    solver = nb["Solver"](
        model,
        data,
        num_epochs=1,
        batch_size=batch_size,
        update_rule="adam",
        optim_config={"learning_rate": learning_rate},
        verbose=False,
        **options,
    )
    solver.train()
    return solver


@pytest.mark.parametrize("edition", EDITIONS)
def test_fully_connected_nets_training_cells(edition, data, capsys):
    nb = notebook_namespace("FullyConnectedNets", edition)
    np.random.seed(231)
    model = nb["FullyConnectedNet"]([100, 100], weight_scale=1e-2, dtype=np.float64)
    solver = nb["Solver"](
        model,
        small(data, 50),
        print_every=10,
        num_epochs=2,
        batch_size=25,
        update_rule="sgd",
        optim_config={"learning_rate": 1e-2},
    )
    solver.train()
    assert len(solver.loss_history) == 4 and len(solver.train_acc_history) == 3
    solvers = {}
    for update_rule in ["sgd", "sgd_momentum", "rmsprop", "adam"]:
        model = nb["FullyConnectedNet"]([100, 100, 100, 100, 100], weight_scale=5e-2)
        solvers[update_rule] = solver = nb["Solver"](
            model,
            small(data, 40),
            num_epochs=1,
            batch_size=20,
            update_rule=update_rule,
            optim_config={"learning_rate": {"rmsprop": 1e-4, "adam": 1e-3}.get(update_rule, 5e-3)},
            verbose=True,
        )
        solver.train()
    best_model = solvers["adam"].model
    y_test_pred = np.argmax(best_model.loss(data["X_test"]), axis=1)
    y_val_pred = np.argmax(best_model.loss(data["X_val"]), axis=1)
    assert y_test_pred.shape == y_val_pred.shape == (20,)
    assert (y_val_pred == data["y_val"]).mean() == solvers["adam"].check_accuracy(
        data["X_val"], data["y_val"]
    )
    assert "(Epoch 1 / 1) train acc:" in capsys.readouterr().out


@pytest.mark.parametrize("edition", EDITIONS)
def test_batchnorm_and_dropout_experiment_cells(edition, data):
    nb = notebook_namespace("BatchNormalization", edition)
    FullyConnectedNet = nb["FullyConnectedNet"]
    batchnorm = {"use_batchnorm": True} if edition == 2017 else {"normalization": "batchnorm"}
    np.random.seed(231)
    for weight_scale in np.logspace(-4, 0, num=2):
        for option in (batchnorm, {}):
            model = FullyConnectedNet([50] * 5, weight_scale=weight_scale, **option)
            solver = adam_epoch(nb, model, small(data, 40), 1e-3, 20, print_every=200)
            assert np.isfinite(np.mean(solver.loss_history[-100:]))
            assert max(solver.train_acc_history) <= 1
    if edition != 2017:  # the batch-size experiment, batchnorm against layernorm
        for mode in ("batchnorm", "layernorm"):
            for batch_size in (5, 10):
                model = FullyConnectedNet([50] * 5, weight_scale=2e-2, normalization=mode)
                adam_epoch(nb, model, small(data, 20), 10 ** (-3.5), batch_size)
    nb = notebook_namespace("Dropout", edition)
    # 2017 gives the probability of dropping, the later editions the one of keeping
    keyword = "dropout" if edition < 2021 else "dropout_keep_ratio"
    for dropout in [0, 0.75] if edition == 2017 else [1, 0.25]:
        model = nb["FullyConnectedNet"]([500], **{keyword: dropout})
        solver = adam_epoch(nb, model, small(data, 40), 5e-4, 20, print_every=100)
        assert len(solver.val_acc_history) == 2


@pytest.mark.parametrize("edition", EDITIONS)
def test_convolutional_networks_overfit_and_filter_cells(edition, data):
    nb = notebook_namespace("ConvolutionalNetworks", edition)
    np.random.seed(231)
    model = nb["ThreeLayerConvNet"](weight_scale=1e-2)
    solver = adam_epoch(nb, model, small(data, 10), 1e-3, 5, print_every=1)
    assert 0 <= solver.check_accuracy(data["X_train"][:10], data["y_train"][:10]) <= 1
    grid = nb["visualize_grid"](model.params["W1"].transpose(0, 2, 3, 1))
    assert grid.shape[2] == 3 and grid.astype("uint8").dtype == np.uint8
