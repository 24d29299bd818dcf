"""The graph core: circuits, the scheduler's walks, fan-out, shapes and every error."""

import sys

import networkx as nx
import numpy as np
import pytest

import graphnet as gn
from graphnet.gates import elementwise


def cs231n_circuit():
    g = gn.Graph()
    x, y, z = g.input("x"), g.input("y"), g.input("z")
    q = g.add(x, y, name="q")
    g.multiply(q, z, name="f")
    return g


def test_classic_add_multiply_circuit():
    g = cs231n_circuit()
    out = g.forward(x=-2.0, y=5.0, z=-4.0)
    assert out == -12.0 and type(out) is float
    g.backward()
    assert (g["x"].grad, g["y"].grad, g["z"].grad, g["q"].grad, g["f"].grad) == (-4, -4, 3, -4, 1)
    # the build order, which is topological: a gate's inputs exist before it
    assert [n.name for n in g.nodes] == ["x", "y", "z", "q", "f"]


def test_sigmoid_neuron_matches_the_hand_computed_gradients():
    g = gn.Graph()
    w0, x0, w1, x1, w2 = (g.input(n) for n in ("w0", "x0", "w1", "x1", "w2"))
    dot = w0 * x0 + w1 * x1 + w2
    f = 1.0 / (1.0 + g.exp(-dot))
    feeds = dict(w0=2.0, x0=-1.0, w1=-3.0, x1=-2.0, w2=-3.0)
    value = g.forward(**feeds)
    g.backward()
    s = 1 / (1 + np.exp(-1.0))  # the dot product is 1
    assert value == pytest.approx(s)
    local = s * (1 - s)  # ~0.1966: the sigmoid's local gradient
    assert g["w0"].grad == pytest.approx(-1 * local)
    assert g["x0"].grad == pytest.approx(2 * local)
    assert g["w1"].grad == pytest.approx(-2 * local)
    assert g["x1"].grad == pytest.approx(-3 * local)
    assert g["w2"].grad == pytest.approx(local)
    assert f.grad == 1.0
    # the same neuron through the sigmoid gate gives the same gradients
    h = gn.Graph()
    ins = {n: h.input(n) for n in feeds}
    h.sigmoid(ins["w0"] * ins["x0"] + ins["w1"] * ins["x1"] + ins["w2"])
    assert h.forward(**feeds) == pytest.approx(value)
    h.backward()
    for name in feeds:
        assert h[name].grad == pytest.approx(g[name].grad)


def test_circuit_mixing_add_multiply_and_max():
    # f = 2 * (x*y + max(z, w)): multiply swaps, add distributes, max routes
    g = gn.Graph()
    x, y, z, w = (g.input(n) for n in "xyzw")
    f = g.multiply(g.add(g.multiply(x, y), g.max(z, w)), 2.0, name="f")
    assert g.forward(x=3.0, y=-4.0, z=2.0, w=-1.0) == -20.0
    g.backward()
    assert (g["x"].grad, g["y"].grad, g["z"].grad, g["w"].grad) == (-8.0, 6.0, 2.0, 0.0)
    assert f.value == -20.0


def test_max_gate_tie_routes_the_gradient_to_the_first_input():
    g = gn.Graph()
    a, b = g.input("a"), g.input("b")
    g.max(a, b)
    g.forward(a=1.5, b=1.5)
    g.backward()
    assert (a.grad, b.grad) == (1.0, 0.0)
    g.forward(a=np.array([1.0, 2.0, 3.0]), b=np.array([1.0, 5.0, 0.0]))
    g.backward(grad=np.ones(3))
    np.testing.assert_array_equal(a.grad, [1, 0, 1])
    np.testing.assert_array_equal(b.grad, [0, 1, 0])


def test_fan_out_accumulates_gradients():
    g = gn.Graph()
    x = g.input("x")
    f = x * x + x + g.exp(x)  # x feeds four gate slots
    g.forward(x=0.5)
    g.backward()
    assert x.grad == pytest.approx(2 * 0.5 + 1 + np.exp(0.5))
    assert gn.gradcheck(g, x=0.5)["x"] < 1e-8
    assert f.grad == 1.0


def test_fan_out_of_arrays_with_broadcasting():
    rng = np.random.default_rng(0)
    g = gn.Graph()
    x, b = g.input("x", shape=(None, 3)), g.param("b", rng.standard_normal(3))
    g.sum(g.multiply(x + b, b) + g.tanh(b))
    feeds = {"x": rng.standard_normal((4, 3))}
    errors = gn.gradcheck(g, feeds)
    assert set(errors) == {"x", "b"} and max(errors.values()) < 1e-7
    assert b.grad.shape == (3,)


def test_gradcheck_leaves_the_graph_as_computed_at_the_checked_feeds():
    rng = np.random.default_rng(1)
    g = gn.Graph()
    x, w = g.input("x", shape=(None, 3)), g.param("w", rng.standard_normal(3))
    h = g.tanh(g.multiply(x, w), name="h")
    g.sum(h)
    X = rng.standard_normal((2, 3))
    gn.gradcheck(g, x=X)
    np.testing.assert_array_equal(h.value, np.tanh(X * w.value))
    np.testing.assert_allclose(w.grad, ((1 - np.tanh(X * w.value) ** 2) * X).sum(axis=0))


def test_backward_starts_from_zero_every_time_and_forward_recomputes():
    g = cs231n_circuit()
    g.forward(x=-2.0, y=5.0, z=-4.0)
    g.backward()
    g.backward()
    assert g["x"].grad == -4.0  # not accumulated across calls
    assert g.forward(x=1.0, y=2.0, z=3.0) == 9.0
    g.backward()
    assert (g["x"].grad, g["z"].grad) == (3.0, 3.0)


def test_inputs_without_grad_get_none_and_cost_no_work(monkeypatch):
    seen = []
    original = elementwise.Multiply.backward

    def spy(self, dout, cache, needs):
        seen.append(needs)
        return original(self, dout, cache, needs)

    monkeypatch.setattr(elementwise.Multiply, "backward", spy)
    g = gn.Graph()
    x, c = g.input("x"), g.input("c", requires_grad=False)
    g.multiply(x, c)
    g.forward(x=2.0, c=3.0)
    g.backward()
    assert x.grad == 3.0 and c.grad is None
    assert seen == [(True, False)]
    # a gate whose inputs all lack gradients is not visited at all
    h = gn.Graph()
    a, b = h.input("a", requires_grad=False), h.input("b", requires_grad=False)
    h.multiply(a, b)
    h.forward(a=1.0, b=2.0)
    h.backward()
    assert len(seen) == 1


def test_params_not_on_the_path_get_zero_gradients():
    g = gn.Graph()
    x, w, unused = g.input("x"), g.param("w", 2.0), g.param("unused", np.ones(3))
    f = g.multiply(x, w, name="f")
    g.sum(unused, name="other")
    g.run(f, x=3.0)
    g.backward(f)
    assert w.grad == 3.0
    np.testing.assert_array_equal(unused.grad, np.zeros(3))


@pytest.mark.slow
def test_deep_chain_of_100000_gates_has_no_recursion_limit():
    g = gn.Graph()
    x = node = g.input("x")
    for i in range(100_000):
        node = g.add(node, x) if i % 2 else g.multiply(node, 1.0)
    assert len(g.nodes) > 100_000
    assert g.forward(x=1.0) == pytest.approx(50_001.0)
    g.backward()
    assert x.grad == pytest.approx(50_001.0)
    assert sys.getrecursionlimit() < 100_000
    assert nx.is_directed_acyclic_graph(g.to_networkx())


def test_backward_from_a_non_scalar_needs_an_explicit_grad():
    g = gn.Graph()
    x = g.input("x", shape=(2, 3))
    y = g.tanh(x, name="y")
    g.forward(x=np.zeros((2, 3)))
    with pytest.raises(gn.GraphError, match=r"'y' of shape \(2, 3\).*grad="):
        g.backward()
    with pytest.raises(gn.GraphError, match=r"grad for node 'y' has shape \(3,\)"):
        g.backward(y, grad=np.ones(3))
    g.backward(y, grad=np.full((2, 3), 2.0))
    np.testing.assert_allclose(x.grad, np.full((2, 3), 2.0))


def test_run_computes_only_what_the_target_needs():
    g = gn.Graph()
    x, labels = g.input("x", shape=(None, 3)), g.input("y", shape=(None,), dtype=np.int64)
    scores = g.affine(x, g.param("w", np.eye(3)), g.param("b", np.zeros(3)), name="scores")
    g.softmax_loss(scores, labels, name="loss")
    out = g.run(scores, x=np.ones((2, 3)))  # no labels needed for the scores
    np.testing.assert_array_equal(out, np.ones((2, 3)))
    assert g["loss"].value is None


def test_several_sinks_return_a_dict():
    g = gn.Graph()
    x = g.input("x")
    g.exp(x, name="e")
    g.tanh(x, name="t")
    assert g.forward(x=0.0) == {"e": 1.0, "t": 0.0}
    with pytest.raises(gn.GraphError, match="2 sinks.*'e', 't'"):
        g.backward()


def test_scalar_values_are_python_friendly():
    g = cs231n_circuit()
    g.forward(x=-2, y=5, z=-4)  # plain ints are fine for float inputs
    g.backward()
    assert isinstance(g["f"].value, float) and isinstance(g["x"].grad, float)
    assert repr(g["q"]) == "Node('q', op='add', shape=(), value=3.0, grad=-4.0)"


def test_node_operators_with_numbers():
    g = gn.Graph()
    x = g.input("x")
    out = (2 - x) * 3 / (x + 1) - (-x) / 4
    val = g.forward(x=1.0)
    assert val == pytest.approx((2 - 1) * 3 / 2 + 1 / 4)
    assert out.op == "subtract"
    assert gn.gradcheck(g, x=1.0)["x"] < 1e-8


def test_train_and_eval_modes():
    g = gn.Graph()
    assert g.training
    assert g.eval() is g and not g.training
    g.train()
    assert g.training


def test_to_networkx_and_back():
    rng = np.random.default_rng(1)
    g = gn.Graph()
    x, y = g.input("x", shape=(None, 4)), g.input("y", shape=(None,), dtype=np.int64)
    w, b = g.param("w", rng.standard_normal((4, 3))), g.param("b", np.zeros(3))
    h = g.relu(g.affine(x, w, b, name="fc"), name="h")
    g.softmax_loss(g.multiply(h, h, name="sq"), y, name="loss")
    feeds = dict(x=rng.standard_normal((5, 4)), y=np.array([0, 1, 2, 0, 1]))
    loss = g.forward(**feeds)
    g.backward()
    d = g.to_networkx()
    assert isinstance(d, nx.DiGraph)
    assert d.nodes["fc"]["op"] == "affine" and d.nodes["fc"]["shape"] == (5, 3)
    np.testing.assert_array_equal(d.nodes["w"]["grad"], w.grad)
    assert d.edges["h", "sq"]["positions"] == [0, 1]
    rebuilt = gn.Graph.from_networkx(d)
    assert [n.name for n in rebuilt.nodes] == [n.name for n in g.nodes]
    assert rebuilt.forward(**feeds) == pytest.approx(loss)
    rebuilt.backward()
    np.testing.assert_allclose(rebuilt["w"].grad, w.grad)


# ----- errors ------------------------------------------------------------------------------


def test_affine_shape_mismatch_fails_at_build_time_naming_everything():
    g = gn.Graph()
    x = g.input("x", shape=(None, 3, 8, 8))
    w, b = g.param("W1", np.zeros((100, 10))), g.param("b1", np.zeros(10))
    with pytest.raises(gn.GraphError) as err:
        g.affine(x, w, b, name="fc1")
    message = str(err.value)
    for part in ("affine", "'fc1'", "'x'", "'W1'", "(None, 3, 8, 8)", "(100, 10)", "192"):
        assert part in message
    assert isinstance(err.value, ValueError)
    with pytest.raises(gn.GraphError, match=r"b must be \(10,\)"):
        g.affine(g.input("x2", shape=(2, 100)), w, g.param("b2", np.zeros(9)))


def test_broadcast_mismatch_and_loss_shapes_fail_at_build_time():
    g = gn.Graph()
    a, b = g.input("a", shape=(2, 3)), g.input("b", shape=(4,))
    with pytest.raises(gn.GraphError, match=r"add gate 'add_1'.*\(2, 3\) and \(4,\)"):
        g.add(a, b)
    labels = g.input("labels", shape=(3,), dtype=np.int64)
    with pytest.raises(gn.GraphError, match="2 rows of scores"):
        g.softmax_loss(a, labels)


def test_feed_errors():
    g = cs231n_circuit()
    with pytest.raises(gn.GraphError, match=r"missing feed for input 'z'"):
        g.forward(x=1.0, y=2.0)
    with pytest.raises(gn.GraphError, match=r"unknown feed 'w'.*'x', 'y', 'z'"):
        g.forward(x=1.0, y=2.0, z=3.0, w=4.0)
    with pytest.raises(gn.GraphError, match=r"cannot feed 'q': it is a add node"):
        g.forward(x=1.0, y=2.0, z=3.0, q=4.0)
    h = gn.Graph()
    h.tanh(h.input("x", shape=(None, 3)))
    with pytest.raises(gn.GraphError, match=r"input 'x' has shape \(2, 4\), expected \(None, 3\)"):
        h.forward(x=np.zeros((2, 4)))
    for bad in (
        np.array([["abc"] * 3]),
        np.ones((1, 3), bool),
        np.ones((1, 3), complex),
        np.array([[1.0, None, 2.0]], dtype=object),
    ):
        with pytest.raises(gn.GraphError, match=f"input 'x' has dtype {bad.dtype}; it needs real"):
            h.forward(x=bad)
    with pytest.raises(gn.GraphError, match=r"input 'x' \(shape \(2, 3\)\) holds 2 NaN or Inf"):
        h.forward(x=np.array([[1.0, np.nan, 2.0], [np.inf, 0.0, 1.0]]))
    h.forward(x=np.ones((2, 3), np.float16))  # lossless conversions are fine
    h.forward(x=np.ones((2, 3), np.uint8))
    labels = gn.Graph()
    labels.exp(labels.input("y", dtype=np.int64))
    with pytest.raises(gn.GraphError, match=r"integer input 'y' \(int64\) holds non-integers"):
        labels.forward(y=np.array([0.5]))


def test_unknown_node_name():
    g = cs231n_circuit()
    with pytest.raises(gn.GraphError, match=r"no node named 'nope'.*'x', 'y', 'z', 'q'"):
        g["nope"]
    with pytest.raises(KeyError):
        g["nope"]
    assert "q" in g and "nope" not in g


def test_node_from_another_graph():
    g1, g2 = gn.Graph(), gn.Graph()
    a, b = g1.input("a"), g2.input("b")
    with pytest.raises(gn.GraphError, match=r"add gate .*'b' belongs to another graph"):
        g1.add(a, b)


def test_cycle_is_reported_with_its_nodes():
    d = nx.DiGraph()
    d.add_node("x", kind="input")
    d.add_node("p", op="add", kind="gate")
    d.add_node("q", op="tanh", kind="gate")
    d.add_edge("x", "p", positions=[0])
    d.add_edge("q", "p", positions=[1])
    d.add_edge("p", "q", positions=[0])
    with pytest.raises(gn.GraphError, match="cycle: .*p.*q"):
        gn.Graph.from_networkx(d)
    # a gate's inputs exist before it, so building can never close a cycle
    g = gn.Graph()
    p = g.tanh(g.input("x"), name="p")
    g.exp(p, name="q")
    assert [n.name for n in g.nodes] == ["x", "p", "q"]
    assert g.forward(x=1.0) == pytest.approx(np.exp(np.tanh(1.0)))


def test_duplicate_names_and_bad_inputs():
    g = gn.Graph()
    g.input("x")
    with pytest.raises(gn.GraphError, match="already has a node named 'x'"):
        g.input("x")
    with pytest.raises(gn.GraphError, match="must be a Node or a number, got str"):
        g.add(g["x"], "two")
    with pytest.raises(gn.GraphError, match="backward.*no value yet|no value yet"):
        g.tanh(g["x"], name="t")
        g.backward()


def test_params_mapping_checks_assignments():
    g = gn.Graph()
    g.param("W", np.ones((2, 2)))
    assert list(g.params) == ["W"]
    g.params["W"] = np.zeros((2, 2))
    np.testing.assert_array_equal(g["W"].value, np.zeros((2, 2)))
    with pytest.raises(gn.GraphError, match=r"'W' has shape \(2, 2\); cannot assign .* \(3,\)"):
        g.params["W"] = np.zeros(3)
    with pytest.raises(KeyError):
        g.params["nope"] = np.zeros(3)


def test_params_mapping_follows_the_graph_as_it_grows():
    g = gn.Graph()
    x = g.input("x", shape=(None, 2))
    g.param("W", np.ones((2, 2)))
    params = g.params
    assert list(params) == ["W"] and len(params) == 1 and dict(g.grads) == {"W": None}
    names = iter(params)
    g.param("b", np.zeros(2))  # read by name before and after the graph grew
    assert list(names) == ["W"]  # an iteration started before goes on over what there was
    assert list(params) == ["W", "b"] and len(params) == 2
    assert "b" in params and "x" not in params and ["W"] not in params
    np.testing.assert_array_equal(params["b"], np.zeros(2))
    for name in ("x", "nope", ["W"]):  # an input, no node, an unhashable key
        with pytest.raises(KeyError, match="no param named"):
            params[name]
        with pytest.raises(KeyError, match="params: 'W', 'b'"):
            params[name] = np.zeros(2)
    g.sum(g.affine(x, g["W"], g["b"]), name="out")
    g.forward(x=np.ones((3, 2)))
    g.backward()
    grads = g.grads
    assert list(grads) == ["W", "b"]
    assert grads["W"] is g["W"].grad and grads["b"] is g["b"].grad
    np.testing.assert_array_equal(grads["b"], np.full(2, 3.0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_param_updated_in_place_and_assigned_back_stays_as_it_is(dtype):
    g = gn.Graph(dtype=dtype)
    x = g.input("x", shape=(None, 3))
    w, scalar = g.param("w", np.ones((3, 2))), g.param("s", 2.0)
    g.sum(g.matmul(x, w) * scalar, name="out")
    g.forward(x=np.ones((1, 3)))
    g.backward()
    array, grad = g.params["w"], g["w"].grad
    array -= 0.5  # the way graphnet.optim updates it, then the Solver assigns it back
    g.params["w"] = array
    assert g.params["w"] is array and array.dtype == dtype and g["w"].grad is grad
    np.testing.assert_array_equal(g["w"].value, np.full((3, 2), 0.5))
    g.params["s"] = g.params["s"]  # a number param: stored as the scalar it was
    assert g["s"].value == 2.0 and np.ndim(g["s"].value) == 0
    assert g.forward(x=np.ones((1, 3))) == pytest.approx(6.0)
    other = np.zeros((3, 2), np.int64)  # another array: checked as before
    with pytest.raises(gn.GraphError, match="must be a float array"):
        g.params["w"] = other


def test_anomaly_mode_names_the_first_bad_node():
    g = gn.Graph()
    x = g.input("x")
    g.exp(g.log(x, name="ln"), name="e")
    assert np.isnan(g.forward(x=-1.0))  # silently NaN outside anomaly mode (numpy warns)
    with gn.detect_anomaly():
        with pytest.raises(gn.AnomalyError, match=r"NaN in the value of node 'ln' \(gate 'log'"):
            g.forward(x=-1.0)
        h = gn.Graph()
        h.divide(1.0, h.input("x"), name="inv")
        assert h.forward(x=1e-200) == pytest.approx(1e200)  # a finite value ...
        with pytest.raises(
            gn.AnomalyError, match=r"Inf in the gradient from 'inv' of node 'x'.*step 1 of backward"
        ):
            h.backward()  # ... whose gradient -1/x^2 overflows


pytestmark = pytest.mark.filterwarnings(
    "ignore:invalid value:RuntimeWarning", "ignore:divide by zero:RuntimeWarning"
)


def test_a_kernel_error_names_the_node_the_gate_and_the_input_shapes():
    g = gn.Graph()
    scores, y = g.input("scores"), g.input("y", dtype=np.int64)
    g.softmax_loss(scores, y, name="loss")
    with pytest.raises(gn.GraphError) as err:
        g.forward(scores=np.zeros((3, 4)), y=[0, 1, 7])
    message = str(err.value)
    for part in (
        "forward of node 'loss'",
        "gate 'softmax_loss'",
        "[0, 4)",
        "'scores' (3, 4)",
        "'y' (3,) int64",
    ):
        assert part in message


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_params_are_copies_that_start_on_a_cache_line(dtype):
    """The row kernels read weights a cache line at a time (graph.line_aligned_copy)."""
    g = gn.Graph(dtype=dtype)
    for shape in [(3072, 100), (5,), (), (0, 4), (7, 3, 2)]:
        source = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
        value = g.param(f"p{len(shape)}_{source.size}", source).value
        array = np.asarray(value)
        assert array.dtype == dtype and array.shape == shape
        assert array.flags.c_contiguous and array.flags.writeable
        assert array.size == 0 or array.ctypes.data % 64 == 0
        np.testing.assert_array_equal(array, source)
        if source.size:
            source.flat[0] = 99
            assert array.flat[0] == 0  # a copy
