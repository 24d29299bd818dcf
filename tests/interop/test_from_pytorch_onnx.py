"""The student's path: a small CNN made in PyTorch, exported with torch.onnx.export (its
default exporter), imported, given a loss gate, drawn, and trained further with the
Solver; and the ops that exporter writes for gelu, pooling, views and slices."""

import numpy as np
import pytest

import graphnet as gn
from graphnet.models import GraphClassifier

from .cases import gate_ops

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")  # what torch.onnx.export's default exporter runs on
nn, F = torch.nn, torch.nn.functional

pytestmark = [pytest.mark.onnx, pytest.mark.torch, pytest.mark.slow]


def three_class_images(count, rng):
    """Images whose class sets which of three 4x4 quadrants is bright."""
    y = rng.integers(0, 3, count)
    X = rng.normal(scale=0.5, size=(count, 3, 8, 8)).astype(np.float32)
    for i, label in enumerate(y):
        row, col = divmod(int(label), 2)
        X[i, :, 4 * row : 4 * row + 4, 4 * col : 4 * col + 4] += 1.0
    return X, y


def test_pytorch_cnn_through_onnx_is_drawn_and_trained_with_the_solver(tmp_path):
    torch.manual_seed(0)
    cnn = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64, 16),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(16, 3),
    )
    rng = np.random.default_rng(0)
    X, y = three_class_images(120, rng)
    with torch.no_grad():
        cnn(torch.tensor(X))  # train mode: batchnorm's running averages move
    cnn.eval()
    path = tmp_path / "cnn.onnx"
    torch.onnx.export(
        cnn,
        (torch.tensor(X[:2]),),
        path,
        input_names=["x"],
        output_names=["scores"],
        dynamic_shapes={"input": {0: torch.export.Dim("N")}},
    )

    g = gn.from_onnx(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"x": X[:10]})
    np.testing.assert_allclose(g.forward(x=X[:10]), expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        np.testing.assert_allclose(
            g.forward(x=X[:10]), cnn(torch.tensor(X[:10])).numpy(), rtol=1e-5, atol=1e-5
        )

    labels = g.input("y", shape=(None,), dtype=np.int64)
    g.softmax_loss(g["scores"], labels, name="loss")
    g.train().forward(x=X[:8], y=y[:8])
    g.backward()
    drawing = gn.viz.draw(g)
    assert "loss" in drawing.source and "scores" in drawing.source
    assert all(np.isfinite(grad).all() for grad in g.grads.values())

    model = GraphClassifier(g, x="x", scores="scores")
    data = {"X_train": X[:100], "y_train": y[:100], "X_val": X[100:], "y_val": y[100:]}
    solver = gn.Solver(
        model,
        data,
        update_rule="adam",
        optim_config={"learning_rate": 5e-3},
        batch_size=20,
        num_epochs=6,
        verbose=False,
        seed=0,
    )
    solver.train()
    history = solver.loss_history
    assert np.mean(history[-5:]) < 0.7 * np.mean(history[:5])


class GeluHead(nn.Module):
    """Gelu both ways, mean and average pooling, view and flatten, a slice and log_softmax."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4 + 4 + 4, 5)

    def forward(self, x):
        h = F.gelu(self.conv(x))  # (N, 4, 8, 8)
        small = F.avg_pool2d(h, 2)  # (N, 4, 4, 4)
        pooled = torch.cat(
            [small.view(small.size(0), -1), h.mean((2, 3)), F.adaptive_avg_pool2d(h, 1).flatten(1)],
            dim=1,
        )
        scores = self.fc(F.gelu(pooled, approximate="tanh"))
        return F.log_softmax(F.leaky_relu(scores[:, 1:], 0.2), dim=-1)


@pytest.mark.parametrize("opset", [18, 20])
def test_pytorch_gelu_pooling_and_views_through_onnx(opset, tmp_path):
    """Before opset 20 torch.onnx.export writes GELU as Erf and Tanh arithmetic, which
    from_onnx reads back as gelu gates; from opset 20 it writes Gelu."""
    torch.manual_seed(0)
    module = GeluHead().eval()
    path = tmp_path / "head.onnx"
    torch.onnx.export(
        module,
        (torch.randn(2, 3, 8, 8),),
        path,
        input_names=["x"],
        output_names=["logp"],
        opset_version=opset,
        dynamic_shapes={"x": {0: torch.export.Dim("N")}},
    )
    graph = gn.from_onnx(path)
    assert gate_ops(graph).count("gelu") == 2
    assert {"avg_pool", "mean", "reshape", "concat", "slice", "leaky_relu", "log_softmax"} <= set(
        gate_ops(graph)
    )
    X = np.random.default_rng(opset).normal(size=(5, 3, 8, 8)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(
        graph.forward(x=X), session.run(None, {"x": X})[0], rtol=1e-5, atol=1e-5
    )
    with torch.no_grad():
        np.testing.assert_allclose(
            graph.forward(x=X), module(torch.tensor(X)).numpy(), rtol=1e-5, atol=1e-5
        )


class Activations(nn.Module):
    """The activations graphnet builds from several gates, each on its own slice of x."""

    def __init__(self):
        super().__init__()
        self.acts = nn.ModuleList(
            [nn.ELU(0.7), nn.SELU(), nn.Hardsigmoid(), nn.Hardswish(), nn.Mish(), nn.PReLU(2, 0.3)]
        )

    def forward(self, x):  # x (N, 12, 3): two channels for each activation
        return torch.cat([act(x[:, 2 * i : 2 * i + 2]) for i, act in enumerate(self.acts)], dim=1)


def test_pytorch_activations_without_a_gate_through_onnx(tmp_path):
    """torch.onnx.export writes Elu, Selu, HardSigmoid, HardSwish, Mish and PRelu;
    from_onnx builds each from graphnet's gates, with onnxruntime's and torch's values."""
    module = Activations().eval()
    path = tmp_path / "activations.onnx"
    torch.onnx.export(
        module,
        (torch.randn(2, 12, 3),),
        path,
        input_names=["x"],
        output_names=["y"],
        opset_version=18,
        dynamic_shapes={"x": {0: torch.export.Dim("N")}},
    )
    written = {n.op_type for n in onnx.load(path).graph.node}
    assert {"Elu", "Selu", "HardSigmoid", "HardSwish", "Mish", "PRelu"} <= written
    graph = gn.from_onnx(path)
    X = 4 * np.random.default_rng(1).normal(size=(5, 12, 3)).astype(np.float32)
    X[:, :, 0] = 0.0  # the kinks of elu, selu and prelu
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(
        graph.forward(x=X), session.run(None, {"x": X})[0], rtol=1e-5, atol=1e-6
    )
    with torch.no_grad():
        np.testing.assert_allclose(
            graph.forward(x=X), module(torch.tensor(X)).numpy(), rtol=1e-5, atol=1e-6
        )
