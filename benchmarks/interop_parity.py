"""Measure how far the converters' results are from graphnet's own (the README's tables).

    python benchmarks/interop_parity.py

For every gate case of tests/interop/cases.py: the largest relative error (|a - b| /
max(|b|, 1), over the output and every gradient) of
  - onnxruntime running gn.to_onnx's file (float32, eval mode) against graphnet;
  - gn.to_torch's module (float64 and float32, forward and backward) against graphnet;
  - the ONNX and PyTorch round trips (float64) against the original graph.
Then the same for the course models' scores and loss (float32 for ThreeLayerConvNet and
FullyConnectedNet, float64 for TwoLayerNet, their default dtypes), and for an attention
block built from matmul, transpose and softmax gates (float64; onnxruntime float32).
Then the sequence gates (every case of tests/gates/test_sequence.py and CaptioningRNN's
loss graph, float64) through both round trips, and torch modules (nn.LSTM, nn.RNN,
nn.Embedding, F.scaled_dot_product_attention; float64) read by gn.from_torch against
torch's own output and gradients.
"""
import os
import sys

import numpy as np
import onnxruntime
import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]  # the tests' own imports: gates.test_sequence

import graphnet as gn  # noqa: E402
from tests.interop.cases import CASES, attention_graph, build, course_models  # noqa: E402
from tests.interop.reference import graphnet_run, torch_run  # noqa: E402
from tests.interop import test_sequence_import as sequence  # noqa: E402


def error(got, expected):
    """The largest |got - expected| / max(|expected|, 1) over the output and gradients."""
    (value, grads), (ref_value, ref_grads) = got, expected
    pairs = [(value, ref_value)] + [(grads[k], ref_grads[k]) for k in ref_grads]
    return max(float(np.max(np.abs(np.asarray(a, np.float64) - b) / np.maximum(np.abs(b), 1),
                            initial=0.0)) for a, b in pairs)


def onnxruntime_error(graph, feeds, output=None):
    model = gn.to_onnx(graph, outputs=output, dtype=np.float32)
    session = onnxruntime.InferenceSession(model.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    inputs = {i.name: np.asarray(feeds[i.name]).astype(np.float32)
              if np.asarray(feeds[i.name]).dtype.kind == "f" else feeds[i.name]
              for i in model.graph.input}
    (got,) = session.run(None, inputs)
    expected = graph.run(output or graph.sinks[0].name, feeds)
    return error((got, {}), (np.asarray(expected), {}))


def torch_error(graph, feeds, output=None):
    module = gn.to_torch(graph, outputs=output)
    return error(torch_run(module, feeds, module.input_names), graphnet_run(graph, feeds, output))


def round_trip_errors(graph, feeds, output=None, through_onnx=True):
    reference = graphnet_run(graph, feeds, output)
    via_onnx = gn.from_onnx(gn.to_onnx(graph, outputs=output)) if through_onnx else None
    module = gn.to_torch(graph, outputs=output)
    via_torch = gn.from_torch(module, [torch.tensor(feeds[n]) for n in module.input_names])
    return [None if g is None else error(graphnet_run(g, feeds), reference)
            for g in (via_onnx, via_torch)]


def fmt(value):
    return "—" if value is None else "0" if value == 0 else f"{value:.1e}"


def main():
    print("| case | onnxruntime f32 | torch f64 | torch f32 | ONNX round trip | "
          "torch round trip |")
    print("|---|---|---|---|---|---|")
    for case in CASES:
        graph64, feeds64 = build(case, np.float64)
        graph32, feeds32 = build(case, np.float32)
        graph64.eval(), graph32.eval()
        ort = None if case == "svm_loss" else onnxruntime_error(graph32, feeds32)
        via_onnx, via_torch = round_trip_errors(graph64, feeds64,
                                                through_onnx=case != "svm_loss")
        print(f"| {case} | {fmt(ort)} | {fmt(torch_error(graph64, feeds64))} | "
              f"{fmt(torch_error(graph32, feeds32))} | {fmt(via_onnx)} | {fmt(via_torch)} |")
    print()
    print("| model (dtype) | onnxruntime scores | torch loss and grads | "
          "ONNX round trip | torch round trip |")
    print("|---|---|---|---|---|")
    for name, (model, sample) in course_models().items():
        rng = np.random.default_rng(3)
        feeds = {"X": rng.normal(size=(20, *sample)).astype(model.dtype),
                 "y": rng.integers(0, 5, 20)}
        model.graph.eval()
        via_onnx, via_torch = round_trip_errors(model.graph, feeds, "loss")
        print(f"| {name} ({model.dtype}) | {fmt(onnxruntime_error(model.graph, feeds, 'scores'))}"
              f" | {fmt(torch_error(model.graph, feeds, 'loss'))} | {fmt(via_onnx)} | "
              f"{fmt(via_torch)} |")
    graph, feeds = attention_graph(np.float64)
    via_onnx, via_torch = round_trip_errors(graph, feeds)
    print(f"| attention block (float64) | {fmt(onnxruntime_error(graph, feeds))} | "
          f"{fmt(torch_error(graph, feeds))} | {fmt(via_onnx)} | {fmt(via_torch)} |")

    print()
    print("| sequence case (float64) | ONNX round trip | torch round trip |")
    print("|---|---|---|")
    for case in sequence.CASES:
        graph, out, feeds = sequence.build(case)
        via_onnx, via_torch = round_trip_errors(graph, feeds, out.name)
        print(f"| {case} | {fmt(via_onnx)} | {fmt(via_torch)} |")
    for cell in ("rnn", "lstm"):
        model, feeds = sequence.captioning(cell)
        via_onnx, via_torch = round_trip_errors(model.graph, feeds, "loss")
        print(f"| CaptioningRNN loss, {cell} | {fmt(via_onnx)} | {fmt(via_torch)} |")
    print()
    print("| torch module (float64) | gn.from_torch against torch |")
    print("|---|---|")
    for name, module, feeds in torch_modules():
        graph = gn.from_torch(module, [torch.tensor(v) for v in feeds.values()])
        expected = sequence.torch_reference(module, feeds, list(feeds))
        print(f"| {name} | {fmt(error(graphnet_run(graph, feeds), expected))} |")


def torch_modules():
    """(name, module, feeds): a character-level LSTM language model (embedding, LSTM,
    linear) both layouts, and scaled dot-product attention with and without a mask."""
    rng = np.random.default_rng(4)
    torch.manual_seed(4)  # the modules' initial weights
    N, T, V = sequence.N, sequence.T, sequence.V
    for batch_first in (True, False):
        ids = rng.integers(0, V, (N, T) if batch_first else (T, N))
        yield (f"Embedding, LSTM, Linear (batch_first={batch_first})",
               sequence.char_lstm(torch, batch_first), {"ids": ids})
    q, k, v = (rng.normal(size=(N, 2, T, sequence.D)) for _ in range(3))

    class Attend(torch.nn.Module):
        def __init__(self, causal):
            super().__init__()
            self.causal = causal

        def forward(self, q, k, v):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v,
                                                                    is_causal=self.causal)

    for causal in (False, True):
        yield (f"scaled_dot_product_attention (is_causal={causal})", Attend(causal),
               {"q": q, "k": k, "v": v})


if __name__ == "__main__":
    main()
