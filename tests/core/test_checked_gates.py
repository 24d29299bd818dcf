"""A gate registered outside graphnet is checked as it runs (graphnet/core/checked_gates.py):
its output in its node's dtype and shape, one gradient per input in that input's dtype and
shape; a mistake is a GraphError naming the node and the gate, not a float64 graph in
disguise or a gradient of the wrong shape kept as it is. A correct one runs as before."""

import numpy as np
import pytest

import graphnet as gn
from graphnet.core.checked_gates import is_graphnets
from graphnet.gates.base import _REGISTRY


class Scaled(gn.Gate):
    """f = 2x, with what forward and backward return chosen per test."""

    inputs = ("x",)
    formula, derivatives = "2·{0}", ("2",)
    output = staticmethod(lambda x: 2 * x)
    gradients = staticmethod(lambda dout, x: (2 * dout,))

    def shape(self, x):
        return x

    def forward(self, x):
        return type(self).output(x), x

    def backward(self, dout, cache, needs):
        return type(self).gradients(dout, cache)


def scaled_gate(op, output=None, gradients=None):
    attrs = {"op": op}
    if output is not None:
        attrs["output"] = staticmethod(output)
    if gradients is not None:
        attrs["gradients"] = staticmethod(gradients)
    return gn.register_gate(type(op.title(), (Scaled,), attrs))


def run(op, dtype=np.float32, x=None, backward=True):
    g = gn.Graph(dtype=dtype)
    node = g.apply(op, g.input("x", shape=(None, 3)), name="f")
    g.sum(node, name="total")
    g.forward(x=np.ones((2, 3), dtype) if x is None else x)
    if backward:
        g.backward()
    return g


@pytest.mark.parametrize("graph_dtype, other", [(np.float32, np.float64), (np.float64, np.float32)])
def test_an_output_of_another_float_dtype_is_refused(graph_dtype, other):
    scaled_gate(f"to_{np.dtype(other).name}", output=lambda x: (2 * x).astype(other))
    message = (
        f"gate 'to_{np.dtype(other).name}' .* of node 'f': forward returned "
        f"{np.dtype(other).name} values for a {np.dtype(graph_dtype).name} node"
    )
    with pytest.raises(gn.GraphError, match=message):
        run(f"to_{np.dtype(other).name}", graph_dtype)


def test_an_output_of_another_shape_or_not_a_pair_is_refused():
    scaled_gate("flattens", output=lambda x: (2 * x).ravel())
    with pytest.raises(gn.GraphError, match=r"returned shape \(6,\), but .* gave \(None, 3\)"):
        run("flattens")

    class Single(Scaled):
        op = "single"

        def forward(self, x):
            return 2 * x

    gn.register_gate(Single)
    with pytest.raises(gn.GraphError, match=r"must return \(output, cache\), got ndarray"):
        run("single")


def test_integer_outputs_pass():
    scaled_gate("labels", output=lambda x: (x > 0).astype(np.int64))
    g = run("labels", backward=False)
    assert g["f"].value.dtype == np.int64


@pytest.mark.parametrize(
    "gradients, message",
    [
        (lambda dout, x: (), r"one gradient \(or None\) per input, 1, got 0"),
        (lambda dout, x: 2 * dout, r"one gradient \(or None\) per input, 1, got ndarray"),
        (
            lambda dout, x: ((2 * dout).T,),
            r"gradient of shape \(3, 2\) for input 'x' of shape \(2, 3\)",
        ),
        (
            lambda dout, x: ((2 * dout).astype(np.float64),),
            "returned float64 values for input 'x', which is float32",
        ),
        (lambda dout, x: ([[2.0] * 3] * 2,), "returned a list for input 'x'; return a numpy array"),
    ],
)
def test_wrong_gradients_are_refused(gradients, message):
    op = f"bad_backward_{abs(hash(message)) % 10**8}"
    scaled_gate(op, gradients=gradients)
    with pytest.raises(gn.GraphError, match=f"gate '{op}' .* of node 'f': backward .*{message}"):
        run(op)


def test_correct_gates_run_as_before():
    # A gradient in a shape the input broadcasts to is summed back down by the walk; a
    # Python number becomes a number of the input's dtype; None is no gradient.
    scaled_gate("broadcasts", gradients=lambda dout, x: (np.broadcast_to(2 * dout, (4, 2, 3)) / 4,))
    g = run("broadcasts")
    np.testing.assert_array_equal(g["x"].grad, np.full((2, 3), 2, np.float32))
    assert g["x"].grad.dtype == np.float32

    scaled_gate("number", gradients=lambda dout, x: (2.0 * float(dout),))
    g = gn.Graph(dtype=np.float32)
    g.apply("number", g.input("x"), name="f")
    g.forward(x=1.5)
    g.backward()
    assert g["x"].grad == 2 and g["x"].grad.dtype == np.float32

    scaled_gate("no_gradient", gradients=lambda dout, x: (None,))
    assert run("no_gradient")["x"].grad is None


def test_graphnets_own_gates_run_unwrapped():
    own = [cls for cls in _REGISTRY.values() if cls.__module__.startswith("graphnet.")]
    assert len(own) > 50 and all(is_graphnets(cls.__new__(cls)) for cls in own)
    g = gn.Graph()
    f = g.tanh(g.input("x"))
    g.forward(x=0.5)
    g.backward()
    (step,) = g.executor.backward_plan(f, fuse=True).steps
    assert step.run == f.gate.backward
