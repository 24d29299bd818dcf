"""The pieces of a batch-1 eval call that take short ways: the feed's finiteness check
(one C++ pass over the exponent bits: np.isfinite(x).all()'s answer), the mean gate without
np.mean's wrapper (np.mean's numbers, bit for bit), the affine gate's bias added in C++
(numpy's `out += b`, bit for bit) and 2x2, stride-2 average pooling on a loop of its own
(the general loop's numbers, bit for bit), each on random shapes, float32 and float64;
the reshape, flatten and transpose gates by the array's own methods (numpy's functions'
results), and an integer feed of its input's own dtype, stored as it is."""

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphnet as gn
from graphnet.core.feeds import all_finite
from graphnet.gates.nn import Affine
from graphnet.gates.tensor import Flatten, Mean, Reshape, Transpose
from graphnet.kernels import _C
from kernels.test_avx2 import kernel_threads  # tests/ is on sys.path (rootdir packages)

DTYPES = st.sampled_from([np.float32, np.float64])


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a.reshape(-1).view(np.uint8), b.reshape(-1).view(np.uint8))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 7), min_size=1, max_size=4), DTYPES, st.data())
def test_all_finite_is_isfinite_all(shape, dtype, data):
    x = np.random.default_rng(len(shape)).standard_normal(shape).astype(dtype)
    if x.size and data.draw(st.booleans()):
        where = data.draw(st.integers(0, x.size - 1))
        x.reshape(-1)[where] = data.draw(
            st.sampled_from([np.nan, np.inf, -np.inf, np.finfo(dtype).max, 0.0])
        )
    if data.draw(st.booleans()):
        x = x.T  # not contiguous
    assert all_finite(x) == bool(np.isfinite(x).all())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 1023, 1024, 1025, 5000])
def test_all_finite_finds_one_bad_element_anywhere(dtype, n):
    info = np.finfo(dtype)
    x = np.random.default_rng(n).standard_normal(n).astype(dtype)
    x[: min(n, 4)] = [info.max, -info.max, info.tiny / 4, -0.0][: min(n, 4)]  # all finite
    assert _C.all_finite(x) and all_finite(x.reshape(1, n)[:, ::-1])
    for where in {0, n // 2, n - 1}:
        for bad in (np.nan, np.inf, -np.inf):
            y = x.copy()
            y[where] = bad
            assert not _C.all_finite(y) and not all_finite(y)
    assert _C.all_finite(np.zeros(0, dtype))
    with pytest.raises(ValueError, match="all_finite x must be float32 or float64"):
        _C.all_finite(np.zeros(3, np.int64))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=4), DTYPES, st.data())
def test_mean_gate_is_np_mean_bit_for_bit(shape, dtype, data):
    x = np.random.default_rng(sum(shape)).standard_normal(shape).astype(dtype) * 1e3
    rank = len(shape)
    axis = data.draw(
        st.one_of(
            st.none(),
            st.integers(-rank, rank - 1),
            st.sets(st.integers(0, rank - 1), min_size=1).map(tuple),
        )
    )
    keepdims = data.draw(st.booleans())
    if data.draw(st.booleans()):
        x = x.T
    out, cache = Mean(axis=axis, keepdims=keepdims).forward(x)
    expected = np.mean(x, axis=axis, keepdims=keepdims)
    assert type(out) is type(expected) and cache == x.shape
    same_bits(out, expected)


@pytest.mark.filterwarnings("ignore:Mean of empty slice", "ignore:invalid value")
def test_mean_gate_of_other_dtypes_and_empty_arrays_is_np_means():
    for x in (np.arange(12).reshape(3, 4), np.ones((2, 3), np.float16), np.ones((0, 3))):
        out, _ = Mean(axis=0).forward(x)
        same_bits(out, np.mean(x, axis=0))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4), st.integers(1, 300), st.integers(1, 130), DTYPES, st.booleans())
def test_affine_bias_in_cpp_is_numpys_add(rows, features, outputs, dtype, image):
    rng = np.random.default_rng(rows * features + outputs)
    shape = (rows, features, 1) if image else (rows, features)
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((features, outputs)).astype(dtype)
    b = rng.standard_normal(outputs).astype(dtype)
    out, _ = Affine().forward(x, w, b)
    expected = _C.matmul(x.reshape(rows, features), w)
    expected += b
    same_bits(out, expected)
    with kernel_threads(2):
        same_bits(Affine().forward(x, w, b)[0], out)


def test_matmul_bias_refuses_a_wrong_shape_or_dtype():
    a, b = np.ones((2, 3), np.float32), np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match="matmul bias"):
        _C.matmul(a, b, bias=np.ones(3, np.float32))
    with pytest.raises(ValueError, match="bias"):
        _C.matmul(a, b, bias=np.ones(4))
    same_bits(
        _C.matmul(
            np.ones((2, 0), np.float32),
            np.ones((0, 4), np.float32),
            bias=np.arange(4, dtype=np.float32),
        ),
        np.tile(np.arange(4, dtype=np.float32), (2, 1)),
    )


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3), st.integers(1, 5), st.integers(2, 19), st.integers(2, 41), DTYPES)
def test_avg_pool_2x2_stride_2_is_the_general_loops_sum(N, C, H, W, dtype):
    x = np.random.default_rng(H * W).standard_normal((N, C, H, W)).astype(dtype)
    Ho, Wo = H // 2, W // 2
    corner = [x[:, :, i : 2 * Ho : 2, j : 2 * Wo : 2] for i in (0, 1) for j in (0, 1)]
    expected = (dtype(0) + corner[0] + corner[1] + corner[2] + corner[3]) / dtype(4)
    out = _C.avg_pool_forward(x, 2, 2, 2)
    same_bits(out, expected)
    with kernel_threads(2):
        same_bits(_C.avg_pool_forward(x, 2, 2, 2), out)


def test_anomaly_mode_in_a_new_thread_sees_its_walks():
    g = gn.Graph()
    x = g.input("x", shape=(None, 2))
    g.log(x, name="out")
    seen = []

    def walk():
        with gn.detect_anomaly(), np.errstate(invalid="ignore"):
            try:
                g.forward({"x": np.array([[1.0, -1.0]])})
            except Exception as err:  # the log of -1 is NaN: anomaly mode names the node
                seen.append(str(err))

    thread = threading.Thread(target=walk)
    thread.start()
    thread.join()
    assert seen and "out" in seen[0]
    with np.errstate(invalid="ignore"):
        g.forward({"x": np.array([[1.0, -1.0]])})  # this thread: no anomaly mode


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(1, 4), min_size=1, max_size=4),
    st.sampled_from([np.float32, np.float64, np.int64]),
    st.data(),
)
def test_reshape_flatten_and_transpose_gates_are_numpys(shape, dtype, data):
    def same_view(out, expected):  # the same numbers, laid out alike
        out, expected = np.asarray(out), np.asarray(expected)
        assert out.shape == expected.shape and out.strides == expected.strides
        same_bits(np.ascontiguousarray(out), np.ascontiguousarray(expected))

    x = np.arange(int(np.prod(shape))).reshape(shape).astype(dtype)
    axes = tuple(data.draw(st.permutations(range(len(shape)))))
    negative = tuple(a - len(shape) for a in axes)
    for value in (x, x[..., ::-1], x.tolist()):  # an array, a strided view, a list
        for gate_axes in (axes, negative, None):
            out, permutation = Transpose(gate_axes).forward(value)
            same_view(out, np.transpose(value, gate_axes))
            assert permutation == (axes if gate_axes is not None else permutation)
        out, kept = Reshape((-1,)).forward(value)
        same_view(out, np.reshape(value, (-1,)))
        assert kept == np.shape(value)
        same_view(Reshape((-1,)).backward(out, kept, (True,))[0], np.reshape(out, kept))
        flat = (shape[0], int(np.prod(shape[1:])))
        same_view(Flatten(1).forward(value)[0], np.reshape(value, flat))
    for scalar in (np.float64(2.5), 3.0):  # a number: numpy's functions, as before
        same_bits(Transpose().forward(scalar)[0], np.transpose(scalar))
        same_bits(Reshape((1,)).forward(scalar)[0], np.reshape(scalar, (1,)))


def test_transpose_refuses_axes_that_do_not_fit_the_rank_every_time():
    gate = Transpose((0, 2, 1))
    for _ in range(2):  # the permutations are kept per rank; the refusals are not
        with pytest.raises(gn.ShapeError, match="out of range"):
            gate.forward(np.ones((2, 3)))
    with pytest.raises(gn.ShapeError, match="not a permutation"):
        Transpose((0, 0)).forward(np.ones((2, 3)))


def test_an_integer_feed_of_its_inputs_dtype_is_stored_as_it_is_and_its_shape_checked():
    g = gn.Graph()
    words = g.input("words", shape=(None, 5), dtype=np.int64)
    out = g.word_embedding(words, g.param("W", np.arange(20.0).reshape(10, 2)), name="out")
    feed = np.array([[1, 2, 3, 4, 9]], np.int64)
    np.testing.assert_array_equal(g.run(out, {"words": feed}), np.arange(20.0).reshape(10, 2)[feed])
    assert g.store.value(words.index) is feed
    with pytest.raises(gn.GraphError, match=r"has shape \(1, 4\), expected \(None, 5\)"):
        g.run(out, {"words": feed[:, :4]})
    int32 = feed.astype(np.int32)  # another integer dtype is converted, as before
    g.run(out, {"words": int32})
    assert g.store.value(words.index).dtype == np.int64
    with pytest.raises(gn.GraphError, match="non-integers"):
        g.run(out, {"words": feed + 0.5})
