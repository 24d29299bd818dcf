"""nn.GroupNorm as torch.onnx.export writes it (Reshape (N, G, -1) -> InstanceNormalization
with scale ones and bias zeros -> Reshape to x's shape -> Mul gamma -> Add beta; both
exporters) comes back as one spatial_groupnorm with torch's and onnxruntime's values and
gradients; anything else around an InstanceNormalization is refused naming the node."""

import io

import numpy as np
import pytest

import graphnet as gn
from graphnet.errors import GraphError

from .cases import gate_ops
from .reference import upstream_for

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

nn = torch.nn

pytestmark = [pytest.mark.onnx, pytest.mark.torch, pytest.mark.slow]

# (G, C, H, W): one group and one channel per group, odd sizes, a 1x1 image
SHAPES = [(1, 3, 5, 4), (2, 4, 3, 3), (3, 6, 1, 1), (4, 4, 2, 7)]


def exported(module, x, dynamo):
    """The bytes torch.onnx.export writes for module(x), the batch left open."""
    if dynamo:
        pytest.importorskip("onnxscript")
        sizes = {"dynamic_shapes": {"input": {0: torch.export.Dim("N")}}}
    else:
        sizes = {"dynamic_axes": {"x": {0: "N"}}}
    buffer = io.BytesIO()
    torch.onnx.export(
        module,
        (x,),
        buffer,
        dynamo=dynamo,
        opset_version=18,
        input_names=["x"],
        output_names=["y"],
        **sizes,
    )
    return onnx.load_model_from_string(buffer.getvalue())


def random_groupnorm(G, C, dtype, affine=True):
    torch.manual_seed(G * 10 + C)
    module = nn.GroupNorm(G, C, eps=1e-4, affine=affine).to(dtype).eval()
    if affine:
        with torch.no_grad():
            module.weight.uniform_(0.5, 1.5)
            module.bias.normal_()
    return module


def scale_params(graph):
    """{'weight': gamma's param, 'bias': beta's} of the graph's one spatial_groupnorm."""
    (norm,) = [n for n in graph.nodes if n.op == "spatial_groupnorm"]
    _, gamma, beta = norm.inputs
    return {"weight": gamma, "bias": beta}


@pytest.mark.parametrize("dynamo", [True, False], ids=["torch.export", "TorchScript"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("G, C, H, W", SHAPES)
def test_torchs_groupnorm_comes_back_as_one_gate_with_its_values_and_gradients(
    G, C, H, W, dtype, dynamo
):
    module = random_groupnorm(G, C, getattr(torch, np.dtype(dtype).name))
    rng = np.random.default_rng(C * H * W)
    graph = gn.from_onnx(
        exported(module, torch.tensor(rng.normal(size=(2, C, H, W)).astype(dtype)), dynamo)
    )
    # gamma and beta, (C, 1, 1) in the file, are params of torch's shape, (C,)
    assert gate_ops(graph) == ["spatial_groupnorm"]
    assert all(p.kind == "param" and p.shape == (C,) for p in scale_params(graph).values())
    # float32: a group of two values (C/G = 2, 1x1) leaves its gradient to rounding's order
    tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == np.float32 else {"rtol": 1e-10, "atol": 1e-10}
    for batch in (1, 3):
        X = rng.normal(loc=2.0, size=(batch, C, H, W)).astype(dtype)
        x = torch.tensor(X, requires_grad=True)
        want = module(x)
        upstream = upstream_for(want.detach().numpy(), seed=batch)
        want.backward(torch.tensor(upstream))
        for mode in ("eval", "train"):  # groupnorm has no running statistics
            getattr(graph, mode)()
            got = graph.run("y", {"x": X})
            assert got.dtype == dtype
            np.testing.assert_allclose(got, want.detach().numpy(), **tol)
            graph.backward("y", upstream)
            np.testing.assert_allclose(graph["x"].grad, x.grad.numpy(), **tol)
            for name, param in scale_params(graph).items():
                torch_grad = getattr(module, name).grad.numpy()
                np.testing.assert_allclose(param.grad, torch_grad, **tol)
        module.zero_grad()


@pytest.mark.parametrize("dynamo", [True, False], ids=["torch.export", "TorchScript"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no affine"])
def test_torchs_groupnorm_file_runs_as_in_onnxruntime(affine, dynamo):
    """Both exporters' files, with and without gamma and beta (affine=False writes Mul by
    one and Add zero, of shape (1, 1, 1) or (C, 1, 1)), equal onnxruntime's run."""
    module = random_groupnorm(2, 6, torch.float32, affine)
    X = np.random.default_rng(5).normal(size=(3, 6, 4, 5)).astype(np.float32)
    model = exported(module, torch.tensor(X[:2]), dynamo)
    graph = gn.from_onnx(model)
    assert gate_ops(graph).count("spatial_groupnorm") == 1
    (want,) = ort.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    ).run(None, {"x": X})
    np.testing.assert_allclose(graph.forward(x=X), want, rtol=1e-5, atol=1e-5)


def test_graphnets_groupnorm_written_by_to_onnx_comes_back_the_same():
    rng = np.random.default_rng(8)
    g = gn.Graph(dtype=np.float64)
    g.spatial_groupnorm(
        g.input("x", shape=(None, 6, 3, 2)),
        g.param("gamma", rng.uniform(0.5, 1.5, (6,))),
        g.param("beta", rng.normal(size=(6,))),
        3,
        eps=1e-3,
        name="y",
    )
    back = gn.from_onnx(gn.to_onnx(g))
    assert gate_ops(back) == ["spatial_groupnorm"]
    assert back["y"].gate.attrs() == {"G": 3, "eps": 1e-3}
    X = rng.normal(size=(2, 6, 3, 2))
    np.testing.assert_array_equal(back.forward(x=X), g.forward(x=X))


def torch_like(
    *,
    grouped=(0, 2, -1),
    scale=(1.0, 1.0),
    bias=(0.0, 0.0),
    back=None,
    eps=1e-5,
    gamma=(4, 1, 1),
    beta="beta",
):
    """The TorchScript exporter's GroupNorm(2, 4) on x (2, 4, 3, 3), with one part changed;
    `back`: the shape reshaped back to (a constant) instead of Shape(x); `beta`: the
    initializer added."""
    ints = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)  # noqa: E731
    floats = lambda name, v: numpy_helper.from_array(np.array(v, np.float32), name)  # noqa: E731
    initializers = [
        ints("grouped", grouped),
        floats("ones", scale),
        floats("zeros", bias),
        floats("gamma", np.full(gamma, 1.5)),
        floats("beta", np.full((4, 1, 1), 0.5)),
    ]
    if back is None:
        shape = [helper.make_node("Shape", ["x"], ["shape"])]
    else:
        shape, initializers = [], [*initializers, ints("shape", back)]
    nodes = [
        helper.make_node("Reshape", ["x", "grouped"], ["r"]),
        helper.make_node("InstanceNormalization", ["r", "ones", "zeros"], ["norm"], epsilon=eps),
        *shape,
        helper.make_node("Reshape", ["norm", "shape"], ["back"]),
        helper.make_node("Mul", ["back", "gamma"], ["scaled"]),
        helper.make_node("Add", ["scaled", beta], ["y"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 3, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(
    "model, ops",
    [
        (torch_like(), ["spatial_groupnorm"]),
        (torch_like(grouped=(2, 2, -1), back=(2, 4, 3, 3)), ["spatial_groupnorm"]),
        # one (C, 1, 1) initializer as gamma and as beta: one param, reshaped for each
        (torch_like(beta="gamma"), ["reshape", "reshape", "spatial_groupnorm"]),
    ],
    ids=["Shape(x) back", "constant shape back", "gamma is beta"],
)
def test_the_hand_made_pattern_is_one_gate(model, ops):
    """gamma and beta of shape (C, 1, 1) become params of shape (C,) where nothing else
    reads them (the file's names), and stay one (C, 1, 1) param reshaped where it is read
    twice."""
    X = np.random.default_rng(2).normal(size=(2, 4, 3, 3)).astype(np.float32)
    graph = gn.from_onnx(model)
    assert gate_ops(graph) == ops
    params = {p.name: p.shape for p in graph.nodes if p.kind == "param"}
    assert params == ({"gamma": (4, 1, 1)} if len(ops) > 1 else {"gamma": (4,), "beta": (4,)})
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(
        graph.forward(x=X), session.run(None, {"x": X})[0], rtol=1e-5, atol=1e-5
    )


REFUSED = {
    "instance norm scales by 2": (torch_like(scale=(2.0, 1.0)), "'norm'.*scale ones"),
    "instance norm shifts": (torch_like(bias=(0.0, 0.5)), "'norm'.*scale ones"),
    "grouped to fixed sizes": (torch_like(grouped=(0, 2, 18)), "'norm'.*scale ones"),
    "grouped across samples": (torch_like(grouped=(1, 2, -1)), r"'norm'.*grouped to \[1, 2, -1\]"),
    "reshaped back to another shape": (
        torch_like(back=(2, 4, 9, 1)),
        r"'norm'.*reshaped back to \[2, 4, 9, 1\]",
    ),
    "gamma of other channels": (
        torch_like(gamma=(8, 1, 1)),
        r"'norm'.*scaled and shifted by \[\(8, 1, 1\), \(4, 1, 1\)\]",
    ),
    "epsilon zero": (torch_like(eps=0.0), "eps must be a positive number"),
    "groups that do not divide the channels": (
        torch_like(grouped=(0, 3, -1), scale=(1.0,) * 3, bias=(0.0,) * 3),
        "G=3 groups do not divide the 4 channels",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_what_is_not_torchs_groupnorm_is_refused_naming_the_node(case):
    model, words = REFUSED[case]
    with pytest.raises(GraphError, match=words):
        gn.from_onnx(model)
