"""The C++ kernels behind rnn_forward/backward and lstm_forward/backward (cpp/recurrent.h):
the same bits on any number of threads, the AVX2 and AVX-512 sigmoid and tanh against
float64 and against the C library's, sizes that leave ragged blocks of work, and bad
arguments refused with ValueError (never a crash)."""

import contextlib
import threading

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from graphnet import rnn_layers as R
from graphnet.kernels import _C
from .test_avx2 import cpu_has_avx2_and_fma, kernel_threads


@contextlib.contextmanager
def avx2_activations(enabled):
    _C.set_avx2_activations(enabled)
    try:
        yield
    finally:
        _C.set_avx2_activations(True)


# The float32 sigmoid and tanh: sixteen lanes on AVX-512, eight on AVX2, or the C library's.
ACTIVATIONS = ["avx512", "avx2", "libc"]


@contextlib.contextmanager
def activations_on(path):
    if path == "avx512" and not _C.avx512_activations_active():
        pytest.skip("no AVX-512 activations on this CPU or build")
    _C.set_avx512_activations(path == "avx512")
    try:
        with avx2_activations(path != "libc"):
            yield
    finally:
        _C.set_avx512_activations(True)


def case(cell, N=5, T=9, D=3, H=70, dtype=np.float64, seed=0):
    """H = 70 leaves a ragged last block of units (32, 32, 6) and of columns."""
    rng = np.random.default_rng(seed)
    G = 4 * H if cell == "lstm" else H
    args = [
        rng.standard_normal((N, T, D)),
        rng.standard_normal((N, H)),
        rng.standard_normal((D, G)) / np.sqrt(D),
        rng.standard_normal((H, G)) / np.sqrt(H),
        rng.standard_normal(G),
    ]
    return [a.astype(dtype) for a in args], rng.standard_normal((N, T, H)).astype(dtype)


def run(cell, args, dh):
    h, cache = getattr(R, f"{cell}_forward")(*args)
    return [h, *getattr(R, f"{cell}_backward")(dh, cache)]


def test_the_avx2_activations_run_on_this_cpu():
    """Otherwise the tests below would only exercise the C library's."""
    assert _C.avx2_activations_active() == cpu_has_avx2_and_fma()
    with avx2_activations(False):
        assert not _C.avx2_activations_active()
        assert not _C.avx512_activations_active()


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
# float32 on AVX-512: x @ Wx up front (1, 2, 7), step by step (9). H = 300: the backward's
# five blocks of dh0 columns, taken in turn front to back and back to front, over T = 9 steps.
@pytest.mark.parametrize("N", [1, 2, 7, 9])
def test_same_bits_on_any_number_of_threads(cell, dtype, N):
    args, dh = case(cell, N=N, H=300, dtype=dtype)
    with kernel_threads(1):
        one = run(cell, args, dh)
    for threads in (2, 3):
        with kernel_threads(threads):
            for mine, reference in zip(run(cell, args, dh), one):
                np.testing.assert_array_equal(mine, reference)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "N, T, H",
    [
        (1, 1, 70),
        (1, 9, 5),
        (7, 1, 300),
        (7, 9, 300),
        (8, 1, 70),
        (9, 9, 300),
        (0, 3, 4),
        (3, 0, 4),
    ],
)
def test_lstm_inference_is_the_forwards_h_bit_for_bit_on_any_number_of_threads(N, T, H, dtype):
    args, _ = case("lstm", N=N, T=T, H=H, dtype=dtype)
    with kernel_threads(1):
        h, _ = R.lstm_forward(*args)
    for threads in (1, 2):
        with kernel_threads(threads):
            lean = R.lstm_inference(*args)
        assert lean.dtype == h.dtype and lean.shape == h.shape
        assert lean.tobytes() == h.tobytes()


@pytest.mark.parametrize("H", [1, 8, 24, 25, 32, 33, 56, 70, 300])
def test_one_sequence_has_the_bits_it_has_in_a_batch(H):
    """float32 on AVX-512, one sequence multiplies prev_h by four panels of Wh at a time,
    a batch's rows by one panel at a time: each sums over k in order, so the bits are the
    same. H = 25..33 and 70 leave a last block of columns of three panels and some lanes,
    H = 24 one that four panels do not fill. With D = 0, x @ Wx is zero either way."""
    args, _ = case("lstm", N=3, T=4, D=0, H=H, dtype=np.float32)
    x, h0, Wx, Wh, b = args
    for threads in (1, 2):
        with kernel_threads(threads):
            batch = R.lstm_inference(*args)
            h, _ = R.lstm_forward(*args)
            assert h.tobytes() == batch.tobytes()
            for n in range(3):
                alone = R.lstm_inference(x[n : n + 1], h0[n : n + 1], Wx, Wh, b)
                assert alone.tobytes() == batch[n : n + 1].tobytes()
                kept, _ = R.lstm_forward(x[n : n + 1], h0[n : n + 1], Wx, Wh, b)
                assert kept.tobytes() == alone.tobytes()
    loop = step_loop("lstm", *args, np.zeros((3, 4, H), np.float32))[0]
    np.testing.assert_allclose(batch, loop, rtol=1e-5, atol=1e-5)


def at_offset(array, offset):
    """A copy of `array` whose data starts `offset` bytes after a 64-byte cache line."""
    buffer = np.empty(array.nbytes + 128, np.uint8)
    start = -buffer.ctypes.data % 64 + offset
    out = buffer[start : start + array.nbytes].view(array.dtype).reshape(array.shape)
    out[...] = array
    assert out.ctypes.data % 64 == offset
    return out


@pytest.mark.parametrize("H", [4, 12, 28, 56, 64, 100, 129])
def test_one_sequence_reads_wh_in_place_at_any_offset_from_a_cache_line(H):
    """float32 on AVX-512, one sequence reads Wh as it is, in vectors that start on the
    cache lines of its first row, the first and last masked: Wh at every float's offset
    from a line gives the bits of the sequence in a batch, whose rows multiply packed
    panels. H = 4 leaves one block of one or two vectors, 100 and 129 ragged blocks; 4H is
    a multiple of 16 for all but 129 (packed then)."""
    args, _ = case("lstm", N=3, T=5, D=0, H=H, dtype=np.float32, seed=H)
    x, h0, Wx, Wh, b = args
    with kernel_threads(1):
        batch = R.lstm_inference(*args)
    for weights in [at_offset(Wh, offset) for offset in range(0, 64, 4)]:
        for threads in (1, 2):
            with kernel_threads(threads):
                for n in range(3):
                    alone = R.lstm_inference(x[n : n + 1], h0[n : n + 1], Wx, weights, b)
                    assert alone.tobytes() == batch[n : n + 1].tobytes()


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
@pytest.mark.parametrize("N, D, H", [(1, 5, 17), (1, 16, 64), (9, 21, 33), (9, 70, 8)])
def test_backward_reads_the_weights_at_any_offset_from_a_cache_line(cell, N, D, H):
    """float32 on AVX-512, the backward packs Wh^T (and from 8 sequences on Wx^T) by 16 x
    16 blocks transposed in registers, the blocks' first and last lanes masked: weights at
    every float's offset from a line give the bits of aligned ones, on 1 and 2 threads.
    H = 17 and 33 leave a last panel of a few columns, D = 21 and 70 ragged blocks of
    rows."""
    args, dh = case(cell, N=N, T=3, D=D, H=H, dtype=np.float32, seed=D + H)
    with kernel_threads(1):
        reference = run(cell, args, dh)
    x, h0, Wx, Wh, b = args
    for offset in range(0, 64, 12):
        weights = [x, h0, at_offset(Wx, offset), at_offset(Wh, offset), b]
        for threads in (1, 2):
            with kernel_threads(threads):
                for mine, theirs in zip(run(cell, weights, dh), reference):
                    assert mine.tobytes() == theirs.tobytes()


def test_python_threads_running_the_backward_at_once_keep_their_own_scratch():
    """The backward keeps its scratch arrays per calling thread from one call to the
    next: calls of two sizes from two Python threads at once give each its own answer."""
    cases = [case("lstm", N=N, H=H, dtype=np.float32, seed=N) for N, H in ((6, 40), (9, 90))]
    expected = [run("lstm", args, dh) for args, dh in cases]
    results = [[] for _ in cases]

    def work(i):
        for _ in range(20):
            results[i].append(run("lstm", *cases[i]))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(cases))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for got, reference in zip(results, expected):
        assert len(got) == 20
        for outputs in got:
            for mine, theirs in zip(outputs, reference):
                np.testing.assert_array_equal(mine, theirs)


def test_saved_states_stay_while_later_calls_reuse_freed_ones():
    """The forward's outputs come from a pool of freed blocks of the same size: a cache
    still held is never handed out again, whatever runs in between."""
    args, dh = case("lstm", dtype=np.float32)
    other_args, _ = case("lstm", dtype=np.float32, seed=1)
    h, cache = R.lstm_forward(*args)
    kept = [np.array(a, copy=True) for a in (h, cache.act, cache.c, cache.tanh_c)]
    expected = R.lstm_backward(dh, cache)
    for _ in range(20):  # blocks freed and taken again, of the very same sizes
        other_h, other_cache = R.lstm_forward(*other_args)
        R.lstm_backward(dh, other_cache)
        del other_h, other_cache
    for saved, now in zip(kept, (h, cache.act, cache.c, cache.tanh_c)):
        np.testing.assert_array_equal(saved, now)
    for mine, theirs in zip(R.lstm_backward(dh, cache), expected):
        np.testing.assert_array_equal(mine, theirs)


def step_loop(cell, x, h0, Wx, Wh, b, dh):
    """The course's way, in float64: the step functions over t, then back over t.
    Returns h, dx, dh0, dWx, dWh, db."""
    x, h0, Wx, Wh, b, dh = (a.astype(np.float64) for a in (x, h0, Wx, Wh, b, dh))
    N, T, _ = x.shape
    h = np.zeros((N, T, h0.shape[1]))
    prev_h, prev_c, steps = h0, np.zeros_like(h0), []
    for t in range(T):
        if cell == "lstm":
            prev_h, prev_c, step = R.lstm_step_forward(x[:, t], prev_h, prev_c, Wx, Wh, b)
        else:
            prev_h, step = R.rnn_step_forward(x[:, t], prev_h, Wx, Wh, b)
        h[:, t] = prev_h
        steps.append(step)
    dx, dprev_h, dprev_c = np.zeros_like(x), np.zeros_like(h0), np.zeros_like(h0)
    dWx, dWh, db = np.zeros_like(Wx), np.zeros_like(Wh), np.zeros_like(b)
    for t in reversed(range(T)):
        if cell == "lstm":
            dx[:, t], dprev_h, dprev_c, dWx_t, dWh_t, db_t = R.lstm_step_backward(
                dh[:, t] + dprev_h, dprev_c, steps[t]
            )
        else:
            dx[:, t], dprev_h, dWx_t, dWh_t, db_t = R.rnn_step_backward(
                dh[:, t] + dprev_h, steps[t]
            )
        dWx, dWh, db = dWx + dWx_t, dWh + dWh_t, db + db_t
    return h, dx, dprev_h, dWx, dWh, db


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["rnn", "lstm"])
@pytest.mark.parametrize("H", [5, 70])
def test_whole_sequences_equal_the_loop_of_steps(cell, H):
    """H = 5: one block of work; H = 70: ragged last blocks."""
    args, dh = case(cell, H=H)
    for mine, loop in zip(run(cell, args, dh), step_loop(cell, *args, dh)):
        np.testing.assert_allclose(mine, loop, rtol=1e-10, atol=1e-12)


def activations(v):
    """(tanh(v), sigmoid(v)) in float32 as the kernels compute them: Wx = identity, Wh = 0,
    so an RNN's h is tanh(x) and an LSTM's saved input gate sigmoid(x)."""
    width = 24  # the AVX-512 kernels: one full vector and a masked tail of 8
    rows = -(-v.size // width)
    x = np.zeros(rows * width, np.float32)
    x[: v.size] = v
    x = x.reshape(rows, 1, width)
    outputs = []
    for cell, gates in (("rnn", 1), ("lstm", 4)):
        Wx = np.zeros((width, gates * width), np.float32)
        Wx[:, :width] = np.eye(width)
        h, act, _, _ = _C.recurrent_forward(
            cell,
            x,
            np.zeros((rows, width), np.float32),
            Wx,
            np.zeros((width, gates * width), np.float32),
            np.zeros(gates * width, np.float32),
        )
        outputs.append((h if cell == "rnn" else act[..., :width]).ravel()[: v.size])
    return outputs


def ulps(got, exact):
    return np.abs(got - exact) / np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)


@pytest.mark.parametrize("path", ACTIVATIONS)
def test_float32_sigmoid_and_tanh_within_two_and_a_half_ulps(path):
    v = np.concatenate(
        [
            np.random.default_rng(1).standard_normal(200_000) * 8,
            np.linspace(-80, 80, 160001),
            np.linspace(-1e-3, 1e-3, 2001),
            np.geomspace(1e-30, 1, 301),
            -np.geomspace(1e-30, 1, 301),
        ]
    )
    v = v.astype(np.float32)
    exact = v.astype(np.float64)
    with activations_on(path):
        tanh, sigmoid = activations(v)
    assert ulps(tanh, np.tanh(exact)).max() <= 2.5
    assert ulps(sigmoid, 1 / (1 + np.exp(-exact))).max() <= 2.5


@pytest.mark.parametrize("path", ACTIVATIONS)
def test_float32_activations_at_the_extremes(path):
    v = np.array([np.nan, np.inf, -np.inf, 0.0, 100.0, -100.0, 1e-40], np.float32)
    with activations_on(path):
        # one value per batch row: a nan or inf in a row would spread through x @ Wx
        results = [activations(np.array([value], np.float32)) for value in v]
    tanh = np.array([t[0] for t, _ in results])
    sigmoid = np.array([s[0] for _, s in results])
    assert np.isnan(tanh[0]) and np.isnan(sigmoid[0])  # a nan is never turned into a number
    np.testing.assert_allclose(tanh[1:], [1, -1, 0, 1, -1, v[-1]], rtol=1e-6, atol=0)
    np.testing.assert_allclose(sigmoid[1:], [1, 0, 0.5, 1, 0, 0.5], rtol=1e-6, atol=1e-38)


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
@pytest.mark.parametrize("path", ["avx512", "avx2"])
def test_vector_and_c_library_activations_agree_on_a_sequence(cell, path):
    args, dh = case(cell, dtype=np.float32)
    with activations_on(path):
        fast = run(cell, args, dh)
    with avx2_activations(False):
        portable = run(cell, args, dh)
    for a, b in zip(fast, portable):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------ bad arguments


def lstm_arguments(N=2, T=3, D=4, H=5):
    return {
        "cell": "lstm",
        **{
            name: np.zeros(shape)
            for name, shape in (
                ("x", (N, T, D)),
                ("h0", (N, H)),
                ("Wx", (D, 4 * H)),
                ("Wh", (H, 4 * H)),
                ("b", (4 * H,)),
            )
        },
    }


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("cell", "gru", "cell must be 'rnn' or 'lstm'"),
        ("Wx", np.zeros((4, 5)), r"Wx \(4, 5\).* do not fit together"),
        ("h0", np.zeros((3, 5)), r"h0 \(3, 5\).* do not fit together"),
        ("x", np.zeros((2, 4)), "x must be 3-D"),
        ("b", np.zeros(20, np.float32), "b has dtype float32"),
        ("h0", np.zeros((2, 5), np.int64), "h0 has dtype int64"),
    ],
)
def test_forward_refuses_bad_arguments(name, value, message):
    arguments = lstm_arguments()
    arguments[name] = value
    with pytest.raises(ValueError, match=message):
        _C.recurrent_forward(*arguments.values())


def test_forward_refuses_half_precision():
    arguments = {
        name: value.astype(np.float16) if name != "cell" else value
        for name, value in lstm_arguments().items()
    }
    with pytest.raises(ValueError, match="must be float32 or float64"):
        _C.recurrent_forward(*arguments.values())


def test_forward_refuses_sizes_beyond_the_32_bit_blas():
    x = np.broadcast_to(np.float32(0), (1 << 16, 1 << 16, 1))
    with pytest.raises(ValueError, match="too large"):
        _C.recurrent_forward(
            "rnn",
            x,
            np.zeros((1 << 16, 1), np.float32),
            np.zeros((1, 1), np.float32),
            np.zeros((1, 1), np.float32),
            np.zeros(1, np.float32),
        )
    # no sequences, so h0 holds nothing whatever H says; 4 H columns are still too many
    with pytest.raises(ValueError, match="too large"):
        _C.recurrent_forward(
            "lstm",
            np.zeros((0, 1, 1)),
            np.zeros((0, 1 << 40)),
            np.zeros((1, 0)),
            np.zeros((1 << 40, 0)),
            np.zeros(0),
        )
    # D and H each fit, D + H (the rows of the weights' gradient [x | prev_h]^T da) not
    D, H = (1 << 31) - 1, 1
    with pytest.raises(ValueError, match="too large"):
        _C.recurrent_forward(
            "rnn",
            np.zeros((0, 1, D), np.float32),
            np.zeros((0, H), np.float32),
            np.broadcast_to(np.float32(0), (D, H)),
            np.zeros((H, H), np.float32),
            np.zeros(H, np.float32),
        )


def test_backward_refuses_a_tampered_cache():
    _, x, h0, Wx, Wh, b = lstm_arguments().values()
    h, act, c, tanh_c = _C.recurrent_forward("lstm", x, h0, Wx, Wh, b)
    dh = np.ones_like(h)
    with pytest.raises(ValueError, match="needs the forward's gates"):
        _C.recurrent_backward("lstm", dh, x, h0, Wx, Wh, h, None, c, tanh_c)
    with pytest.raises(ValueError, match="saved state must have shape"):
        _C.recurrent_backward("lstm", dh, x, h0, Wx, Wh, h, act[:, :2], c, tanh_c)
    with pytest.raises(ValueError, match="dh must have shape"):
        _C.recurrent_backward("lstm", dh[:1], x, h0, Wx, Wh, h, act, c, tanh_c)
    with pytest.raises(ValueError, match="saved state"):
        _C.recurrent_backward("lstm", dh, x, h0, Wx, Wh, h, act.astype(np.float32), c, tanh_c)
    _, cache = R.rnn_forward(
        np.zeros((2, 3, 4)), np.zeros((2, 5)), np.zeros((4, 5)), np.zeros((5, 5)), np.zeros(5)
    )
    with pytest.raises(ValueError, match="lstm_backward: cache must be the one lstm_forward"):
        R.lstm_backward(np.zeros((2, 3, 5)), cache)


@settings(max_examples=120, deadline=None)
@given(
    cell=st.sampled_from(["rnn", "lstm"]),
    N=st.integers(0, 3),
    T=st.integers(0, 4),
    D=st.integers(0, 3),
    H=st.integers(0, 40),
    dtype=st.sampled_from([np.float32, np.float64]),
    wrong=st.sampled_from([None, "h0", "Wx", "Wh", "b", "dh"]),
    seed=st.integers(0, 2**16),
)
@example(cell="rnn", N=3, T=4, D=3, H=24, dtype=np.float32, wrong=None, seed=24)
def test_fuzz_matches_the_step_loop_or_raises(cell, N, T, D, H, dtype, wrong, seed):
    """Random sizes, empty ones included: the kernels match the numpy steps, or a shape
    off by one is refused with ValueError."""
    rng = np.random.default_rng(seed)
    G = 4 * H if cell == "lstm" else H
    shapes = {"x": (N, T, D), "h0": (N, H), "Wx": (D, G), "Wh": (H, G), "b": (G,), "dh": (N, T, H)}
    if wrong:
        shapes[wrong] = shapes[wrong][:-1] + (shapes[wrong][-1] + 1,)
    arrays = {name: rng.standard_normal(shape).astype(dtype) for name, shape in shapes.items()}
    dh = arrays.pop("dh")
    if wrong and wrong != "dh":
        with pytest.raises(ValueError):
            _C.recurrent_forward(cell, *arrays.values())
        return
    h, act, c, tanh_c = _C.recurrent_forward(cell, *arrays.values())
    x, h0, Wx, Wh, b = arrays.values()
    if wrong == "dh":
        with pytest.raises(ValueError):
            _C.recurrent_backward(cell, dh, x, h0, Wx, Wh, h, act, c, tanh_c)
        return
    grads = _C.recurrent_backward(cell, dh, x, h0, Wx, Wh, h, act, c, tanh_c)
    # Unit-normal weights saturate the tanh: in float32 its 1 - h*h, near 1e-4, keeps only a
    # few digits (an ulp of h is 6e-8), so the gradients are good to about 1e-3 relative.
    tol = {"rtol": 1e-3, "atol": 1e-4} if dtype == np.float32 else {"rtol": 1e-9, "atol": 1e-10}
    for mine, loop in zip((h, *grads), step_loop(cell, x, h0, Wx, Wh, b, dh)):
        np.testing.assert_allclose(mine, loop, **tol)


def step_loop_or_kernels_on_threads(cell, N, T, D, H, dtype, seed):
    """The kernels on 1 and 2 threads (the same bits) against the numpy steps."""
    args, dh = case(cell, N=N, T=T, D=D, H=H, dtype=dtype, seed=seed)
    with kernel_threads(1):
        one = run(cell, args, dh)
    with kernel_threads(2):
        for mine, reference in zip(run(cell, args, dh), one):
            np.testing.assert_array_equal(mine, reference)
    tol = {"rtol": 2e-4, "atol": 2e-4} if dtype == np.float32 else {"rtol": 1e-9, "atol": 1e-10}
    for mine, loop in zip(one, step_loop(cell, *args, dh)):
        np.testing.assert_allclose(mine, loop, **tol)


@settings(max_examples=40, deadline=None)
@given(
    cell=st.sampled_from(["rnn", "lstm"]),
    N=st.one_of(st.integers(8, 24), st.integers(60, 80)),
    T=st.integers(1, 4),
    D=st.integers(0, 70),
    H=st.integers(1, 80),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**16),
)
def test_fuzz_step_by_step_products_match_the_step_loop(cell, N, T, D, H, dtype, seed):
    """From 8 sequences on, float32 on AVX-512: x_t @ Wx and dx_t step by step; from 64
    on also the weights' gradients and db, added to step by step. Sizes not multiples of
    the kernels' 8 rows, 16 lanes or 32-column panels."""
    step_loop_or_kernels_on_threads(cell, N, T, D, H, dtype, seed)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "cell, N, T, D, H",
    [
        ("lstm", 1, 3, 5, 17),  # one sequence: the products over all rows
        ("lstm", 260, 2, 5, 20),  # the weights' gradient sums more than 256 rows a step
        ("lstm", 9, 3, 70, 300),  # dx in two blocks of columns
        ("lstm", 64, 3, 70, 70),  # the weights' gradients step by step, dx in two blocks
        ("rnn", 64, 3, 7, 300),
        ("lstm", 64, 2, 128, 512),  # the weights' gradients too large: after the steps
    ],
)
def test_step_by_step_products_at_the_edges(cell, N, T, D, H, dtype):
    step_loop_or_kernels_on_threads(cell, N, T, D, H, dtype, seed=N)
