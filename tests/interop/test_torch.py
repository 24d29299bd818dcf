"""PyTorch out and in: every gate against torch's autograd, train and eval mode, the
round trips graphnet -> torch -> graphnet and torch -> graphnet -> torch, the course
models, and the errors."""

import numpy as np
import pytest

import graphnet as gn
from graphnet.interop import UnsupportedOpError

from .cases import CASES, build, builtin_gates, course_models, gate_ops, graph_with_a_custom_gate
from .reference import assert_runs_equal, graphnet_run, torch_run

torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional
pytestmark = pytest.mark.torch


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_module_matches_the_graph_forward_and_backward(case, mode):
    graph, feeds = build(case, np.float64)
    graph.train(mode == "train")
    if case == "dropout" and mode == "train":  # masks differ; see the dropout test below
        graph.eval()
    module = gn.to_torch(graph)
    assert module.training == graph.training
    assert_runs_equal(
        torch_run(module, feeds, module.input_names),
        graphnet_run(graph, feeds),
        rtol=1e-10,
        atol=1e-12,
    )


@pytest.mark.slow
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


@pytest.mark.slow
def test_torch_to_graph_to_torch_gives_equal_outputs_and_gradients():
    module, feeds = small_cnn_and_feeds()
    example = (torch.tensor(feeds["x"]), torch.tensor(feeds["y"]))
    expected = torch_run(module, feeds, ["x", "y"])

    graph = gn.from_torch(module, example)
    assert not graph.training
    assert set(graph.params) == {name for name, _ in module.named_parameters()}
    assert {
        "conv",
        "spatial_batchnorm",
        "relu",
        "max_pool",
        "affine",
        "batchnorm",
        "tanh",
        "dropout",
        "softmax_loss",
        "svm_loss",
    } <= set(gate_ops(graph))
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
    assert not again.training


@pytest.mark.slow
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
    back = gn.from_torch(
        gn.to_torch(graph), [torch.tensor(feeds["scores"]), torch.tensor(feeds["y"])]
    )
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
    # below 20, torch's softplus is x itself where graphnet's is log(1 + e^x): 0.31 apart
    # at x = 1.5 with threshold 1, which the import once let through
    with pytest.raises(UnsupportedOpError, match=r"aten.softplus node 'softplus'.*threshold 1.0"):
        gn.from_torch(nn.Softplus(threshold=1.0), (torch.ones(4, 3),))


def test_a_flatten_read_by_anything_but_an_affine_is_a_flatten_gate():
    class FlatThenRelu(nn.Module):
        def forward(self, x):
            return x.flatten(1).relu()

    graph = gn.from_torch(FlatThenRelu(), (torch.ones(2, 3, 4),))
    assert gate_ops(graph) == ["flatten", "relu"]
    X = np.random.default_rng(0).normal(size=(5, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(graph.forward(x=X), np.maximum(X.reshape(5, 12), 0))


# ----- the course models ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["TwoLayerNet", "FullyConnectedNet", "ThreeLayerConvNet"])
def test_course_model_loss_and_grads_in_torch(name):
    model, sample = course_models()[name]
    rng = np.random.default_rng(3)
    feeds = {"X": rng.normal(size=(6, *sample)).astype(model.dtype), "y": rng.integers(0, 5, 6)}
    model.graph.eval()  # FullyConnectedNet: dropout off, batchnorm's running averages
    module = gn.to_torch(model.graph, outputs="loss")
    assert set(dict(module.named_parameters())) == set(model.params)
    tolerance = dict(rtol=1e-5, atol=1e-6) if model.dtype == np.float32 else dict(rtol=1e-10)
    assert_runs_equal(
        torch_run(module, feeds, module.input_names),
        graphnet_run(model.graph, feeds, "loss"),
        **tolerance,
    )
    back = gn.from_torch(module, [torch.tensor(feeds[n]) for n in module.input_names])
    assert_runs_equal(
        graphnet_run(back, feeds), graphnet_run(model.graph, feeds, "loss"), **tolerance
    )


def test_input_names_that_are_not_identifiers_stay_distinct_and_come_back():
    g = gn.Graph()
    g.add(g.input("x:0", shape=(2,)), g.input("x_0", shape=(2,)), name="out")
    module = gn.to_torch(g)
    assert module(
        torch.ones(2, dtype=torch.float64), 2 * torch.ones(2, dtype=torch.float64)
    ).tolist() == [3.0, 3.0]
    back = gn.from_torch(module, (torch.ones(2), torch.ones(2)))
    assert [n.name for n in back.nodes if n.kind == "input"] == ["x:0", "x_0"]


@pytest.mark.parametrize(
    "case",
    [
        "conv",
        "affine_flattening",
        "spatial_batchnorm",
        "max_pool",
        "softmax",
        "sum_axis",
        "matmul_batched",
        "reshape",
        "slice_int_none_step",
        "take_rows",
        "avg_pool",
        "gelu",
        "cross_entropy_sequence",
    ],
)
def test_an_empty_batch_runs_in_the_module(case):
    graph, feeds = build(case, np.float64)
    empty = {name: value[:0] for name, value in feeds.items()}
    module = gn.to_torch(graph.eval())
    out = module(*[torch.tensor(empty[name]) for name in module.input_names])
    assert tuple(out.shape) == np.shape(graph.forward(empty))


# ----- the tensor gates' ATen forms ------------------------------------------------------


class PoolAndGelu(nn.Module):
    """A CNN head of the kind students write: gelu, mean pooling, flatten and view."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4 + 2 * 4, 5)

    def forward(self, x, y):
        h = F.gelu(self.conv(x))  # (N, 4, 4, 4)
        pooled = torch.cat([h.mean((2, 3)), F.adaptive_avg_pool2d(h, 1).flatten(1)], dim=1)
        features = torch.cat([h.view(h.size(0), -1), pooled], dim=1)  # (N, 72)
        scores = self.fc(F.gelu(features, approximate="tanh"))
        return F.cross_entropy(scores, y)


def pool_and_gelu_feeds(batch, seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(batch, 3, 4, 4)), "y": rng.integers(0, 5, batch)}


@pytest.mark.slow
def test_pytorch_model_with_flatten_view_mean_pooling_and_gelu_through_from_torch():
    torch.manual_seed(0)
    module = PoolAndGelu().double()
    feeds = pool_and_gelu_feeds(2)
    graph = gn.from_torch(module, (torch.tensor(feeds["x"]), torch.tensor(feeds["y"])))
    assert {
        "conv",
        "gelu",
        "mean",
        "flatten",
        "reshape",
        "concat",
        "affine",
        "softmax_loss",
    } <= set(gate_ops(graph))
    assert graph["view"].gate.attrs()["shape"] == (-1, 64)  # x.view(x.size(0), -1)
    for batch in (2, 7):  # the batch size the example had, and another
        feeds = pool_and_gelu_feeds(batch, seed=batch)
        assert_runs_equal(
            graphnet_run(graph, feeds),
            torch_run(module, feeds, ["x", "y"]),
            rtol=1e-10,
            atol=1e-12,
            transposed=("fc.weight",),
        )
    again = gn.to_torch(graph)
    assert_runs_equal(
        torch_run(again, feeds, again.input_names),
        torch_run(module, feeds, ["x", "y"]),
        rtol=1e-10,
        atol=1e-12,
        transposed=("fc.weight",),
    )


class TokenOps(nn.Module):
    """The ATen ops of embeddings, indexing, masks and clamps, one term each."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(7, 4)
        self.proj = nn.Linear(4, 4)  # on (N, T, 4): a matmul and an add
        self.register_buffer("picks", torch.tensor([3, 0, 3]))

    def forward(self, ids, mask, x):
        tokens = self.proj(self.embed(ids))  # (N, T, 4)
        t = tokens.transpose(1, 2).contiguous()  # (N, 4, T)
        mixed = torch.bmm(tokens, t) + torch.mm(x, x.t()).sum() - tokens[:, 0].sum()
        kept = mixed.sum(-1).masked_fill(mask.bool(), 0.0)  # (N, T)
        columns = torch.index_select(tokens, 2, self.picks)  # (N, T, 3)
        squeezed = columns[:, :1].squeeze(1) + columns[:, -1, None].squeeze()  # (N, 3)
        bounded = torch.clamp(squeezed, min=-0.5).square() + F.leaky_relu(squeezed, 0.2)
        return kept.sum() + bounded.pow(3).sum() + torch.where(mask != 0, kept, 1.0).sum()


@pytest.mark.slow
def test_embedding_index_select_masks_and_squeezes_read_as_gates():
    torch.manual_seed(1)
    module = TokenOps().double()
    rng = np.random.default_rng(1)
    feeds = {
        "ids": rng.integers(0, 7, (3, 5)),
        "mask": rng.integers(0, 2, (3, 5)),
        "x": rng.normal(size=(2, 4)),
    }
    example = [torch.tensor(feeds[name]) for name in ("ids", "mask", "x")]
    graph = gn.from_torch(module, example)
    assert {"take", "matmul", "transpose", "where", "slice", "clip", "pow", "leaky_relu"} <= set(
        gate_ops(graph)
    )
    # mask.bool() and mask != 0 are the integer mask itself, which the where gates read
    assert graph["masked_fill"].inputs[0] is graph["mask"] is graph["where"].inputs[0]
    assert_runs_equal(
        graphnet_run(graph, feeds),
        torch_run(module, feeds, ["ids", "mask", "x"]),
        rtol=1e-10,
        atol=1e-12,
        transposed=("proj.weight",),
    )


def test_a_run_of_indexing_ops_is_one_slice_gate_until_it_indexes_an_axis_twice():
    """torch.export writes x[:, 1:3, None, 2] as slice, unsqueeze, select: one gate. The
    second term slices the last axis by ::2, then 0:1 along axis 1 (the same gate), then
    picks 1 along the sliced axis: a second gate."""

    class Index(nn.Module):
        def forward(self, x):
            return x[:, 1:3, None, 2].sum() * x[..., ::2][:, 0:1, 1].sum()

    graph = gn.from_torch(Index(), (torch.ones(2, 3, 4),))
    slices = [n.gate.attrs()["key"] for n in graph.nodes if n.op == "slice"]
    assert sorted(slices) == [":, 1:3, None, 2", ":, :, 1", ":, :1, ::2"]
    X = np.random.default_rng(0).normal(size=(5, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(
        graph.forward(x=X), X[:, 1:3, None, 2].sum() * X[..., ::2][:, 0:1, 1].sum(), rtol=1e-6
    )


def test_cross_entropy_with_every_label_ignored_is_0_in_graphnet_and_nan_in_torch():
    graph, feeds = build("cross_entropy", np.float64)
    feeds["y"][:] = 2  # the ignore_index
    module = gn.to_torch(graph)
    assert graph.forward(feeds) == 0.0
    assert np.isnan(module(*[torch.tensor(feeds[n]) for n in module.input_names]).item())


def test_forms_torch_lacks_are_named():
    g = gn.Graph()
    g.index(g.input("x", shape=(None, 4)), (slice(None), slice(None, None, -1)), name="flipped")
    with pytest.raises(UnsupportedOpError, match=r"slice node 'flipped'.*positive steps"):
        gn.to_torch(g)
    g = gn.Graph()
    g.transpose(g.input("x"), name="reversed")  # no shape: torch.permute needs the rank
    with pytest.raises(
        UnsupportedOpError,
        match=r"transpose node 'reversed'.*'x' has no known "
        "rank",
    ):
        gn.to_torch(g)


@pytest.mark.parametrize(
    "norm, shape",
    [
        (lambda: nn.LayerNorm(6, elementwise_affine=False), (2, 6)),
        (lambda: nn.LayerNorm(6, bias=False), (2, 6)),
        (lambda: nn.GroupNorm(2, 4, affine=False), (2, 4, 3, 3)),
        (lambda: nn.BatchNorm2d(4, affine=False), (2, 4, 3, 3)),
    ],
    ids=["layernorm without affine", "layernorm without bias", "groupnorm", "batchnorm"],
)
def test_norms_without_a_weight_or_bias_import_with_torchs_values_and_gradients(norm, shape):
    module = norm().double()
    graph = gn.from_torch(module, (torch.ones(*shape, dtype=torch.float64),))
    feeds = {"input": np.random.default_rng(3).standard_normal((5, *shape[1:]))}
    expected = torch_run(module, feeds, ["input"])
    assert_runs_equal(graphnet_run(graph, feeds), expected, rtol=1e-10, atol=1e-12)


class Activation(nn.Module):
    def __init__(self, act):
        super().__init__()
        self.act = act

    def forward(self, x):
        return self.act(x)


class ScaledElu(nn.Module):
    def forward(self, x):
        return torch.ops.aten.elu(x, 0.5, 2.0)


@pytest.mark.parametrize(
    "act, shape",
    [
        (lambda: nn.ELU(0.7), (3, 4)),
        (ScaledElu, (3, 4)),
        (nn.SELU, (3, 4)),
        (nn.SiLU, (3, 4)),
        (nn.Mish, (3, 4)),
        (nn.Hardswish, (3, 4)),
        (nn.Hardsigmoid, (3, 4)),
        (nn.LogSigmoid, (3, 4)),
        (lambda: nn.Hardtanh(-2.0, 1.5), (3, 4)),
        (nn.ReLU6, (3, 4)),
        (lambda: nn.PReLU(3, 0.2), (3, 3, 2, 2)),
        (nn.PReLU, (3, 4)),
    ],
    ids=[
        "elu",
        "elu scaled",
        "selu",
        "silu",
        "mish",
        "hardswish",
        "hardsigmoid",
        "logsigmoid",
        "hardtanh",
        "relu6",
        "prelu per channel",
        "prelu shared",
    ],
)
def test_activations_without_a_gate_import_as_gates_with_torchs_values_and_gradients(act, shape):
    """Each one a few gates; at the kinks (0, the limits) the gradient torch gives."""
    module = Activation(act()).double()
    graph = gn.from_torch(module, (torch.ones(*shape, dtype=torch.float64),))
    x = 4 * np.random.default_rng(5).standard_normal((5, *shape[1:]))
    x.flat[::5], x.flat[1::7], x.flat[2::9], x.flat[3::11] = 0.0, 6.0, -2.0, 1.5
    feeds = {"x": x}
    expected = torch_run(module, feeds, ["x"])
    # torch's hardsigmoid backward multiplies by 1/6 rounded to float32, in float64 too.
    rtol = 1e-7 if isinstance(module.act, nn.Hardsigmoid) else 1e-10
    assert_runs_equal(graphnet_run(graph, feeds), expected, rtol=rtol, atol=1e-12)
    back = gn.from_torch(gn.to_torch(graph), (torch.ones(*shape, dtype=torch.float64),))
    assert sorted(n.op for n in back.nodes) == sorted(n.op for n in graph.nodes)
    assert_runs_equal(graphnet_run(back, feeds), expected, rtol=rtol, atol=1e-12)


class Comparisons(nn.Module):
    """A student's own activations: torch.where on a comparison, a mask cast to float."""

    def forward(self, x):
        return torch.where(x > 0, x, 0.1 * x) + (x <= 0.5).float() * x + x * (x != 1.0)


def test_comparisons_import_as_compare_masks_with_torchs_values_and_gradients():
    module = Comparisons().double()
    graph = gn.from_torch(module, (torch.ones(3, 4, dtype=torch.float64),))
    assert gate_ops(graph).count("compare") == 3
    x = np.random.default_rng(2).standard_normal((5, 4))
    x.flat[::4], x.flat[1::5] = 0.0, 1.0  # on the comparisons' edges
    feeds = {"x": x}
    expected = torch_run(module, feeds, ["x"])
    assert_runs_equal(graphnet_run(graph, feeds), expected, rtol=1e-12)
    back = gn.from_torch(gn.to_torch(graph), (torch.ones(3, 4, dtype=torch.float64),))
    assert_runs_equal(graphnet_run(back, feeds), expected, rtol=1e-12)


def test_chunks_along_features_keep_any_batch_and_along_the_batch_are_refused():
    class GatedHalves(nn.Module):  # a GLU-style split of the features
        def forward(self, x):
            a, b, c = x.chunk(3, dim=1)  # 7 features: 3, 3 and 1
            return a * torch.tanh(b) + c

    module = GatedHalves()
    graph = gn.from_torch(module, (torch.ones(2, 7, dtype=torch.float64),))
    feeds = {"x": np.random.default_rng(7).standard_normal((5, 7))}  # not the example's batch
    assert_runs_equal(graphnet_run(graph, feeds), torch_run(module, feeds, ["x"]), rtol=1e-12)

    class BatchHalves(nn.Module):
        def forward(self, x):
            first, second = x.chunk(2, dim=0)
            return first - second

    with pytest.raises(UnsupportedOpError, match=r"aten.chunk node 'chunk'.*axis 0.*open"):
        gn.from_torch(BatchHalves(), (torch.ones(4, 3),))


def test_aten_settings_the_tensor_gates_lack_are_named():
    class TensorPower(nn.Module):
        def forward(self, x):
            return x**x

    with pytest.raises(UnsupportedOpError, match=r"aten.pow node 'pow_1'.*a number"):
        gn.from_torch(TensorPower(), (torch.ones(2, 3),))
    with pytest.raises(UnsupportedOpError, match=r"aten.avg_pool2d node 'avg_pool2d'.*padding"):
        gn.from_torch(nn.AvgPool2d(2, padding=1), (torch.ones(1, 2, 4, 4),))
    with pytest.raises(UnsupportedOpError, match=r"aten.adaptive_avg_pool2d.*output size"):
        gn.from_torch(nn.AdaptiveAvgPool2d(2), (torch.ones(1, 2, 4, 4),))

    class FloatToInt(nn.Module):
        def forward(self, x):
            return x.long()

    with pytest.raises(UnsupportedOpError, match=r"aten.to node .*no cast gate"):
        gn.from_torch(FloatToInt(), (torch.ones(2, 3),))


def test_a_bool_mask_input_becomes_an_integer_input():
    class Masked(nn.Module):
        def forward(self, x, keep):
            return torch.where(keep, x, 0.0)

    keep = np.array([[True, False, True], [False, False, True]])
    graph = gn.from_torch(Masked(), (torch.ones(2, 3), torch.tensor(keep)))
    assert graph["keep"].dtype == np.int64 and gate_ops(graph) == ["where"]
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(
        graph.forward(x=x, keep=keep.astype(np.int64)), np.where(keep, x, 0)
    )
