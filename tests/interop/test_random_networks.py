"""Networks no hand-made case has, through every converter: random CNNs of the zoo's
generator (benchmarks/zoo_models.random_network: odd widths, 1x1 to 7x7 convs, strides,
paddings, batchnorms, groupnorms, layernorms, dropout, residual and bottleneck blocks), an
LSTM language model and a transformer. Each, after two training steps (running averages
away from 0 and 1), exports to ONNX (onnxruntime's float32 scores within 1e-5 of the
graph's) and back, and to PyTorch and back: the same scores and gradients in eval mode and,
where no dropout draws masks, in train mode."""

import importlib.util
import pathlib

import numpy as np
import pytest

import graphnet as gn

from .reference import assert_runs_equal, graphnet_run, torch_run

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

pytestmark = [pytest.mark.onnx, pytest.mark.torch, pytest.mark.slow]

_PATH = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "zoo_models.py"
_spec = importlib.util.spec_from_file_location("zoo_models", _PATH)
zoo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(zoo)

SEQUENCE_MODELS = [
    zoo.ZooModel("lm", "an LSTM LM", (7,), (("embed", 5), ("lstm", 6)), classes=11),
    zoo.ZooModel(
        "tf",
        "a transformer",
        (6,),
        (("embed", 6, 13), ("positions",), ("encoder", 3), ("encoder", 3), ("seqmean",)),
        classes=4,
    ),
]
SPECS = [zoo.random_network(300, index) for index in range(6)] + SEQUENCE_MODELS


def trained(spec, batch):
    """The float64 model after two training steps, and (score feeds, loss feeds)."""
    model = zoo.build_graphnet(spec, np.float64, seed=0)
    rng = np.random.default_rng(100)
    for _ in range(2):
        model.loss(*zoo.batch_of(spec, 4, np.float64, rng))
    X, y = zoo.batch_of(spec, batch, np.float64, rng)
    if isinstance(model, zoo.LanguageModel):
        inputs, labels = model.feeds(X, y)
        return model.graph, inputs, {**inputs, **labels}
    return model.graph, {"x": X}, {"x": X, "y": y}


def modes(graph, batch):
    """eval; train too unless dropout draws masks or a batchnorm sees one sample."""
    ops = {n.op for n in graph.nodes}
    return ["eval"] + ([] if "dropout" in ops or ("batchnorm" in ops and batch == 1) else ["train"])


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("spec", SPECS, ids=[spec.name for spec in SPECS])
def test_a_network_through_onnx_and_back(spec, batch):
    graph, feeds, _ = trained(spec, batch)
    graph.eval()
    model = gn.to_onnx(graph, outputs="scores", dtype=np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    (got,) = session.run(
        None,
        {
            k: v.astype(np.float32) if v.dtype.kind == "f" else v
            for k, v in feeds.items()
            if k in names
        },
    )
    expected = graph.run("scores", feeds)
    assert np.linalg.norm(got - expected) <= 1e-5 * np.linalg.norm(expected)

    back = gn.from_onnx(gn.to_onnx(graph, outputs="scores"))
    for mode in modes(graph, batch):
        graph.train(mode == "train"), back.train(mode == "train")
        assert_runs_equal(
            graphnet_run(back, feeds, "scores"),
            graphnet_run(graph, feeds, "scores"),
            rtol=1e-12,
            atol=1e-15,  # a conv's bias before a batchnorm: its gradient is rounding noise
        )


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("spec", SPECS, ids=[spec.name for spec in SPECS])
def test_a_network_through_torch_and_back(spec, batch):
    graph, _, feeds = trained(spec, batch)
    for mode in modes(graph, batch):
        graph.train(mode == "train")
        module = gn.to_torch(graph, outputs="loss")
        expected = graphnet_run(graph, feeds, "loss")
        assert_runs_equal(
            torch_run(module, feeds, module.input_names), expected, rtol=1e-9, atol=1e-12
        )
        back = gn.from_torch(module, [torch.tensor(feeds[n]) for n in module.input_names])
        assert back.training == (mode == "train")
        assert_runs_equal(graphnet_run(back, feeds), expected, rtol=1e-12, atol=1e-15)
