"""The sequence gates through gn.to_onnx, run by onnxruntime: every case of
tests/gates/test_sequence.py, and CaptioningRNN's training graph. onnxruntime runs ONNX's
RNN and LSTM in float32 only: those cases are exported from float64 graphs with
dtype=np.float32 as well."""

import numpy as np
import pytest

import graphnet as gn
from graphnet.models import CaptioningRNN

from .test_sequence import CASES, build

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytestmark = [pytest.mark.onnx, pytest.mark.slow]

RECURRENT = {"rnn", "lstm"}


def onnxruntime_run(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", CASES)
def test_every_sequence_case_runs_in_onnxruntime_with_the_graphs_numbers(name, dtype):
    g, out, feeds = build(name, dtype)
    expected = g.run(out, feeds)
    if name in RECURRENT and dtype == np.float64:
        model = gn.to_onnx(g, dtype=np.float32)
        feeds = {k: v.astype(np.float32) for k, v in feeds.items()}
        tolerance = dict(rtol=1e-5, atol=1e-6)
    else:
        model = gn.to_onnx(g)
        tolerance = (
            dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)
        )
    np.testing.assert_allclose(onnxruntime_run(model, feeds), expected, **tolerance)


@pytest.mark.parametrize("cell_type, onnx_op", [("rnn", "RNN"), ("lstm", "LSTM")])
def test_captioning_rnn_loss_graph_in_onnxruntime(cell_type, onnx_op):
    np.random.seed(0)
    words = {"<NULL>": 0, "<START>": 1, "<END>": 2, "a": 3, "b": 4}
    model = CaptioningRNN(words, input_dim=6, wordvec_dim=5, hidden_dim=4, cell_type=cell_type)
    features = np.random.randn(3, 6).astype(np.float32)
    captions = np.array([[1, 3, 4, 2, 0], [1, 4, 2, 0, 0], [1, 3, 3, 3, 2]])
    loss, _ = model.loss(features, captions)
    exported = gn.to_onnx(model.graph)
    assert onnx_op in {n.op_type for n in exported.graph.node}
    feeds = dict(
        features=features,
        captions=captions.astype(np.int64),
        mask=(captions[:, 1:] != 0).astype(np.int64),
    )
    assert onnxruntime_run(exported, feeds) == pytest.approx(loss, rel=1e-6)
