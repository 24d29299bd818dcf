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
the shape and dtype of every array. It is read with np.load(allow_pickle=False), so a
pickle disguised as a checkpoint is refused before it can run anything.

Writing is atomic: the archive goes to a temporary file in the same directory, is
flushed and fsynced, then renamed over the target; a crash mid-write leaves the previous
checkpoint intact. Loading checks everything (format, version, every array's presence,
shape, dtype and finiteness, the architecture against the target, the optimizer state)
before it assigns anything, so a failed load leaves the target untouched; errors name the
file and what is wrong.
"""
import json
import os
import tempfile
import zipfile
import zlib

import numpy as np

from ..core.graph import Graph
from ..errors import GraphError
from ..gates import gate_names

__all__ = ["save", "load", "CheckpointError", "FORMAT", "VERSION"]

FORMAT = "graphnet-checkpoint"
VERSION = 1
DOC_KEY = "__graphnet__.json"

#: The random bit generators a checkpoint may name (their states are plain dicts).
_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")


class CheckpointError(GraphError):
    """A checkpoint cannot be written or loaded; the message names the file and the reason."""


# =========================================================================== saving

def save(obj, path):
    """Write a checkpoint of `obj` (a graphnet model, a Solver or a Graph) to `path`.

    The file is replaced atomically; missing parent directories are created. Returns
    the path.
    """
    path = os.fspath(path)
    arrays, doc = {}, {"format": FORMAT, "version": VERSION}
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
        raise TypeError(f"graphnet.save saves a model (with a .graph), a Solver or a Graph, "
                        f"not {type(obj).__name__}")
    doc["arrays"] = {key: {"shape": list(a.shape), "dtype": a.dtype.str}
                     for key, a in arrays.items()}
    text = json.dumps(doc, sort_keys=True)
    arrays[DOC_KEY] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    _atomic_write(path, arrays)
    return path


def _is_solver(obj):
    return hasattr(obj, "optim_configs") and hasattr(obj, "model")


def _is_graph(obj):
    return isinstance(obj, Graph)


def _describe_model(model, arrays, path):
    from .. import models
    cls = type(model)
    config = getattr(model, "config", None)
    # graphnet's own models are named by their public import path, graphnet.models.
    module = models.__name__ if models.MODELS.get(cls.__name__) is cls else cls.__module__
    return {"class": cls.__name__, "module": module,
            "config": _jsonable(config, path, "model config") if config is not None else None,
            "graph": _describe_graph(model.graph, arrays, path, with_consts=False)}


def _describe_graph(graph, arrays, path, with_consts):
    nodes = []
    for node in graph.nodes:
        dtype = node.declared_dtype  # None: an input whose feed decides
        entry = {"name": node.name, "kind": node.kind, "op": node.op,
                 "inputs": [i.name for i in node.inputs],
                 "dtype": None if dtype is None else dtype.str,
                 "requires_grad": bool(node.requires_grad),
                 "shape": None if node.static_shape is None else list(node.static_shape),
                 "attrs": _jsonable(node.gate.attrs(), path, f"attrs of {node.name!r}")
                 if node.gate else {}}
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
    settings = {key: _jsonable(getattr(solver, key, None), path, key) for key in
                ("batch_size", "num_epochs", "lr_decay", "num_train_samples",
                 "num_val_samples", "seed")}
    return {"update_rule": getattr(solver, "update_rule_name", None),
            "epoch": int(solver.epoch), "iteration": int(getattr(solver, "iteration", 0)),
            "best_val_acc": float(solver.best_val_acc),
            "best_params": sorted(solver.best_params),
            "loss_history": [float(v) for v in solver.loss_history],
            "train_acc_history": [float(v) for v in solver.train_acc_history],
            "val_acc_history": [float(v) for v in solver.val_acc_history],
            "optim_configs": configs, "rng": _generator_state(solver.rng, path),
            "settings": settings}


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
    raise CheckpointError(f"{path}: cannot save {what}: {type(value).__name__} is not "
                          "an array, a number, a string or a list/dict of them")


def _from_json(value):
    if isinstance(value, dict):
        if set(value) == {"__ndarray__", "dtype"}:
            return np.array(value["__ndarray__"], dtype=np.dtype(value["dtype"]))
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def _write_npz(file, arrays):
    np.savez(file, allow_pickle=False, **arrays)


def _atomic_write(path, arrays):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=directory)
    try:
        with os.fdopen(fd, "wb") as file:
            _write_npz(file, arrays)
            file.flush()
            os.fsync(file.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


# =========================================================================== loading

def load(path, into=None):
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
    """
    path = os.fspath(path)
    if into is not None and not (_is_solver(into) or _is_graph(into)
                                 or _is_graph(getattr(into, "graph", None))):
        raise TypeError(f"into must be a model, a Solver or a Graph, not {type(into).__name__}")
    arrays = _read_arrays(path)
    doc = _read_doc(path, arrays)
    try:
        _check_arrays(path, doc, arrays)
        kind = doc["kind"]
        if into is None:
            return _load_fresh(path, doc, arrays)
        if _is_solver(into):
            if kind != "solver":
                raise CheckpointError(f"{path}: holds a {kind}, not a Solver's state; load it "
                                      "with into=solver.model (or into=None)")
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
        raise CheckpointError(f"{path}: malformed checkpoint document "
                              f"({type(err).__name__}: {err})") from None


def _read_arrays(path):
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise CheckpointError(f"{path}: not a graphnet checkpoint (a single .npy array, "
                                  "not an .npz archive)")
        with archive:
            _refuse_inflating_members(path, archive.zip)
            return {key: archive[key] for key in archive.files}
    except MemoryError:  # an array header that claims more than the machine has
        raise CheckpointError(f"{path}: corrupted checkpoint (an array larger than "
                              "memory)") from None
    except ValueError as err:
        if isinstance(err, CheckpointError):
            raise
        if "pickle" in str(err):
            raise CheckpointError(f"{path}: refused: the file holds pickled Python objects, "
                                  "which a checkpoint never does and which could run code "
                                  "on load") from None
        raise CheckpointError(f"{path}: corrupted or not a graphnet checkpoint ({err})") from None
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error, KeyError,
            UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: truncated or corrupted checkpoint "
                              f"({type(err).__name__}: {err})") from None


# graphnet writes its archives uncompressed; a member that would inflate far beyond its
# stored size is not one of ours, and reading it could exhaust memory (a zip bomb).
_MAX_INFLATION = 100
_INFLATION_FLOOR = 1 << 20  # bytes: below this, any ratio is harmless


def _refuse_inflating_members(path, archive_zip):
    for info in archive_zip.infolist():
        if (info.file_size > _INFLATION_FLOOR
                and info.file_size > _MAX_INFLATION * max(info.compress_size, 1)):
            raise CheckpointError(
                f"{path}: refused: member {info.filename!r} would inflate from "
                f"{info.compress_size} to {info.file_size} bytes (graphnet writes checkpoints "
                "uncompressed; this looks like a zip bomb)")


def _read_doc(path, arrays):
    raw = arrays.get(DOC_KEY)
    if raw is None:
        raise CheckpointError(f"{path}: not a graphnet checkpoint (an .npz archive without "
                              f"the {DOC_KEY!r} entry)")
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise CheckpointError(f"{path}: corrupted checkpoint ({DOC_KEY!r} is not a byte string)")
    try:
        doc = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: corrupted checkpoint document ({err})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a graphnet checkpoint (format "
                              f"{doc.get('format') if isinstance(doc, dict) else None!r})")
    version = doc.get("version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path}: bad checkpoint version {version!r}")
    if version > VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version} was written by a "
                              f"newer graphnet; this one reads up to version {VERSION}")
    if doc.get("kind") not in ("model", "solver", "graph"):
        raise CheckpointError(f"{path}: unknown checkpoint kind {doc.get('kind')!r}")
    return doc


def _check_arrays(path, doc, arrays):
    """Every listed array is there with its dtype and shape, numeric and finite."""
    listed = doc["arrays"]
    missing = sorted(set(listed) - set(arrays))
    if missing:
        raise CheckpointError(f"{path}: corrupted checkpoint: missing arrays {missing[:8]}")
    for key, meta in listed.items():
        array = arrays[key]
        if array.dtype.str != meta["dtype"] or list(array.shape) != list(meta["shape"]):
            raise CheckpointError(f"{path}: corrupted checkpoint: array {key!r} is "
                                  f"{array.dtype} {array.shape}, the document says "
                                  f"{np.dtype(meta['dtype'])} {tuple(meta['shape'])}")
        if array.dtype.kind not in "biuf":
            raise CheckpointError(f"{path}: array {key!r} has dtype {array.dtype}; a checkpoint "
                                  "holds only numbers")
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            bad = "NaN" if np.any(np.isnan(array)) else "Inf"
            raise CheckpointError(f"{path}: array {key!r} holds {bad} values; refusing to "
                                  "load a diverged or damaged state")


def _load_fresh(path, doc, arrays):
    if doc["kind"] == "graph":
        graph = _rebuild_graph(path, doc["graph"], arrays)
        _prepare_graph(path, doc["graph"], arrays, graph)()
        return graph
    from .. import models
    spec = doc["model"]
    cls = models.MODELS.get(spec["class"])
    if cls is None or spec.get("module") != models.__name__:
        raise CheckpointError(f"{path}: the checkpoint holds a {spec.get('module')}."
                              f"{spec['class']}, which graphnet cannot rebuild by itself "
                              f"(it rebuilds {', '.join(models.MODELS)}); build the model and "
                              "pass it as into=")
    config = spec["config"]
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: model config must be a dict, got {config!r}")
    state = np.random.get_state()  # building draws initial weights; leave numpy's state alone
    try:
        model = cls(**config)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot rebuild {spec['class']} from the saved "
                              f"arguments {config}: {err}") from None
    finally:
        np.random.set_state(state)
    _check_structure(path, spec["graph"], model.graph)
    _prepare_graph(path, spec["graph"], arrays, model.graph)()
    return model


def _check_structure(path, saved, graph):
    ours = [(n.name, n.op, [i.name for i in n.inputs]) for n in graph.nodes]
    theirs = [(n["name"], n["op"], n["inputs"]) for n in saved["nodes"]]
    if ours != theirs:
        diff = next(((a, b) for a, b in zip(theirs, ours) if a != b), None)
        raise CheckpointError(f"{path}: the rebuilt model's graph differs from the saved one "
                              f"(saved {diff[0] if diff else len(theirs)}, rebuilt "
                              f"{diff[1] if diff else len(ours)})")


def _rebuild_graph(path, saved, arrays):
    """A Graph with the saved structure (params and consts from the arrays)."""
    try:
        graph = Graph(dtype=np.dtype(saved["dtype"]))
        for entry in saved["nodes"]:
            name, kind = entry["name"], entry["kind"]
            if kind == "input":
                shape = entry["shape"]
                dtype = entry["dtype"]
                graph.input(name, shape=None if shape is None else tuple(shape),
                            dtype=None if dtype is None else np.dtype(dtype),
                            requires_grad=entry["requires_grad"])
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
                        "(@graphnet.register_gate) before loading")
                attrs = {k: tuple(v) if isinstance(v, list) else v
                         for k, v in entry["attrs"].items()}
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
            + (f" (not in the target: {', '.join(extra)})" if extra else ""))
    values = {}
    for name, node in ours.items():
        array = arrays[f"param/{name}"]
        if array.shape != np.shape(node.value):
            raise CheckpointError(f"{path}: wrong architecture: param {name!r} has shape "
                                  f"{array.shape} in the checkpoint, {np.shape(node.value)} in "
                                  "the target")
        if array.dtype != node.dtype:
            raise CheckpointError(f"{path}: wrong dtype: param {name!r} is {array.dtype} in the "
                                  f"checkpoint, {node.dtype} in the target (build the model "
                                  f"with dtype={array.dtype.name})")
        values[name] = array
    states = {}
    for entry in saved["nodes"]:
        if "state" not in entry:
            continue
        name = entry["name"]
        if name not in graph or graph[name].op != entry["op"]:
            raise CheckpointError(f"{path}: wrong architecture: the checkpoint has state for "
                                  f"a {entry['op']} node {name!r}, which the target lacks")
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
    state = {}
    for key, item in saved.items():
        if "array" in item:
            array = arrays[item["array"]]
            if array.dtype.kind == "f" and array.dtype != node.dtype:
                raise CheckpointError(f"{path}: wrong dtype: state {key!r} of {node_name!r} is "
                                      f"{array.dtype}, the node is {node.dtype}")
            state[key] = array.copy()
        elif "generator" in item:
            state[key] = _make_generator(path, item["generator"], f"{key!r} of {node_name!r}")
        else:
            state[key] = item["value"]
    return state


def _make_generator(path, saved, what):
    name = saved.get("bit_generator") if isinstance(saved, dict) else None
    if name not in _BIT_GENERATORS:
        raise CheckpointError(f"{path}: random generator {what} has unknown bit generator "
                              f"{name!r}")
    bit_generator = getattr(np.random, name)()
    try:
        bit_generator.state = _from_json(saved)
    except (TypeError, ValueError, KeyError) as err:
        raise CheckpointError(f"{path}: bad random generator state for {what}: {err}") from None
    return np.random.Generator(bit_generator)


def _prepare_solver(path, saved, arrays, solver):
    rule = saved["update_rule"]
    if rule != getattr(solver, "update_rule_name", None):
        raise CheckpointError(f"{path}: the checkpoint was trained with update_rule {rule!r}, "
                              f"this Solver uses {getattr(solver, 'update_rule_name', None)!r}")
    params = solver.model.params
    if set(saved["optim_configs"]) != set(params):
        raise CheckpointError(f"{path}: wrong architecture: optimizer state for "
                              f"{sorted(saved['optim_configs'])}, the model has {sorted(params)}")
    configs = {}
    for name, entries in saved["optim_configs"].items():
        config = {}
        for key, item in entries.items():
            if "array" in item:
                array = arrays[item["array"]]
                if array.dtype.kind == "f" and array.dtype != params[name].dtype:
                    raise CheckpointError(f"{path}: wrong dtype: optimizer state {key!r} of "
                                          f"{name!r} is {array.dtype}, the param is "
                                          f"{params[name].dtype}")
                config[key] = array.copy()
            else:
                config[key] = _from_json(item["value"])
        configs[name] = config
    best = {}
    for name in saved["best_params"]:
        if name not in params:
            raise CheckpointError(f"{path}: best params name {name!r}, not a param of the model")
        array = arrays[f"best/{name}"]
        if array.shape != params[name].shape or array.dtype != params[name].dtype:
            raise CheckpointError(f"{path}: wrong architecture: best param {name!r} is "
                                  f"{array.dtype} {array.shape}, the model's is "
                                  f"{params[name].dtype} {params[name].shape}")
        best[name] = array.copy()
    rng = _make_generator(path, saved["rng"], "of the Solver")
    epoch, iteration = int(saved["epoch"]), int(saved["iteration"])
    histories = {key: [float(v) for v in saved[key]]
                 for key in ("loss_history", "train_acc_history", "val_acc_history")}
    if iteration != len(histories["loss_history"]) or epoch < 0:
        raise CheckpointError(f"{path}: inconsistent solver state: iteration {iteration} but "
                              f"{len(histories['loss_history'])} losses recorded")
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
