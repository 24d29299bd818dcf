"""The executor's loops in C++ (cpp/walk.cpp) against its hooked loops in Python, which walk
the same plans step by step in bytecode: every value, gradient and edge gradient equal bit
for bit; errors naming the failing step; crafted plan entries refused, never a crash."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphnet as gn
from graphnet.gates.base import unbroadcast
from graphnet.kernels import _C

OPS = ("add", "subtract", "multiply", "tanh", "relu", "sigmoid")


def circuit(recipe, n_inputs):
    """A circuit of numbers: each gate (op, i, j) reads earlier nodes, so nodes fan out."""
    g = gn.Graph()
    nodes = [g.input(f"x{i}") for i in range(n_inputs)]
    for op, i, j in recipe:
        a, b = nodes[i % len(nodes)], nodes[j % len(nodes)]
        nodes.append(
            getattr(g, op)(a, b) if op in ("add", "subtract", "multiply") else getattr(g, op)(a)
        )
    g.sum(nodes[-1], name="loss")
    return g


def walked(g, feeds, hooked):
    """Every node's value and gradient and every edge's gradient after a forward and a
    backward, through the hooked Python loops or the C++ ones."""
    handle = g.add_hook(forward=lambda event: None, backward=lambda event: None) if hooked else None
    try:
        g.forward(feeds)
        g.backward("loss")  # unread gates are sinks too
    finally:
        if handle is not None:
            handle.remove()
    nodes = {n.name: (n.value, n.grad) for n in g.nodes}
    return nodes, g.edge_gradients()


def assert_same(first, second):
    def same(a, b):
        if a is None or b is None:
            return a is b
        return np.array_equal(a, b, equal_nan=True) and np.asarray(a).dtype == np.asarray(b).dtype

    (nodes, edges), (nodes_hooked, edges_hooked) = first, second
    assert nodes.keys() == nodes_hooked.keys() and edges.keys() == edges_hooked.keys()
    for name, (value, grad) in nodes.items():
        assert same(value, nodes_hooked[name][0]), name
        assert same(grad, nodes_hooked[name][1]), name
    for edge, grad in edges.items():
        assert same(grad, edges_hooked[edge]), edge


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(OPS), st.integers(0, 10**6), st.integers(0, 10**6)),
        min_size=1,
        max_size=60,
    ),
    st.lists(st.floats(-3, 3), min_size=1, max_size=6),
)
def test_scalar_circuits_walk_as_the_hooked_loops_do(recipe, inputs):
    g = circuit(recipe, len(inputs))
    feeds = {f"x{i}": x for i, x in enumerate(inputs)}
    assert_same(walked(g, feeds, hooked=False), walked(g, feeds, hooked=True))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_arrays_with_broadcasts_labels_and_no_gradient_gates(dtype):
    # Broadcast inputs (their gradients summed down), a fan-out, a label input (no
    # gradient), a compare mask (a gate that sends none) and a param read twice.
    rng = np.random.default_rng(0)
    g = gn.Graph(dtype=dtype)
    x = g.input("x", shape=(None, 4))
    y = g.input("y", dtype=np.int64, shape=(None,))
    w = g.param("w", rng.standard_normal((4, 3)))
    bias = g.param("bias", rng.standard_normal(3))
    scale = g.param("scale", np.array(1.5))
    h = g.add(g.matmul(x, w), bias, name="h")
    h = g.multiply(h, scale, name="scaled")
    mask = g.compare(h, ">", 0.0, name="mask")
    h = g.add(g.multiply(h, mask), g.multiply(h, h), name="mixed")
    g.softmax_loss(g.add(h, bias, name="scores"), y, name="loss")
    feeds = {"x": rng.standard_normal((5, 4)), "y": rng.integers(0, 3, 5)}
    assert_same(walked(g, feeds, hooked=False), walked(g, feeds, hooked=True))


def test_a_fused_cnn_walks_as_its_hooked_walk():
    # A hook that does not ask for every gate keeps the fused steps: both loops run them.
    model = gn.models.ThreeLayerConvNet(
        input_dim=(3, 8, 8),
        num_filters=4,
        filter_size=3,
        hidden_dim=6,
        num_classes=3,
        dtype=np.float64,
    )
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((2, 3, 8, 8)), rng.integers(0, 3, 2)
    loss, grads = model.loss(X, y)
    with model.graph.add_hook(forward=lambda event: None, backward=lambda event: None):
        loss_hooked, grads_hooked = model.loss(X, y)
    assert loss == loss_hooked
    assert all(np.array_equal(grads[k], grads_hooked[k]) for k in grads)


@gn.register_gate
class _FailsAtThree(gn.Gate):
    op = "walk_test_fails_at_three"
    inputs = ("x",)

    def forward(self, x):
        if x == 3.0:
            raise ValueError("three is refused")
        return x, None

    def backward(self, dout, cache, needs):
        if dout == 7.0:
            raise TypeError("seven is refused")
        return (dout,)


def test_a_failing_step_is_named_and_the_steps_it_ran_marked_stale():
    g = gn.Graph()
    x = g.input("x")
    h = x
    for k in range(40):
        h = g.add(h, 1.0, name=f"a{k}")
    h = g.apply("walk_test_fails_at_three", h, name="guard")
    g.multiply(h, 7.0, name="loss")
    g.forward(x=-39.0)  # guard passes 1.0; the loss's gradient into guard is 7.0
    with pytest.raises(gn.GraphError, match="backward of node 'guard'.*seven is refused"):
        g.backward()
    with pytest.raises(gn.GraphError, match="node 'guard'.*three is refused"):
        g.forward(x=-37.0)
    with pytest.raises(gn.GraphError, match="last forward failed at node 'guard'"):
        g.backward()


def test_an_interrupt_in_a_gate_stops_the_walk():
    @gn.register_gate
    class Interrupts(gn.Gate):
        op = "walk_test_interrupts"
        inputs = ("x",)

        def forward(self, x):
            if x > 5:
                raise KeyboardInterrupt
            return x, None

        def backward(self, dout, cache, needs):
            return (dout,)

    g = gn.Graph()
    g.apply("walk_test_interrupts", g.add(g.input("x"), 1.0), name="stop")
    g.forward(x=1.0)
    with pytest.raises(KeyboardInterrupt):
        g.forward(x=10.0)
    with pytest.raises(gn.GraphError, match="last forward failed at node 'stop'"):
        g.backward()


def _run_forward(loop, values):
    caches, progress = [None] * len(values), [0]
    _C.forward_walk(loop, values, caches, None, progress)
    return caches, progress


def pair(*values):
    return tuple(values), "cache"


@pytest.mark.parametrize(
    "loop",
    [
        ["not a tuple"],
        [(0, pair, (1,))],  # one field short
        [("0", pair, (1,), False)],  # an index that is not an int
        [(0, pair, [1], False)],  # inputs not a tuple
        [(0, pair, ("1",), False)],
        [(5, pair, (1,), False)],  # out of range
        [(0, pair, (-1,), False)],
        [(0, pair, (2**62,), False)],
        [(0, pair, (2**80,), False)],  # no Py_ssize_t holds it
        [(-(2**80), pair, (1,), False)],
        [(0, lambda x: x, (1,), False)],  # a gate whose result is not a pair
        [(0, lambda x: (x, x, x), (1,), False)],
        [(0, lambda x: None, (1,), False)],
    ],
)
def test_crafted_forward_entries_are_refused(loop):
    with pytest.raises((TypeError, ValueError, IndexError, OverflowError)):
        _run_forward(loop, [None, 2.0])


def test_crafted_backward_entries_are_refused():
    def backward(dout, cache, needs):
        return (dout, dout)

    bad_loops = [
        [(0, backward, (True,), ((0, 1, None),))],  # one field short
        [(0, backward, (True,), [(0, 1, None)], False)],  # targets not a tuple
        [(0, backward, (True,), ((0, 1),), False)],  # a target one field short
        [(0, backward, (True,), ((5, 1, None),), False)],  # no gradient at that position
        [(0, backward, (True,), ((0, 9, None),), False)],  # no such input
        [(0, backward, (True,), ((0, 1, 4),), False)],  # no such edge slot
        [(0, backward, (True,), ((0, 1, 2**80),), False)],
        [(9, backward, (True,), ((0, 1, None),), False)],  # no such node
        [(0, lambda d, c, n: None, (True,), ((0, 1, None),), False)],
    ]
    for loop in bad_loops:
        grads, progress = [np.float64(1.0), None], [0]
        with pytest.raises((TypeError, ValueError, IndexError, OverflowError)):
            _C.backward_walk(
                loop,
                [np.float64(0.0)] * 2,
                [None, None],
                grads,
                [None],
                None,
                np.float64,
                unbroadcast,
                progress,
            )
        assert progress == [0]


def test_a_gate_that_drops_the_values_it_was_given_leaves_the_walk_sound():
    # The loop holds its own references to a step's inputs and to its entry: a gate that
    # clears the lists it reads from frees nothing the loop still uses.
    values = [None, np.arange(3.0)]
    caches = [None, None]

    def clears(x):
        values[1] = None
        caches[:] = [None, None]
        return x * 2, x

    _C.forward_walk([(0, clears, (1,), False)], values, caches, None, [0])
    assert values[0].tolist() == [0.0, 2.0, 4.0] and caches[0].tolist() == [0.0, 1.0, 2.0]


def test_the_failing_step_number_is_reported():
    def fails(x):
        raise ValueError("no")

    loop = [(1, pair, (0,), False)] * 4 + [(1, fails, (0,), False)]
    progress = [0]
    with pytest.raises(ValueError, match="no"):
        _C.forward_walk(loop, [1.0, None], [None, None], None, progress)
    assert progress == [4]


def test_many_inputs_and_a_list_result():
    # A step of more inputs than the loop keeps on its stack, and a gate returning a list.
    values = [None] + [float(k) for k in range(20)]
    caches = [None] * len(values)
    _C.forward_walk(
        [(0, lambda *xs: [math.fsum(xs), len(xs)], tuple(range(1, 21)), False)],
        values,
        caches,
        None,
        [0],
    )
    assert values[0] == 190.0 and caches[0] == 20


def test_fan_out_gradients_are_summed_and_kept_per_edge():
    grads, edges = [1.0, None, None], [None, None]

    def sends(dout, cache, needs):
        return (np.float64(2.0), np.ones(3))  # a number, and an array to sum down to ()

    loop = [(0, sends, (True, True), ((0, 1, 0), (1, 1, 1), (0, 2, None)), False)]
    _C.backward_walk(
        loop,
        [0.0, np.float64(0.0), np.float64(0.0)],
        [None] * 3,
        grads,
        edges,
        None,
        np.float64,
        unbroadcast,
        [0],
    )
    assert grads[1] == 5.0 and grads[2] == 2.0
    assert edges[0] == 2.0 and edges[1] == 3.0


def test_a_sum_of_fan_out_gradients_that_nothing_else_holds_is_added_to_in_place():
    # Four edges into input 1: the first edge's array is kept at its slot, so the first sum
    # is a new array; the walk's own sum then takes the third edge in place; a sum that a
    # gate also holds (here the fourth step's) is not written into.
    rng = np.random.default_rng(0)
    sent = [rng.standard_normal((3, 4)).astype(np.float32) for _ in range(4)]
    copies = [s.copy() for s in sent]
    grads, edges, held, sums = [np.ones((3, 4), np.float32), None], [None] * 4, [], []

    def sends(k, hold=False):
        def backward(dout, cache, needs):
            sums.append(id(grads[1]))  # the input's sum as this step finds it
            if hold:
                held.append(grads[1])
            return (sent[k],)

        return backward

    loop = [(0, sends(k, hold=k == 3), (True,), ((0, 1, k),), False) for k in range(4)]
    values = [np.zeros((3, 4), np.float32)] * 2
    _C.backward_walk(loop, values, [None] * 2, grads, edges, None, np.float64, unbroadcast, [0])
    assert all(edge is s for edge, s in zip(edges, sent))
    for s, copy in zip(sent, copies):  # every edge's gradient as its gate sent it
        np.testing.assert_array_equal(s, copy)
    expected = ((copies[0] + copies[1]) + copies[2]) + copies[3]
    np.testing.assert_array_equal(grads[1], expected)
    np.testing.assert_array_equal(held[0], (copies[0] + copies[1]) + copies[2])
    assert sums[1] == id(sent[0]) and sums[3] == sums[2]  # the third edge's added in place
    assert grads[1] is not held[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("consumers", [2, 3, 4])
@pytest.mark.parametrize("training", [True, False])
def test_fan_out_of_arrays_walks_as_the_hooked_loops_do(dtype, consumers, training):
    # An input read by 2-4 gates, one of them twice (x * x), one through an add that sends
    # its upstream gradient on unchanged, a broadcast bias read by each branch: every node's
    # gradient and every edge's gradient the same bits as the hooked loop's, and the sums
    # the same on any thread count.
    rng = np.random.default_rng(consumers)
    g = gn.Graph(dtype=dtype)
    x = g.input("x", shape=(None, 6))
    w = g.param("w", rng.standard_normal((6, 6)))
    bias = g.param("bias", rng.standard_normal(6))
    h = g.tanh(g.add(g.matmul(x, w), bias), name="h")
    branches = [
        g.multiply(h, h, name="square"),
        g.add(h, bias, name="shifted"),
        g.matmul(h, w, name="mixed"),
        g.sigmoid(h, name="gated"),
    ][:consumers]
    total = branches[0]
    for branch in branches[1:]:
        total = g.add(total, branch)
    g.sum(total, name="loss")
    if not training:
        g.eval()
    feeds = {"x": rng.standard_normal((5, 6))}
    first = walked(g, feeds, hooked=False)
    assert_same(first, walked(g, feeds, hooked=True))
    before = _C.get_num_threads()
    try:
        _C.set_num_threads(2)
        assert_same(first, walked(g, feeds, hooked=False))
    finally:
        _C.set_num_threads(before)


class _Marked(np.ndarray):
    """An ndarray subclass: the walk reads its shape through Python, as for any object."""


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(1, 4), min_size=0, max_size=4),
    st.lists(st.booleans(), min_size=4, max_size=4),
    st.integers(0, 4),
    st.sampled_from([np.float32, np.float64]),
    st.sampled_from(["array", "subclass", "value subclass"]),
)
def test_a_gradient_is_summed_down_to_its_inputs_shape_whatever_its_rank(
    shape, ones, dropped, dtype, kind
):
    # The input's shape: the gradient's with some axes of size 1 and some leading axes
    # dropped (a broadcast), or the same (then the gradient is stored as it was sent).
    shape = tuple(shape)
    input_shape = tuple(1 if one else n for n, one in zip(shape, ones))[min(dropped, len(shape)) :]
    rng = np.random.default_rng(len(shape) + 7 * dropped)
    sent = rng.standard_normal(shape).astype(dtype)
    value = np.zeros(input_shape, dtype)
    if kind == "subclass":
        sent = sent.view(_Marked)
    elif kind == "value subclass":
        value = value.view(_Marked)

    def sends(dout, cache, needs):
        return (sent,)

    grads = [np.ones(shape, dtype), None]
    loop = [(0, sends, (True,), ((0, 1, None),), False)]
    _C.backward_walk(loop, [sent, value], [None] * 2, grads, [], None, np.float64, unbroadcast, [0])
    expected = unbroadcast(sent, input_shape)
    assert np.shape(grads[1]) == input_shape
    np.testing.assert_array_equal(grads[1], expected)
    if input_shape == shape:
        assert grads[1] is sent
