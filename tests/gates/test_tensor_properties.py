"""Hypothesis over random shapes for the shape-moving gates and matmul: values against
numpy, the shape inferred at build time (with unknown sizes) against the value's, and the
gradients by the adjoint identity: for a gate linear in an input v, <f(v'), dout> must
equal <v', dv> for any v' (f computed by numpy), which pins down every entry of dv."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphnet as gn

SETTINGS = settings(max_examples=60, deadline=None)
dims = st.lists(st.integers(0, 4), min_size=0, max_size=4)


def declared(shape, hide):
    """The shape an input is built with: some sizes left unknown."""
    return tuple(None if h else n for n, h in zip(shape, hide))


def agrees(static, shape):
    return static is None or (
        len(static) == len(shape) and all(s is None or s == n for s, n in zip(static, shape))
    )


def run(build, arrays, hides):
    """Build on inputs of partly unknown shapes, run, and backward a random dout; returns
    (value, static shape, input gradients, dout)."""
    g = gn.Graph()
    nodes = [
        g.input(f"in{i}", shape=declared(a.shape, h)) for i, (a, h) in enumerate(zip(arrays, hides))
    ]
    out = build(g, *nodes)
    value = np.asarray(g.run(out, {f"in{i}": a for i, a in enumerate(arrays)}))
    dout = np.random.default_rng(0).standard_normal(value.shape)
    g.backward(out, grad=dout)
    return value, out.static_shape, [n.grad for n in nodes], dout


def assert_adjoint(linear_map, grad, dout, shape):
    probe = np.random.default_rng(1).standard_normal(shape)
    np.testing.assert_allclose(
        np.sum(linear_map(probe) * dout), np.sum(probe * grad), rtol=1e-9, atol=1e-9
    )


@st.composite
def matmul_operands(draw):
    batch = draw(st.lists(st.integers(1, 3), max_size=3))
    a_batch = [draw(st.sampled_from([1, n])) for n in batch][draw(st.integers(0, len(batch))) :]
    b_batch = [draw(st.sampled_from([1, n])) for n in batch][draw(st.integers(0, len(batch))) :]
    m, k, n = draw(st.integers(0, 4)), draw(st.integers(0, 4)), draw(st.integers(0, 4))
    a_shape = (k,) if draw(st.booleans()) else tuple(a_batch) + (m, k)
    b_shape = (k,) if draw(st.booleans()) else tuple(b_batch) + (k, n)
    return a_shape, b_shape


@pytest.mark.slow
@SETTINGS
@given(matmul_operands(), st.data())
def test_matmul(shapes, data):
    rng = np.random.default_rng(2)
    a, b = (rng.standard_normal(s) for s in shapes)
    hides = [data.draw(st.lists(st.booleans(), min_size=x.ndim, max_size=x.ndim)) for x in (a, b)]
    value, static, (da, db), dout = run(lambda g, x, y: x @ y, [a, b], hides)
    np.testing.assert_allclose(value, np.matmul(a, b), rtol=1e-12, atol=1e-12)
    assert agrees(static, value.shape)
    assert da.shape == a.shape and db.shape == b.shape
    assert_adjoint(lambda v: np.matmul(v, b), da, dout, a.shape)
    assert_adjoint(lambda v: np.matmul(a, v), db, dout, b.shape)


@st.composite
def reshapes(draw):
    shape = draw(dims)
    order = draw(st.permutations(range(len(shape))))
    cuts = sorted(draw(st.sets(st.integers(1, max(len(shape) - 1, 1)))))
    groups = np.split(np.array([shape[i] for i in order], dtype=int), cuts) if shape else []
    target = [int(np.prod(group)) for group in groups if group.size]
    if target and np.prod(target) and draw(st.booleans()):
        target[draw(st.integers(0, len(target) - 1))] = -1
    return tuple(shape), tuple(target)


@pytest.mark.slow
@SETTINGS
@given(reshapes(), st.data())
def test_reshape(shapes, data):
    shape, target = shapes
    x = np.random.default_rng(3).standard_normal(shape)
    hide = data.draw(st.lists(st.booleans(), min_size=len(shape), max_size=len(shape)))
    value, static, (dx,), dout = run(lambda g, v: g.reshape(v, target), [x], [hide])
    np.testing.assert_array_equal(value, x.reshape(target))
    assert agrees(static, value.shape)
    assert_adjoint(lambda v: v.reshape(target), dx, dout, shape)


@SETTINGS
@given(
    dims.flatmap(
        lambda shape: st.tuples(
            st.just(tuple(shape)),
            st.one_of(st.none(), st.permutations(range(len(shape))).map(tuple)),
            st.lists(st.booleans(), min_size=len(shape), max_size=len(shape)),
        )
    )
)
@pytest.mark.slow
def test_transpose(case):
    shape, axes, hide = case
    x = np.random.default_rng(4).standard_normal(shape)
    value, static, (dx,), dout = run(lambda g, v: g.transpose(v, axes), [x], [hide])
    np.testing.assert_array_equal(value, np.transpose(x, axes))
    assert agrees(static, value.shape)
    assert_adjoint(lambda v: np.transpose(v, axes), dx, dout, shape)


@st.composite
def concats(draw):
    rank = draw(st.integers(1, 3))
    shape = draw(st.lists(st.integers(0, 3), min_size=rank, max_size=rank))
    axis = draw(st.integers(-rank, rank - 1))
    sizes = draw(st.lists(st.integers(0, 3), min_size=1, max_size=4))
    shapes = [tuple(n if i != axis % rank else size for i, n in enumerate(shape)) for size in sizes]
    hides = [draw(st.lists(st.booleans(), min_size=rank, max_size=rank)) for _ in shapes]
    return shapes, axis, hides


@pytest.mark.slow
@SETTINGS
@given(concats())
def test_concat(case):
    shapes, axis, hides = case
    rng = np.random.default_rng(5)
    arrays = [rng.standard_normal(s) for s in shapes]
    value, static, grads, dout = run(lambda g, *xs: g.concat(xs, axis=axis), arrays, hides)
    np.testing.assert_array_equal(value, np.concatenate(arrays, axis=axis))
    assert agrees(static, value.shape)
    for i, (array, grad) in enumerate(zip(arrays, grads)):

        def place(v, i=i):
            return np.concatenate(
                [v if j == i else np.zeros_like(a) for j, a in enumerate(arrays)], axis=axis
            )

        assert_adjoint(place, grad, dout, array.shape)


bounds = st.one_of(st.none(), st.integers(-6, 6))


@st.composite
def keys(draw):
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=3)))
    key = []
    for axis, size in enumerate(shape):
        kind = draw(
            st.sampled_from(
                ["int", "slice", "slice", "array"]
                if axis == 0 or all(k == slice(None) for k in key)
                else ["int", "slice"]
            )
        )
        if kind == "int":
            key.append(draw(st.integers(-size, size - 1)))
        elif kind == "slice":
            key.append(
                slice(draw(bounds), draw(bounds), draw(st.sampled_from([None, 1, 2, -1, -3])))
            )
        else:
            key.append(
                np.array(draw(st.lists(st.integers(-size, size - 1), max_size=4)), dtype=np.int64)
            )
            break  # an array takes the one axis: the rest of the key stays `:`
    if draw(st.booleans()) and not any(isinstance(k, np.ndarray) for k in key):
        key.insert(draw(st.integers(0, len(key))), draw(st.sampled_from([None, Ellipsis])))
    hide = draw(st.lists(st.booleans(), min_size=len(shape), max_size=len(shape)))
    return shape, tuple(key), hide


@pytest.mark.slow
@SETTINGS
@given(keys())
def test_indexing(case):
    shape, key, hide = case
    x = np.random.default_rng(6).standard_normal(shape)
    value, static, (dx,), dout = run(lambda g, v: v[key], [x], [hide])
    np.testing.assert_array_equal(value, x[key])
    assert agrees(static, value.shape)
    assert_adjoint(lambda v: v[key], dx, dout, shape)


@st.composite
def means(draw):
    shape = tuple(draw(st.lists(st.integers(1, 4), max_size=4)))
    rank = len(shape)
    axes = draw(
        st.one_of(st.none(), st.sets(st.integers(0, rank - 1), min_size=1) if rank else st.none())
    )
    if axes is not None:
        axes = tuple(a - rank if draw(st.booleans()) else a for a in axes)
        axes = axes[0] if len(axes) == 1 and draw(st.booleans()) else axes
    hide = draw(st.lists(st.booleans(), min_size=rank, max_size=rank))
    return shape, axes, draw(st.booleans()), hide


@pytest.mark.slow
@SETTINGS
@given(means())
def test_mean(case):
    shape, axis, keepdims, hide = case
    x = np.random.default_rng(7).standard_normal(shape)
    value, static, (dx,), dout = run(
        lambda g, v: g.mean(v, axis=axis, keepdims=keepdims), [x], [hide]
    )
    np.testing.assert_allclose(value, np.mean(x, axis=axis, keepdims=keepdims), rtol=1e-12)
    assert agrees(static, value.shape)
    assert_adjoint(lambda v: np.mean(v, axis=axis, keepdims=keepdims), dx, dout, shape)
