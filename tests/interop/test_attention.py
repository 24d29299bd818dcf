"""A small attention block (q, k, v projections with matmul, a transpose, softmax, a
matmul) through ONNX and PyTorch and back: built in graphnet, and built in PyTorch."""

import math

import numpy as np
import pytest

import graphnet as gn

from .cases import TOKENS, WIDTH, attention_graph, gate_ops
from .reference import assert_runs_equal, graphnet_run, torch_run

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional
pytestmark = [pytest.mark.onnx, pytest.mark.torch]

ATTENTION_GATES = [
    "matmul",
    "matmul",
    "matmul",
    "transpose",
    "matmul",
    "multiply",
    "softmax",
    "matmul",
]


def test_attention_block_to_onnx_runs_in_onnxruntime_and_comes_back():
    graph, feeds = attention_graph(np.float32)
    model = gn.to_onnx(graph)
    assert [n.op_type for n in model.graph.node if n.op_type != "Constant"] == [
        "MatMul",
        "MatMul",
        "MatMul",
        "Transpose",
        "MatMul",
        "Mul",
        "Softmax",
        "MatMul",
    ]
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for batch in (3, 1):
        x = np.random.default_rng(batch).normal(size=(batch, TOKENS, WIDTH)).astype(np.float32)
        np.testing.assert_allclose(
            session.run(None, {"x": x})[0], graph.forward(x=x), rtol=1e-5, atol=1e-6
        )
    graph, feeds = attention_graph(np.float64)
    back = gn.from_onnx(gn.to_onnx(graph))
    assert gate_ops(back) == ATTENTION_GATES and list(back.params) == ["Wq", "Wk", "Wv"]
    assert_runs_equal(graphnet_run(back, feeds), graphnet_run(graph, feeds), rtol=1e-13)


@pytest.mark.slow
def test_attention_block_to_torch_matches_and_comes_back():
    graph, feeds = attention_graph(np.float64)
    module = gn.to_torch(graph)
    assert "torch.matmul" in module.code and "torch.permute" in module.code
    expected = graphnet_run(graph, feeds)
    assert_runs_equal(
        torch_run(module, feeds, module.input_names), expected, rtol=1e-10, atol=1e-12
    )
    back = gn.from_torch(module, (torch.tensor(feeds["x"]),))
    assert gate_ops(back) == ATTENTION_GATES and list(back.params) == ["Wq", "Wk", "Wv"]
    assert_runs_equal(graphnet_run(back, feeds), expected, rtol=1e-13)


class Attention(nn.Module):
    """One head of self-attention as PyTorch code writes it: Linear layers on (N, T, d)."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(WIDTH, WIDTH) for _ in range(3))

    def forward(self, x):
        q, k, v = self.q(x), self.k(x), self.v(x)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(WIDTH), dim=-1)
        return weights @ v


LINEAR_WEIGHTS = ("q.weight", "k.weight", "v.weight")  # graphnet holds them as (in, out)


def torch_attention():
    torch.manual_seed(0)
    feeds = {"x": np.random.default_rng(1).normal(size=(2, TOKENS, WIDTH))}
    return Attention().double().eval(), feeds


def test_pytorch_attention_through_from_torch_and_back():
    module, feeds = torch_attention()
    expected = torch_run(module, feeds, ["x"])
    graph = gn.from_torch(module, (torch.tensor(feeds["x"]),))
    assert gate_ops(graph).count("matmul") == 5 and "transpose" in gate_ops(graph)
    assert set(graph.params) == {name for name, _ in module.named_parameters()}
    assert_runs_equal(
        graphnet_run(graph, feeds), expected, rtol=1e-10, atol=1e-12, transposed=LINEAR_WEIGHTS
    )
    again = gn.to_torch(graph)
    assert_runs_equal(
        torch_run(again, feeds, again.input_names),
        expected,
        rtol=1e-10,
        atol=1e-12,
        transposed=LINEAR_WEIGHTS,
    )


@pytest.mark.slow
def test_pytorch_attention_through_torch_onnx_export_and_from_onnx(tmp_path):
    pytest.importorskip("onnxscript")  # what torch.onnx.export's default exporter runs on
    module, feeds = torch_attention()
    module = module.float()
    path = tmp_path / "attention.onnx"
    torch.onnx.export(
        module,
        (torch.tensor(feeds["x"], dtype=torch.float32),),
        path,
        input_names=["x"],
        output_names=["attended"],
        dynamic_shapes={"x": {0: torch.export.Dim("N")}},
    )
    graph = gn.from_onnx(path)
    x = np.random.default_rng(5).normal(size=(5, TOKENS, WIDTH)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(
        graph.forward(x=x), session.run(None, {"x": x})[0], rtol=1e-5, atol=1e-6
    )
    graph.backward("attended", np.ones_like(x))
    assert all(np.isfinite(g).all() for g in graph.grads.values())
