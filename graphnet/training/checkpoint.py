"""Checkpoints of a model, a Solver or a bare Graph: one .npz file that never runs code.

    graphnet.save(model_or_solver_or_graph, "run/checkpoint.npz")
    model = graphnet.load("run/checkpoint.npz")            # rebuilds the model
    graphnet.load("run/checkpoint.npz", into=solver)       # resumes training exactly

The file is a plain np.savez archive: every array (params, batchnorm running averages,
optimizer state such as adam's m and v, best params) under a key like "param/W1", plus
the key "__graphnet__.json", a uint8 array holding a UTF-8 JSON document with everything
else: format and version, the graph structure, the model's class name and constructor
arguments, the random generators' states (dropout's streams and the Solver's), epoch,
iteration, histories, the optimizer's scalar settings (learning rate, adam's t), and
the shape and dtype of every array.

Writing is atomic (training/atomic.py): the archive goes to a temporary file in the same
directory, is flushed and fsynced, then renamed over the target; a crash or a full disk
mid-write leaves the previous checkpoint intact. A state with NaN or Inf in it is never
written. Loading reads only the members the document lists, without pickle and without
inflating anything (training/_npz.py), and checks everything (every field of the
document, every array's presence, shape, dtype and finiteness, the random states, the
architecture against the target, the optimizer state) before it assigns anything, so a
failed load leaves the target untouched; errors name the file and the field.
"""

import json
import math
import os
import struct
import zipfile
from typing import Any, Union

import numpy as np

from ..core.graph import Graph
from ..errors import GraphError
from ..gates import gate_names
from ..kernels.geometry import INT64_MAX, INT64_MIN
from . import _npz
from .atomic import write_atomically

__all__ = ["save", "load", "saved_model_config", "CheckpointError", "FORMAT", "VERSION"]

FORMAT = "graphnet-checkpoint"
VERSION = 1
DOC_KEY = "__graphnet__.json"

#: The random bit generators a checkpoint may name (their states are plain dicts).
_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")


class CheckpointError(GraphError):
    """A checkpoint cannot be written or loaded; the message names the file and the reason."""


# =========================================================================== saving


def save(obj: Any, path: Union[str, "os.PathLike[str]"]) -> str:
    """Write a checkpoint of `obj` (a graphnet model, a Solver or a Graph) to `path`.

    The file is replaced atomically; missing parent directories are created. Returns
    the path. Raises CheckpointError, writing nothing, if a param or any other float array
    holds NaN or Inf (a diverged run: load would refuse the file, and the checkpoint it
    replaced was the last good one).

    Examples:
        >>> gn.save(model, "runs/model.npz")       # or a Solver, to resume it later
        >>> gn.save(solver, "runs/checkpoint.npz")
    """
    path = os.fspath(path)
    arrays: dict = {}
    doc: dict = {"format": FORMAT, "version": VERSION}
    if _is_solver(obj):
        doc["kind"] = "solver"
        doc["model"] = _describe_model(obj.model, arrays, path)
        doc["solver"] = _describe_solver(obj, arrays, path)
    elif _is_graph(obj):
        doc["kind"] = "graph"
        doc["graph"] = _describe_graph(obj, arrays, path, with_consts=True)
    elif _is_graph(getattr(obj, "graph", None)):
        doc["kind"] = "model"
        doc["model"] = _describe_model(obj, arrays, path)
    else:
        raise TypeError(
            f"graphnet.save saves a model (with a .graph), a Solver or a Graph, "
            f"not {type(obj).__name__}"
        )
    for key, array in arrays.items():
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            bad = "NaN" if np.any(np.isnan(array)) else "Inf"
            raise CheckpointError(
                f"{path}: refusing to save: {key} holds {bad} values (the "
                "run diverged); the file is left as it was"
            )
    doc["arrays"] = {
        key: {"shape": list(a.shape), "dtype": a.dtype.str} for key, a in arrays.items()
    }
    text = json.dumps(doc, sort_keys=True)
    arrays[DOC_KEY] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    write_atomically(path, lambda tmp: _write_file(tmp, arrays))
    return path


def _is_solver(obj):
    return hasattr(obj, "optim_configs") and hasattr(obj, "model")


def _is_graph(obj):
    return isinstance(obj, Graph)


def _describe_model(model, arrays, path):
    from .. import models

    cls = type(model)
    config = getattr(model, "config", None)
    # graphnet's own models are named by their public import path, graphnet.models; a
    # course edition's class (graphnet.cs231n's FullyConnectedNet) by the model class it
    # extends, whose config it shares, so that load() rebuilds it without into=. A
    # subclass of one's own may build another graph: it keeps its own name.
    own = (
        next((c for c in cls.__mro__ if models.MODELS.get(c.__name__) is c), None)
        if cls.__module__.startswith("graphnet.")
        else None
    )
    if own is not None:
        cls, module = own, models.__name__
    else:
        module = cls.__module__
    return {
        "class": cls.__name__,
        "module": module,
        "config": _jsonable(config, path, "model config") if config is not None else None,
        "graph": _describe_graph(model.graph, arrays, path, with_consts=False),
    }


def _describe_graph(graph, arrays, path, with_consts):
    nodes = []
    for node in graph.nodes:
        dtype = node.declared_dtype  # None: an input whose feed decides
        entry = {
            "name": node.name,
            "kind": node.kind,
            "op": node.op,
            "inputs": [i.name for i in node.inputs],
            "dtype": None if dtype is None else dtype.str,
            "requires_grad": bool(node.requires_grad),
            "shape": None if node.static_shape is None else list(node.static_shape),
            "attrs": _jsonable(node.gate.attrs(), path, f"attrs of {node.name!r}")
            if node.gate
            else {},
        }
        if node.kind == "param":
            arrays[f"param/{node.name}"] = np.asarray(node.value)
        elif node.kind == "const" and with_consts:
            arrays[f"const/{node.name}"] = np.asarray(node.value)
        if node.state:
            entry["state"] = _describe_state(node, arrays, path)
        nodes.append(entry)
    return {"dtype": graph.dtype.str, "training": bool(graph.training), "nodes": nodes}


def _describe_state(node, arrays, path):
    state = {}
    for key, value in node.state.items():
        if isinstance(value, np.ndarray):
            array_key = f"state/{node.name}/{key}"
            arrays[array_key] = value
            state[key] = {"array": array_key}
        elif isinstance(value, np.random.Generator):
            state[key] = {"generator": _generator_state(value, path)}
        else:
            state[key] = {"value": _jsonable(value, path, f"state {key!r} of {node.name!r}")}
    return state


def _describe_solver(solver, arrays, path):
    configs = {}
    for name, config in solver.optim_configs.items():
        entry = {}
        for key, value in (config or {}).items():
            if isinstance(value, np.ndarray):
                array_key = f"optim/{name}/{key}"
                arrays[array_key] = value
                entry[key] = {"array": array_key}
            else:
                entry[key] = {"value": _jsonable(value, path, f"optim_config {key!r} of {name!r}")}
        configs[name] = entry
    for name, value in solver.best_params.items():
        arrays[f"best/{name}"] = np.asarray(value)
    settings = {
        key: _jsonable(getattr(solver, key, None), path, key)
        for key in (
            "batch_size",
            "num_epochs",
            "lr_decay",
            "num_train_samples",
            "num_val_samples",
            "seed",
        )
    }
    return {
        "update_rule": getattr(solver, "update_rule_name", None),
        "epoch": int(solver.epoch),
        "iteration": int(getattr(solver, "iteration", 0)),
        "best_val_acc": float(solver.best_val_acc),
        "best_params": sorted(solver.best_params),
        "loss_history": [float(v) for v in solver.loss_history],
        "train_acc_history": [float(v) for v in solver.train_acc_history],
        "val_acc_history": [float(v) for v in solver.val_acc_history],
        "optim_configs": configs,
        "rng": _generator_state(solver.rng, path),
        "settings": settings,
    }


def _generator_state(generator, path):
    return _jsonable(generator.bit_generator.state, path, "random generator state")


def _jsonable(value, path, what):
    """value as plain JSON types; arrays inside (MT19937's key) as tagged lists."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": value.dtype.str}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, path, what) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v, path, what) for k, v in value.items()}
    raise CheckpointError(
        f"{path}: cannot save {what}: {type(value).__name__} is not "
        "an array, a number, a string or a list/dict of them"
    )


def _from_json(value, path):
    if isinstance(value, dict):
        if set(value) == {"__ndarray__", "dtype"}:
            dtype = _npz_dtype(path, value["dtype"], "an array in the document")
            try:
                return np.array(value["__ndarray__"], dtype=dtype)
            except (TypeError, ValueError, OverflowError) as err:
                raise CheckpointError(f"{path}: bad array in the document: {err}") from None
        return {k: _from_json(v, path) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v, path) for v in value]
    return value


def _write_npz(file, arrays):
    np.savez(file, allow_pickle=False, **arrays)


def _write_file(tmp, arrays):
    with open(tmp, "wb") as file:
        _write_npz(file, arrays)


# =========================================================================== loading


def load(path: Union[str, "os.PathLike[str]"], into: Any = None) -> Any:
    """Read a checkpoint written by `save`.

    into=None: rebuild and return the model (for a model or Solver checkpoint; the model
    class must be one of graphnet.models) or the Graph (for a Graph checkpoint).
    into=model (or a Graph): load params, batchnorm statistics and dropout streams into
    it; the architecture (param names, shapes, dtypes) must match.
    into=solver: load all that into solver.model, plus the optimizer state, epoch,
    iteration, histories, best params and random stream, so solver.train() continues
    exactly where the saved run stopped.
    Returns the loaded object. Raises CheckpointError (a ValueError) naming the file and
    the problem; nothing is assigned unless everything checks out.

    Examples:
        >>> model = gn.load("runs/model.npz")              # a graphnet.models model, rebuilt
        >>> gn.load("runs/model.npz", into=other_model)    # same architecture
        >>> gn.load("runs/checkpoint.npz", into=solver); solver.train()   # resumes exactly
    """
    path = os.fspath(path)
    if into is not None and not (
        _is_solver(into) or _is_graph(into) or _is_graph(getattr(into, "graph", None))
    ):
        raise TypeError(f"into must be a model, a Solver or a Graph, not {type(into).__name__}")
    doc, arrays = _read(path)
    try:
        kind = doc["kind"]
        if into is None:
            return _load_fresh(path, doc, arrays)
        if _is_solver(into):
            if kind != "solver":
                raise CheckpointError(
                    f"{path}: holds a {kind}, not a Solver's state; load it "
                    "with into=solver.model (or into=None)"
                )
            apply_model = _prepare_graph(path, doc["model"]["graph"], arrays, into.model.graph)
            apply_solver = _prepare_solver(path, doc["solver"], arrays, into)
            apply_model()
            apply_solver()
            return into
        graph = into if _is_graph(into) else into.graph
        saved = doc["graph"] if kind == "graph" else doc["model"]["graph"]
        _prepare_graph(path, saved, arrays, graph)()
        return into
    except (KeyError, TypeError, AttributeError, IndexError) as err:
        raise CheckpointError(
            f"{path}: malformed checkpoint document ({type(err).__name__}: {err})"
        ) from None


def saved_model_config(path: Union[str, "os.PathLike[str]"]) -> dict:
    """The constructor arguments of the graphnet.models model in the model or Solver
    checkpoint at `path` ({'hidden_dim': 100, ...}), read from its document alone, before
    a model of those sizes is built. Raises CheckpointError as `load` does, and for a Graph
    checkpoint."""
    path = os.fspath(path)
    doc, _ = _read(path, with_arrays=False)  # the document checked: model.config a dict or None
    config = doc["model"]["config"] if doc["kind"] != "graph" else None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: holds no graphnet.models model's arguments")
    return config


def _read(path, with_arrays=True):
    """The checkpoint's document, checked field by field, and every array it lists (the
    archive's other members are never read), checked to be finite; with_arrays=False:
    the document and no arrays."""
    try:
        with _npz.Archive(path) as archive:
            doc = archive.read_document(DOC_KEY)
            listing = _check_document(path, doc)
            arrays = {
                key: archive.read_array(key, dtype, shape)
                for key, (dtype, shape) in listing.items()
                if with_arrays
            }
    except CheckpointError:
        raise
    except _npz.ArchiveError as err:
        raise CheckpointError(f"{path}: {err}") from None
    except MemoryError:
        raise CheckpointError(f"{path}: not enough memory to read it") from None
    except (FileNotFoundError, PermissionError):
        raise
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        EOFError,
        OSError,
        ValueError,
        struct.error,
        NotImplementedError,
    ) as err:
        raise CheckpointError(
            f"{path}: truncated or corrupted checkpoint "
            f"({type(err).__name__}: {' '.join(str(err).split())})"
        ) from None
    for key, array in arrays.items():
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            bad = "NaN" if np.any(np.isnan(array)) else "Inf"
            raise CheckpointError(
                f"{path}: array {key!r} holds {bad} values; refusing to "
                "load a diverged or damaged state"
            )
    return doc, arrays


def _bad(path, field, problem):
    return CheckpointError(f"{path}: bad checkpoint field {field}: {problem}")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _get(path, container, key, where, kinds, what):
    """container[key], which must be of `kinds`; a CheckpointError naming where.key if it
    is missing or is not `what`."""
    if not isinstance(container, dict) or key not in container:
        raise _bad(path, f"{where}.{key}", "missing")
    value = container[key]
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise _bad(path, f"{where}.{key}", f"should be {what}, found {_show(value)}")
    return value


def _show(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_document(path, doc):
    """Format, version, kind, and the list of arrays as {key: (dtype, shape)}; then the
    sections the kind holds, so that nothing later reads a field of the wrong type."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a graphnet checkpoint (format "
            f"{_show(doc.get('format')) if isinstance(doc, dict) else None})"
        )
    version = doc.get("version")
    if not _is_int(version) or version < 1:
        raise CheckpointError(f"{path}: bad checkpoint version {_show(version)}")
    if version > VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version} was written by a "
            f"newer graphnet; this one reads up to version {VERSION}"
        )
    kind = doc.get("kind")
    if kind not in ("model", "solver", "graph"):
        raise CheckpointError(f"{path}: unknown checkpoint kind {_show(kind)}")
    listing = {}
    for key, meta in _get(path, doc, "arrays", "document", dict, "a dict").items():
        where = f"arrays[{key!r}]"
        if key == DOC_KEY or not isinstance(meta, dict):
            raise _bad(path, where, "not an array's shape and dtype")
        try:
            dtype = _npz.numeric_dtype(meta.get("dtype"), f"array {key!r}")
        except _npz.ArchiveError as err:
            raise _bad(path, where, str(err)) from None
        shape = _get(path, meta, "shape", where, list, "a list of sizes")
        if not all(_is_int(d) and 0 <= d <= INT64_MAX for d in shape) or len(shape) > 32:
            raise _bad(path, f"{where}.shape", f"not a list of sizes: {_show(shape)}")
        listing[key] = (dtype, tuple(shape))
    graph_where = "graph" if kind == "graph" else "model.graph"
    if kind == "graph":
        _check_graph_doc(
            path,
            _get(path, doc, "graph", "document", dict, "a dict"),
            "graph",
            listing,
            with_consts=True,
        )
    else:
        model = _get(path, doc, "model", "document", dict, "a dict")
        _get(path, model, "class", "model", str, "a class name")
        _get(path, model, "module", "model", str, "a module name")
        _get(path, model, "config", "model", (dict, type(None)), "a dict of arguments")
        _check_graph_doc(
            path,
            _get(path, model, "graph", "model", dict, "a dict"),
            graph_where,
            listing,
            with_consts=False,
        )
    if kind == "solver":
        _check_solver_doc(path, _get(path, doc, "solver", "document", dict, "a dict"), listing)
    return listing


def _listed(path, listing, key, field):
    if not isinstance(key, str):  # a list or dict here is no key (nor hashable)
        raise _bad(path, field, f"{_show(key)} is not the name of an array")
    if key not in listing:
        raise _bad(
            path, field, f"refers to the array {key!r}, which the document's list of arrays lacks"
        )


def _check_graph_doc(path, graph, where, listing, with_consts):
    _npz_dtype(path, _get(path, graph, "dtype", where, str, "a dtype"), f"{where}.dtype")
    _get(path, graph, "training", where, bool, "true or false")
    for i, node in enumerate(_get(path, graph, "nodes", where, list, "a list of nodes")):
        at = f"{where}.nodes[{i}]"
        name = _get(path, node, "name", at, str, "a name")
        kind = _get(path, node, "kind", at, str, "a node kind")
        _get(path, node, "op", at, (str, type(None)), "a gate name")
        inputs = _get(path, node, "inputs", at, list, "a list of node names")
        if not all(isinstance(n, str) for n in inputs):
            raise _bad(path, f"{at}.inputs", "not a list of node names")
        dtype = _get(path, node, "dtype", at, (str, type(None)), "a dtype")
        if dtype is not None:  # None: an input whose feed decides
            _npz_dtype(path, dtype, f"{at}.dtype")
        _get(path, node, "requires_grad", at, bool, "true or false")
        shape = _get(path, node, "shape", at, (list, type(None)), "a shape")
        if shape is not None and not all(
            d is None or (_is_int(d) and 0 <= d <= INT64_MAX) for d in shape
        ):
            raise _bad(path, f"{at}.shape", f"not a shape: {_show(shape)}")
        for attr, value in _get(path, node, "attrs", at, dict, "a dict").items():
            # Integer attributes (stride, pad, window sizes, seeds) reach the kernels as
            # int64: one that does not fit never came from graphnet.save.
            for number in value if isinstance(value, list) else [value]:
                if _is_int(number) and not INT64_MIN <= number <= INT64_MAX:
                    raise _bad(
                        path, f"{at}.attrs.{attr}", f"{_show(number)} does not fit in 64 bits"
                    )
        if kind == "param" or (kind == "const" and with_consts):
            _listed(path, listing, f"{kind}/{name}", f"{at} ({name!r})")
        state = _get(path, node, "state", at, dict, "a dict") if "state" in node else {}
        for key, item in state.items():
            if (
                not isinstance(item, dict)
                or len(item) != 1
                or not {"array", "generator", "value"} >= set(item)
            ):
                raise _bad(path, f"{at}.state.{key}", "not an array, a generator or a value")
            if "array" in item:
                _listed(path, listing, item["array"], f"{at}.state.{key}")


def _npz_dtype(path, text, field):
    try:
        return _npz.numeric_dtype(text, field)
    except _npz.ArchiveError as err:
        raise _bad(path, field, str(err)) from None


def _check_solver_doc(path, solver, listing):
    where = "solver"
    _get(path, solver, "update_rule", where, (str, type(None)), "an update rule's name")
    for key in ("epoch", "iteration"):
        value = _get(path, solver, key, where, int, "a count")
        if value < 0:
            raise _bad(path, f"{where}.{key}", f"{value} is negative")
    best = _get(path, solver, "best_val_acc", where, (int, float), "an accuracy")
    if not 0 <= best <= 1:
        raise _bad(path, f"{where}.best_val_acc", f"{best} is not an accuracy in [0, 1]")
    for key in ("loss_history", "train_acc_history", "val_acc_history"):
        values = _get(path, solver, key, where, list, "a list of numbers")
        bad = next(
            (
                v
                for v in values
                if not _is_number(v)
                or not math.isfinite(v)
                or (key != "loss_history" and not 0 <= v <= 1)
            ),
            None,
        )
        if bad is not None or any(isinstance(v, bool) for v in values):
            raise _bad(
                path,
                f"{where}.{key}",
                f"holds {_show(bad)}, not a finite "
                + ("loss" if key == "loss_history" else "accuracy in [0, 1]"),
            )
    if len(solver["train_acc_history"]) != len(solver["val_acc_history"]):
        raise _bad(path, f"{where}.val_acc_history", "not as long as train_acc_history")
    for name in _get(path, solver, "best_params", where, list, "a list of param names"):
        if not isinstance(name, str):
            raise _bad(path, f"{where}.best_params", f"{_show(name)} is not a param name")
        _listed(path, listing, f"best/{name}", f"{where}.best_params")
    configs = _get(path, solver, "optim_configs", where, dict, "a dict per param")
    for name, entries in configs.items():
        if not isinstance(entries, dict):
            raise _bad(path, f"{where}.optim_configs[{name!r}]", "not a dict")
        for key, item in entries.items():
            field = f"{where}.optim_configs[{name!r}].{key}"
            if not isinstance(item, dict) or len(item) != 1 or not {"array", "value"} >= set(item):
                raise _bad(path, field, "not an array or a value")
            if "array" in item:
                _listed(path, listing, item["array"], field)
            else:
                _check_optim_setting(path, field, key, item["value"])
    _get(path, solver, "rng", where, dict, "a random generator's state")


# The optimizer settings graphnet.optim reads, and the values they may take.
_UNIT_INTERVAL = ("in [0, 1)", lambda v: 0 <= v < 1)
_OPTIM_SETTINGS = {
    "learning_rate": (">= 0", lambda v: v >= 0),
    "momentum": _UNIT_INTERVAL,
    "decay_rate": _UNIT_INTERVAL,
    "beta1": _UNIT_INTERVAL,
    "beta2": _UNIT_INTERVAL,
    "epsilon": ("> 0", lambda v: v > 0),
}


def _check_optim_setting(path, field, key, value):
    if key == "t":  # adam's step count
        if not _is_int(value) or value < 0:
            raise _bad(path, field, f"{_show(value)} is not a step count >= 0")
    elif key in _OPTIM_SETTINGS:
        rule, ok = _OPTIM_SETTINGS[key]
        if not _is_number(value) or not math.isfinite(value) or not ok(value):
            raise _bad(path, field, f"{_show(value)} is not a finite number {rule}")
    elif _is_number(value) and not math.isfinite(value):
        raise _bad(path, field, f"{_show(value)} is not finite")


def _load_fresh(path, doc, arrays):
    if doc["kind"] == "graph":
        graph = _rebuild_graph(path, doc["graph"], arrays)
        _prepare_graph(path, doc["graph"], arrays, graph)()
        return graph
    from .. import models

    spec = doc["model"]
    cls = models.MODELS.get(spec["class"])
    if cls is None or spec.get("module") != models.__name__:
        raise CheckpointError(
            f"{path}: the checkpoint holds a {spec.get('module')}."
            f"{spec['class']}, which graphnet cannot rebuild by itself "
            f"(it rebuilds {', '.join(models.MODELS)}); build the model and "
            "pass it as into="
        )
    config = spec["config"]
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: model config must be a dict, got {_show(config)}")
    state = np.random.get_state()  # building draws initial weights; leave numpy's state alone
    try:
        model = _build_model(path, cls, config, arrays)
    except (TypeError, ValueError, OverflowError) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(
            f"{path}: cannot rebuild {spec['class']} from the saved "
            f"arguments {_show(config)}: {err}"
        ) from None
    finally:
        np.random.set_state(state)
    _check_structure(path, spec["graph"], model.graph)
    _prepare_graph(path, spec["graph"], arrays, model.graph)()
    return model


def _build_model(path, cls, config, arrays):
    """cls(**config), each param's shape checked against its stored array before the model
    allocates it: a config that asks for more than the file holds (hidden_dim=10**7 over
    arrays of 100 columns) fails before the first weight is drawn. graphnet's models make
    every param through GraphModel's _weight, _zeros and _ones, which this checks."""

    def check(name, shape):
        stored = arrays.get(f"param/{name}")
        shape = tuple(int(d) for d in shape)
        if stored is None or stored.shape != shape:
            raise CheckpointError(
                f"{path}: the saved model config {_show(config)} makes param {name!r} of "
                f"shape {shape}, but the checkpoint stores "
                + ("no such param" if stored is None else f"it with shape {stored.shape}")
            )

    class Checked(cls):
        def _weight(self, name, shape, weight_scale):
            check(name, shape)
            return super()._weight(name, shape, weight_scale)

        def _zeros(self, name, size):
            check(name, (size,))
            return super()._zeros(name, size)

        def _ones(self, name, size):
            check(name, (size,))
            return super()._ones(name, size)

    model = Checked(**config)
    model.__class__ = cls  # the model itself, now that its params are known to fit
    return model


def _check_structure(path, saved, graph):
    ours = [(n.name, n.op, [i.name for i in n.inputs]) for n in graph.nodes]
    theirs = [(n["name"], n["op"], n["inputs"]) for n in saved["nodes"]]
    if ours != theirs:
        diff = next(((a, b) for a, b in zip(theirs, ours) if a != b), None)
        raise CheckpointError(
            f"{path}: the rebuilt model's graph differs from the saved one "
            f"(saved {diff[0] if diff else len(theirs)}, rebuilt "
            f"{diff[1] if diff else len(ours)})"
        )


def _rebuild_graph(path, saved, arrays):
    """A Graph with the saved structure (params and consts from the arrays)."""
    try:
        graph = Graph(dtype=np.dtype(saved["dtype"]))
        for entry in saved["nodes"]:
            name, kind = entry["name"], entry["kind"]
            if kind == "input":
                shape = entry["shape"]
                dtype = entry["dtype"]
                graph.input(
                    name,
                    shape=None if shape is None else tuple(shape),
                    dtype=None if dtype is None else np.dtype(dtype),
                    requires_grad=entry["requires_grad"],
                )
            elif kind == "param":
                graph.param(name, arrays[f"param/{name}"])
            elif kind == "const":
                graph.const(arrays[f"const/{name}"], name=name, dtype=np.dtype(entry["dtype"]))
            else:
                op = entry["op"]
                if op not in gate_names():
                    raise CheckpointError(
                        f"{path}: node {name!r} uses the gate {op!r}, which is not registered "
                        "in this process; import the module that defines and registers it "
                        "(@graphnet.register_gate) before loading"
                    )
                attrs = {
                    k: tuple(v) if isinstance(v, list) else v for k, v in entry["attrs"].items()
                }
                graph.apply(op, *[graph[i] for i in entry["inputs"]], name=name, **attrs)
        graph.train(saved.get("training", True))
        return graph
    except GraphError as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"{path}: cannot rebuild the saved graph: {err}") from None


def _prepare_graph(path, saved, arrays, graph):
    """Check the saved params and node states against `graph`; return a function that
    assigns them (and cannot fail)."""
    saved_params = {n["name"]: n for n in saved["nodes"] if n["kind"] == "param"}
    ours = {name: graph[name] for name in graph.params}
    missing, extra = sorted(set(ours) - set(saved_params)), sorted(set(saved_params) - set(ours))
    if missing or extra:
        raise CheckpointError(
            f"{path}: wrong architecture: the checkpoint's params are "
            f"{', '.join(saved_params)}; the target's are {', '.join(ours)}"
            + (f" (missing in the checkpoint: {', '.join(missing)})" if missing else "")
            + (f" (not in the target: {', '.join(extra)})" if extra else "")
        )
    values = {}
    for name, node in ours.items():
        array = arrays[f"param/{name}"]
        if array.shape != np.shape(node.value):
            raise CheckpointError(
                f"{path}: wrong architecture: param {name!r} has shape "
                f"{array.shape} in the checkpoint, {np.shape(node.value)} in "
                "the target"
            )
        if array.dtype != node.dtype:
            # a model of another float dtype is the caller's to build; a param of
            # integers or bools never came from graphnet.save
            fix = f" (build the model with dtype={array.dtype.name})" * (array.dtype.kind == "f")
            raise CheckpointError(
                f"{path}: wrong dtype: param {name!r} is {array.dtype} in the "
                f"checkpoint, {node.dtype} in the target{fix}"
            )
        values[name] = array
    states = {}
    for entry in saved["nodes"]:
        if "state" not in entry:
            continue
        name = entry["name"]
        if name not in graph or graph[name].op != entry["op"]:
            raise CheckpointError(
                f"{path}: wrong architecture: the checkpoint has state for "
                f"a {entry['op']} node {name!r}, which the target lacks"
            )
        states[name] = _restore_state(path, name, entry["state"], arrays, graph[name])
    stateful = {n.name for n in graph.nodes if n.gate is not None and n.gate.stateful}
    training = bool(saved.get("training", graph.training))

    def apply():
        for name, array in values.items():
            ours[name].value = array.copy()
        for name in stateful:
            graph[name].state.clear()
        for name, state in states.items():
            graph[name].state.update(state)
        graph.train(training)

    return apply


def _restore_state(path, node_name, saved, arrays, node):
    # A node's state arrays (batchnorm's running averages) have the shape of its params
    # (gamma and beta): one value per feature.
    param_shapes = {np.shape(i.value) for i in node.inputs if i.kind == "param"}
    state = {}
    for key, item in saved.items():
        if "array" in item:
            array = arrays[item["array"]]
            # An integer or boolean array too: it would stay in the state, in eval
            # mode and in the next checkpoint, until a training step replaced it.
            if array.dtype != node.dtype:
                raise CheckpointError(
                    f"{path}: wrong dtype: state {key!r} of {node_name!r} is "
                    f"{array.dtype}, the node is {node.dtype}"
                )
            if key == "running_var" and np.any(array < 0):
                # A running average of variances is never negative; eval mode would
                # take the square root of one and give NaN.
                raise CheckpointError(
                    f"{path}: state {key!r} of {node_name!r} holds a negative variance "
                    f"({_show(float(array.min()))})"
                )
            if param_shapes and array.shape not in param_shapes:
                raise CheckpointError(
                    f"{path}: wrong shape: state {key!r} of {node_name!r} is "
                    f"{array.shape}, the node's params are "
                    f"{' and '.join(map(str, sorted(param_shapes)))}"
                )
            state[key] = array.copy()
        elif "generator" in item:
            state[key] = _make_generator(path, item["generator"], f"{key!r} of {node_name!r}")
        else:
            state[key] = item["value"]
    return state


# The state each bit generator's `state` property holds, field by field: (low, high) for
# an integer in [low, high), (dtype, length) for an array. numpy checks few of these
# itself: MT19937 takes any `pos` and then reads its key at that index (a SIGSEGV from a
# crafted file), Philox likewise its buffer at `buffer_pos`.
_FLAG, _U32, _U128 = (0, 2), (0, 2**32), (0, 2**128)
_PCG_STATE = {"state": {"state": _U128, "inc": _U128}, "has_uint32": _FLAG, "uinteger": _U32}
_GENERATOR_STATES = {
    "PCG64": _PCG_STATE,
    "PCG64DXSM": _PCG_STATE,
    "MT19937": {"state": {"key": ("<u4", 624), "pos": (0, 625)}},
    "Philox": {
        "state": {"counter": ("<u8", 4), "key": ("<u8", 2)},
        "buffer": ("<u8", 4),
        "buffer_pos": (0, 5),
        "has_uint32": _FLAG,
        "uinteger": _U32,
    },
    "SFC64": {"state": {"state": ("<u8", 4)}, "has_uint32": _FLAG, "uinteger": _U32},
}


def _generator_fields(path, saved, schema, where):
    """The saved state as numpy's state dict, every field checked against `schema`."""
    if not isinstance(saved, dict) or set(saved) != set(schema):
        raise _bad(path, where, f"should hold exactly {', '.join(sorted(schema))}")
    fields = {}
    for key, rule in schema.items():
        value, at = saved[key], f"{where}.{key}"
        if isinstance(rule, dict):
            fields[key] = _generator_fields(path, value, rule, at)
        elif isinstance(rule[0], str):
            dtype, length = rule
            items = value.get("__ndarray__") if isinstance(value, dict) else None
            if (
                not isinstance(value, dict)
                or value.get("dtype") != dtype
                or not isinstance(items, list)
                or len(items) != length
                or not all(_is_int(v) and 0 <= v < 2 ** (8 * int(dtype[2])) for v in items)
            ):
                raise _bad(path, at, f"should be {length} integers of dtype {dtype}")
            fields[key] = np.array(items, dtype=dtype)
        else:
            low, high = rule
            if not _is_int(value) or not low <= value < high:
                raise _bad(path, at, f"{_show(value)} is not an integer in [{low}, {high})")
            fields[key] = value
    return fields


def _make_generator(path, saved, what):
    name = saved.get("bit_generator") if isinstance(saved, dict) else None
    if name not in _BIT_GENERATORS:
        raise CheckpointError(
            f"{path}: random generator {what} has unknown bit generator {_show(name)}"
        )
    fields = _generator_fields(
        path,
        {k: v for k, v in saved.items() if k != "bit_generator"},
        _GENERATOR_STATES[name],
        f"random generator {what}",
    )
    bit_generator = getattr(np.random, name)()
    try:
        bit_generator.state = {"bit_generator": name, **fields}
    except (TypeError, ValueError, KeyError, OverflowError) as err:
        raise CheckpointError(f"{path}: bad random generator state for {what}: {err}") from None
    return np.random.Generator(bit_generator)


def _prepare_solver(path, saved, arrays, solver):
    rule = saved["update_rule"]
    if rule != getattr(solver, "update_rule_name", None):
        raise CheckpointError(
            f"{path}: the checkpoint was trained with update_rule {rule!r}, "
            f"this Solver uses {getattr(solver, 'update_rule_name', None)!r}"
        )
    params = solver.model.params
    if set(saved["optim_configs"]) != set(params):
        raise CheckpointError(
            f"{path}: wrong architecture: optimizer state for "
            f"{sorted(saved['optim_configs'])}, the model has {sorted(params)}"
        )
    configs = {}
    for name, entries in saved["optim_configs"].items():
        config = {}
        for key, item in entries.items():
            if "array" in item:
                array = arrays[item["array"]]
                if array.dtype.kind == "f" and array.dtype != params[name].dtype:
                    raise CheckpointError(
                        f"{path}: wrong dtype: optimizer state {key!r} of "
                        f"{name!r} is {array.dtype}, the param is "
                        f"{params[name].dtype}"
                    )
                if array.shape != np.shape(params[name]):
                    raise CheckpointError(
                        f"{path}: wrong shape: optimizer state {key!r} of "
                        f"{name!r} is {array.shape}, the param is "
                        f"{np.shape(params[name])}"
                    )
                config[key] = array.copy()
            else:
                config[key] = _from_json(item["value"], path)
        configs[name] = config
    best = {}
    for name in saved["best_params"]:
        if name not in params:
            raise CheckpointError(f"{path}: best params name {name!r}, not a param of the model")
        array = arrays[f"best/{name}"]
        if array.shape != params[name].shape or array.dtype != params[name].dtype:
            raise CheckpointError(
                f"{path}: wrong architecture: best param {name!r} is "
                f"{array.dtype} {array.shape}, the model's is "
                f"{params[name].dtype} {params[name].shape}"
            )
        best[name] = array.copy()
    rng = _make_generator(path, saved["rng"], "of the Solver")
    epoch, iteration = int(saved["epoch"]), int(saved["iteration"])
    histories = {
        key: [float(v) for v in saved[key]]
        for key in ("loss_history", "train_acc_history", "val_acc_history")
    }
    if iteration != len(histories["loss_history"]) or epoch < 0:
        raise CheckpointError(
            f"{path}: inconsistent solver state: iteration {iteration} but "
            f"{len(histories['loss_history'])} losses recorded"
        )
    best_val_acc = float(saved["best_val_acc"])

    def apply():
        solver.optim_configs = configs
        solver.best_params = best
        solver.best_val_acc = best_val_acc
        solver.rng = rng
        solver.epoch, solver.iteration = epoch, iteration
        for key, values in histories.items():
            setattr(solver, key, values)

    return apply
