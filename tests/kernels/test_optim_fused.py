"""The C++ update rules give the same numbers, bit for bit, as the numpy formulas."""

import collections
import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphnet import optim
from graphnet.kernels import _C

RULES = ("sgd", "sgd_momentum", "rmsprop", "adam")
STATES = {"sgd": (), "sgd_momentum": ("velocity",), "rmsprop": ("cache",), "adam": ("m", "v")}


def numpy_adam(w, dw, m, v, t, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    m = beta1 * m + (1 - beta1) * dw
    v = beta2 * v + (1 - beta2) * dw**2
    m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)
    return w - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def numpy_rule(rule, w, dw, states, config):
    """The course's formulas, out of place: (next w, next states)."""
    lr = config["learning_rate"]
    if rule == "sgd":
        return w - lr * dw, ()
    if rule == "sgd_momentum":
        (velocity,) = states
        velocity = config["momentum"] * velocity - lr * dw
        return w + velocity, (velocity,)
    if rule == "rmsprop":
        (cache,) = states
        decay = config["decay_rate"]
        cache = decay * cache + (1 - decay) * dw**2
        return w - lr * dw / (np.sqrt(cache) + config["epsilon"]), (cache,)
    next_w, m, v = numpy_adam(
        w, dw, *states, config["t"] + 1, lr, config["beta1"], config["beta2"], config["epsilon"]
    )
    return next_w, (m, v)


def fresh_config(rule, w, **hyper):
    """A config the rule filled before: its defaults, `hyper`, zero states."""
    _, config = getattr(optim, rule)(w.copy(), np.zeros_like(w), dict(hyper))
    for key in STATES[rule]:
        config[key] = np.zeros_like(w)
    return config


@pytest.mark.slow
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(8192, 100), (3, 5), (7,), ()])
def test_fused_rules_match_numpy_bitwise(rule, dtype, shape):
    rng = np.random.default_rng(3)
    w = rng.standard_normal(shape).astype(dtype)
    ref_w, ref_states = w.copy(), tuple(np.zeros_like(w) for _ in STATES[rule])
    config = {"learning_rate": 5e-3}
    for step in range(5):
        dw = rng.standard_normal(shape).astype(dtype)
        next_w, config = getattr(optim, rule)(w, dw, config)
        reference = {**config, "t": step}  # the hyperparameters filled in, t before the step
        ref_w, ref_states = numpy_rule(rule, ref_w, dw, ref_states, reference)
        assert next_w is w
        np.testing.assert_array_equal(w, ref_w)
        for key, ref in zip(STATES[rule], ref_states):
            np.testing.assert_array_equal(config[key], ref)
            assert config[key].dtype == dtype
    assert config.get("t", 5) == 5


HYPERPARAMETERS = {
    "sgd": {"learning_rate": [1e-3, 5e-2, 1.0]},
    "sgd_momentum": {"learning_rate": [1e-3, 5e-2, 1.0], "momentum": [0.9, 0.5, 0.0]},
    "rmsprop": {
        "learning_rate": [1e-3, 5e-2, 1.0],
        "decay_rate": [0.99, 0.9, 0.0],
        "epsilon": [1e-8, 1e-3],
    },
    "adam": {
        "learning_rate": [1e-3, 5e-2, 1.0],
        "beta1": [0.9, 0.5, 0.0],
        "beta2": [0.999, 0.9],
        "epsilon": [1e-8, 1e-3],
    },
}


@st.composite
def rule_and_config(draw):
    rule = draw(st.sampled_from(RULES))
    config = {key: draw(st.sampled_from(values)) for key, values in HYPERPARAMETERS[rule].items()}
    if rule == "adam":
        config["t"] = draw(st.integers(0, 3000))
    return rule, config


@settings(max_examples=120, deadline=None)
@given(
    size=st.integers(0, 70),  # every tail of the 8-float and 4-double vectors, and none
    dtype=st.sampled_from([np.float32, np.float64]),
    rule_config=rule_and_config(),
    offset=st.integers(0, 3),
)
def test_rules_match_numpy_bitwise_on_any_size_and_alignment(size, dtype, rule_config, offset):
    # offset: arrays starting off a vector's alignment, as views into a larger buffer
    rule, config = rule_config
    rng = np.random.default_rng(size * 7 + offset)

    def array(scale):
        return (rng.standard_normal(size + offset) * scale).astype(dtype)[offset:]

    w, dw = array(1.0), array(1e-2)
    states = {"velocity": array(1e-3), "cache": np.abs(array(1e-5)), "m": array(1e-3)}
    states["v"] = np.abs(array(1e-5))
    mine = {key: states[key] for key in STATES[rule]}
    expected_w, expected_states = numpy_rule(
        rule, w.copy(), dw, tuple(a.copy() for a in mine.values()), config
    )
    next_w, config = getattr(optim, rule)(w, dw, {**config, **mine})
    np.testing.assert_array_equal(next_w, expected_w)
    for key, ref in zip(STATES[rule], expected_states):
        np.testing.assert_array_equal(config[key], ref)


@pytest.mark.parametrize("rule", RULES)
def test_arrays_the_kernel_cannot_take_go_through_numpy(rule):
    rng = np.random.default_rng(4)
    base = rng.standard_normal((6, 4))
    w = base.T  # not C-contiguous: updated in place by the numpy path
    dw = rng.standard_normal((4, 6))
    config = fresh_config(rule, np.zeros((4, 6)))
    states = tuple(config[key].copy() for key in STATES[rule])
    expected, _ = numpy_rule(rule, w.copy(), dw, states, config)
    next_w, _ = getattr(optim, rule)(w, dw, config)
    assert next_w is w
    np.testing.assert_array_equal(w, expected)
    w32, dw64 = np.ones(3, np.float32), np.full(3, 0.5)  # mixed dtypes
    next_w, _ = getattr(optim, rule)(w32, dw64, {})
    assert next_w.dtype == np.float32


@pytest.mark.parametrize("rule", ["sgd_momentum", "rmsprop", "adam"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_subnormal_states_are_flushed_to_zero(rule, dtype):
    # A network that fits its batch: gradients of 1e-30 whose squares underflow, and states
    # with no more gradient decaying in the subnormals (0.9 times the smallest one rounds
    # back to it, so in numpy it stays there, and each step pays x86's slow path).
    tiny = np.finfo(dtype).tiny
    smallest = np.nextafter(dtype(0), dtype(1))
    w = np.linspace(-1, 1, 40000).astype(dtype)
    dw = np.where(np.arange(w.size) % 2 == 0, 0, 1e-30).astype(dtype)
    decaying = np.where(np.arange(w.size) % 2 == 0, 3 * smallest, tiny).astype(dtype)
    config = fresh_config(rule, w, learning_rate=1e-3)
    if rule == "adam":
        config.update(m=decaying.copy(), v=np.full_like(w, 1e-6), t=500)
    else:
        config[STATES[rule][0]] = decaying.copy()
    states = tuple(config[key].copy() for key in STATES[rule])
    ref_w, ref_states = numpy_rule(rule, w.copy(), dw, states, config)
    next_w, config = getattr(optim, rule)(w, dw, config)
    for ours, ref in ((next_w, ref_w), *zip((config[k] for k in STATES[rule]), ref_states)):
        assert not np.any((ours != 0) & (np.abs(ours) < tiny))  # nothing subnormal
        np.testing.assert_allclose(ours, ref, rtol=0, atol=tiny)  # the rest unchanged


# ----------------------------------------------------------------- the one-call path


def slow_update(rule, w, dw, config):
    """optim.<rule>'s Python path (its checks, then the kernel or numpy), never update_step."""
    original = _C.update_step
    _C.update_step = lambda *args: False
    try:
        return getattr(optim, rule)(w, dw, config)
    finally:
        _C.update_step = original


@settings(max_examples=60, deadline=None)
@given(
    rule=st.sampled_from(RULES),
    shape=st.lists(st.integers(0, 9), min_size=0, max_size=3).map(tuple),
    dtype=st.sampled_from([np.float32, np.float64]),
    lr=st.sampled_from([1e-3, 5e-2, 1, np.float64(2e-3)]),
    steps=st.integers(1, 4),
)
def test_one_call_path_matches_the_python_path_bitwise(rule, shape, dtype, lr, steps):
    rng = np.random.default_rng(sum(shape) + steps)
    w = rng.standard_normal(shape).astype(dtype)
    ours, theirs = w.copy(), w.copy()
    config, reference = {"learning_rate": lr}, {"learning_rate": lr}
    for _ in range(steps):
        dw = rng.standard_normal(shape).astype(dtype)
        next_w, config = getattr(optim, rule)(ours, dw, config)
        assert next_w is ours
        theirs, reference = slow_update(rule, theirs, dw, reference)
        np.testing.assert_array_equal(ours, theirs)
        for key in STATES[rule]:
            np.testing.assert_array_equal(config[key], reference[key])
        assert config == {**reference, **{key: config[key] for key in STATES[rule]}}
        if rule == "adam":
            assert type(config["t"]) is int and config["t"] == reference["t"]


@pytest.mark.parametrize("rule", RULES)
def test_one_call_path_takes_the_everyday_config(rule):
    w, dw = np.ones(5, np.float32), np.full(5, 0.5, np.float32)
    _, config = getattr(optim, rule)(w, dw, {"learning_rate": 1e-2})  # the first call fills it
    states = {key: config[key] for key in STATES[rule]}
    assert _C.update_step(rule, w, dw, config) is True
    assert all(config[key] is state for key, state in states.items())
    assert config.get("t", 2) == 2


def well_formed(rule, w):
    config = {key: values[0] for key, values in HYPERPARAMETERS[rule].items()}
    config.update({key: np.zeros_like(w) for key in STATES[rule]})
    if rule == "adam":
        config["t"] = 3
    return config


class Floats(np.ndarray):
    pass


def not_taken(rule):
    """(w, dw, config) that update_step refuses: the Python path decides."""
    w = np.ones(6)
    cases = [
        (w, w.copy(), None),
        (w, w.copy(), collections.OrderedDict(well_formed(rule, w))),
        (w.view(Floats), w.copy(), well_formed(rule, w)),
        (w, w.copy().view(Floats), well_formed(rule, w)),
        (list(w), w.copy(), well_formed(rule, w)),
        (w, list(w), well_formed(rule, w)),
        (w.reshape(2, 3).T, np.ones((3, 2)), well_formed(rule, np.ones((3, 2)))),
        (np.arange(6), w.copy(), well_formed(rule, w)),
        (w.astype(np.float32), w.copy(), well_formed(rule, w.astype(np.float32))),
        (w.astype(">f8"), w.astype(">f8"), well_formed(rule, w)),
        (w, np.ones(5), well_formed(rule, w)),
    ]
    frozen = w.copy()
    frozen.flags.writeable = False
    cases.append((frozen, w.copy(), well_formed(rule, w)))
    bad_values = [True, "a", np.float32(1e-3), 2**1100, None, [1e-8]]
    for key in HYPERPARAMETERS[rule]:
        for value in bad_values:
            config = well_formed(rule, w)
            config[key] = value
            cases.append((w, w.copy(), config))
    if rule == "adam":
        for value in (3.0, np.int64(3), True, 2**63 - 1, 2**70):
            config = well_formed(rule, w)
            config["t"] = value
            cases.append((w, w.copy(), config))
    for key in STATES[rule]:
        for value in (
            None,
            np.zeros(5),
            np.zeros(6, np.float32),
            np.zeros(12)[::2],
            np.zeros(6).view(Floats),
            list(np.zeros(6)),
        ):
            config = well_formed(rule, w)
            config[key] = value
            cases.append((w, w.copy(), config))
        read_only = well_formed(rule, w)
        read_only[key].flags.writeable = False
        cases.append((w, w.copy(), read_only))
    for key in well_formed(rule, w):
        config = well_formed(rule, w)
        del config[key]
        cases.append((w, w.copy(), config))
    return cases


@pytest.mark.parametrize(
    "rule, case", [(rule, case) for rule in RULES for case in range(len(not_taken(rule)))]
)
def test_what_the_one_call_path_refuses_takes_the_python_path(rule, case):
    w, dw, config = not_taken(rule)[case]
    before_w = copy.deepcopy(w)
    before = copy.deepcopy(config)
    assert _C.update_step(rule, w, dw, config) is False
    np.testing.assert_array_equal(np.asarray(w), np.asarray(before_w))  # nothing changed
    if config is not None:
        assert config.keys() == before.keys()
        for key, value in config.items():
            assert type(value) is type(before[key])
            np.testing.assert_array_equal(value, before[key])
    # and optim.<rule> does what the Python path does, the same result or the same error
    outcomes = []
    for run in (getattr(optim, rule), lambda *args: slow_update(rule, *args)):
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


@pytest.mark.parametrize("rule", RULES)
def test_bad_hyperparameters_still_raise_the_rules_errors(rule):
    w = np.ones(3)
    config = well_formed(rule, w)
    config["learning_rate"] = True
    message = rf"{rule}: config\['learning_rate'\] must be a number, got True"
    with pytest.raises(ValueError, match=message):
        getattr(optim, rule)(w, np.ones(3), config)
    for key in STATES[rule]:
        config = well_formed(rule, w)
        config[key] = np.zeros(4)
        message = rf"config\['{key}'\] has shape \(4,\) but w has shape \(3,\)"
        with pytest.raises(ValueError, match=message):
            getattr(optim, rule)(w, np.ones(3), config)
    with pytest.raises(ValueError, match=rf"{rule}: dw has shape \(4,\) but w has shape \(3,\)"):
        getattr(optim, rule)(w, np.ones(4), well_formed(rule, w))


def test_the_kernel_call_checks_its_arguments():
    w = np.ones(4)
    with pytest.raises(ValueError, match="update rule must be 'sgd'.*got 'nesterov'"):
        _C.update("nesterov", w, w.copy(), [], [1e-2])
    with pytest.raises(ValueError, match="rmsprop takes 1 state arrays and 3 hyperparameters"):
        _C.update("rmsprop", w, w.copy(), [], [1e-2, 0.99, 1e-8])
    with pytest.raises(ValueError, match="the states must be numpy arrays"):
        _C.update("sgd_momentum", w, w.copy(), [[0.0] * 4], [1e-2, 0.9])
    unfit = "velocity must be a C-contiguous, aligned, writeable array"
    with pytest.raises(ValueError, match=unfit):
        _C.update("sgd_momentum", w, w.copy(), [np.zeros(8)[::2]], [1e-2, 0.9])
    at_odd_byte = np.zeros(w.nbytes + 1, np.uint8)[1:].view(w.dtype)
    with pytest.raises(ValueError, match=unfit):
        _C.update("sgd_momentum", w, w.copy(), [at_odd_byte], [1e-2, 0.9])
    with pytest.raises(ValueError):
        _C.update("sgd_momentum", w, w.copy(), [np.zeros(5)], [1e-2, 0.9])
    np.testing.assert_array_equal(w, 1.0)  # nothing was written


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_call_path_same_bits_on_one_and_two_threads(rule, dtype):
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
                w, config = getattr(optim, rule)(w, dw, config)
            results.append((w, *(config[key] for key in STATES[rule])))
    finally:
        _C.set_num_threads(threads)
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)
