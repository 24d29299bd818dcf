"""The student's path: a small CNN made in PyTorch, exported with torch.onnx.export (its
default exporter), imported, given a loss gate, drawn, and trained further with the
Solver."""
import numpy as np
import pytest

import graphnet as gn
from graphnet.models import GraphClassifier

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")  # what torch.onnx.export's default exporter runs on
nn = torch.nn

pytestmark = [pytest.mark.onnx, pytest.mark.torch, pytest.mark.slow]


def three_class_images(count, rng):
    """Images whose class sets which of three 4x4 quadrants is bright."""
    y = rng.integers(0, 3, count)
    X = rng.normal(scale=0.5, size=(count, 3, 8, 8)).astype(np.float32)
    for i, label in enumerate(y):
        row, col = divmod(int(label), 2)
        X[i, :, 4 * row:4 * row + 4, 4 * col:4 * col + 4] += 1.0
    return X, y


def test_pytorch_cnn_through_onnx_is_drawn_and_trained_with_the_solver(tmp_path):
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 16), nn.ReLU(),
                        nn.Dropout(0.2), nn.Linear(16, 3))
    rng = np.random.default_rng(0)
    X, y = three_class_images(120, rng)
    with torch.no_grad():
        cnn(torch.tensor(X))  # train mode: batchnorm's running averages move
    cnn.eval()
    path = tmp_path / "cnn.onnx"
    torch.onnx.export(cnn, (torch.tensor(X[:2]),), path, input_names=["x"],
                      output_names=["scores"],
                      dynamic_shapes={"input": {0: torch.export.Dim("N")}})

    g = gn.from_onnx(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"x": X[:10]})
    np.testing.assert_allclose(g.forward(x=X[:10]), expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        np.testing.assert_allclose(g.forward(x=X[:10]), cnn(torch.tensor(X[:10])).numpy(),
                                   rtol=1e-5, atol=1e-5)

    labels = g.input("y", shape=(None,), dtype=np.int64)
    g.softmax_loss(g["scores"], labels, name="loss")
    g.train().forward(x=X[:8], y=y[:8])
    g.backward()
    drawing = gn.viz.draw(g)
    assert "loss" in drawing.source and "scores" in drawing.source
    assert all(np.isfinite(grad).all() for grad in g.grads.values())

    model = GraphClassifier(g, x="x", scores="scores")
    data = {"X_train": X[:100], "y_train": y[:100], "X_val": X[100:], "y_val": y[100:]}
    solver = gn.Solver(model, data, update_rule="adam", optim_config={"learning_rate": 5e-3},
                       batch_size=20, num_epochs=6, verbose=False, seed=0)
    solver.train()
    history = solver.loss_history
    assert np.mean(history[-5:]) < 0.7 * np.mean(history[:5])
