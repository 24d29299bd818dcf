"""_C.affine_forward and _C.affine_backward: an affine map on the rows of x (its first `kept`
axes, the rest flattened into features) in one binding each, which the temporal affine and
the affine gate call instead of reshapes, checks and three products' bindings: the same
bits as those calls (matmul with its bias, matmul with a transposed operand, the column
sums; one column summed as numpy sums it), on any thread count, and refusals the callers'
checked paths name."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphnet as gn
from graphnet.kernels import _C

from .test_avx2 import assert_same_bits_on_any_thread_count

ALL = (True, True, True)


def operands(seed, lead, features, outputs, dtype, view):
    """x of shape lead + features (a transposed view when `view`), w, b and dout."""
    r = np.random.default_rng(seed)
    shape = tuple(lead) + tuple(features)
    x = r.standard_normal(shape[::-1]).astype(dtype).T if view else r.standard_normal(shape)
    D = int(np.prod(features))
    w = r.standard_normal((D, outputs)).astype(dtype)
    b = r.standard_normal(outputs).astype(dtype)
    dout = r.standard_normal(tuple(lead) + (outputs,)).astype(dtype)
    return x.astype(dtype), w, b, dout


def the_calls_it_replaces(x, w, b, dout, kept):
    """What the callers computed before: the rows' product plus bias, then dx, dw, db."""
    R = int(np.prod(x.shape[:kept]))
    rows = np.ascontiguousarray(x).reshape(R, w.shape[0])
    dout_rows = np.ascontiguousarray(dout).reshape(R, w.shape[1])
    out = _C.matmul(rows, w, False, False, b).reshape(dout.shape)
    dx = _C.matmul(dout_rows, w, False, True).reshape(x.shape)
    dw = _C.matmul(rows, dout_rows, True, False)
    db = dout_rows.sum(axis=0)  # the column sums' bits; numpy's own for one column
    return out, dx, dw, db


@settings(max_examples=80, deadline=None)
@given(
    lead=st.lists(st.integers(0, 5), min_size=1, max_size=2),
    features=st.lists(st.integers(1, 9), min_size=1, max_size=2),
    outputs=st.integers(1, 40),
    dtype=st.sampled_from(["float32", "float64"]),
    view=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_the_same_bits_as_the_calls_it_replaces(lead, features, outputs, dtype, view, seed):
    x, w, b, dout = operands(seed, lead, features, outputs, dtype, view)
    kept = len(lead)
    out = _C.affine_forward(x, w, b, kept)
    dx, dw, db = _C.affine_backward(dout, x, w, ALL)
    expected = the_calls_it_replaces(x, w, b, dout, kept)
    for got, want in zip((out, dx, dw, db), expected):
        assert got.dtype == want.dtype == np.dtype(dtype)
        assert got.shape == want.shape and got.flags.c_contiguous
        assert got.tobytes() == want.tobytes()
    # and numpy's formulas in float64, to rounding
    R = int(np.prod(lead))
    rows = x.reshape(R, w.shape[0]).astype(np.float64)
    dout_rows = dout.reshape(R, outputs).astype(np.float64)
    tol = 1e-4 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(out.reshape(R, outputs), rows @ w + b, rtol=tol, atol=tol)
    np.testing.assert_allclose(dx.reshape(R, w.shape[0]), dout_rows @ w.T, rtol=tol, atol=tol)
    np.testing.assert_allclose(dw, rows.T @ dout_rows, rtol=tol, atol=tol)
    np.testing.assert_allclose(db, dout_rows.sum(axis=0), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "lead, features, outputs", [((64, 33), (70,), 300), ((300,), (3, 5, 7), 1)]
)
def test_the_same_bits_on_one_to_three_threads(dtype, lead, features, outputs):
    """Rows enough to split (a batch of sequences, a one-output regression)."""
    x, w, b, dout = operands(3, lead, features, outputs, dtype, False)
    kept = len(lead)
    assert_same_bits_on_any_thread_count(
        lambda: (_C.affine_forward(x, w, b, kept), *_C.affine_backward(dout, x, w, ALL))
    )


def test_a_gradient_nobody_needs_is_none_and_the_others_as_when_all_are():
    x, w, b, dout = operands(5, (4,), (2, 3), 5, "float32", False)
    everything = _C.affine_backward(dout, x, w, ALL)
    for needs in [(True, False, False), (False, True, False), (False, False, True), [0, 1, 1]]:
        got = _C.affine_backward(dout, x, w, needs)
        for need, gradient, full in zip(needs, got, everything):
            assert (gradient is None) if not need else gradient.tobytes() == full.tobytes()


def test_inf_and_nan_pass_through_as_in_the_calls_it_replaces():
    x, w, b, dout = operands(7, (3, 4), (6,), 5, "float64", False)
    x[0, 1, 2], dout[2, 3, 4], w[1, 1] = np.inf, np.nan, -0.0
    out = _C.affine_forward(x, w, b, 2)
    got = (out, *_C.affine_backward(dout, x, w, ALL))
    for g, want in zip(got, the_calls_it_replaces(x, w, b, dout, 2)):
        assert g.tobytes() == want.tobytes()


def test_what_it_refuses_is_a_value_error_naming_the_shapes():
    x, w, b, dout = operands(1, (2, 3), (4,), 5, "float32", False)
    cases = [
        (lambda: _C.affine_forward(x, w, b, 0), "no 0 leading axes"),
        (lambda: _C.affine_forward(x, w, b, 4), "no 4 leading axes"),
        (lambda: _C.affine_forward(x, w, b, 1), r"has 12 features past its first 1 axes"),
        (lambda: _C.affine_forward(x, w.ravel(), b, 2), "affine w must be 2-D"),
        (lambda: _C.affine_forward(x, w, b[:4], 2), r"affine b must have shape \(5,\)"),
        (lambda: _C.affine_forward(x, w.astype(np.float64), b, 2), "w has dtype float64"),
        (lambda: _C.affine_forward(x.astype(np.float16), w, b, 2), "w has dtype float32"),
        (lambda: _C.affine_forward(*(a.astype(int) for a in (x, w, b)), 2), "must be float32"),
        (lambda: _C.affine_backward(dout[:, :2], x, w, ALL), r"affine dout must have shape"),
        (lambda: _C.affine_backward(dout.astype(np.float64), x, w, ALL), "dout has dtype"),
        (lambda: _C.affine_backward(dout, x, w, ALL[:2]), "three bools"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


@pytest.mark.parametrize("shape", [(2**28, 2**30, 1), (2**59, 1), (2**20, 2**11, 2**10)], ids=str)
def test_sizes_past_the_blas_are_refused_before_any_memory(shape):
    """Zero-stride views as large as numpy makes them: refused by the checks, never copied
    or read (the sizes' products are checked against 64 bits too, which numpy's arrays
    cannot reach)."""
    x = np.broadcast_to(np.zeros(1, np.float32), shape)
    w = np.zeros((shape[-1], 2), np.float32)
    with pytest.raises(ValueError, match="too large for the 32-bit BLAS"):
        _C.affine_forward(x, w, np.zeros(2, np.float32), len(shape) - 1)
    dout = np.broadcast_to(np.zeros(1, np.float32), shape[:-1] + (2,))
    with pytest.raises(ValueError, match="too large for the 32-bit BLAS"):
        _C.affine_backward(dout, x, w, ALL)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_affine_gate_on_images_gives_each_needed_gradient_as_before(dtype):
    """A conv-shaped x (flattened into rows), w needing no gradient: the gradients are the
    products' numbers in x's shape, w's None; a mix of dtypes takes numpy's promotion."""
    r = np.random.default_rng(11)
    g = gn.Graph(dtype=dtype)
    x = g.input("x")
    w = g.const(r.standard_normal((2 * 3 * 3, 4)).astype(dtype), name="w")
    b = g.param("b", r.standard_normal(4).astype(dtype))
    out = g.affine(x, w, b, name="out")
    X = r.standard_normal((5, 2, 3, 3)).astype(dtype)
    g.forward(x=X)
    dout = r.standard_normal((5, 4)).astype(dtype)
    g.backward(out, dout)
    rows = X.reshape(5, 18)
    assert x.grad.shape == X.shape
    assert x.grad.tobytes() == _C.matmul(dout, w.value, False, True).tobytes()
    assert b.grad.tobytes() == dout.sum(axis=0).tobytes()
    assert w.grad is None
    dout64, w32 = dout.astype(np.float64), w.value.astype(np.float32)
    dx, dw, db = out.gate.backward(dout64, ((5, 2, 3, 3), rows, w32), ALL)
    assert dx.shape == X.shape and dx.dtype == dw.dtype == db.dtype == np.float64
    np.testing.assert_allclose(dx.reshape(5, 18), dout64 @ w32.T.astype(np.float64), rtol=1e-12)
    np.testing.assert_allclose(dw, rows.T.astype(np.float64) @ dout64, rtol=1e-12)
    assert db.tobytes() == dout64.sum(axis=0).tobytes()
