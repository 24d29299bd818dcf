"""The matplotlib training pictures: what each figure holds, and that it saves a real PNG."""

import importlib.util
import pathlib
from types import SimpleNamespace

import numpy as np
import pytest
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from PIL import Image

import graphnet as gn

# Import the module file directly, so these tests do not depend on graphnet/viz/__init__.py.
_spec = importlib.util.spec_from_file_location(
    "graphnet_viz_plots", pathlib.Path(gn.__file__).parent / "viz" / "plots.py"
)
plots = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(plots)


def assert_png(path, min_size=(100, 100)):
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1]
        image.load()
        extrema = image.convert("L").getextrema()
    assert extrema[0] < extrema[1], "the image is blank"


def fake_solver(iterations=120, epochs=4, seed=0):
    rng = np.random.default_rng(seed)
    loss = 2.3 * np.exp(-np.arange(iterations) / 40) + 0.1 * rng.random(iterations)
    train = np.linspace(0.1, 0.9, epochs + 1)
    return SimpleNamespace(
        loss_history=list(loss), train_acc_history=list(train), val_acc_history=list(train - 0.1)
    )


def sigmoid_stack(depth=6, width=20, seed=0):
    """affine -> sigmoid, `depth` times, then scores and a softmax loss."""
    rng = np.random.default_rng(seed)
    g = gn.Graph()
    h = g.input("x")
    for i in range(1, depth + 1):
        w = g.param(f"W{i}", rng.standard_normal((width, width)) / np.sqrt(width))
        b = g.param(f"b{i}", np.zeros(width))
        h = g.sigmoid(g.affine(h, w, b, name=f"fc{i}"), name=f"sig{i}")
    w = g.param(f"W{depth + 1}", rng.standard_normal((width, 5)) / np.sqrt(width))
    b = g.param(f"b{depth + 1}", np.zeros(5))
    g.softmax_loss(g.affine(h, w, b, name="scores"), g.input("y", dtype=np.int64), name="loss")
    feeds = {"x": rng.standard_normal((8, width)), "y": rng.integers(0, 5, 8)}
    return g, feeds


def conv_graph(seed=0):
    rng = np.random.default_rng(seed)
    g = gn.Graph()
    x = g.input("x")
    w = g.param("W1", rng.standard_normal((6, 1, 3, 3)))
    b = g.param("b1", np.zeros(6))
    a = g.relu(g.conv(x, w, b, pad=1, name="conv1"), name="relu1")
    g.sum(g.multiply(a, a), name="out")
    return g, {"x": rng.standard_normal((3, 1, 8, 8))}


# ----- plot_training ---------------------------------------------------------------------


@pytest.mark.slow
def test_plot_training_two_panels_and_png(tmp_path):
    solver = fake_solver()
    fig = plots.plot_training(solver, path=tmp_path / "train.png")
    assert isinstance(fig, Figure)
    loss_ax, acc_ax = fig.axes
    assert len(loss_ax.lines) == 2  # raw loss and its running mean
    raw, mean = loss_ax.lines
    np.testing.assert_allclose(raw.get_ydata(), solver.loss_history)
    assert len(mean.get_ydata()) == len(solver.loss_history)
    assert loss_ax.get_xlabel() == "iteration" and acc_ax.get_xlabel() == "epoch"
    assert [line.get_label() for line in acc_ax.lines] == ["train", "val"]
    np.testing.assert_allclose(acc_ax.lines[1].get_ydata(), solver.val_acc_history)
    assert_png(tmp_path / "train.png")


def test_plot_training_without_smoothing_and_from_a_dict():
    history = {
        "loss_history": [3.0, 2.0, 1.0],
        "train_acc_history": [0.1, 0.5],
        "val_acc_history": [0.1, 0.4],
    }
    fig = plots.plot_training(history, smooth=False)
    assert len(fig.axes[0].lines) == 1 and len(fig.axes[1].lines) == 2
    assert fig.axes[1].get_title() == "Classification accuracy"


def test_plot_training_names_what_the_accuracy_counts():
    history = {"loss_history": [2.0, 1.0], "train_acc_history": [0.2], "val_acc_history": [0.1]}
    fig = plots.plot_training(history, accuracy="Caption accuracy (whole caption right)")
    assert fig.axes[1].get_title() == "Caption accuracy (whole caption right)"


def test_plot_training_compares_several_runs_in_one_plot():
    runs = {"sgd": fake_solver(seed=1), "adam": fake_solver(seed=2), "rmsprop": fake_solver(seed=3)}
    fig = plots.plot_training(runs)
    loss_ax, acc_ax = fig.axes
    assert len(loss_ax.lines) == 6 and len(acc_ax.lines) == 6
    legend = [t.get_text() for t in loss_ax.get_legend().get_texts()]
    assert legend == ["sgd", "adam", "rmsprop"]
    assert [line.get_label() for line in acc_ax.lines[:2]] == ["sgd: train", "sgd: val"]
    legend = [t.get_text() for t in acc_ax.get_legend().get_texts()]
    assert legend == ["sgd", "adam", "rmsprop", "train", "val"]


def test_plot_training_rejects_what_is_not_a_run():
    with pytest.raises(TypeError, match="loss_history"):
        plots.plot_training(object())


def test_running_mean_is_centred_and_keeps_length():
    out = plots._running_mean([0, 0, 3, 0, 0], 3)
    np.testing.assert_allclose(out, [0, 1, 1, 1, 0])


# ----- gradient flow ---------------------------------------------------------------------


@pytest.mark.slow
def test_grad_flow_shows_vanishing_gradients_in_a_deep_sigmoid_stack(tmp_path):
    g, feeds = sigmoid_stack(depth=6)
    g.forward(**feeds)
    g.backward()
    fig = plots.plot_grad_flow(g, path=tmp_path / "flow.png")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert [b.get_label() for b in bars] == ["max |grad|", "mean |grad|"]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == list(g.params)
    means = dict(zip(labels, (p.get_height() for p in bars[1])))
    maxes = dict(zip(labels, (p.get_height() for p in bars[0])))
    np.testing.assert_allclose(means["W1"], np.abs(g["W1"].grad).mean())
    assert all(maxes[n] >= means[n] for n in labels)
    # Each sigmoid scales the gradient by at most 1/4: the first layer's is orders of
    # magnitude below the last layer's, and it shrinks layer by layer.
    assert means["W1"] < 1e-3 * means["W7"]
    weights = [means[f"W{i}"] for i in range(1, 8)]
    assert weights == sorted(weights)
    assert_png(tmp_path / "flow.png")


def test_grad_flow_from_a_grads_dict_with_chosen_names_and_zeros():
    grads = {"W1": np.zeros((3, 3)), "b1": np.ones(3), "W2": np.full((2, 2), -1e-4)}
    fig = plots.plot_grad_flow(grads, names=["W1", "W2"])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["W1", "W2"]
    assert [p.get_height() for p in ax.containers[1]] == pytest.approx([0, 1e-4])
    assert any(t.get_text() == "0" for t in ax.texts)  # a zero gradient is marked


def test_grad_flow_of_activation_nodes_and_into_given_axes():
    g, feeds = sigmoid_stack(depth=3)
    g.forward(**feeds)
    g.backward()
    fig = Figure()
    ax = fig.subplots()
    assert plots.plot_grad_flow(g, names=["sig1", "sig2", "sig3"], ax=ax) is fig
    assert [t.get_text() for t in ax.get_xticklabels()] == ["sig1", "sig2", "sig3"]


def test_grad_flow_accepts_a_model_and_a_solver():
    g, feeds = sigmoid_stack(depth=2)
    g.forward(**feeds)
    g.backward()
    model = SimpleNamespace(graph=g, params=g.params)
    solver = SimpleNamespace(model=model)
    for source in (model, solver):
        assert list(plots.grad_stats(source)) == list(g.params)


def test_grad_flow_before_backward_says_so():
    g, _ = sigmoid_stack(depth=2)
    with pytest.raises(ValueError, match="backward"):
        plots.plot_grad_flow(g)
    with pytest.raises(TypeError):
        plots.plot_grad_flow(42)


@pytest.mark.slow
def test_recorder_and_grad_flow_history(tmp_path):
    g, feeds = sigmoid_stack(depth=3)
    recorder = plots.GradFlowRecorder()
    for _ in range(5):
        g.forward(**feeds)
        g.backward()
        for name in g.params:
            g.params[name] = g.params[name] - 0.5 * g[name].grad
        recorder.record(g)
    assert len(recorder) == 5 and recorder.iterations == [0, 1, 2, 3, 4]
    assert set(recorder.history[0]) == set(g.params)

    fig = plots.plot_grad_flow_history(recorder, path=tmp_path / "heat.png")
    assert len(fig.axes) == 2  # the heat map and its colour bar
    data = fig.axes[0].images[0].get_array()
    assert data.shape == (len(g.params), 5)
    expected = np.log10([s["W1"].mean for s in recorder.history])
    np.testing.assert_allclose(np.asarray(data)[0], expected)
    assert_png(tmp_path / "heat.png")

    fig = plots.plot_grad_flow_history(
        recorder, kind="lines", stat="max", path=tmp_path / "lines.png"
    )
    (ax,) = fig.axes
    assert len(ax.lines) == len(g.params) and ax.get_yscale() == "log"
    assert ax.lines[0].get_label() == "W1"
    assert_png(tmp_path / "lines.png")


def test_grad_flow_history_from_a_list_of_dicts():
    history = [{"W1": np.full(4, 1e-3 * t), "W2": 0.1} for t in range(1, 4)]
    fig = plots.plot_grad_flow_history(history, kind="lines")
    lines = fig.axes[0].lines
    np.testing.assert_allclose(lines[0].get_ydata(), [1e-3, 2e-3, 3e-3])
    np.testing.assert_allclose(lines[1].get_ydata(), [0.1] * 3)
    with pytest.raises(ValueError, match="empty"):
        plots.plot_grad_flow_history([])
    with pytest.raises(ValueError, match="kind"):
        plots.plot_grad_flow_history(history, kind="pie")


def test_recorder_watches_the_backward_walks_of_a_graph():
    g = gn.Graph()
    x = g.input("x", shape=(3,), requires_grad=False)
    g.sum(g.multiply(g.param("W1", np.ones(3)), x), name="loss")
    with plots.GradFlowRecorder(every=2).watch(g) as recorder:
        for k in range(1, 6):
            g.forward(x=np.full(3, float(k)))
            g.backward()  # d loss / d W1 = x
        g.forward(x=np.zeros(3))  # a forward alone: not recorded
        assert len(g.executor.hooks) == 1
    assert recorder.iterations == [0, 2, 4]
    assert [s["W1"].mean for s in recorder.history] == [1, 3, 5]
    assert g.executor.hooks == []  # unwatched on leaving the with block
    with pytest.raises(TypeError, match="watch\\(\\) takes a Graph"):
        plots.GradFlowRecorder().watch(object())


# ----- visualize_grid and plot_filters ---------------------------------------------------


@pytest.mark.parametrize("n, padding, grid", [(1, 1, 1), (4, 1, 2), (5, 2, 3), (10, 0, 4)])
def test_visualize_grid_shape_and_bounds(n, padding, grid):
    rng = np.random.default_rng(n)
    Xs = rng.standard_normal((n, 5, 4, 3)) * 7 - 3
    out = plots.visualize_grid(Xs, ubound=255.0, padding=padding)
    assert out.shape == (grid * 5 + (grid - 1) * padding, grid * 4 + (grid - 1) * padding, 3)
    assert out.min() == 0.0 and out.max() == 255.0
    first = out[:5, :4]  # each image is stretched to its own [0, ubound]
    assert first.min() == 0.0 and first.max() == 255.0
    np.testing.assert_allclose(first, 255 * (Xs[0] - Xs[0].min()) / np.ptp(Xs[0]))
    if padding and grid > 1:
        assert np.all(out[5 : 5 + padding] == 0)


def test_visualize_grid_grayscale_and_constant_images():
    out = plots.visualize_grid(np.ones((2, 3, 3)), ubound=1.0, padding=1)
    assert out.shape == (7, 7)
    assert np.all(out[:3, :3] == 0.5) and np.all(out[4:, :] == 0)
    with pytest.raises(ValueError):
        plots.visualize_grid(np.zeros((3, 3)))


@pytest.mark.slow
@pytest.mark.parametrize("channels, mode", [(1, "gray"), (3, "rgb"), (2, "per-channel")])
def test_plot_filters(tmp_path, channels, mode):
    w = np.random.default_rng(0).standard_normal((7, channels, 3, 3))
    fig = plots.plot_filters(w, path=tmp_path / "filters.png")
    (ax,) = fig.axes
    image = ax.images[0].get_array()
    tiles = 7 * channels if mode == "per-channel" else 7
    side = int(np.ceil(np.sqrt(tiles)))
    assert image.shape[1] == side * 3 + side - 1 and image.shape[2] == 4  # RGBA
    rgb = np.asarray(image[..., :3])
    if mode != "rgb":  # grayscale: the three channels agree
        assert np.all(rgb[..., 0] == rgb[..., 1]) and np.all(rgb[..., 1] == rgb[..., 2])
    else:
        np.testing.assert_allclose(
            rgb[:3, :3], plots.visualize_grid(w.transpose(0, 2, 3, 1), ubound=1.0)[:3, :3]
        )
    assert np.asarray(image[..., 3]).sum() == tiles * 9  # opaque tiles, clear padding
    assert_png(tmp_path / "filters.png", min_size=(200, 150))


def test_plot_filters_takes_a_models_first_layer_and_rejects_other_shapes():
    model = SimpleNamespace(params={"W1": np.ones((4, 1, 2, 2))})
    assert isinstance(plots.plot_filters(model), Figure)
    with pytest.raises(ValueError, match="F, C, HH, WW"):
        plots.plot_filters(np.ones((4, 4)))


# ----- activation maps -------------------------------------------------------------------


@pytest.mark.slow
def test_plot_activations_runs_forward_and_backward(tmp_path):
    g, feeds = conv_graph()
    fig = plots.plot_activations(g, "conv1", feeds, index=2, path=tmp_path / "act.png")
    assert len(fig.axes) == 4  # activation maps, gradient maps and their two colour bars
    values, grads = (np.ma.filled(ax.images[0].get_array(), np.nan) for ax in fig.axes[:2])
    # 6 channels of 8x8 in a 3-column mosaic with 1-pixel gaps
    assert values.shape == grads.shape == (2 * 8 + 1, 3 * 8 + 2)
    np.testing.assert_allclose(values[:8, :8], g["conv1"].value[2, 0])
    np.testing.assert_allclose(grads[9:, 9:17], g["conv1"].grad[2, 4])
    assert np.isnan(values[8]).all()  # the gap between rows is blank
    low, high = fig.axes[1].images[0].get_clim()
    assert low == -high  # gradients on a symmetric scale around white zero
    assert fig.axes[1].images[0].get_cmap().name == "RdBu_r"
    assert fig.axes[0].images[0].get_cmap().name == "RdBu_r"  # conv1 values have both signs
    assert "conv1" in fig.axes[0].get_title()
    assert_png(tmp_path / "act.png")


def test_plot_activations_of_existing_values_vectors_and_limits():
    g, feeds = conv_graph()
    g.forward(**feeds)  # values but no gradients yet
    fig = plots.plot_activations(g, "relu1", max_channels=4)
    assert len(fig.axes) == 2
    assert fig.axes[0].images[0].get_cmap().name == "viridis"  # relu output: never negative
    assert fig.axes[0].images[0].get_array().shape == (17, 17)  # 4 maps, 2 x 2

    g2, feeds2 = sigmoid_stack(depth=2)
    fig = plots.plot_activations(g2, "sig1", feeds2, index=-1)
    folded = fig.axes[0].images[0].get_array()
    assert folded.shape == (5, 5)  # 20 units folded into 5 x 5, the rest blank
    np.testing.assert_allclose(np.asarray(folded).ravel()[:20], g2["sig1"].value[-1])
    with pytest.raises(IndexError):
        plots.plot_activations(g2, "sig1", index=8)


def test_plot_activations_needs_values():
    g, _ = conv_graph()
    with pytest.raises(ValueError, match="no value"):
        plots.plot_activations(g, "conv1")


def test_the_plots_are_exported_from_graphnet_viz():
    viz = pytest.importorskip("graphnet.viz")
    for name in [
        "plot_training",
        "plot_grad_flow",
        "plot_grad_flow_history",
        "GradFlowRecorder",
        "visualize_grid",
        "plot_filters",
        "plot_activations",
        "grad_stats",
    ]:
        assert callable(getattr(viz, name)), name


def test_grad_flow_of_a_trained_solver_is_its_last_step():
    """The accuracy checks' forwards clear the graph's gradients; the Solver keeps its
    last step's, which is what plot_grad_flow(solver) shows."""
    rng = np.random.default_rng(0)
    data = {
        "X_train": rng.standard_normal((40, 6)),
        "y_train": rng.integers(3, size=40),
        "X_val": rng.standard_normal((10, 6)),
        "y_val": rng.integers(3, size=10),
    }
    model = gn.models.TwoLayerNet(input_dim=6, hidden_dim=5, num_classes=3)
    solver = gn.Solver(model, data, num_epochs=2, batch_size=10, verbose=False, seed=0)
    assert solver.last_grads == {}
    solver.train()
    assert model.graph["W1"].grad is None  # the last accuracy check's forward cleared it
    assert set(solver.last_grads) == set(model.params)
    assert plots.grad_stats(solver) == plots.grad_stats(solver.last_grads)
    fig = plots.plot_grad_flow(solver)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == list(model.params)
