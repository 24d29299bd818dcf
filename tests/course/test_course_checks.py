"""The check cells of the course's assignment 2 notebooks, every edition 2017-2024
(tests/cs231n/course_cells.py), run on graphnet's packages with the notebooks' own import
lines: every number a cell prints is within what its notebook states."""

import numpy as np
import pytest

from . import course_cells as cc

pytestmark = pytest.mark.usefixtures("one_kernel_thread")

RUNS = list(cc.cell_runs())
# Thousands of model evaluations each: seconds, not milliseconds.
SLOW = {
    "FullyConnectedNet: initial loss and gradients",
    "FullyConnectedNet with batchnorm: gradients",
    "FullyConnectedNet with dropout: gradients",
}


@pytest.mark.parametrize(
    "c, editions",
    [
        pytest.param(
            c,
            editions,
            marks=[pytest.mark.slow] if c.title in SLOW else [],
            id=f"{c.notebook}: {c.title} ({cc.span(editions)})",
        )
        for c, editions, _ in RUNS
    ],
)
def test_check_cell(c, editions):
    checks = cc.run_cell(c, editions)
    assert checks
    outside = {
        quantity: check
        for quantity, check in checks.items()
        if not check.low <= check.value <= check.limit
    }
    assert not outside, outside


def test_every_cell_runs_on_both_packages():
    packages = {}
    for c, _, package in RUNS:
        packages.setdefault((c.notebook, c.title), set()).add(package)
    newer_only = {
        "layernorm_forward",
        "layernorm_backward",
        "spatial_groupnorm_forward",
        "spatial_groupnorm_backward",
    }
    for (notebook, title), used in packages.items():
        expected = (
            {"graphnet.cs231n"}
            if title in newer_only
            else {"graphnet.cs231n", "graphnet.cs231n.v2017"}
        )
        assert used == expected, (notebook, title)


@pytest.mark.parametrize("notebook, edition", sorted(cc.IMPORT_LINES))
def test_notebook_import_lines_with_cs231n_replaced(notebook, edition):
    nb = cc.notebook_namespace(notebook, edition)
    missing = [name for name in cc.STAR_NAMES[notebook] if name not in nb]
    assert not missing, missing
    for line in cc.IMPORT_LINES[notebook, edition]:
        if not line.endswith("*"):
            names = line.split(" import ")[1].split(", ")
            assert all(callable(nb[name]) for name in names), line


@pytest.mark.parametrize("edition", range(2017, 2025))
def test_each_edition_reads_dropout_p_in_its_own_meaning(edition):
    nb = cc.notebook_namespace("Dropout", edition)
    x = np.ones((200, 200))
    out, _ = nb["dropout_forward"](x, {"mode": "train", "p": 0.2, "seed": 0})
    dropped = (out == 0).mean()
    assert dropped == pytest.approx(0.2 if edition == 2017 else 0.8, abs=0.01)
    argument = "dropout" if edition <= 2020 else "dropout_keep_ratio"
    model = nb["FullyConnectedNet"]([4], input_dim=3, **{argument: 0.25})
    p_drop = model.graph["dropout1"].gate.p
    assert p_drop == pytest.approx(0.25 if edition == 2017 else 0.75)


@pytest.mark.parametrize("package", ["graphnet.cs231n", "graphnet.cs231n.v2017"])
def test_star_imports_bring_what_the_courses_bring(package):
    """The course's fc_net and cnn star-import layers and layer_utils, whose star import
    brings layers and fast_layers: one `import *` gives every layer function."""
    import importlib

    modules = {
        name: importlib.import_module(f"{package}.{name}")
        for name in (
            "layers",
            "fast_layers",
            "layer_utils",
            "classifiers.fc_net",
            "classifiers.cnn",
        )
    }
    layer_names = (
        set(modules["layers"].__all__)
        | set(modules["fast_layers"].__all__)
        | set(modules["layer_utils"].__all__)
    )
    for classifiers in ("classifiers.fc_net", "classifiers.cnn"):
        namespace = {}
        exec(f"from {package}.{classifiers} import *", namespace)
        assert layer_names <= set(namespace)
        assert namespace["dropout_forward"] is modules["layers"].dropout_forward
    assert {
        "conv_bn_relu_forward",
        "conv_bn_relu_backward",
        "affine_relu_forward",
        "conv_relu_pool_forward",
    } <= set(modules["layer_utils"].__all__)
