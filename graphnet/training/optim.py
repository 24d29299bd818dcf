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
    w, dw, config = _prepare("sgd", w, dw, config, _SGD_DEFAULTS)
    w -= config["learning_rate"] * dw
    return w, config


def sgd_momentum(w, dw, config=None):
    """Gradient descent with momentum: v = momentum * v - learning_rate * dw; w += v.

    config: 'learning_rate' (1e-2), 'momentum' (0.9), 'velocity' (zeros like w).
    """
    w, dw, config = _prepare("sgd_momentum", w, dw, config, _MOMENTUM_DEFAULTS)
    v = _state(config, "velocity", w)
    v *= config["momentum"]
    v -= config["learning_rate"] * dw
    w += v
    return w, config


def rmsprop(w, dw, config=None):
    """RMSProp: per-parameter step scaled by a moving average of squared gradients.

    cache = decay_rate * cache + (1 - decay_rate) * dw**2;
    w -= learning_rate * dw / (sqrt(cache) + epsilon).
    config: 'learning_rate' (1e-2), 'decay_rate' (0.99), 'epsilon' (1e-8), 'cache' (zeros).
    """
    w, dw, config = _prepare("rmsprop", w, dw, config, _RMSPROP_DEFAULTS)
    cache = _state(config, "cache", w)
    cache *= config["decay_rate"]
    cache += (1 - config["decay_rate"]) * dw**2
    w -= config["learning_rate"] * dw / (np.sqrt(cache) + config["epsilon"])
    return w, config


def adam(w, dw, config=None):
    """Adam with bias correction.

    t += 1 (so the first step uses t = 1); m = beta1 * m + (1 - beta1) * dw;
    v = beta2 * v + (1 - beta2) * dw**2; m_hat = m / (1 - beta1**t),
    v_hat = v / (1 - beta2**t); w -= learning_rate * m_hat / (sqrt(v_hat) + epsilon).
    config: 'learning_rate' (1e-3), 'beta1' (0.9), 'beta2' (0.999), 'epsilon' (1e-8),
    'm', 'v' (zeros), 't' (0).
    """
    if _C.adam_step(w, dw, config):
        # The everyday call (a config this function filled before, plain float arrays of
        # one dtype) checked and updated in one C++ call: the kernel below, t += 1, nothing
        # else changed. Anything else returns False untouched and takes the checks here.
        return w, config
    w, dw, config = _prepare("adam", w, dw, config, _ADAM_DEFAULTS)
    beta1, beta2 = config["beta1"], config["beta2"]
    m, v = _state(config, "m", w), _state(config, "v", w)
    config["t"] += 1
    t, lr, eps = config["t"], config["learning_rate"], config["epsilon"]
    if _fusable(w, dw, m, v):
        # One threaded pass in C++ instead of ten numpy passes, with the same arithmetic
        # in the same order and precision: the same numbers, bit for bit.
        _C.adam_update(w, dw, m, v, lr, beta1, beta2, eps, t)
        return w, config
    m *= beta1
    m += (1 - beta1) * dw
    v *= beta2
    v += (1 - beta2) * dw**2
    m_hat = m / (1 - beta1**t)
    v_hat = v / (1 - beta2**t)
    w -= lr * m_hat / (np.sqrt(v_hat) + eps)
    return w, config


def _fusable(w, *others):
    """Can the C++ kernel update these arrays in place? (w is writeable by _prepare.)"""
    return (
        w.dtype in (np.float32, np.float64)
        and w.flags.c_contiguous
        and all(a.dtype == w.dtype for a in others)
        and all(a.flags.c_contiguous and a.flags.writeable for a in others[1:])
    )
