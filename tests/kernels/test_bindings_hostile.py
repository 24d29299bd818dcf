"""Every function of graphnet.kernels._C under hostile arguments derived from a valid call.

VALID holds one valid call of each binding (test_every_binding_has_a_valid_call keeps it
complete: a new binding fails it until it is listed). From each valid call, every argument
in turn is replaced by hostile values of its kind: integers over the whole int64 range and
beyond it; NaNs and infinities; unknown names; None; for arrays, empty, wrong dtypes (int,
half, complex, bool, object, big-endian), misaligned, strided, reversed, Fortran-ordered,
read-only, broadcast, 0-d, one axis more or less, one element more, 2**40 rows (a
broadcast view), a list; for tuples and lists, empty, longer, of another kind, any item
hostile. Each call must return or raise ValueError or TypeError with a message (or a
MemoryError for an array too large to make: one of 2**40 rows the kernel would copy, or
an output the caller sized), and never crash or hang; a ValueError about an array names
it, its shape, dtype or layout. .ci/sanitize runs this file under AddressSanitizer and
UndefinedBehaviorSanitizer, where a read out of bounds or a signed overflow aborts the run.

The same calls on odd sizes give the same bits on 1, 2 and 3 threads (the last test).

`python tests/kernels/test_bindings_hostile.py [NAME...]` runs the calls one at a time,
printing each before it is made: after a crash, the last line printed is the culprit.
"""

import ctypes
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from graphnet.kernels import _C
from isolation import assert_survived, run_in_child

INT64_MAX, INT64_MIN = 2**63 - 1, -(2**63)
HOSTILE_INTS = (
    INT64_MIN,
    -(2**62),
    -(2**31),
    -1,
    0,
    2**31 - 1,
    2**31,
    2**32 + 1,
    2**62,
    INT64_MAX,
    2**64,  # beyond int64: pybind11 refuses it as a TypeError
)
HOSTILE_FLOATS = (float("nan"), float("inf"), -float("inf"), -0.0, 1e308, -1e308)
HOSTILE_NAMES = ("", "bogus", "relu\0", "é" * 3)
# Bindings whose arguments another test file crafts entry by entry (the executor's loops
# read Python plans; test_walk.py feeds them every malformed entry).
CRAFTED_ELSEWHERE = {
    "forward_walk": "tests/kernels/test_walk.py",
    "backward_walk": "tests/kernels/test_walk.py",
}
# Switches between equivalent kernels: fuzzed with their valid values only (each is undone).
SWITCHES = {
    "set_avx2_activations": "avx2_activations_active",
    "set_avx512_activations": "avx512_activations_active",
    "set_direct_conv": "direct_conv_active",
    "set_avx512_conv": "avx512_conv_active",
    "set_avx512_matmul": "avx512_matmul_active",
}


def capsule(name):
    """A PyCapsule named `name` around a pointer to nothing useful."""
    new = ctypes.pythonapi.PyCapsule_New
    new.restype = ctypes.py_object
    new.argtypes = (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p)
    return new(ctypes.addressof(_CAPSULE_TARGET), name, None)


_CAPSULE_TARGET = ctypes.c_char(0)


def valid_calls(n=2, c=3, s=5, f=4, rows=4, cols=5, t=3, hidden=5, dtype=np.float64, seed=0):
    """{binding: {argument: value}}: one valid call of each, on n samples of c channels
    of s x s pixels, f filters, a (rows, cols) matrix, t steps of a recurrent layer of
    `hidden` units; float arrays of `dtype`."""
    rng = np.random.default_rng(seed)

    def r(*shape):
        return rng.standard_normal(shape).astype(dtype)

    x4, w4, b4 = r(n, c, s, s), r(f, c, 3, 3), r(f)
    conv_out = _C.conv_forward(x4, w4, b4, 1, 1, activation="relu")
    pooled, conv_winners = _C.conv_relu_pool_forward(x4, w4, b4, 1, 1, 2, 2, 2)
    xp = r(n, c, s + 1, s + 1)
    _, pool_winners = _C.max_pool_forward(xp, 2, 2, 2)
    matrix = r(rows, cols)
    labels = rng.integers(0, cols, rows)
    xs, h0 = r(n, t, cols), r(n, hidden)
    Wx, Wh, bl = r(cols, 4 * hidden), r(hidden, 4 * hidden), r(4 * hidden)
    h, act, cell, tanh_c = _C.recurrent_forward("lstm", xs, h0, Wx, Wh, bl, True)
    gamma, beta = r(c), r(c)
    _, mean_n, var_n, inv_n = _C.channel_norm_forward(x4, gamma, beta, 1e-5)
    var_n = np.abs(var_n)
    norm_out = _C.channel_norm_forward(x4, gamma, beta, 1e-5, relu=True, skip=x4)[0]
    gl, bl_cols = r(cols), r(cols)
    _, mean_l, inv_l = _C.layer_norm_forward(matrix, gl, bl_cols, 1e-5)
    xg, gg, bg = r(n, 2 * c, s + 1, s + 1), r(2 * c), r(2 * c)
    gpool = (2, 2, 2)
    gout, mean_g, inv_g = _C.group_norm_forward(xg, gg, bg, 2, 1e-5, "gelu", 0.0, gpool)
    q, k, v = r(n, rows, cols), r(n, t, cols), r(n, t, hidden)
    mask = (r(n, rows, t) > -1).view(np.uint8)
    weights = np.empty((n, t, rows), dtype)
    _C.attention_forward(q, k, v, mask, 0.5, weights, np.empty((n, rows, hidden), dtype))
    soft = _C.softmax_forward(matrix)
    size = rows * cols
    adam = {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "t": 0}
    adam.update(m=np.zeros(size, dtype), v=np.zeros(size, dtype))
    avg_out = (s + 1 - 2) // 2 + 1
    return {
        "conv_forward": dict(x=x4, w=w4, b=b4, stride=1, pad=1, activation="relu", alpha=0.0),
        "conv_backward": dict(
            dout=r(n, f, s, s),
            x=x4,
            w=w4,
            stride=1,
            pad=1,
            need_dx=True,
            need_dw=True,
            activation="relu",
            alpha=0.0,
            act_out=conv_out,
        ),
        "conv_relu_pool_forward": dict(
            x=x4, w=w4, b=b4, stride=1, pad=1, pool_height=2, pool_width=2, pool_stride=2
        ),
        "conv_pooled_backward": dict(
            dpool=r(*pooled.shape),
            pooled=pooled,
            winners=conv_winners,
            x=x4,
            w=w4,
            stride=1,
            pad=1,
        ),
        "max_pool_forward": dict(x=xp, pool_height=2, pool_width=2, stride=2, relu_first=True),
        "max_pool_backward": dict(
            dout=r(*pool_winners.shape), winners=pool_winners, H=s + 1, W=s + 1
        ),
        "all_finite": dict(x=matrix),
        "relu_forward": dict(x=matrix),
        "relu_backward": dict(dout=matrix, keep=matrix > 0),
        "sigmoid": dict(x=matrix.astype(np.float32)),
        "dropout_forward": dict(x=matrix, key=2**64 - 1, keep=0.7),
        "dropout_backward_rows": dict(dout=r(rows), mask=matrix),
        "gather_rows": dict(index=rng.integers(0, rows, (2, 3)), table=matrix),
        "scatter_add_rows": dict(
            index=rng.integers(0, rows, 2 * rows), values=r(2 * rows, cols), rows=rows
        ),
        "softmax_loss": dict(x=matrix, labels=labels, weight=np.full(rows, 1 / rows, dtype)),
        "mean_softmax_loss": dict(x=matrix, labels=labels),
        "sequence_softmax_loss": dict(
            x=matrix[None], y=labels[None], mask=np.ones((1, rows), bool), gradient=True
        ),
        "svm_loss": dict(x=matrix, labels=labels),
        "row_means": dict(x=matrix),
        "middle_means": dict(x=xs),
        "spread_means": dict(dout=matrix, n=t),
        "matmul": dict(
            a=r(rows, cols),
            b=r(cols, hidden),
            transpose_a=False,
            transpose_b=False,
            bias=r(hidden),
        ),
        "batched_matmul": dict(
            a=r(2, 1, rows, cols),
            b=r(3, cols, hidden),
            transpose_a=False,
            transpose_b=False,
            summed_to=(3,),
        ),
        "column_sums": dict(a=matrix),
        "update": dict(
            rule="adam",
            w=r(size),
            dw=r(size),
            states=[np.zeros(size, dtype), r(size) ** 2],
            hyperparameters=[1e-3, 0.9, 0.999, 1e-8],
            t=1,
        ),
        "check_update": dict(rule="adam", hyperparameters=[1e-3, 0.9, 0.999, 1e-8], t=1),
        "update_step": dict(rule="adam", w=r(size), dw=r(size), config=adam),
        "recurrent_forward": dict(cell="lstm", x=xs, h0=h0, Wx=Wx, Wh=Wh, b=bl, keep=True),
        "recurrent_backward": dict(
            cell="lstm",
            dh=r(n, t, hidden),
            x=xs,
            h0=h0,
            Wx=Wx,
            Wh=Wh,
            h=h,
            act=act,
            c=cell,
            tanh_c=tanh_c,
        ),
        "conv_chain_forward": dict(
            x=x4,
            w=w4,
            b=b4,
            stride=1,
            pad=1,
            norm=(r(f), r(f), r(f), np.ones(f, dtype)),
            eps=1e-5,
            add=r(n, f, s, s),
            add_first=True,
            relu=True,
            pool=(2, 2, 2),
        ),
        "affine_chain_forward": dict(
            x=r(rows, cols),
            w=r(cols, hidden),
            b=r(hidden),
            norm=(r(hidden), r(hidden)),
            eps=1e-5,
            layer=True,
            relu=True,
        ),
        "affine_forward": dict(x=r(n, rows, cols), w=r(cols, hidden), b=r(hidden), kept=2),
        "affine_backward": dict(
            dout=r(n, rows, hidden), x=r(n, rows, cols), w=r(cols, hidden), needs=(True,) * 3
        ),
        "channel_norm_forward": dict(
            x=x4,
            gamma=gamma,
            beta=beta,
            eps=1e-5,
            mean=mean_n,
            var=var_n,
            relu=True,
            skip=x4,
            skip_first=True,
        ),
        "batchnorm_forward": dict(
            x=x4,
            gamma=gamma,
            beta=beta,
            eps=1e-5,
            momentum=0.9,
            running_mean=mean_n,
            running_var=var_n,
            train=True,
            relu=True,
            pool=(2, 2, 2),
        ),
        "channel_norm_backward": dict(
            dout=r(*x4.shape),
            x=x4,
            gamma=gamma,
            mean=mean_n,
            inv_std=inv_n,
            train=True,
            beta=beta,
            relu_out=norm_out,
        ),
        "layer_norm_forward": dict(x=matrix, gamma=gl, beta=bl_cols, eps=1e-5, relu=True),
        "layer_norm_backward": dict(
            dout=r(rows, cols), x=matrix, gamma=gl, mean=mean_l, inv_std=inv_l, beta=bl_cols
        ),
        "group_norm_forward": dict(
            x=xg, gamma=gg, beta=bg, G=2, eps=1e-5, activation="gelu", alpha=0.0, pool=gpool
        ),
        "group_norm_backward": dict(
            dout=r(*gout.shape),
            x=xg,
            gamma=gg,
            G=2,
            mean=mean_g,
            inv_std=inv_g,
            beta=bg,
            activation="gelu",
            alpha=0.0,
            pool=gpool,
        ),
        "pointwise_forward": dict(op="leaky_relu", x=matrix, alpha=0.1),
        "pointwise_forward_slope": dict(op="gelu", x=matrix),
        "pointwise_backward": dict(op="leaky_relu", dout=matrix, saved=matrix, alpha=0.1),
        "erf": dict(x=matrix),
        "attention_forward": dict(
            q=q,
            k=k,
            v=v,
            mask=mask,
            scale=0.5,
            weights=np.empty((n, t, rows), dtype),
            out=np.empty((n, rows, hidden), dtype),
        ),
        "attention_backward": dict(
            q=q,
            k=k,
            v=v,
            weights=weights,
            dout=r(n, rows, hidden),
            scale=0.5,
            dq=np.empty((n, rows, cols), dtype),
            dk=np.empty((n, t, cols), dtype),
            dv=np.empty((n, t, hidden), dtype),
        ),
        "softmax_forward": dict(x=matrix, log=True),
        "softmax_backward": dict(dout=matrix, out=soft, log=False),
        "avg_pool_forward": dict(x=xp, pool_height=2, pool_width=2, stride=2),
        "avg_pool_backward": dict(
            dout=r(n, c, avg_out, avg_out),
            H=s + 1,
            W=s + 1,
            pool_height=2,
            pool_width=2,
            stride=2,
        ),
        "set_num_threads": dict(n=1),
        "get_num_threads": {},
        "max_num_threads": {},
        "set_winograd_conv": dict(mode="auto", tiles="auto"),
        "set_pad_skip_conv": dict(mode="auto"),
        "set_lane_conv": dict(mode="auto"),
        "set_column_dx": dict(mode="auto"),
        "set_column_dw": dict(mode="auto"),
        "strided_gradient_paths": dict(x=x4, w=w4, stride=2, pad=1),
        "set_array_memory_handler": dict(handler=None),
        "array_pool_counts": {},
        "keep_freed_heap": {},
        "release_array_pool": {},
        **{name: dict(enabled=True) for name in SWITCHES},
        **{query: {} for query in SWITCHES.values()},
    }


def bindings():
    return sorted(
        name for name in dir(_C) if not name.startswith("_") and callable(getattr(_C, name))
    )


def test_every_binding_has_a_valid_call():
    listed = set(valid_calls()) | set(CRAFTED_ELSEWHERE)
    assert set(bindings()) == listed, "add the binding's valid call to valid_calls()"


NORMS_WITH_EPS = (
    "channel_norm_forward",
    "batchnorm_forward",
    "layer_norm_forward",
    "group_norm_forward",
    "conv_chain_forward",
    "affine_chain_forward",
)


@pytest.mark.parametrize("eps", [float("nan"), float("inf"), 0.0, -1e-5])
@pytest.mark.parametrize("name", NORMS_WITH_EPS)
def test_norms_refuse_an_eps_that_is_not_finite_and_positive(name, eps):
    # 1 / sqrt(var + eps) of a constant feature: NaN or infinite over the whole batch.
    call = valid_calls()[name]
    with pytest.raises(ValueError, match=r"eps must be finite and > 0"):
        getattr(_C, name)(**{**call, "eps": eps})


def test_threads_beyond_the_limit_are_refused_and_the_environment_is_capped():
    """A team of 2**31 - 1 threads started one OS thread per piece of work: an average pool
    of 200,000 planes crashed the interpreter."""
    with pytest.raises(ValueError, match="between 1 and 1024"):
        _C.set_num_threads(2**31 - 1)
    environment = {**os.environ, "OMP_NUM_THREADS": "100000"}
    code = "from graphnet.kernels import _C; print(_C.get_num_threads())"
    child = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=120
    )
    assert child.stdout.split() == [str(_C.max_num_threads())], child.stderr


# ---- hostile variants of one argument ------------------------------------------------


def strided(a):
    """a's values in a view whose every axis has a stride of two elements."""
    wide = np.zeros(tuple(2 * n for n in a.shape), a.dtype)
    view = wide[tuple(slice(None, None, 2) for _ in a.shape)]
    view[...] = a
    return view


def misaligned(a):
    """a's values in a C-contiguous array whose data starts one byte past an item boundary."""
    raw = np.zeros(a.nbytes + 1, np.uint8)[1:]
    view = raw.view(a.dtype).reshape(a.shape)
    view[...] = a
    return view


def read_only(a):
    view = a.copy()
    view.flags.writeable = False
    return view


def array_variants(a):
    shape = a.shape
    yield "empty", np.zeros((0,) + shape[1:], a.dtype)
    yield "all axes empty", np.zeros(tuple(0 for _ in shape), a.dtype)
    for dtype in (np.int32, np.int64, np.float16, np.complex128, np.bool_, np.uint8, object):
        if a.dtype != dtype:
            yield f"dtype {np.dtype(dtype).name}", a.astype(dtype)
    yield (
        "float32" if a.dtype != np.float32 else "float64",
        a.astype(np.float64 if a.dtype == np.float32 else np.float32),
    )
    if a.dtype.kind in "fiu" and a.dtype.itemsize > 1:
        yield "big-endian", a.astype(a.dtype.newbyteorder(">"))
    if a.size and a.dtype.itemsize > 1 and a.dtype != object:
        yield "misaligned", misaligned(a)
    if a.size:
        yield "strided", strided(a)
        yield "reversed", a[::-1]
        yield "fortran", np.asfortranarray(a)
        yield "broadcast", np.broadcast_to(a.reshape(-1)[:1].reshape((1,) * a.ndim), shape)
    yield "read-only", read_only(a)
    yield "0-d", a.reshape(-1)[:1].reshape(()) if a.size else np.zeros((), a.dtype)
    yield "axis more", a[None]
    if a.ndim > 1:
        yield "axis less", a.reshape(shape[:-2] + (-1,))
    if a.ndim:
        yield (
            "one more",
            np.concatenate([a, a[:1]]) if a.shape[0] else np.zeros((1,) + shape[1:], a.dtype),
        )
        yield "huge extent", np.broadcast_to(np.zeros((), a.dtype), (2**40,) + shape[1:])
    yield "list", a.tolist()
    yield "None", None


def variants(value):
    """(what, hostile value) pairs for an argument whose valid value is `value`."""
    if isinstance(value, (bool, int, float, str)):
        yield "None for a number or name", None
        yield "a number or name of another kind", 1.5 if isinstance(value, str) else "1"
    if isinstance(value, bool):
        yield "not a bool", 2
        return
    if isinstance(value, int):
        for n in HOSTILE_INTS:
            yield f"{n}", n
        return
    if isinstance(value, float):
        for f in HOSTILE_FLOATS:
            yield f"{f}", f
        return
    if isinstance(value, str):
        for name in HOSTILE_NAMES:
            yield repr(name), name
        return
    if isinstance(value, np.ndarray):
        yield from array_variants(value)
        return
    if isinstance(value, tuple):
        yield "empty tuple", ()
        yield "one more item", value + value[:1]
        yield "a list", list(value)
        yield "an int", 2
        for i, item in enumerate(value):
            for what, bad in variants(item):
                yield f"item {i} {what}", value[:i] + (bad,) + value[i + 1 :]
        return
    if isinstance(value, list):
        yield "empty list", []
        yield "a tuple", tuple(value)
        yield "an int", 2
        for i, item in enumerate(value):
            for what, bad in variants(item):
                yield f"item {i} {what}", value[:i] + [bad] + value[i + 1 :]
        return
    if isinstance(value, dict):
        for key in value:
            for what, bad in variants(value[key]):
                yield f"[{key!r}] {what}", {**value, key: bad}
        return
    if value is None:
        yield "an int", 1
        yield "a string", "mem_handler"
        yield "a capsule of another kind", capsule(b"not_a_mem_handler")
        yield "an array", np.zeros(3)
        return


def hostile_calls(name, valid):
    """(description, arguments) of each hostile call of the binding `name`."""
    for arg, value in valid.items():
        if name in SWITCHES and arg == "enabled":
            yield "enabled=False", {arg: False}
            continue
        for what, bad in variants(value):
            yield f"{arg}: {what}", {**valid, arg: bad}
    yield "no arguments", {}
    yield "an unknown argument", {**valid, "bogus": 1}


# ---- the calls -----------------------------------------------------------------------


# What an error about an array says besides its name: its shape, dtype or layout.
ARRAY_WORDS = (
    "scalar",
    "(",
    "dtype",
    "float",
    "int",
    "bool",
    "contiguous",
    "read-only",
    "writeable",
    "broadcast",
)


def names_the_array(message, arg):
    """An error about an array names it (or what it is for) and its shape, dtype or
    layout."""
    return arg in message or any(word in message for word in ARRAY_WORDS)


def call(name, arguments):
    """Calls the binding; returns the error it raised (ValueError, TypeError, or a
    MemoryError for arrays too large to copy or make) or None."""
    try:
        getattr(_C, name)(**fresh(arguments))
    except (ValueError, TypeError, MemoryError) as err:
        assert str(err), f"{name}: {type(err).__name__} without a message"
        return err
    return None


def undo_switches():
    _C.set_winograd_conv("auto", "auto")
    _C.set_pad_skip_conv("auto")
    _C.set_lane_conv("auto")
    _C.set_column_dx("auto")
    _C.set_column_dw("auto")
    for switch in SWITCHES:
        getattr(_C, switch)(True)


@pytest.fixture
def restored_state():
    threads = _C.get_num_threads()
    active = {switch: getattr(_C, query)() for switch, query in SWITCHES.items()}
    yield
    _C.set_num_threads(threads)
    undo_switches()
    for switch, was in active.items():
        getattr(_C, switch)(was)


VALID = valid_calls()


@pytest.mark.parametrize("name", sorted(VALID))
def test_hostile_arguments_raise_value_or_type_errors(name, restored_state):
    valid = VALID[name]
    before = outcome(name, valid)
    for what, arguments in hostile_calls(name, valid):
        err = call(name, arguments)
        arg = what.split(":")[0]
        if isinstance(err, MemoryError):  # an array too large to make: its size is the caller's
            too_large = "huge extent" in what or isinstance(valid.get(arg), int)
            assert too_large, f"{name}({what}): {err}"
        if isinstance(err, ValueError) and isinstance(valid.get(arg), np.ndarray):
            assert names_the_array(str(err), arg), f"{name}({what}): {err}"
    # Nothing the hostile calls did changed what a valid call computes.
    assert outcome(name, valid) == before


@pytest.mark.parametrize("name", sorted(VALID))
def test_misaligned_arrays_are_copied_or_refused(name, restored_state):
    """An array whose data starts at an odd byte (np.frombuffer at an offset) is copied
    before a kernel reads it, whose loops may load its items as aligned: the same bits as
    the aligned call. One the kernel writes in place is refused with a ValueError that says
    so, or declined (update_step returns False: graphnet.optim's numpy path takes it)."""
    valid = VALID[name]
    expected = outcome(name, valid)
    for arg, value in valid.items():
        if not isinstance(value, np.ndarray) or value.size == 0 or value.dtype.itemsize == 1:
            continue
        try:
            got = outcome(name, {**valid, arg: misaligned(value)})
        except ValueError as err:
            assert "aligned" in str(err), f"{name}({arg} misaligned): {err}"
            continue
        if name == "update_step" and got[0] == repr(False):
            continue
        assert got == expected, f"{name}({arg} misaligned)"


def unpickled(a):
    """a as it comes out of pickle (multiprocessing, a deep copy): the same values and an
    equivalent dtype, but a dtype object of its own rather than numpy's float64 (or int64,
    bool, ...) itself."""
    copy = pickle.loads(pickle.dumps(a))
    assert copy.dtype == a.dtype and copy.dtype is not a.dtype
    return copy


@pytest.mark.parametrize("name", sorted(VALID))
def test_unpickled_arrays_are_taken_like_any_other(name, restored_state):
    """An array whose dtype is an equivalent object of its own gives the same bits as the
    valid call (before: the kernels compared dtypes by identity and refused an unpickled
    float64 array as "must be float32 or float64, got float64")."""
    valid = VALID[name]
    expected = outcome(name, valid)
    for arg, value in valid.items():
        if isinstance(value, np.ndarray) and value.dtype != object:
            assert outcome(name, {**valid, arg: unpickled(value)}) == expected, (name, arg)


# ---- the same bits on any number of threads -----------------------------------------

KERNELS = sorted(
    name
    for name, arguments in VALID.items()
    if any(isinstance(value, np.ndarray) for value in arguments.values())
)
CONVS = [name for name in KERNELS if name.startswith("conv")]
# Where the convolutions may run: each path on every 3x3 layer it takes.
CONV_PATHS = {
    "default": ("auto", "auto", "auto"),
    "winograd 4x4": ("always", "4x4", "off"),
    "winograd 2x2": ("always", "2x2", "off"),
    "pad skip": ("off", "auto", "always"),
}


def fresh(value):
    """A copy of the writeable arrays in `value` (the kernels write some of their
    arguments; a read-only one, such as a broadcast view of 2**40 rows, stays as it is),
    each misaligned one misaligned as well."""
    if isinstance(value, np.ndarray):
        if not value.flags.writeable:
            return value
        return value.copy() if value.flags.aligned else misaligned(value)
    if isinstance(value, (list, tuple)):
        return type(value)(fresh(item) for item in value)
    if isinstance(value, dict):
        return {key: fresh(item) for key, item in value.items()}
    return value


def bits(value):
    """The bytes of every array and number in `value`, in order."""
    if isinstance(value, (list, tuple)):
        return [b for item in value for b in bits(item)]
    if isinstance(value, dict):
        return [b for key in sorted(value) for b in bits(value[key])]
    if value is None or isinstance(value, (bool, str)):
        return [repr(value)]
    return [np.asarray(value).tobytes()]


def outcome(name, arguments):
    """The binding's result and what it wrote into its arguments, as bytes."""
    arguments = fresh(arguments)
    return bits(getattr(_C, name)(**arguments)) + bits(arguments)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("paths", sorted(CONV_PATHS))
def test_odd_shapes_give_the_same_bits_on_one_two_and_three_threads(dtype, paths, restored_state):
    """Every kernel on odd sizes (a prime batch, rows and channels that no thread count
    divides) returns the same bits on 1, 2 and 3 threads; the convolutions on each of
    their paths."""
    calls = valid_calls(n=7, c=5, s=13, f=9, rows=1031, cols=37, t=5, hidden=11, dtype=dtype)
    mode, tiles, pad_skip = CONV_PATHS[paths]
    _C.set_winograd_conv(mode, tiles)
    _C.set_pad_skip_conv(pad_skip)
    for name in KERNELS if paths == "default" else CONVS:
        results = []
        for threads in (1, 2, 3):
            _C.set_num_threads(threads)
            results.append(outcome(name, calls[name]))
        assert results[1] == results[0] and results[2] == results[0], name


# ---- huge logical sizes of few bytes -------------------------------------------------

HUGE = 2**40
# The address space a child that makes the huge calls may take: an allocation beyond it is a
# MemoryError, whatever the machine's overcommit would have granted and the OOM killer then
# taken back. Not under .ci/sanitize, whose runtime has reserved terabytes of shadow memory
# already (it returns null for an allocation too large instead: a MemoryError too).
CHILD_ADDRESS_SPACE = 0 if "asan" in os.environ.get("LD_PRELOAD", "") else 4 << 30


def arrays_in(value, path=()):
    """(path, array) of each array in `value`, through its tuples, lists and dicts."""
    if isinstance(value, np.ndarray):
        yield path, value
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from arrays_in(item, path + (i,))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from arrays_in(item, path + (key,))


def replaced(value, path, new):
    """`value` with the item at `path` (of arrays_in) replaced by `new`."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: replaced(value[head], rest, new)}
    items = list(value)
    items[head] = replaced(items[head], rest, new)
    return type(value)(items)


def broadcast_huge(a, axes):
    """a's first entries broadcast through zero strides to 2**40 along each of `axes`, or
    (axes None) to about 2**62 elements over all of them (numpy caps a view's bytes below
    2**63): a view of a's bytes or fewer."""
    if axes is None:
        side = 2 ** ((63 - a.dtype.itemsize.bit_length()) // a.ndim)
        return np.broadcast_to(a.reshape(-1)[:1].reshape((1,) * a.ndim), (side,) * a.ndim)
    first = tuple(slice(0, 1) if axis in axes else slice(None) for axis in range(a.ndim))
    shape = tuple(HUGE if axis in axes else n for axis, n in enumerate(a.shape))
    return np.broadcast_to(a[first], shape)


def huge_calls(name, valid):
    """(description, arguments) of the calls of `name` whose work a few bytes could make
    huge: each array argument broadcast to 2**40 along each axis, reversed, and to 2**62
    elements over all; every array whose axis has one size broadcast to 2**40 there at
    once (a batch, a sequence or a channel axis stretched through all the operands, which
    leaves the shapes consistent); each int at the largest values it might take."""
    found = [(path, a) for path, a in arrays_in(valid) if a.ndim and a.size]
    for path, a in found:
        for axis in range(a.ndim):
            yield f"{path} {axis}: 2**40", replaced(valid, path, broadcast_huge(a, {axis}))
        yield f"{path} reversed", replaced(valid, path, broadcast_huge(a, {0})[::-1])
        yield f"{path} all axes", replaced(valid, path, broadcast_huge(a, None))
    for axis, size in sorted({(axis, a.shape[axis]) for _, a in found for axis in range(a.ndim)}):
        arguments = valid
        for path, a in found:
            if a.ndim > axis and a.shape[axis] == size:
                arguments = replaced(arguments, path, broadcast_huge(a, {axis}))
        yield f"every axis {axis} of {size}: 2**40", arguments
    for arg, value in valid.items():
        if isinstance(value, int) and not isinstance(value, bool):
            for n in (2**31 - 1, 2**62, INT64_MAX):
                yield f"{arg}={n}", {**valid, arg: n}


HUGE_CHILD = """
import resource, sys
sys.path[:0] = [{tests!r}, {tests!r} + "/.."]
if {limit}:
    resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
import test_bindings_hostile as t
for what, arguments in t.huge_calls({name!r}, t.VALID[{name!r}]):
    print(what, end=" -> ", flush=True)
    err = t.call({name!r}, arguments)
    print("ok" if err is None else type(err).__name__ + ": " + str(err), flush=True)
"""


@pytest.mark.parametrize("name", KERNELS + ["set_num_threads", "update_step", "check_update"])
def test_huge_logical_sizes_of_few_bytes_are_refused_at_once(name):
    """Each call of huge_calls, in a child process (a hang fails the test at the timeout
    instead of blocking the run; a crash fails it): it returns, or raises a ValueError or
    TypeError with a message, or a MemoryError naming the shape it could not make, never a
    bare std::bad_alloc. Before, batched_matmul summed 2**40 products of a broadcast view
    for hours, and attention's offsets of 2**40 pairs and the sequence softmax loss's
    weights of 2**40 steps died on std::bad_alloc naming nothing."""
    source = HUGE_CHILD.format(
        tests=os.path.dirname(os.path.abspath(__file__)), limit=CHILD_ADDRESS_SPACE, name=name
    )
    try:
        child = run_in_child(source, timeout=60)
    except subprocess.TimeoutExpired as hung:
        printed = hung.stdout.decode() if isinstance(hung.stdout, bytes) else hung.stdout
        pytest.fail(f"{name} hung on its last call: {(printed or '').splitlines()[-1:]}")
    assert_survived(child)
    for line in child.stdout.splitlines():
        what, result = line.split(" -> ", 1)
        assert result.split(":")[0] in ("ok", "ValueError", "TypeError", "MemoryError"), line
        if result.startswith("MemoryError"):
            assert "bad_alloc" not in result and "(" in result, f"{name}({what}): {result}"


def main(names):
    """Each hostile call, printed before it is made (the last line printed crashed)."""
    threads = _C.get_num_threads()
    for name in names or sorted(VALID):
        for what, arguments in hostile_calls(name, VALID[name]):
            print(f"{name}({what})", end=" ", flush=True)
            try:
                err = call(name, arguments)
            except Exception as unexpected:  # noqa: BLE001 - printed, to find them all
                print("-> UNEXPECTED", type(unexpected).__name__, str(unexpected)[:150])
                continue
            print("->", "ok" if err is None else f"{type(err).__name__}: {str(err)[:150]}")
            _C.set_num_threads(threads)
            undo_switches()


if __name__ == "__main__":
    main(sys.argv[1:])
