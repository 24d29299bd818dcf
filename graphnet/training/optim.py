"""First-order update rules with CS231n's contract: ``(w, dw, config) -> (next_w, config)``.

w and dw are arrays of the same shape; config is a dict of hyper-parameters and state
that the rule fills with its defaults and updates, and returns. Pass the returned config
to the next call.

In-place updates: when w is a writeable float ndarray, it is updated in place and
``next_w is w``; so are the state arrays in config (velocity, cache, m, v) once they
have w's dtype and shape. This saves one allocation per parameter and step and gives the
same numbers as an out-of-place update. The course's Solver assigns next_w back to the
model, so it works unchanged; code that needs the previous weights must copy them before
the call. Anything else (lists, integer or read-only arrays) is copied to a new float
array first. State arrays keep w's dtype, so float32 training stays float32.
"""

import numpy as np

from ..kernels import _C

__all__ = ["sgd", "sgd_momentum", "rmsprop", "adam"]

# Each rule's hyperparameters and their defaults, in the order they are filled in.
_SGD_DEFAULTS = {"learning_rate": 1e-2}
_MOMENTUM_DEFAULTS = {"learning_rate": 1e-2, "momentum": 0.9}
_RMSPROP_DEFAULTS = {"learning_rate": 1e-2, "decay_rate": 0.99, "epsilon": 1e-8}
_ADAM_DEFAULTS = {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "t": 0}


def _prepare(rule, w, dw, config, defaults):
    """Return (w to update, dw, config with `defaults` filled in)."""
    if type(w) is np.ndarray and w.dtype.kind == "f" and w.flags.writeable:
        target = w  # np.asarray(w) is w exactly for a plain ndarray
    else:
        a = np.asarray(w)
        target = np.array(a, dtype=a.dtype if a.dtype.kind == "f" else np.float64)
    if type(dw) is not np.ndarray:
        dw = np.asarray(dw)
    if dw.shape != target.shape:
        raise ValueError(f"{rule}: dw has shape {dw.shape} but w has shape {target.shape}")
    config = {} if config is None else config
    if not isinstance(config, dict):
        raise TypeError(
            f"{rule}: config must be a dict of hyperparameters and state, got "
            f"{type(config).__name__}"
        )
    for key, value in defaults.items():
        item = config.setdefault(key, value)
        if type(item) is not float and (
            isinstance(item, bool) or not isinstance(item, (int, float, np.number))
        ):
            raise ValueError(f"{rule}: config[{key!r}] must be a number, got {item!r}")
    return target, dw, config


def _state(config, key, w):
    """config[key] as a writeable array of w's shape and dtype, zeros when missing."""
    state = config.get(key)
    if state is None:
        state = np.zeros_like(w)
    elif not (isinstance(state, np.ndarray) and state.dtype == w.dtype and state.flags.writeable):
        state = np.array(state, dtype=w.dtype)
    if state.shape != w.shape:
        raise ValueError(f"config[{key!r}] has shape {state.shape} but w has shape {w.shape}")
    config[key] = state
    return state


def sgd(w, dw, config=None):
    """Vanilla gradient descent: w -= learning_rate * dw.

    config: 'learning_rate' (1e-2).
    """
    return _update("sgd", w, dw, config)


def sgd_momentum(w, dw, config=None):
    """Gradient descent with momentum: v = momentum * v - learning_rate * dw; w += v.

    config: 'learning_rate' (1e-2), 'momentum' (0.9), 'velocity' (zeros like w).
    """
    return _update("sgd_momentum", w, dw, config)


def rmsprop(w, dw, config=None):
    """RMSProp: per-parameter step scaled by a moving average of squared gradients.

    cache = decay_rate * cache + (1 - decay_rate) * dw**2;
    w -= learning_rate * dw / (sqrt(cache) + epsilon).
    config: 'learning_rate' (1e-2), 'decay_rate' (0.99), 'epsilon' (1e-8), 'cache' (zeros).
    """
    return _update("rmsprop", w, dw, config)


def adam(w, dw, config=None):
    """Adam with bias correction.

    t += 1 (so the first step uses t = 1); m = beta1 * m + (1 - beta1) * dw;
    v = beta2 * v + (1 - beta2) * dw**2; m_hat = m / (1 - beta1**t),
    v_hat = v / (1 - beta2**t); w -= learning_rate * m_hat / (sqrt(v_hat) + epsilon).
    config: 'learning_rate' (1e-3), 'beta1' (0.9), 'beta2' (0.999), 'epsilon' (1e-8),
    'm', 'v' (zeros), 't' (0).
    """
    return _update("adam", w, dw, config)


def _update(rule, w, dw, config):
    """One step of `rule`: in C++ where the arrays allow it, else numpy's expressions."""
    if _C.update_step(rule, w, dw, config):
        # The everyday call (a config this function filled before, plain float arrays of
        # one dtype) checked and updated in one C++ call: the kernel below, adam's t += 1,
        # nothing else changed. Anything else returns False untouched and takes the checks
        # here.
        return w, config
    defaults, state_keys, numpy_update = _RULES[rule]
    w, dw, config = _prepare(rule, w, dw, config, defaults)
    hyperparameters = [config[key] for key in defaults if key != "t"]
    t = _next_step(rule, config) if "t" in defaults else 0
    # Out of range (a NaN rate, a beta of 1, a negative t) the update would write NaN into w:
    # refused before anything is changed.
    _C.check_update(rule, hyperparameters, t)
    states = [_state(config, key, w) for key in state_keys]
    if "t" in defaults:
        config["t"] = t
    if _fusable(w, dw, *states):
        # One threaded pass in C++ instead of numpy's three to ten, with the same
        # arithmetic in the same order and precision: the same numbers, bit for bit.
        _C.update(rule, w, dw, states, hyperparameters, t)
    else:
        numpy_update(w, dw, *states, config)
    return w, config


def _next_step(rule, config):
    """config['t'] + 1, the step this update makes; config['t'] must be an int."""
    t = config["t"]
    if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t >= 2**63 - 1:
        raise ValueError(
            f"{rule}: config['t'] counts the steps taken and must be an int below 2**63 - 1, "
            f"got {t!r}"
        )
    return int(t) + 1


def _numpy_sgd(w, dw, config):
    w -= config["learning_rate"] * dw


def _numpy_sgd_momentum(w, dw, v, config):
    v *= config["momentum"]
    v -= config["learning_rate"] * dw
    w += v


def _numpy_rmsprop(w, dw, cache, config):
    cache *= config["decay_rate"]
    cache += (1 - config["decay_rate"]) * dw**2
    w -= config["learning_rate"] * dw / (np.sqrt(cache) + config["epsilon"])


def _numpy_adam(w, dw, m, v, config):
    beta1, beta2, t = config["beta1"], config["beta2"], config["t"]
    m *= beta1
    m += (1 - beta1) * dw
    v *= beta2
    v += (1 - beta2) * dw**2
    m_hat = m / (1 - beta1**t)
    v_hat = v / (1 - beta2**t)
    w -= config["learning_rate"] * m_hat / (np.sqrt(v_hat) + config["epsilon"])


# Each rule: its hyperparameters with their defaults (in the order the kernel takes them),
# its state arrays, and numpy's expressions for the arrays the kernel cannot take.
_RULES = {
    "sgd": (_SGD_DEFAULTS, (), _numpy_sgd),
    "sgd_momentum": (_MOMENTUM_DEFAULTS, ("velocity",), _numpy_sgd_momentum),
    "rmsprop": (_RMSPROP_DEFAULTS, ("cache",), _numpy_rmsprop),
    "adam": (_ADAM_DEFAULTS, ("m", "v"), _numpy_adam),
}


def _fusable(w, *others):
    """Can the C++ kernel update these arrays in place? (w is writeable by _prepare; the
    kernel reads a copy of a misaligned dw, but writes w and the states where they are.)"""
    return (
        w.dtype in (np.float32, np.float64)
        and w.flags.c_contiguous
        and w.flags.aligned
        and all(a.dtype == w.dtype for a in others)
        and all(a.flags.c_contiguous and a.flags.writeable and a.flags.aligned for a in others[1:])
    )
