"""PyTorch out and in: every gate against torch's autograd, train and eval mode, the
round trips graphnet -> torch -> graphnet and torch -> graphnet -> torch, the course
models, and the errors."""
import numpy as np
import pytest

import graphnet as gn
from graphnet.interop import UnsupportedOpError

from .cases import (CASES, build, builtin_gates, course_models, gate_ops,
                    graph_with_a_custom_gate)
from .reference import assert_runs_equal, graphnet_run, torch_run

torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional
pytestmark = pytest.mark.torch


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_module_matches_the_graph_forward_and_backward(case, mode):
    graph, feeds = build(case, np.float64)
    graph.train(mode == "train")
    if case == "dropout" and mode == "train":  # masks differ; see the dropout test below
        graph.eval()
    module = gn.to_torch(graph)
    assert module.training == graph.training
    assert_runs_equal(torch_run(module, feeds, module.input_names), graphnet_run(graph, feeds),
                      rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", list(CASES))
def test_graph_to_torch_to_graph_gives_the_same_gates_outputs_and_gradients(case):
    graph, feeds = build(case, np.float64)
    graph.eval()
    module = gn.to_torch(graph)
    example = [torch.tensor(feeds[name]) for name in module.input_names]
    back = gn.from_torch(module, example)
    assert gate_ops(back) == gate_ops(graph)
    assert list(back.params) == list(graph.params)
    assert not back.training
    assert_runs_equal(graphnet_run(back, feeds), graphnet_run(graph, feeds), rtol=1e-13)


@pytest.mark.parametrize("case", ["batchnorm", "spatial_batchnorm"])
def test_batchnorm_train_step_updates_the_running_averages_as_documented(case):
    """torch updates the running variance with the unbiased batch variance, graphnet (the
    course) with the biased one; the means and the outputs agree."""
    graph, feeds = build(case, np.float64)
    node = graph["out"]
    before_mean, before_var = node.state["running_mean"], node.state["running_var"]
    module = gn.to_torch(graph.train())
    module(torch.tensor(feeds["x"]))
    graph.forward(feeds)
    x = feeds["x"]
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    count = x.size // x.shape[1]
    np.testing.assert_allclose(module.out.running_mean.numpy(), node.state["running_mean"])
    momentum = node.gate.attrs()["momentum"]
    unbiased = momentum * before_var + (1 - momentum) * x.var(axis=axes) * count / (count - 1)
    np.testing.assert_allclose(module.out.running_var.numpy(), unbiased)
    assert not np.allclose(before_mean, node.state["running_mean"])


def test_dropout_in_train_mode_drops_with_the_same_scaling():
    graph, feeds = build("dropout", np.float64)
    module = gn.to_torch(graph.train())
    x = np.abs(feeds["x"]) + 1
    out = module(torch.tensor(x)).numpy()
    kept = out != 0
    np.testing.assert_allclose(out[kept], x[kept] / (1 - 0.3))


def test_params_keep_their_names_dots_become_submodules_and_code_reads_as_torch():
    g = gn.Graph()
    x = g.input("x:0", shape=(None, 3))
    h = g.affine(x, g.param("fc.weight", np.ones((3, 2))), g.param("fc.bias", np.zeros(2)))
    g.sum(g.relu(h), name="out")
    module = gn.to_torch(g)
    assert set(module.state_dict()) == {"fc.weight", "fc.bias"}
    assert isinstance(module.fc.weight, nn.Parameter)
    assert module.input_names == ["x:0"]
    assert "torch.addmm" in module.code and "torch.relu" in module.code
    assert module(torch.ones(4, 3, dtype=torch.float64)).item() == pytest.approx(24.0)


def test_several_outputs_come_back_as_a_tuple_in_order():
    graph, feeds = build("fan_out", np.float64)
    module = gn.to_torch(graph, outputs=["square", "h"])
    square, h = module(torch.tensor(feeds["x"]))
    np.testing.assert_allclose(square.numpy(), graph.run("square", feeds))
    np.testing.assert_allclose(h.numpy(), graph.run("h", feeds))


def test_every_builtin_gate_has_a_torch_form_and_a_gate_of_ones_own_is_named():
    from graphnet.interop.torch import TORCH_OPS
    assert builtin_gates() <= set(TORCH_OPS)
    with pytest.raises(UnsupportedOpError, match=r"interop_test_cube \(nodes 'c1', 'c2'\)"):
        gn.to_torch(graph_with_a_custom_gate())


# ----- torch -> graphnet -> torch ------------------------------------------------------

class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc1 = nn.Linear(4 * 4 * 4, 12)
        self.bn1 = nn.BatchNorm1d(12)
        self.drop = nn.Dropout(0.2)
        self.fc2 = nn.Linear(12, 5)

    def forward(self, x, y):
        h = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)
        h = self.drop(torch.tanh(self.bn1(self.fc1(h.flatten(1)))))
        scores = self.fc2(h)
        return F.cross_entropy(scores, y) + 0.5 * F.multi_margin_loss(scores, y)


def small_cnn_and_feeds(dtype=torch.float64):
    torch.manual_seed(0)
    module = SmallCNN().to(dtype)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(6, 3, 8, 8))
    y = rng.integers(0, 5, 6)
    with torch.no_grad():  # a few train-mode passes: running averages that are not 0 and 1
        for _ in range(3):
            module(torch.tensor(X, dtype=dtype), torch.tensor(y))
    return module.eval(), {"x": X, "y": y}


LINEAR_WEIGHTS = ("fc1.weight", "fc2.weight")  # graphnet's affine holds them as (in, out)


def test_torch_to_graph_to_torch_gives_equal_outputs_and_gradients():
    module, feeds = small_cnn_and_feeds()
    example = (torch.tensor(feeds["x"]), torch.tensor(feeds["y"]))
    expected = torch_run(module, feeds, ["x", "y"])

    graph = gn.from_torch(module, example)
    assert not graph.training
    assert set(graph.params) == {name for name, _ in module.named_parameters()}
    assert {"conv", "spatial_batchnorm", "relu", "max_pool", "affine", "batchnorm", "tanh",
            "dropout", "softmax_loss", "svm_loss"} <= set(gate_ops(graph))
    assert_runs_equal(graphnet_run(graph, feeds), expected, rtol=1e-10, atol=1e-12,
                      transposed=LINEAR_WEIGHTS)

    again = gn.to_torch(graph)
    assert_runs_equal(torch_run(again, feeds, again.input_names), expected, rtol=1e-10,
                      atol=1e-12, transposed=LINEAR_WEIGHTS)
    assert not again.training


def test_from_torch_in_train_mode_takes_batch_statistics():
    module, feeds = small_cnn_and_feeds()
    module.train()
    module.drop.p = 0.0  # no random masks, so the outputs compare
    example = (torch.tensor(feeds["x"]), torch.tensor(feeds["y"]))
    graph = gn.from_torch(module, example)
    assert graph.training
    expected = module(*example).item()
    assert graph.forward(feeds) == pytest.approx(expected, rel=1e-10)


def test_svm_loss_keeps_one_gate_through_torch_and_reads_alone_as_svm_over_classes():
    graph, feeds = build("svm_loss", np.float64)
    back = gn.from_torch(gn.to_torch(graph), [torch.tensor(feeds["scores"]),
                                              torch.tensor(feeds["y"])])
    assert gate_ops(back) == ["svm_loss"]

    class Margin(nn.Module):
        def forward(self, scores, y):
            return F.multi_margin_loss(scores, y)
    alone = gn.from_torch(Margin(), [torch.tensor(feeds["scores"]), torch.tensor(feeds["y"])])
    assert gate_ops(alone) == ["svm_loss", "multiply"]
    assert alone.forward(feeds) == pytest.approx(graph.forward(feeds) / 5, rel=1e-12)


def test_from_torch_lists_every_unsupported_op_at_once():
    class Odd(nn.Module):
        def forward(self, x):
            return torch.cos(x).sin().sin().relu()
    with pytest.raises(UnsupportedOpError) as err:
        gn.from_torch(Odd(), (torch.ones(2, 3),))
    assert set(err.value.ops) == {"aten.cos", "aten.sin"}
    assert len(err.value.ops["aten.sin"]) == 2
    assert "aten.cos (node 'cos')" in str(err.value)


def test_from_torch_names_the_node_and_the_setting_graphnet_lacks():
    with pytest.raises(UnsupportedOpError, match=r"aten.conv2d node 'conv2d'.*groups"):
        gn.from_torch(nn.Conv2d(4, 4, 3, groups=2), (torch.ones(1, 4, 5, 5),))
    with pytest.raises(UnsupportedOpError, match=r"aten.softplus node 'softplus'.*beta 1"):
        gn.from_torch(nn.Softplus(beta=2.0), (torch.ones(4, 3),))


def test_a_flatten_read_by_anything_but_an_affine_is_a_flatten_gate():
    class FlatThenRelu(nn.Module):
        def forward(self, x):
            return x.flatten(1).relu()
    graph = gn.from_torch(FlatThenRelu(), (torch.ones(2, 3, 4),))
    assert gate_ops(graph) == ["flatten", "relu"]
    X = np.random.default_rng(0).normal(size=(5, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(graph.forward(x=X), np.maximum(X.reshape(5, 12), 0))


# ----- the course models ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["TwoLayerNet", "FullyConnectedNet", "ThreeLayerConvNet"])
def test_course_model_loss_and_grads_in_torch(name):
    model, sample = course_models()[name]
    rng = np.random.default_rng(3)
    feeds = {"X": rng.normal(size=(6, *sample)).astype(model.dtype), "y": rng.integers(0, 5, 6)}
    model.graph.eval()  # FullyConnectedNet: dropout off, batchnorm's running averages
    module = gn.to_torch(model.graph, outputs="loss")
    assert set(dict(module.named_parameters())) == set(model.params)
    tolerance = dict(rtol=1e-5, atol=1e-6) if model.dtype == np.float32 else dict(rtol=1e-10)
    assert_runs_equal(torch_run(module, feeds, module.input_names),
                      graphnet_run(model.graph, feeds, "loss"), **tolerance)
    back = gn.from_torch(module, [torch.tensor(feeds[n]) for n in module.input_names])
    assert_runs_equal(graphnet_run(back, feeds), graphnet_run(model.graph, feeds, "loss"),
                      **tolerance)


def test_input_names_that_are_not_identifiers_stay_distinct_and_come_back():
    g = gn.Graph()
    g.add(g.input("x:0", shape=(2,)), g.input("x_0", shape=(2,)), name="out")
    module = gn.to_torch(g)
    assert module(torch.ones(2, dtype=torch.float64), 2 * torch.ones(2, dtype=torch.float64)
                  ).tolist() == [3.0, 3.0]
    back = gn.from_torch(module, (torch.ones(2), torch.ones(2)))
    assert [n.name for n in back.nodes if n.kind == "input"] == ["x:0", "x_0"]


@pytest.mark.parametrize("case", ["conv", "affine_flattening", "spatial_batchnorm", "max_pool",
                                  "softmax", "sum_axis"])
def test_an_empty_batch_runs_in_the_module(case):
    graph, feeds = build(case, np.float64)
    empty = {name: value[:0] for name, value in feeds.items()}
    module = gn.to_torch(graph.eval())
    out = module(*[torch.tensor(empty[name]) for name in module.input_names])
    assert tuple(out.shape) == graph.forward(empty).shape
