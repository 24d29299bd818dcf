"""The course's layer functions (graphnet.layers, rnn_layers, fast_layers) under hostile
arguments, from a seeded generator of valid calls at random small shapes.

From each valid call, every array argument in turn is replaced by
- the same values in another layout (strided, negative strides, Fortran order, read-only,
  misaligned, a zero-stride view, big-endian, unpickled: a dtype object of its own, a
  list): the same answer as on a plain C-contiguous copy, in the same dtype;
- a hostile value (complex, object, string, float16 and integer dtypes; a 0-size axis;
  an axis more or less; one element more; a 0-d array; None; NaN and infinities): the
  call returns, or raises a ValueError or TypeError with a message; for an array of
  what is not real numbers, a ValueError naming the argument.
Every hyper-parameter of a param dict (stride, pad, pool sizes, eps, p, mode, seed) is
replaced by hostile numbers (0, -1, 2**31, 2**63, 2**64, 1.5, NaN, True, None, "2") and
removed: the call returns or raises a ValueError or TypeError with a message.
The backward functions get the same for their upstream gradient, on a fresh cache.
"""

import pickle

import numpy as np
import pytest

import graphnet.fast_layers as fast
import graphnet.layers as layers
import graphnet.rnn_layers as rnn

SEEDS = range(3)


def valid_forward_calls(seed):
    """{name: (function, arguments)}: one valid call of each forward function, at small
    random shapes drawn from `seed`."""
    rng = np.random.default_rng(seed)
    N, C, F, D, T, H, V = (int(n) for n in rng.integers(1, 5, 7))
    S = int(rng.integers(4, 8))
    G = int(rng.integers(1, 3))

    def r(*shape):
        return rng.standard_normal(shape)

    x4, w4, b4 = r(N, C, S, S), r(F, C, 3, 3), r(F)
    conv = {"stride": int(rng.integers(1, 3)), "pad": int(rng.integers(0, 2))}
    pool = {"pool_height": 2, "pool_width": 2, "stride": int(rng.integers(1, 3))}
    xs, h0 = r(N, T, D), r(N, H)
    words = rng.integers(0, V, (N, T))
    return {
        "affine_forward": (layers.affine_forward, dict(x=r(N, 2, D), w=r(2 * D, F), b=r(F))),
        "relu_forward": (layers.relu_forward, dict(x=r(N, D))),
        "softmax_loss": (layers.softmax_loss, dict(x=r(N, V + 1), y=rng.integers(0, V, N))),
        "svm_loss": (layers.svm_loss, dict(x=r(N, V + 1), y=rng.integers(0, V, N))),
        "batchnorm_forward": (
            layers.batchnorm_forward,
            dict(x=r(N + 1, D), gamma=r(D), beta=r(D), bn_param={"mode": "train", "eps": 1e-5}),
        ),
        "spatial_batchnorm_forward": (
            layers.spatial_batchnorm_forward,
            dict(x=x4, gamma=r(C), beta=r(C), bn_param={"mode": "train", "momentum": 0.9}),
        ),
        "layernorm_forward": (
            layers.layernorm_forward,
            dict(x=r(N, D), gamma=r(D), beta=r(D), ln_param={"eps": 1e-5}),
        ),
        "spatial_groupnorm_forward": (
            layers.spatial_groupnorm_forward,
            dict(
                x=r(N, 2 * G, S, S),
                gamma=r(1, 2 * G, 1, 1),
                beta=r(1, 2 * G, 1, 1),
                G=G,
                gn_param={"eps": 1e-5},
            ),
        ),
        "dropout_forward": (
            layers.dropout_forward,
            dict(x=r(N, D), dropout_param={"mode": "train", "p": 0.3, "seed": seed}),
        ),
        "conv_forward_naive": (
            layers.conv_forward_naive,
            dict(x=x4, w=w4, b=b4, conv_param=dict(conv)),
        ),
        "max_pool_forward_naive": (
            layers.max_pool_forward_naive,
            dict(x=x4, pool_param=dict(pool)),
        ),
        "conv_forward_fast": (fast.conv_forward_fast, dict(x=x4, w=w4, b=b4, conv_param=conv)),
        "max_pool_forward_fast": (fast.max_pool_forward_fast, dict(x=x4, pool_param=pool)),
        "rnn_step_forward": (
            rnn.rnn_step_forward,
            dict(x=r(N, D), prev_h=h0, Wx=r(D, H), Wh=r(H, H), b=r(H)),
        ),
        "rnn_forward": (rnn.rnn_forward, dict(x=xs, h0=h0, Wx=r(D, H), Wh=r(H, H), b=r(H))),
        "lstm_step_forward": (
            rnn.lstm_step_forward,
            dict(x=r(N, D), prev_h=h0, prev_c=r(N, H), Wx=r(D, 4 * H), Wh=r(H, 4 * H), b=r(4 * H)),
        ),
        "lstm_forward": (
            rnn.lstm_forward,
            dict(x=xs, h0=h0, Wx=r(D, 4 * H), Wh=r(H, 4 * H), b=r(4 * H)),
        ),
        "word_embedding_forward": (rnn.word_embedding_forward, dict(x=words, W=r(V, D))),
        "temporal_affine_forward": (rnn.temporal_affine_forward, dict(x=xs, w=r(D, F), b=r(F))),
        "temporal_softmax_loss": (
            rnn.temporal_softmax_loss,
            dict(x=r(N, T, V), y=words, mask=rng.random((N, T)) < 0.7),
        ),
        "attention_forward": (
            rnn.attention_forward,
            dict(q=r(N, T, D), k=r(N, S, D), v=r(N, S, F)),
        ),
    }


def beyond_memory_view(shape, dtype=np.float64):
    """A view of one number broadcast to `shape`, which must stand for more than memory."""
    return np.broadcast_to(np.zeros((), dtype), shape)


# (what the refusal names, the call): the fused fast paths, arguments other than the batch
# (the filters, the word vectors) and broadcasts that only meet in the output
BEYOND_MEMORY_CALLS = [
    (
        "conv_relu_pool_forward_fast: x",
        lambda: fast.conv_relu_pool_forward_fast(
            beyond_memory_view((2**40, 1, 4, 4)),
            np.ones((1, 1, 3, 3)),
            np.ones(1),
            {"stride": 1, "pad": 1},
            {"pool_height": 2, "pool_width": 2, "stride": 2},
        ),
    ),
    (
        "relu_max_pool_forward_fast: x",
        lambda: fast.relu_max_pool_forward_fast(
            beyond_memory_view((2**40, 1, 4, 4), np.float32),
            {"pool_height": 2, "pool_width": 2, "stride": 2},
        ),
    ),
    (
        "conv_forward_fast: w",
        lambda: fast.conv_forward_fast(
            np.ones((1, 1, 3, 3)),
            beyond_memory_view((2**40, 1, 3, 3)),
            beyond_memory_view((2**40,)),
            {"stride": 1, "pad": 0},
        ),
    ),
    (
        "word_embedding_forward: x",  # int32 indices: not the kernel's, the checks' path
        lambda: rnn.word_embedding_forward(
            beyond_memory_view((2**40, 4), np.int32), np.ones((3, 2))
        ),
    ),
    (
        "word_embedding_forward: W",
        lambda: rnn.word_embedding_forward(
            np.zeros((1, 2), np.int64), beyond_memory_view((2**40, 4))
        ),
    ),
    (
        "attention_forward: the attention weights of q, k, v",  # q's batch axes by k's
        lambda: rnn.attention_forward(
            beyond_memory_view((2**20, 1, 4, 2)),
            beyond_memory_view((1, 2**20, 4, 2)),
            beyond_memory_view((1, 2**20, 4, 2)),
        ),
    ),
]


@pytest.mark.parametrize("what, call", BEYOND_MEMORY_CALLS)
def test_an_argument_beyond_memory_is_named_by_every_fast_path(what, call):
    """Each of these failed with numpy's MemoryError or a bare std::bad_alloc (the fused
    conv and pool paths, a huge filter bank or vocabulary, leading axes of q and k that
    broadcast to more weights than fit), naming nothing."""
    with pytest.raises(ValueError, match="more than this machine's memory") as err:
        call()
    assert str(err.value).startswith(what + " of shape")


def test_labels_beyond_memory_where_the_scores_fit_are_named(monkeypatch):
    """float16 scores of one word (not the kernel's: the checks' path) take 2 bytes a
    step, their int64 labels 8: under a bound between the two, the labels are what is
    named (the memory made 128 KiB here, for arrays of 64 and 256 KiB)."""
    from graphnet.kernels import geometry
    from graphnet.kernels import rnn_layers as kernels

    for module in (geometry, kernels):
        monkeypatch.setattr(module, "MEMORY_BYTES", 2**17)
    x, y = np.zeros((1, 2**15, 1), np.float16), np.zeros((1, 2**15), np.int64)
    with pytest.raises(ValueError, match=r"^temporal_softmax_loss: y of shape \(1, 32768\)"):
        rnn.temporal_softmax_loss(x, y, np.ones((1, 2**15), bool))


# backward function -> the forward whose cache it takes
BACKWARD = {
    layers.affine_backward: "affine_forward",
    layers.relu_backward: "relu_forward",
    layers.batchnorm_backward: "batchnorm_forward",
    layers.batchnorm_backward_alt: "batchnorm_forward",
    layers.spatial_batchnorm_backward: "spatial_batchnorm_forward",
    layers.layernorm_backward: "layernorm_forward",
    layers.spatial_groupnorm_backward: "spatial_groupnorm_forward",
    layers.dropout_backward: "dropout_forward",
    layers.conv_backward_naive: "conv_forward_naive",
    layers.max_pool_backward_naive: "max_pool_forward_naive",
    fast.conv_backward_fast: "conv_forward_fast",
    fast.max_pool_backward_fast: "max_pool_forward_fast",
    rnn.rnn_step_backward: "rnn_step_forward",
    rnn.rnn_backward: "rnn_forward",
    rnn.lstm_backward: "lstm_forward",
    rnn.word_embedding_backward: "word_embedding_forward",
    rnn.temporal_affine_backward: "temporal_affine_forward",
    rnn.attention_backward: "attention_forward",
}


def backward_call(backward, seed):
    """(arguments maker, upstream gradient): `make()` runs the forward afresh (some caches
    are spent by their backward) and returns {"dout" (or "dh", ...): gradient, "cache": ...}."""
    forward, arguments = valid_forward_calls(seed)[BACKWARD[backward]]
    upstream = backward.__code__.co_varnames[0]

    def make(gradient):
        out, cache = forward(**fresh(arguments))
        return {upstream: gradient, "cache": cache}

    out, _ = forward(**fresh(arguments))
    return make, upstream, np.random.default_rng(seed).standard_normal(out.shape)


def fresh(arguments):
    """A copy of each param dict: the forward functions write running statistics there."""
    return {k: dict(v) if isinstance(v, dict) else v for k, v in arguments.items()}


def plain(a):
    """a's values as a C-contiguous array of native byte order and numpy's own dtype."""
    a = np.asarray(a)
    return np.array(a, dtype=a.dtype.str[1:] if a.dtype.kind in "biuf" else a.dtype)


def relayouts(a):
    """(what, view): a's values in other layouts and dtype objects."""
    wide = np.zeros(tuple(2 * n for n in a.shape), a.dtype)
    strided = wide[tuple(slice(None, None, 2) for _ in a.shape)]
    strided[...] = a
    yield "strided", strided
    reverse = (slice(None, None, -1),) * a.ndim
    yield "negative strides", np.ascontiguousarray(a[reverse])[reverse]
    yield "fortran", np.asfortranarray(a)
    read_only = a.copy()
    read_only.flags.writeable = False
    yield "read-only", read_only
    yield "zero-stride", np.broadcast_to(a[:1], a.shape)
    yield "unpickled", pickle.loads(pickle.dumps(a))
    yield "list", a.tolist()
    if a.dtype.itemsize > 1:
        raw = np.zeros(a.nbytes + 1, np.uint8)[1:].view(a.dtype).reshape(a.shape)
        raw[...] = a
        yield "misaligned", raw
        yield "big-endian", a.astype(a.dtype.newbyteorder(">"))


# The fast layers hand their arrays to the C++ kernels as they are: these the kernels
# refuse with a ValueError naming the array (the naive and numpy layers convert them).
MAY_BE_REFUSED = ("big-endian", "misaligned")
NOT_REAL = (np.complex128, object, "U3")


def hostile(a):
    """(what, value): values of the wrong kind, dtype, shape or content for a."""
    for dtype in NOT_REAL + (np.float16, np.float32, np.int64, np.bool_):
        yield f"dtype {np.dtype(dtype)}", a.astype(dtype)
    yield "0-size first axis", a[:0]
    yield "0-size last axis", a[..., :0]
    yield "an axis more", a[None]
    yield "an axis less", a[0]
    yield "one element more", np.concatenate([a, a[:1]])
    yield "0-d", np.float64(1.5)
    yield "None", None
    if a.dtype.kind == "f":
        for value in (np.nan, np.inf, -np.inf, -0.0, 1e308):
            b = a.copy()
            b.flat[0] = value
            yield f"a {value}", b


HOSTILE_NUMBERS = (0, -1, 2**31, 2**63, -(2**63), 2**64, 1.5, np.nan, True, None, "2")


def outcome(function, arguments):
    """The call's result, or the ValueError or TypeError it raised (with a message)."""
    try:
        with np.errstate(all="ignore"):
            return function(**arguments)
    except (ValueError, TypeError) as err:
        assert str(err), f"{function.__name__}: {type(err).__name__} without a message"
        return err


def first_array(result):
    return result[0] if isinstance(result, tuple) else result


def assert_same_answer(got, expected, what):
    """Equal arrays (to float64 rounding: numpy sums a strided view in another order) of
    the same dtype, in any byte order; the same floats."""
    if isinstance(expected, tuple):
        assert isinstance(got, tuple) and len(got) == len(expected), what
        for g, e in zip(got, expected):
            assert_same_answer(g, e, what)
        return
    if isinstance(expected, (np.ndarray, float)):
        got, expected = np.asarray(got), np.asarray(expected)
        assert got.dtype.str[1:] == expected.dtype.str[1:], (what, got.dtype, expected.dtype)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0, err_msg=str(what))


def check_array_argument(function, arguments, name, value, make=None):
    """Each relayout of arguments[name] gives the plain copy's answer; each hostile value
    returns or raises a clear error, naming `name` when it holds what is not real numbers.
    make(value) -> arguments, for a backward function whose cache a call spends."""
    make = make or (lambda v: {**fresh(arguments), name: v})
    for what, view in relayouts(value):
        expected = outcome(function, make(plain(view)))
        assert not isinstance(expected, Exception), (function.__name__, name, what, expected)
        got = outcome(function, make(view))
        if isinstance(got, ValueError) and what in MAY_BE_REFUSED:
            assert name in str(got), (function.__name__, name, what, got)
            continue
        where = (function.__name__, name, what)
        assert_same_answer(first_array(got), first_array(expected), where)
    for what, bad in hostile(value):
        result = outcome(function, make(bad))
        if bad is not None and np.asarray(bad).dtype in [np.dtype(d) for d in NOT_REAL]:
            assert isinstance(result, ValueError), (function.__name__, name, what, result)
            assert name in str(result), (function.__name__, name, what, result)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", sorted(valid_forward_calls(0)))
def test_forward_functions_under_hostile_arguments(name, seed):
    function, arguments = valid_forward_calls(seed)[name]
    for arg, value in arguments.items():
        if isinstance(value, np.ndarray):
            check_array_argument(function, arguments, arg, value)
        elif isinstance(value, dict):
            for key in value:
                for number in HOSTILE_NUMBERS:
                    outcome(function, {**fresh(arguments), arg: {**value, key: number}})
                outcome(
                    function,
                    {**fresh(arguments), arg: {k: v for k, v in value.items() if k != key}},
                )


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("backward", list(BACKWARD), ids=lambda f: f.__name__)
def test_backward_functions_under_hostile_upstream_gradients(backward, seed):
    make, upstream, gradient = backward_call(backward, seed)
    check_array_argument(backward, None, upstream, gradient, make)


def test_a_model_trains_on_an_unpickled_batch():
    """A batch that went through pickle (a DataLoader worker, multiprocessing) has a dtype
    object of its own: the loss and gradients are the plain batch's (before: the C++
    kernels refused it as "must be float32 or float64, got float64")."""
    from graphnet.models import TwoLayerNet

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((3, 3, 8, 8)), rng.integers(0, 10, 3)
    np.random.seed(0)  # the course's model draws its weights from numpy's global generator
    model = TwoLayerNet(input_dim=3 * 8 * 8, hidden_dim=6)
    loss, grads = model.loss(X, y)
    loss2, grads2 = model.loss(pickle.loads(pickle.dumps(X)), y)
    assert loss2 == loss
    for key in grads:
        np.testing.assert_array_equal(grads2[key], grads[key])


def test_temporal_softmax_loss_of_big_endian_scores_stays_float64():
    """Big-endian float64 scores (data from a file of another machine's byte order) give
    the native scores' loss and float64 gradient (before: cast to float32 as if float16)."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((2, 3, 7)), rng.integers(0, 7, (2, 3))
    mask = np.ones((2, 3), bool)
    loss, dx = rnn.temporal_softmax_loss(x, y, mask)
    loss_be, dx_be = rnn.temporal_softmax_loss(x.astype(">f8"), y, mask)
    assert loss_be == loss and dx_be.dtype == np.float64
    np.testing.assert_array_equal(dx_be, dx)


@pytest.mark.parametrize("dtype", NOT_REAL)
def test_an_upstream_gradient_of_what_is_not_real_numbers_is_refused(dtype):
    """Before: a complex or object dout gave complex or object gradients, a string one
    numpy's UFuncTypeError naming no argument."""
    out, cache = layers.relu_forward(np.ones((2, 3)))
    with pytest.raises(ValueError, match="relu_backward: dout"):
        layers.relu_backward(np.ones((2, 3)).astype(dtype), cache)


def test_attention_of_leading_axes_that_do_not_broadcast_names_q_k_and_v():
    with pytest.raises(ValueError, match=r"attention_forward: the leading .* q \(2, 3, 5\), k"):
        rnn.attention_forward(np.ones((2, 3, 5)), np.ones((3, 4, 5)), np.ones((3, 4, 6)))


WEIGHTS = ("w", "b", "W", "Wx", "Wh", "gamma", "beta")


@pytest.mark.parametrize("name", sorted(valid_forward_calls(0)))
def test_a_batch_broadcast_to_2_to_the_40_samples_is_refused_at_once(name):
    """np.broadcast_to of one sample to 2**40 costs nothing to make but stands for
    terabytes, which an output or a gradient of its shape would take: every forward
    function refuses it at once, a ValueError naming the argument and its size (the
    recurrent layers' products: too large for the BLAS), where softmax_loss, svm_loss and
    batchnorm_forward reduced it for hours and the C++ fast paths (conv and max pool,
    word embedding, temporal softmax loss, attention) failed at their first allocation
    with a MemoryError or a bare std::bad_alloc naming nothing."""
    function, arguments = valid_forward_calls(0)[name]
    first = next(v for v in arguments.values() if isinstance(v, np.ndarray))
    huge = {
        key: np.broadcast_to(value[:1], (2**40, *value.shape[1:]))
        if isinstance(value, np.ndarray)
        and key not in WEIGHTS
        and value.shape[:1] == first.shape[:1]
        else value
        for key, value in fresh(arguments).items()
    }
    with pytest.raises(ValueError) as err:
        function(**huge)
    if "BLAS" not in str(err.value):
        assert f"{name}: {next(iter(huge))} of shape (1099511627776" in str(err.value)
        assert "more than this machine's memory" in str(err.value)
