"""ONNX out and in: every gate against onnxruntime, the import back, hand-made ONNX models
of every op the importer reads, the course models, and the errors."""

import numpy as np
import pytest

import graphnet as gn
from graphnet.interop import UnsupportedOpError

from graphnet.models import ThreeLayerConvNet

from .cases import CASES, build, builtin_gates, course_models, gate_ops, graph_with_a_custom_gate
from .reference import assert_runs_equal, graphnet_run, torch_run

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
helper = onnx.helper
pytestmark = pytest.mark.onnx

ONNX_CASES = [case for case in CASES if case != "svm_loss"]  # svm_loss has no ONNX form


def run_onnxruntime(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


@pytest.mark.slow
@pytest.mark.parametrize("case", ONNX_CASES)
def test_export_runs_in_onnxruntime_like_the_graph_in_eval_mode(case):
    graph, feeds = build(case, np.float32)
    graph.train()  # the file computes eval mode whatever mode the graph is in
    model = gn.to_onnx(graph)
    expected = graph.eval().forward(feeds)
    (got,) = run_onnxruntime(model, feeds)
    np.testing.assert_allclose(got, expected, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("case", ONNX_CASES)
def test_import_builds_the_same_gates_equal_forward_and_backward(case):
    graph, feeds = build(case, np.float64)
    back = gn.from_onnx(gn.to_onnx(graph.eval()))
    assert gate_ops(back) == gate_ops(graph)
    assert not back.training
    assert list(back.params) == list(graph.params)
    assert_runs_equal(graphnet_run(back, feeds), graphnet_run(graph, feeds), rtol=1e-13)


def test_a_mask_times_a_float_is_cast_for_onnx_and_comes_back_equal():
    """numpy promotes an int8 mask in a float gate; ONNX's ops take one type, so the file
    casts it, and the cast comes back as a multiply by 1 in the float type."""
    g = gn.Graph()
    x = g.input("x", shape=(None, 4))
    g.add(g.multiply(g.compare(x, "<=", 0.5), x), g.compare(x, ">=", 0.0), name="out")
    feeds = {"x": np.random.default_rng(4).normal(size=(5, 4))}
    model = gn.to_onnx(g)
    (got,) = run_onnxruntime(model, feeds)
    np.testing.assert_array_equal(got, g.forward(feeds))
    back = gn.from_onnx(model)
    np.testing.assert_array_equal(back.forward(feeds), g.forward(feeds))


@pytest.mark.torch
@pytest.mark.parametrize(
    "case",
    [
        "conv_stride2",
        "spatial_batchnorm",
        "affine_flattening",
        "softmax_loss",
        "max",
        "matmul_batched",
        "slice_int_none_step",
        "take_axis",
        "where",
        "gelu",
        "cross_entropy_sequence",
        "avg_pool_overlapping",
    ],
)
@pytest.mark.slow
def test_imported_graph_backward_matches_pytorch(case):
    torch = pytest.importorskip("torch")
    graph, feeds = build(case, np.float64)
    back = gn.from_onnx(gn.to_onnx(graph.eval()))
    module = gn.to_torch(graph)
    assert not module.training
    expected = torch_run(module.to(torch.float64), feeds, module.input_names)
    assert_runs_equal(graphnet_run(back, feeds), expected, rtol=1e-10, atol=1e-12)


def test_file_takes_any_batch_size_and_keeps_names(tmp_path):
    graph, feeds = build("conv", np.float32)
    path = tmp_path / "conv.onnx"
    gn.to_onnx(graph, path)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    (x,) = model.graph.input
    assert x.name == "x" and x.type.tensor_type.shape.dim[0].dim_param == "N"
    assert sorted(i.name for i in model.graph.initializer) == ["b", "w"]
    for batch in (1, 7):
        X = np.random.default_rng(batch).normal(size=(batch, 2, 7, 7)).astype(np.float32)
        (got,) = run_onnxruntime(model, {"x": X})
        np.testing.assert_allclose(got, graph.forward(x=X), rtol=2e-6, atol=2e-6)


def test_the_import_type_checks_without_copying_the_weights(monkeypatch):
    """from_onnx's type check runs ONNX's inference on the model's nodes with its weights
    declared by type and shape, not on a copy of the file (which inference serializes)."""
    rng = np.random.default_rng(4)
    g = gn.Graph(dtype=np.float32)
    x = g.input("x", shape=(None, 300))
    g.affine(x, g.param("W", rng.normal(size=(300, 400))), g.param("b", np.zeros(400)), name="y")
    model = gn.to_onnx(g)
    inferred = []
    infer = onnx.shape_inference.infer_shapes

    def recording(proto, *args, **kwargs):
        inferred.append(proto.ByteSize())
        return infer(proto, *args, **kwargs)

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", recording)
    back = gn.from_onnx(model)
    assert model.ByteSize() > 480_000 and inferred == [pytest.approx(1000, abs=1000)]
    X = rng.normal(size=(3, 300)).astype(np.float32)
    np.testing.assert_array_equal(back.forward(x=X), g.forward(x=X))


def big_affine():
    g = gn.Graph(dtype=np.float32)
    x = g.input("x", shape=(None, 300))
    w = g.param("W", np.random.default_rng(4).normal(size=(300, 400)))
    g.relu(g.affine(x, w, g.param("b", np.zeros(400))), name="y")
    return g


def test_the_export_checks_without_copying_the_weights(monkeypatch):
    """to_onnx's strict inference and full check run on the model with its weights
    declared by type and shape (each serialized the whole model), and give the same
    value_info as strict inference of the whole model."""
    sizes = []
    infer, check = onnx.shape_inference.infer_shapes, onnx.checker.check_model

    def recording(real):
        def call(proto, *args, **kwargs):
            sizes.append(proto.ByteSize())
            return real(proto, *args, **kwargs)

        return call

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", recording(infer))
    monkeypatch.setattr(onnx.checker, "check_model", recording(check))
    model = gn.to_onnx(big_affine())
    assert model.ByteSize() > 480_000 and max(sizes) < 5000
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    del bare.graph.value_info[:]
    whole = infer(bare, check_type=True, strict_mode=True)
    assert list(model.graph.value_info) == list(whole.graph.value_info)


def test_the_export_still_checks_each_weight(monkeypatch):
    """A weight whose data does not fill its shape is refused by the export's check as
    before, though the checker sees it by itself."""
    from graphnet.interop import onnx as exporter

    real = exporter._Writer.initializer

    def truncated(writer, name, value):
        real(writer, name, value)
        tensor = writer.initializers[-1]
        tensor.raw_data = tensor.raw_data[:-4]
        return name

    monkeypatch.setattr(exporter._Writer, "initializer", truncated)
    with pytest.raises(onnx.checker.ValidationError, match="W"):
        gn.to_onnx(big_affine())


def test_float64_graph_exports_as_float32_on_request():
    graph, feeds = build("conv", np.float64)
    model = gn.to_onnx(graph, dtype=np.float32)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    (got,) = run_onnxruntime(model, {"x": feeds["x"].astype(np.float32)})
    np.testing.assert_allclose(got, graph.forward(feeds), rtol=1e-5, atol=1e-5)


def test_outputs_selects_the_part_to_export_and_several_outputs():
    graph, feeds = build("fan_out", np.float32)
    model = gn.to_onnx(graph, outputs=["square", "h"])
    assert [o.name for o in model.graph.output] == ["square", "h"]
    assert "scaled" not in [n.name for n in model.graph.node]
    square, h = run_onnxruntime(model, feeds)
    np.testing.assert_allclose(square, graph.run("square", feeds), rtol=1e-6)
    np.testing.assert_allclose(h, graph.run("h", feeds), rtol=1e-6)


# ----- import of ONNX models made by hand: every op and setting the importer reads -------


def tensor(name, array):
    return onnx.numpy_helper.from_array(np.asarray(array), name)


def make_model(nodes, inputs, outputs, initializers, opset):
    graph = helper.make_graph(nodes, "hand-made", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    return model


def float_info(name, shape):
    return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shape)


def test_import_of_flatten_reshape_gemm_matmul_and_nary_ops_matches_onnxruntime():
    rng = np.random.default_rng(0)
    f32 = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    nodes = [
        helper.make_node("Flatten", ["x"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "W_out_in", "c"], ["gemm"], transB=1),
        helper.make_node("Reshape", ["x", "rows"], ["rows_of_x"]),
        helper.make_node("MatMul", ["rows_of_x", "W2"], ["matmul"]),
        helper.make_node("Constant", [], ["half"], value=tensor("half", np.float32(0.5))),
        helper.make_node("Mul", ["matmul", "half"], ["halved"]),
        helper.make_node("Sum", ["gemm", "halved", "gemm"], ["sum3"]),
        helper.make_node("Max", ["sum3", "matmul", "gemm"], ["max3"]),
        helper.make_node("Identity", ["max3"], ["same"]),
        helper.make_node("Sub", ["same", "c"], ["centered"]),
        helper.make_node("Sigmoid", ["centered"], ["sig"]),
        helper.make_node("Softmax", ["sig"], ["probs"], axis=-1),
        helper.make_node("ReduceSum", ["probs", "axis1"], ["total"], keepdims=0),
    ]
    initializers = [
        tensor("W_out_in", f32(4, 18)),
        tensor("c", f32(4)),
        tensor("rows", np.array([-1, 18], np.int64)),
        tensor("W2", f32(18, 4)),
        tensor("axis1", np.array([1], np.int64)),
    ]
    model = make_model(
        nodes,
        [float_info("x", ["N", 2, 3, 3])],
        [float_info("total", ["N"])],
        initializers,
        opset=17,
    )
    graph = gn.from_onnx(model)
    assert gate_ops(graph) == [
        "affine",
        "reshape",
        "matmul",
        "multiply",
        "add",
        "add",
        "max",
        "max",
        "subtract",
        "sigmoid",
        "softmax",
        "sum",
    ]
    # Gemm's transposed B becomes a param holding B.T under B's name; the Flatten before it
    # is the affine gate's own; the Reshape before the MatMul is a reshape gate
    np.testing.assert_array_equal(
        graph.params["W_out_in"], onnx.numpy_helper.to_array(initializers[0]).T
    )
    assert graph["half"].op == "const" and "rows" not in graph
    X = f32(5, 2, 3, 3)
    (expected,) = run_onnxruntime(model, {"x": X})
    np.testing.assert_allclose(graph.forward(x=X), expected, rtol=1e-5, atol=1e-6)
    graph.backward("total", np.ones(5, np.float32))
    assert graph["W2"].grad.shape == (18, 4)


def test_import_of_opset_11_attributes_and_conv_pool_batchnorm_dropout():
    """Before opset 13, ReduceSum's axes and Dropout's ratio were attributes and Softmax
    flattened from `axis` on (the same as the last axis when axis is the last)."""
    rng = np.random.default_rng(1)
    f32 = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    nodes = [
        helper.make_node(
            "Conv", ["x", "w"], ["conv"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]
        ),
        helper.make_node(
            "BatchNormalization",
            ["conv", "scale", "bias", "mean", "var"],
            ["bn"],
            epsilon=1e-3,
            momentum=0.8,
        ),
        helper.make_node("Relu", ["bn"], ["relu"]),
        helper.make_node("MaxPool", ["relu"], ["pool"], kernel_shape=[2, 2], strides=[1, 1]),
        helper.make_node("Dropout", ["pool"], ["drop"], ratio=0.25),
        helper.make_node("Flatten", ["drop"], ["flat"]),
        helper.make_node("Gemm", ["flat", "W", "b"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["probs"], axis=1),
        helper.make_node("Log", ["probs"], ["logp"]),
        helper.make_node("ReduceSum", ["logp"], ["total"], axes=[1], keepdims=1),
        helper.make_node("Exp", ["total"], ["out"]),
    ]
    initializers = [
        tensor("w", f32(3, 2, 3, 3)),
        tensor("scale", f32(3)),
        tensor("bias", f32(3)),
        tensor("mean", f32(3)),
        tensor("var", rng.uniform(0.5, 2, 3).astype(np.float32)),
        tensor("W", f32(12, 4)),
        tensor("b", f32(4)),
    ]
    model = make_model(
        nodes,
        [float_info("x", ["N", 2, 5, 5])],
        [float_info("out", ["N", 1])],
        initializers,
        opset=11,
    )
    graph = gn.from_onnx(model)
    assert gate_ops(graph) == [
        "conv",
        "spatial_batchnorm",
        "relu",
        "max_pool",
        "dropout",
        "affine",
        "softmax",
        "log",
        "sum",
        "exp",
    ]
    assert graph["conv"].gate.attrs() == {"stride": 2, "pad": 1}
    assert graph["bn"].gate.attrs() == {"eps": 1e-3, "momentum": 0.8}
    assert graph["drop"].gate.attrs()["p"] == 0.25
    X = f32(3, 2, 5, 5)
    (expected,) = run_onnxruntime(model, {"x": X})
    np.testing.assert_allclose(graph.forward(x=X), expected, rtol=1e-5, atol=1e-6)


def test_float_attributes_of_a_float64_graph_come_back_as_written():
    """ONNX attributes are float32; a float64 graph's 0.1 comes back 0.1, so its round
    trip computes the same numbers."""
    g = gn.Graph()
    x = g.input("x", shape=(None, 3))
    bn = g.batchnorm(x, g.param("gamma", np.ones(3)), g.param("beta", np.zeros(3)), eps=1e-3)
    g.leaky_relu(bn, alpha=0.1, name="out")
    back = gn.from_onnx(gn.to_onnx(g.train()))
    assert [n.gate.attrs() for n in back.nodes if n.gate] == [
        n.gate.attrs() for n in g.nodes if n.gate
    ]
    X = np.random.default_rng(0).normal(size=(4, 3))
    np.testing.assert_array_equal(back.train().forward(x=X), g.forward(x=X))


def test_import_lists_every_unsupported_op_at_once():
    nodes = [
        helper.make_node("Cos", ["x"], ["cos"]),
        helper.make_node("Sin", ["cos"], ["s1"]),
        helper.make_node("Sin", ["s1"], ["s2"]),
        helper.make_node("Relu", ["s2"], ["out"]),
    ]
    model = make_model(nodes, [float_info("x", [2, 3])], [float_info("out", [2, 3])], [], 17)
    with pytest.raises(UnsupportedOpError) as err:
        gn.from_onnx(model)
    message = str(err.value)
    assert "Cos (node 'cos')" in message and "Sin (nodes 's1', 's2')" in message
    assert "Relu" in message.split("Supported:")[1]
    assert err.value.ops == {"Cos": ["cos"], "Sin": ["s1", "s2"]}


def test_import_names_the_node_and_setting_graphnet_lacks():
    nodes = [helper.make_node("Conv", ["x", "w"], ["grouped"], group=2)]
    initializers = [tensor("w", np.ones((4, 1, 3, 3), np.float32))]
    model = make_model(
        nodes,
        [float_info("x", [1, 2, 5, 5])],
        [float_info("grouped", [1, 4, 3, 3])],
        initializers,
        17,
    )
    with pytest.raises(UnsupportedOpError, match=r"Conv node 'grouped'.*groups"):
        gn.from_onnx(model)


def test_every_builtin_gate_but_svm_loss_has_an_onnx_form():
    from graphnet.interop.onnx import EXPORTERS

    assert builtin_gates() - set(EXPORTERS) == {"svm_loss"}


def test_a_registered_gate_of_ones_own_is_named_in_the_error():
    with pytest.raises(UnsupportedOpError, match=r"interop_test_cube \(nodes 'c1', 'c2'\)"):
        gn.to_onnx(graph_with_a_custom_gate())


def test_export_lists_every_gate_with_no_onnx_form():
    graph, _ = build("svm_loss", np.float32)
    graph.add(graph.svm_loss(graph["scores"], graph["y"], name="second"), graph["out"])
    with pytest.raises(UnsupportedOpError) as err:
        gn.to_onnx(graph)
    assert "svm_loss (nodes 'out', 'second')" in str(err.value)
    assert "outputs=" in str(err.value)
    assert err.value.ops == {"svm_loss": ["out", "second"]}


# ----- the course models ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["TwoLayerNet", "FullyConnectedNet", "ThreeLayerConvNet"])
def test_course_model_scores_in_onnxruntime_and_back(name, tmp_path):
    model, sample = course_models()[name]
    X = np.random.default_rng(1).normal(size=(6, *sample)).astype(model.dtype)
    path = tmp_path / f"{name}.onnx"
    gn.to_onnx(model.graph, path, outputs="scores", dtype=np.float32)
    (got,) = run_onnxruntime(onnx.load(path), {"X": X.astype(np.float32)})
    scores = model.loss(X)
    np.testing.assert_allclose(got, scores, rtol=1e-4, atol=1e-5)
    back = gn.from_onnx(path)
    assert set(back.params) == set(model.params)
    np.testing.assert_allclose(back.forward(X=X), scores, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["TwoLayerNet", "FullyConnectedNet", "ThreeLayerConvNet"])
def test_course_model_loss_graph_round_trips(name):
    """The whole training graph (softmax_loss, the L2 term) exports, and comes back with
    the same loss and gradients (eval mode: the file's batchnorm and dropout)."""
    model, sample = course_models()[name]
    rng = np.random.default_rng(2)
    feeds = {"X": rng.normal(size=(6, *sample)).astype(model.dtype), "y": rng.integers(0, 5, 6)}
    model.graph.eval()
    back = gn.from_onnx(gn.to_onnx(model.graph, outputs="loss"))
    assert gate_ops(back) == gate_ops(model.graph)
    # The import builds params where gates first take them, so a gradient with two parts
    # (W's, from its layer and the L2 term) may add them in the other order: float32 noise.
    assert_runs_equal(
        graphnet_run(back, feeds, "loss"),
        graphnet_run(model.graph, feeds, "loss"),
        rtol=1e-5,
        atol=1e-7,
    )


@pytest.mark.parametrize("filter_size", [3, 5])
def test_an_input_without_a_gradient_comes_back_without_one_giving_the_same_bits(filter_size):
    """ONNX has no requires_grad: the file's metadata lists the inputs built without one, so
    the import differentiates nothing the model only reads (X) and its conv -> relu ->
    max_pool takes the original's fused path (the one that computes dX too gave W1's and
    b1's gradients 4e-16 to 1.3e-15 apart). A file from elsewhere has no such entry: its
    inputs get gradients."""
    model = ThreeLayerConvNet(
        input_dim=(3, 8, 8),
        num_filters=4,
        filter_size=filter_size,
        hidden_dim=10,
        num_classes=5,
        weight_scale=0.3,
        dtype=np.float64,
    )
    feeds = {"X": np.random.default_rng(3).normal(size=(3, 3, 8, 8))}
    model.graph.eval()
    file = gn.to_onnx(model.graph, outputs="scores")
    back = gn.from_onnx(file)
    assert not back["X"].requires_grad
    for mode in ("eval", "train"):
        model.graph.train(mode == "train"), back.train(mode == "train")
        (value, grads), (expected, expected_grads) = (
            graphnet_run(back, feeds, "scores"),
            graphnet_run(model.graph, feeds, "scores"),
        )
        np.testing.assert_array_equal(value, expected)
        assert grads.keys() == expected_grads.keys() == set(model.params)
        for name, grad in expected_grads.items():
            np.testing.assert_array_equal(grads[name], grad, err_msg=name)
    del file.metadata_props[:]
    assert gn.from_onnx(file)["X"].requires_grad


def test_an_input_without_a_shape_needs_input_shapes_unless_an_affine_tells_its_rank():
    g = gn.Graph()
    g.relu(g.input("x"), name="out")
    with pytest.raises(gn.GraphError, match=r"input 'x'.*input_shapes=\{'x': \(None, \.\.\.\)\}"):
        gn.to_onnx(g)
    model = gn.to_onnx(g, input_shapes={"x": (None, 3)})
    X = np.array([[-1.0, 0.0, 2.0]])
    np.testing.assert_array_equal(run_onnxruntime(model, {"x": X})[0], [[0.0, 0.0, 2.0]])
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["N", 3]


@pytest.mark.parametrize(
    "case", ["conv", "affine_flattening", "spatial_batchnorm", "max_pool", "softmax", "sum_axis"]
)
def test_an_empty_batch_runs_in_onnxruntime(case):
    graph, feeds = build(case, np.float32)
    empty = {name: value[:0] for name, value in feeds.items()}
    (got,) = run_onnxruntime(gn.to_onnx(graph), empty)
    assert got.shape == graph.eval().forward(empty).shape


def test_groupnorm_with_the_courses_scale_shape_and_its_opset():
    """gamma and beta of shape (1, C, 1, 1) are flattened for GroupNormalization, which has
    per-channel scales from opset 21; an older opset is an error naming the gate."""
    rng = np.random.default_rng(3)
    g = gn.Graph(dtype=np.float32)
    g.spatial_groupnorm(
        g.input("x", shape=(None, 4, 3, 3)),
        g.param("gamma", rng.uniform(0.5, 1.5, (1, 4, 1, 1))),
        g.param("beta", rng.normal(size=(1, 4, 1, 1))),
        2,
        name="out",
    )
    x = rng.normal(size=(2, 4, 3, 3)).astype(np.float32)
    want = g.forward(x=x)
    (got,) = run_onnxruntime(gn.to_onnx(g), {"x": x})
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(UnsupportedOpError, match="spatial_groupnorm node 'out'.*opset=21"):
        gn.to_onnx(g, opset=20)


# ----- the tensor gates -----------------------------------------------------------------


@pytest.mark.parametrize("opset", [13, 17, 18, 20])
@pytest.mark.parametrize(
    "case",
    [
        "gelu",
        "gelu_tanh",
        "mean_axes_keepdims",
        "mean_all",
        "slice_int_none_step",
        "flatten_axis2",
        "clip_high",
        "cross_entropy_sequence",
        "where",
        "log_softmax_axis1",
    ],
)
@pytest.mark.slow
def test_tensor_gates_at_every_opset_run_in_onnxruntime_and_come_back(case, opset):
    """Gelu is an op from opset 20 (before, the ops torch.onnx.export writes for it, read
    back as one gate); ReduceMean takes its axes as an input from opset 18."""
    graph, feeds = build(case, np.float32)
    model = gn.to_onnx(graph, opset=opset)
    ops = {n.op_type for n in model.graph.node}
    if case.startswith("gelu"):
        assert ("Gelu" in ops) == (opset >= 20)
    (got,) = run_onnxruntime(model, feeds)
    np.testing.assert_allclose(got, graph.forward(feeds), rtol=2e-6, atol=2e-6)
    assert gate_ops(gn.from_onnx(model)) == gate_ops(graph)


def test_a_slice_backwards_runs_in_onnxruntime():
    g = gn.Graph(dtype=np.float32)
    x = g.input("x", shape=(None, 5, 4))
    g.index(x, (slice(None, None, -1), slice(3, 0, -2), -1), name="out")
    X = np.random.default_rng(0).normal(size=(3, 5, 4)).astype(np.float32)
    model = gn.to_onnx(g)
    np.testing.assert_array_equal(run_onnxruntime(model, {"x": X})[0], X[::-1, 3:0:-2, -1])
    back = gn.from_onnx(model)
    assert back["out"].gate.attrs()["key"] == "::-1, 3:0:-2, -1"


def test_export_names_the_forms_onnx_lacks():
    g = gn.Graph()
    g.cross_entropy(
        g.input("scores", shape=(5,)), g.input("y", shape=(), dtype=np.int64), name="single"
    )
    with pytest.raises(UnsupportedOpError, match=r"cross_entropy node 'single'.*batch axis"):
        gn.to_onnx(g)
    g = gn.Graph()
    g.reshape(g.input("x", shape=(None, 3)), (0, 3), name="none_left")
    with pytest.raises(UnsupportedOpError, match=r"reshape node 'none_left'.*opset 14"):
        gn.to_onnx(g, opset=13)
    empty = np.zeros((0, 3))
    assert run_onnxruntime(gn.to_onnx(g, opset=14), {"x": empty})[0].shape == (0, 3)


@pytest.mark.parametrize(
    "case",
    [
        "matmul_batched",
        "reshape",
        "slice_int_none_step",
        "take_rows",
        "avg_pool",
        "gelu",
        "where_constant_mask",
    ],
)
def test_an_empty_batch_of_a_tensor_gate_runs_in_onnxruntime(case):
    """(onnxruntime's SoftmaxCrossEntropyLoss fails on an empty batch: not the losses.)"""
    graph, feeds = build(case, np.float32)
    empty = {name: value[:0] if value.ndim else value for name, value in feeds.items()}
    (got,) = run_onnxruntime(gn.to_onnx(graph), empty)
    assert got.shape == np.shape(graph.eval().forward(empty))


def test_import_of_hand_made_tensor_ops_matches_onnxruntime():
    """The forms other exporters write: Squeeze, Unsqueeze and Gather of one index around
    a Slice (one slice gate), a Reshape keeping sizes with 0, Flatten from axes 0 and 2,
    GlobalAveragePool, a loss on (N, C, H, W) scores with ignore_index, Clip, Cast, Where,
    and GELU as torch's TorchScript exporter wrote it (x·(1 + erf) first, then ½)."""
    rng = np.random.default_rng(3)
    f32 = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    big = np.iinfo(np.int64).max
    ints = lambda name, *values: tensor(name, np.array(values, np.int64))  # noqa: E731
    scalar = lambda name, value: tensor(name, np.float32(value))  # noqa: E731
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["conv"], kernel_shape=[1, 1]),  # (N, 3, 4, 4)
        helper.make_node("Div", ["conv", "sqrt2"], ["scaled"]),
        helper.make_node("Erf", ["scaled"], ["erf"]),
        helper.make_node("Add", ["erf", "one"], ["one_plus"]),
        helper.make_node("Mul", ["conv", "one_plus"], ["twice"]),
        helper.make_node("Mul", ["twice", "half"], ["gelu"]),
        helper.make_node("SoftmaxCrossEntropyLoss", ["gelu", "labels"], ["loss"], ignore_index=1),
        helper.make_node("Slice", ["gelu", "starts", "ends", "axes", "steps"], ["sliced"]),
        helper.make_node("Gather", ["sliced", "index"], ["picked"], axis=1),  # (N, 2, 4)
        helper.make_node("Unsqueeze", ["picked", "axis_minus1"], ["column"]),  # (N, 2, 4, 1)
        helper.make_node("Squeeze", ["column", "axis_minus1"], ["row"]),  # (N, 2, 4)
        helper.make_node("Reshape", ["row", "keep_first"], ["kept"]),  # (N, 8)
        helper.make_node("Flatten", ["gelu"], ["all"], axis=0),  # (1, N*48)
        helper.make_node("Flatten", ["gelu"], ["matrix"], axis=2),  # (N*3, 16)
        helper.make_node("GlobalAveragePool", ["gelu"], ["pooled"]),  # (N, 3, 1, 1)
        helper.make_node("Clip", ["kept", "low", ""], ["clipped"]),
        helper.make_node("Cast", ["mask"], ["condition"], to=onnx.TensorProto.BOOL),
        helper.make_node("Where", ["condition", "clipped", "half"], ["chosen"]),
        helper.make_node("ReduceSum", ["chosen"], ["s1"], keepdims=0),
        helper.make_node("ReduceSum", ["all"], ["s2"], keepdims=0),
        helper.make_node("ReduceSum", ["matrix"], ["s3"], keepdims=0),
        helper.make_node("ReduceMean", ["pooled"], ["s4"], keepdims=0),
        helper.make_node("Sum", ["s1", "s2", "s3", "s4", "loss"], ["out"]),
    ]
    initializers = [
        tensor("w", f32(3, 2, 1, 1)),
        scalar("sqrt2", np.sqrt(2)),
        scalar("one", 1.0),
        scalar("half", 0.5),
        ints("starts", 3, 1),
        ints("ends", -big, big),
        ints("axes", 2, -1),
        ints("steps", -1, 2),
        tensor("index", np.int64(-1)),
        ints("axis_minus1", -1),
        ints("keep_first", 0, -1),
        scalar("low", -0.1),
    ]
    inputs = [
        float_info("x", ["N", 2, 4, 4]),
        helper.make_tensor_value_info("labels", onnx.TensorProto.INT64, ["N", 4, 4]),
        helper.make_tensor_value_info("mask", onnx.TensorProto.INT64, [8]),
    ]
    model = make_model(nodes, inputs, [float_info("out", [])], initializers, opset=17)
    graph = gn.from_onnx(model)
    ops = gate_ops(graph)
    assert ops.count("gelu") == 1 and ops.count("slice") == 1 and "cross_entropy" in ops
    keys = [n.gate.attrs()["key"] for n in graph.nodes if n.op == "slice"]
    assert keys == [":, -1, 3::-1, 1::2"]  # the Unsqueeze's None squeezed again
    assert graph["all"].gate.attrs()["shape"] == (1, -1)
    assert graph["matrix"].gate.attrs()["shape"] == (-1, 16)
    assert graph["loss"].inputs[0].op == "transpose"  # the classes moved to the last axis
    feeds = {
        "x": f32(3, 2, 4, 4),
        "labels": rng.integers(0, 3, (3, 4, 4)),
        "mask": rng.integers(0, 3, 8),
    }
    (expected,) = run_onnxruntime(model, feeds)
    np.testing.assert_allclose(graph.forward(feeds), expected, rtol=1e-5)


def test_a_flatten_and_a_slice_read_by_several_gates_are_built_once():
    """The Flatten feeds a Gemm (which flattens its input itself) and a Relu (which gets a
    flatten gate); the Slice feeds two gates (one slice gate)."""
    rng = np.random.default_rng(4)
    nodes = [
        helper.make_node("Flatten", ["x"], ["flat"]),
        helper.make_node("Gemm", ["flat", "W", "b"], ["scores"]),
        helper.make_node("Relu", ["flat"], ["positive"]),
        helper.make_node("Slice", ["positive", "start", "end", "axis"], ["first"]),
        helper.make_node("Mul", ["first", "first"], ["square"]),
        helper.make_node("MatMul", ["first", "W"], ["again"]),
        helper.make_node("Add", ["again", "scores"], ["sum"]),
        helper.make_node("ReduceSum", ["square"], ["total"], keepdims=0),
        helper.make_node("Add", ["sum", "total"], ["out"]),
    ]
    initializers = [
        tensor("W", rng.normal(size=(6, 2)).astype(np.float32)),
        tensor("b", rng.normal(size=2).astype(np.float32)),
        tensor("start", np.array([0], np.int64)),
        tensor("end", np.array([6], np.int64)),
        tensor("axis", np.array([1])),
    ]
    model = make_model(
        nodes, [float_info("x", ["N", 2, 3])], [float_info("out", ["N", 2])], initializers, 17
    )
    graph = gn.from_onnx(model)
    assert gate_ops(graph) == [
        "affine",
        "flatten",
        "relu",
        "slice",
        "multiply",
        "matmul",
        "add",
        "sum",
        "add",
    ]
    assert graph["scores"].inputs[0] is graph["x"]
    X = rng.normal(size=(4, 2, 3)).astype(np.float32)
    np.testing.assert_allclose(
        graph.forward(x=X), run_onnxruntime(model, {"x": X})[0], rtol=1e-5, atol=1e-6
    )


def test_a_gelu_whose_inner_values_are_read_elsewhere_stays_ops():
    nodes = [
        helper.make_node("Div", ["x", "sqrt2"], ["scaled"]),
        helper.make_node("Erf", ["scaled"], ["erf"]),
        helper.make_node("Add", ["erf", "one"], ["one_plus"]),
        helper.make_node("Mul", ["half", "one_plus"], ["halved"]),
        helper.make_node("Mul", ["x", "halved"], ["gelu"]),
        helper.make_node("Add", ["gelu", "erf"], ["out"]),
    ]
    initializers = [
        tensor("sqrt2", np.float32(np.sqrt(2))),
        tensor("one", np.float32(1)),
        tensor("half", np.float32(0.5)),
    ]
    model = make_model(nodes, [float_info("x", [2])], [float_info("out", [2])], initializers, 17)
    with pytest.raises(UnsupportedOpError) as err:
        gn.from_onnx(model)
    assert err.value.ops == {"Erf": ["erf"]}


def test_import_names_the_tensor_op_settings_graphnet_lacks():
    def single(node, shape=(2, 3), out_type=onnx.TensorProto.FLOAT, extra_inputs=()):
        return make_model(
            [node],
            [float_info("x", list(shape)), *extra_inputs],
            [helper.make_tensor_value_info("y", out_type, ["a", "b"])],
            [],
            17,
        )

    with pytest.raises(UnsupportedOpError, match=r"Pow node 'y'.*exponent.*constant"):
        gn.from_onnx(single(helper.make_node("Pow", ["x", "x"], ["y"])))
    with pytest.raises(UnsupportedOpError, match=r"Cast node 'y'.*no cast gate"):
        gn.from_onnx(
            single(
                helper.make_node("Cast", ["x"], ["y"], to=onnx.TensorProto.INT64),
                out_type=onnx.TensorProto.INT64,
            )
        )
    shape = helper.make_tensor_value_info("shape", onnx.TensorProto.INT64, [2])
    with pytest.raises(UnsupportedOpError, match=r"Reshape node 'y'.*shape.*constant"):
        gn.from_onnx(
            single(helper.make_node("Reshape", ["x", "shape"], ["y"]), extra_inputs=[shape])
        )
    with pytest.raises(UnsupportedOpError, match=r"AveragePool node 'y'.*padding"):
        gn.from_onnx(
            make_model(
                [
                    helper.make_node(
                        "AveragePool", ["x"], ["y"], kernel_shape=[2, 2], pads=[1, 1, 1, 1]
                    )
                ],
                [float_info("x", [1, 1, 4, 4])],
                [float_info("y", [1, 1, 5, 5])],
                [],
                17,
            )
        )
