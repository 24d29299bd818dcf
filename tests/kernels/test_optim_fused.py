"""The C++ Adam step gives the same numbers, bit for bit, as the numpy formulas."""

import collections
import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphnet import optim
from graphnet.kernels import _C


def numpy_adam(w, dw, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    m = beta1 * m + (1 - beta1) * dw
    v = beta2 * v + (1 - beta2) * dw**2
    m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)
    return w - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(8192, 100), (3, 5), (7,), ()])
def test_fused_adam_matches_numpy_bitwise(dtype, shape):
    rng = np.random.default_rng(3)
    w = rng.standard_normal(shape).astype(dtype)
    ref_w, ref_m, ref_v = w.copy(), np.zeros_like(w), np.zeros_like(w)
    config = {"learning_rate": 5e-3}
    for t in range(1, 6):
        dw = rng.standard_normal(shape).astype(dtype)
        next_w, config = optim.adam(w, dw, config)
        ref_w, ref_m, ref_v = numpy_adam(ref_w, dw, ref_m, ref_v, t, lr=5e-3)
        assert next_w is w and config["t"] == t
        np.testing.assert_array_equal(w, ref_w)
        np.testing.assert_array_equal(config["m"], ref_m)
        np.testing.assert_array_equal(config["v"], ref_v)
        assert w.dtype == config["m"].dtype == dtype


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(0, 70),  # every tail of the 8-float and 4-double vectors, and none
    dtype=st.sampled_from([np.float32, np.float64]),
    hyper=st.tuples(
        st.sampled_from([1e-3, 5e-2, 1.0]),  # learning rate
        st.sampled_from([0.9, 0.5, 0.0]),  # beta1
        st.sampled_from([0.999, 0.9]),  # beta2
        st.sampled_from([1e-8, 1e-3]),  # epsilon
    ),
    t=st.integers(0, 3000),
    offset=st.integers(0, 3),
)
def test_adam_matches_numpy_bitwise_on_any_size_and_alignment(size, dtype, hyper, t, offset):
    # offset: arrays starting off a vector's alignment, as views into a larger buffer
    lr, beta1, beta2, eps = hyper
    rng = np.random.default_rng(size * 7 + t)

    def array(scale):
        return (rng.standard_normal(size + offset) * scale).astype(dtype)[offset:]

    w, dw = array(1.0), array(1e-2)
    m, v = array(1e-3), np.abs(array(1e-5))
    config = {"learning_rate": lr, "beta1": beta1, "beta2": beta2, "epsilon": eps, "t": t}
    expected = numpy_adam(w.copy(), dw, m.copy(), v.copy(), t + 1, lr, beta1, beta2, eps)
    next_w, config = optim.adam(w, dw, {**config, "m": m, "v": v})
    for ours, ref in zip((next_w, config["m"], config["v"]), expected):
        np.testing.assert_array_equal(ours, ref)


def test_arrays_the_kernel_cannot_take_go_through_numpy():
    rng = np.random.default_rng(4)
    base = rng.standard_normal((6, 4))
    w = base.T  # not C-contiguous: updated in place by the numpy path
    dw = rng.standard_normal((4, 6))
    expected, _, _ = numpy_adam(w.copy(), dw, 0, 0, 1)
    next_w, _ = optim.adam(w, dw, {})
    assert next_w is w
    np.testing.assert_array_equal(w, expected)
    w32, dw64 = np.ones(3, np.float32), np.full(3, 0.5)  # mixed dtypes
    next_w, _ = optim.adam(w32, dw64, {})
    assert next_w.dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_subnormal_moments_are_flushed_to_zero(dtype):
    # A network that fits its batch: gradients of 1e-30 whose squares underflow, and a first
    # moment with no more gradient decaying in the subnormals (0.9 times the smallest one
    # rounds back to it, so in numpy it stays there, and each step pays x86's slow path).
    tiny = np.finfo(dtype).tiny
    smallest = np.nextafter(dtype(0), dtype(1))
    w = np.linspace(-1, 1, 40000).astype(dtype)
    dw = np.where(np.arange(w.size) % 2 == 0, 0, 1e-30).astype(dtype)
    m = np.where(np.arange(w.size) % 2 == 0, 3 * smallest, tiny).astype(dtype)
    v = np.full_like(w, 1e-6)
    config = {"learning_rate": 1e-3, "m": m.copy(), "v": v.copy(), "t": 500}
    ref_w, ref_m, ref_v = numpy_adam(w.copy(), dw, m, v, 501)
    next_w, config = optim.adam(w, dw, config)
    for ours, ref in ((next_w, ref_w), (config["m"], ref_m), (config["v"], ref_v)):
        assert not np.any((ours != 0) & (np.abs(ours) < tiny))  # nothing subnormal
        np.testing.assert_allclose(ours, ref, rtol=0, atol=tiny)  # the rest unchanged
    np.testing.assert_array_equal(next_w, ref_w)


# ----------------------------------------------------------------- the one-call path


def slow_adam(w, dw, config):
    """optim.adam's Python path (its checks, then the kernel or numpy), never adam_step."""
    original = _C.adam_step
    _C.adam_step = lambda *args: False
    try:
        return optim.adam(w, dw, config)
    finally:
        _C.adam_step = original


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(0, 9), min_size=0, max_size=3).map(tuple),
    dtype=st.sampled_from([np.float32, np.float64]),
    lr=st.sampled_from([1e-3, 5e-2, 1, np.float64(2e-3)]),
    steps=st.integers(1, 4),
)
def test_one_call_path_matches_the_python_path_bitwise(shape, dtype, lr, steps):
    rng = np.random.default_rng(sum(shape) + steps)
    w = rng.standard_normal(shape).astype(dtype)
    ours, theirs = w.copy(), w.copy()
    config, reference = {"learning_rate": lr}, {"learning_rate": lr}
    for _ in range(steps):
        dw = rng.standard_normal(shape).astype(dtype)
        next_w, config = optim.adam(ours, dw, config)
        assert next_w is ours
        theirs, reference = slow_adam(theirs, dw, reference)
        np.testing.assert_array_equal(ours, theirs)
        for key in ("m", "v"):
            np.testing.assert_array_equal(config[key], reference[key])
        assert config == {**reference, "m": config["m"], "v": config["v"]}
        assert type(config["t"]) is int and config["t"] == reference["t"]


def test_one_call_path_takes_the_everyday_config():
    w, dw = np.ones(5, np.float32), np.full(5, 0.5, np.float32)
    _, config = optim.adam(w, dw, {"learning_rate": 1e-2})  # the first call fills config
    m, v = config["m"], config["v"]
    assert _C.adam_step(w, dw, config) is True
    assert config["t"] == 2 and config["m"] is m and config["v"] is v


def well_formed(w):
    return {
        "learning_rate": 1e-3,
        "beta1": 0.9,
        "beta2": 0.999,
        "epsilon": 1e-8,
        "t": 3,
        "m": np.zeros_like(w),
        "v": np.zeros_like(w),
    }


class Floats(np.ndarray):
    pass


def not_taken():
    """(w, dw, config) that adam_step refuses: the Python path decides."""
    w = np.ones(6)
    cases = [
        (w, w.copy(), None),
        (w, w.copy(), collections.OrderedDict(well_formed(w))),
        (w.view(Floats), w.copy(), well_formed(w)),
        (w, w.copy().view(Floats), well_formed(w)),
        (list(w), w.copy(), well_formed(w)),
        (w, list(w), well_formed(w)),
        (w.reshape(2, 3).T, np.ones((3, 2)), well_formed(np.ones((3, 2)))),
        (np.arange(6), w.copy(), well_formed(w)),
        (w.astype(np.float32), w.copy(), well_formed(w.astype(np.float32))),
        (w.astype(">f8"), w.astype(">f8"), well_formed(w)),
        (w, np.ones(5), well_formed(w)),
    ]
    frozen = w.copy()
    frozen.flags.writeable = False
    cases.append((frozen, w.copy(), well_formed(w)))
    for key, value in [
        ("learning_rate", True),
        ("learning_rate", "a"),
        ("learning_rate", np.float32(1e-3)),
        ("learning_rate", 2**1100),
        ("beta1", None),
        ("epsilon", [1e-8]),
        ("t", 3.0),
        ("t", np.int64(3)),
        ("t", True),
        ("t", 2**63 - 1),
        ("t", 2**70),
        ("m", None),
        ("m", np.zeros(5)),
        ("m", np.zeros(6, np.float32)),
        ("m", np.zeros(12)[::2]),
        ("m", np.zeros(6).view(Floats)),
        ("v", list(np.zeros(6))),
    ]:
        config = well_formed(w)
        config[key] = value
        cases.append((w, w.copy(), config))
    read_only = well_formed(w)
    read_only["v"].flags.writeable = False
    cases.append((w, w.copy(), read_only))
    for key in ("learning_rate", "beta2", "t", "m", "v"):
        config = well_formed(w)
        del config[key]
        cases.append((w, w.copy(), config))
    return cases


@pytest.mark.parametrize("case", range(len(not_taken())))
def test_what_the_one_call_path_refuses_takes_the_python_path(case):
    w, dw, config = not_taken()[case]
    before_w = copy.deepcopy(w)
    before = copy.deepcopy(config)
    assert _C.adam_step(w, dw, config) is False
    np.testing.assert_array_equal(np.asarray(w), np.asarray(before_w))  # nothing changed
    if config is not None:
        assert config.keys() == before.keys()
        for key, value in config.items():
            assert type(value) is type(before[key])
            np.testing.assert_array_equal(value, before[key])
    # and optim.adam does what the Python path does, the same result or the same error
    outcomes = []
    for run in (optim.adam, slow_adam):
        args = copy.deepcopy((w, dw, config))
        try:
            next_w, returned = run(*args)
            outcomes.append(("ok", np.asarray(next_w).copy(), returned))
        except Exception as err:  # the same error either way is the point
            outcomes.append((type(err), str(err), None))
    (kind, first, config_a), (kind_b, second, config_b) = outcomes
    assert kind == kind_b
    if kind == "ok":
        np.testing.assert_array_equal(first, second)
        assert config_a.keys() == config_b.keys()
        for key in config_a:
            np.testing.assert_array_equal(config_a[key], config_b[key])
    else:
        assert first == second


def test_bad_hyperparameters_still_raise_the_rules_errors():
    w = np.ones(3)
    config = well_formed(w)
    config["beta1"] = True
    with pytest.raises(ValueError, match=r"adam: config\['beta1'\] must be a number, got True"):
        optim.adam(w, np.ones(3), config)
    config = well_formed(w)
    config["m"] = np.zeros(4)
    with pytest.raises(ValueError, match=r"config\['m'\] has shape \(4,\) but w has shape \(3,\)"):
        optim.adam(w, np.ones(3), config)
    with pytest.raises(ValueError, match=r"adam: dw has shape \(4,\) but w has shape \(3,\)"):
        optim.adam(w, np.ones(4), well_formed(w))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_call_path_same_bits_on_one_and_two_threads(dtype):
    rng = np.random.default_rng(5)
    n = 3 * 16384 + 7  # two chunks or more: a team of two threads
    w0 = rng.standard_normal(n).astype(dtype)
    grads = [rng.standard_normal(n).astype(dtype) for _ in range(3)]
    results = []
    threads = _C.get_num_threads()
    try:
        for count in (1, 2):
            _C.set_num_threads(count)
            w, config = w0.copy(), {"learning_rate": 1e-2}
            for dw in grads:
                w, config = optim.adam(w, dw, config)
            results.append((w, config["m"], config["v"]))
    finally:
        _C.set_num_threads(threads)
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)
