"""Crafted and damaged checkpoints. Each is a CheckpointError naming the file and the field
(or member) at fault, raised before anything is assigned, without reading more than the
file justifies; the ones that once crashed the interpreter are loaded in a child process."""

import json
import math
import os
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest

from graphnet.solver import Solver
from graphnet.training import _npz, checkpoint
from graphnet.training.checkpoint import CheckpointError, load, save
from graphnet.models import ThreeLayerConvNet, TwoLayerNet
from isolation import assert_survived, run_in_child

from .test_checkpoint import assert_same, blobs, fc_model, rewrite, snapshot, trained_solver

pytestmark = pytest.mark.usefixtures("one_kernel_thread")


@pytest.fixture(scope="module")
def solver_file(tmp_path_factory):
    """A Solver checkpoint after one epoch of adam, with batchnorm and dropout."""
    _, solver = trained_solver(epochs=1)
    path = tmp_path_factory.mktemp("good") / "solver.npz"
    save(solver, path)
    return path.read_bytes()


def fresh_solver():
    return Solver(fc_model(seed=3), blobs(), update_rule="adam", verbose=False, seed=5)


def assert_solver_refused(path, match):
    """Loading into a fresh Solver raises CheckpointError matching `match` and naming the
    file; the Solver and its model keep everything they had."""
    solver = fresh_solver()
    before = snapshot(solver.model), solver.rng.bit_generator.state, solver.optim_configs
    with pytest.raises(CheckpointError, match=match) as info:
        load(path, into=solver)
    assert os.fspath(path) in str(info.value)
    assert_same(snapshot(solver.model), before[0])
    assert solver.rng.bit_generator.state == before[1] and solver.optim_configs == before[2]
    assert solver.iteration == 0 and solver.loss_history == []


def set_path(doc, dotted, value):
    """doc[a][b]... = value, the path given as 'a.b.c' (list indices as numbers)."""
    *parents, last = dotted.split(".")
    target = doc
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    target[int(last) if isinstance(target, list) else last] = value


def node(doc, name):
    return next(n for n in doc["model"]["graph"]["nodes"] if n["name"] == name)


def replaced(key, array):
    """A change that stores `array` under `key`, the document's list saying so."""

    def change(arrays, doc):
        arrays[key] = array
        doc["arrays"][key] = {"shape": list(array.shape), "dtype": array.dtype.str}

    return change


MT_KEY = {"__ndarray__": list(range(624)), "dtype": "<u4"}

# (what is wrong, change(arrays, doc), the field or member the message must name)
SOLVER_ATTACKS = [
    ("NaN in an optimizer state", lambda a, d: a["optim/W1/m"].fill(np.nan), "optim/W1/m.*NaN"),
    ("Inf in a best param", lambda a, d: a["best/b2"].fill(np.inf), "best/b2.*Inf"),
    (
        "NaN in batchnorm's running mean",
        lambda a, d: a["state/batchnorm1/running_mean"].fill(np.nan),
        "running_mean.*NaN",
    ),
    (
        "optimizer state of the wrong shape",
        replaced("optim/W2/v", np.zeros((3, 3), np.float32)),
        r"optimizer state 'v' of 'W2' is \(3, 3\)",
    ),
    (
        "batchnorm state of the wrong shape",
        replaced("state/batchnorm2/running_var", np.ones(5, np.float32)),
        r"state 'running_var' of 'batchnorm2' is \(5,\)",
    ),
    (
        "an integer param (no model dtype to build it with)",
        replaced("param/b1", np.ones(16, np.int32)),
        r"wrong dtype: param 'b1' is int32 in the checkpoint, float32 in the target$",
    ),
    (
        "an integer batchnorm running variance",
        replaced("state/batchnorm1/running_var", np.ones(16, np.int32)),
        r"state 'running_var' of 'batchnorm1' is int32, the node is float32",
    ),
    (
        "a negative batchnorm running variance",
        lambda a, d: a["state/batchnorm2/running_var"].__setitem__(0, -0.5),
        r"state 'running_var' of 'batchnorm2' holds a negative variance",
    ),
    (
        "NaN learning rate",
        lambda a, d: set_path(d, "solver.optim_configs.W1.learning_rate.value", math.nan),
        r"optim_configs\['W1'\]\.learning_rate: nan",
    ),
    (
        "negative learning rate",
        lambda a, d: set_path(d, "solver.optim_configs.b1.learning_rate.value", -0.1),
        r"optim_configs\['b1'\]\.learning_rate: -0.1 is not a finite number >= 0",
    ),
    (
        "negative adam step count",
        lambda a, d: set_path(d, "solver.optim_configs.W3.t.value", -4),
        r"\.t: -4 is not a step",
    ),
    (
        "fractional adam step count",
        lambda a, d: set_path(d, "solver.optim_configs.W3.t.value", 2.5),
        r"\.t: 2.5",
    ),
    (
        "beta1 of 1.5",
        lambda a, d: set_path(d, "solver.optim_configs.W1.beta1.value", 1.5),
        r"beta1: 1.5 is not a finite number in \[0, 1\)",
    ),
    (
        "NaN best accuracy",
        lambda a, d: set_path(d, "solver.best_val_acc", math.nan),
        "best_val_acc: nan",
    ),
    (
        "best accuracy of 2",
        lambda a, d: set_path(d, "solver.best_val_acc", 2.0),
        "best_val_acc: 2.0",
    ),
    (
        "NaN in the loss history",
        lambda a, d: d["solver"]["loss_history"].__setitem__(2, math.nan),
        "loss_history: holds nan",
    ),
    ("negative epoch", lambda a, d: set_path(d, "solver.epoch", -1), "solver.epoch: -1"),
    ("epoch that is a string", lambda a, d: set_path(d, "solver.epoch", "3"), "solver.epoch"),
    (
        "iteration that disagrees with the history",
        lambda a, d: set_path(d, "solver.iteration", 999),
        "iteration 999",
    ),
    (
        "unknown bit generator",
        lambda a, d: set_path(d, "solver.rng.bit_generator", "Evil"),
        "unknown bit generator 'Evil'",
    ),
    (
        "random state with a missing field",
        lambda a, d: d["solver"]["rng"].pop("uinteger"),
        r"random generator of the Solver",
    ),
    (
        "PCG64 state of 2**128",
        lambda a, d: set_path(d, "solver.rng.state.state", 2**128),
        r"state\.state",
    ),
    (
        "MT19937 key of the wrong length",
        lambda a, d: set_path(
            d,
            "solver.rng",
            {
                "bit_generator": "MT19937",
                "state": {"key": {"__ndarray__": [1, 2, 3], "dtype": "<u4"}, "pos": 0},
            },
        ),
        r"state\.key",
    ),
    (
        "a dropout stream with has_uint32 = 7",
        lambda a, d: set_path(node(d, "dropout1"), "state.rng.generator.has_uint32", 7),
        "has_uint32: 7",
    ),
    (
        "a state array the list lacks",
        lambda a, d: d["arrays"].pop("state/batchnorm1/running_var"),
        "refers to the array 'state/batchnorm1/running_var'",
    ),
    (
        "an optimizer state's array named by a list",
        lambda a, d: set_path(d, "solver.optim_configs.W1.m.array", ["optim/W1/m"]),
        r"optim_configs\['W1'\]\.m: \['optim/W1/m'\] is not the name of an array",
    ),
    (
        "a batchnorm state's array named by a dict",
        lambda a, d: set_path(node(d, "batchnorm1"), "state.running_mean.array", {"a": 1}),
        r"nodes\[\d+\]\.state\.running_mean: \{'a': 1\} is not the name of an array",
    ),
    (
        "a listed array missing from the archive",
        lambda a, d: a.pop("best/W1"),
        "missing array 'best/W1'",
    ),
    (
        "an array stored as float64 where the document says float32",
        lambda a, d: a.__setitem__("param/b1", a["param/b1"].astype(np.float64)),
        "param/b1",
    ),
    (
        "an object-dtype array in the list",
        lambda a, d: set_path(d, "arrays.param/b1.dtype", "|O"),
        r"arrays\['param/b1'\].*bool, integer and float",
    ),
    (
        "a 2**62 x 2**62 array in the list",
        lambda a, d: set_path(d, "arrays.param/b1.shape", [2**62, 2**62]),
        "param/b1.*64 bits",
    ),
    (
        "a node attribute of 10**30",
        lambda a, d: set_path(node(d, "batchnorm1"), "attrs.eps", 10**30),
        r"attrs\.eps",
    ),
    ("the list of arrays missing", lambda a, d: d.pop("arrays"), r"document\.arrays: missing"),
    (
        "the kind of document unknown",
        lambda a, d: set_path(d, "kind", ["solver"]),
        "unknown checkpoint kind",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize("what, change, match", SOLVER_ATTACKS, ids=[a[0] for a in SOLVER_ATTACKS])
def test_solver_checkpoint_attack_is_refused_by_field_before_anything_is_assigned(
    tmp_path, solver_file, what, change, match
):
    path = tmp_path / "s.npz"
    path.write_bytes(solver_file)
    rewrite(path, change)
    assert_solver_refused(path, match)


@pytest.mark.parametrize(
    "state",
    [
        {"bit_generator": "MT19937", "state": {"key": MT_KEY, "pos": 10**9}},
        {"bit_generator": "MT19937", "state": {"key": MT_KEY, "pos": -5}},
        {
            "bit_generator": "Philox",
            "state": {
                "counter": {"__ndarray__": [0] * 4, "dtype": "<u8"},
                "key": {"__ndarray__": [0] * 2, "dtype": "<u8"},
            },
            "buffer": {"__ndarray__": [0] * 4, "dtype": "<u8"},
            "buffer_pos": 10**9,
            "has_uint32": 0,
            "uinteger": 0,
        },
    ],
    ids=["MT19937 pos 10**9", "MT19937 pos -5", "Philox buffer_pos 10**9"],
)
@pytest.mark.slow
def test_random_state_that_numpy_would_read_out_of_bounds_is_refused(tmp_path, solver_file, state):
    """numpy takes these states and then reads its key at `pos` (a SIGSEGV for 10**9): the
    load runs in a child process, which must survive and report the field."""
    path = tmp_path / "s.npz"
    path.write_bytes(solver_file)
    rewrite(path, lambda a, d: set_path(d, "solver.rng", state))
    result = run_in_child(f"""
        from graphnet import CheckpointError, load
        from graphnet.models import FullyConnectedNet
        from graphnet.solver import Solver
        import numpy as np
        model = FullyConnectedNet([16, 12], input_dim=8, num_classes=3, use_batchnorm=True,
                                  dropout=0.2, reg=1e-3, weight_scale=0.1)
        data = dict(X_train=np.zeros((4, 8), np.float32), y_train=np.zeros(4, int),
                    X_val=np.zeros((2, 8), np.float32), y_val=np.zeros(2, int))
        solver = Solver(model, data, update_rule="adam", verbose=False, seed=0)
        try:
            load({str(path)!r}, into=solver)
        except CheckpointError as err:
            print("refused:", err)
        solver.rng.integers(2**31, size=1000)
    """)
    assert_survived(result)
    assert "refused:" in result.stdout and "random generator of the Solver" in result.stdout


# ---- the container: zip directory, members, document ---------------------------------------


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "m.npz"
    save(fc_model(), path)
    return path


def small_graph():
    import graphnet as gn

    g = gn.Graph()
    x = g.input("x", shape=(None, 3))
    g.affine(x, g.param("w", np.arange(6.0).reshape(3, 2)), g.param("b", np.ones(2)), name="a")
    return g


def test_every_flipped_byte_of_the_zip_directory_is_refused_or_harmless(tmp_path):
    """One byte of the central directory or end record flipped, for every byte in turn:
    each load is a CheckpointError, or (a byte the format ignores, such as a timestamp)
    loads exactly the saved params."""
    path = tmp_path / "g.npz"
    save(small_graph(), path)
    raw = path.read_bytes()
    start = raw.index(b"PK\x01\x02")  # the first central directory entry
    refused = 0
    for offset in range(start, len(raw)):
        path.write_bytes(raw[:offset] + bytes([raw[offset] ^ 0xFF]) + raw[offset + 1 :])
        try:
            graph = load(path)
        except CheckpointError as err:
            assert "g.npz" in str(err)
            refused += 1
            continue
        np.testing.assert_array_equal(graph["w"].value, np.arange(6.0).reshape(3, 2))
        np.testing.assert_array_equal(graph["b"].value, np.ones(2))
    assert refused > (len(raw) - start) // 3


def npy_bytes(header_dict, version=1):
    """An .npy file of two bytes whose header is `header_dict` (bytes, the text numpy
    parses), padded as numpy pads it."""
    head_size = 10 if version == 1 else 12
    header = header_dict + b" " * (-(head_size + len(header_dict) + 1) % 64) + b"\n"
    size = struct.pack("<H" if version == 1 else "<I", len(header))
    return b"\x93NUMPY" + bytes([version, 0]) + size + header + b"{}"


HEADER = b"{'descr': '|u1', 'fortran_order': False, 'shape': ("  # up to the shape's values
DAMAGED_HEADERS = {
    # numpy retries a header ast cannot parse through tokenize, which then fails
    "a NUL byte and no closing brace": HEADER + b"2,), \0",
    "an unclosed string": HEADER + b"2,), 'x': '''}",
    # ast's parser recurses once per operator
    "4000 unary minuses": HEADER + b"-" * 4000 + b"2,)}",
    "3000 additions": HEADER + b"1+" * 3000 + b"1,)}",
}


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("what", list(DAMAGED_HEADERS))
def test_a_damaged_npy_header_is_refused_naming_the_file(tmp_path, what, version):
    """As the document's member, and as a lone .npy file: the header parser's tokenize
    and recursion errors were not the loader's error."""
    raw = npy_bytes(DAMAGED_HEADERS[what], version)
    with zipfile.ZipFile(tmp_path / "h.npz", "w") as archive:
        archive.writestr(checkpoint.DOC_KEY + ".npy", raw)
    with pytest.raises(CheckpointError, match=r"h\.npz: array '__graphnet__\.json' has a damaged"):
        load(tmp_path / "h.npz")
    (tmp_path / "h.npy").write_bytes(raw)
    with pytest.raises(CheckpointError, match=r"h\.npy: not a graphnet checkpoint \(a single"):
        load(tmp_path / "h.npy")


def damaged(raw, rng):
    """`raw` with 1-8 bytes changed, cut short, or bytes inserted or removed."""
    data, roll = bytearray(raw), rng.random()
    at = int(rng.integers(len(data)))
    if roll < 0.2:
        return bytes(data[:at])
    if roll < 0.3:
        return bytes(data[:at] + rng.bytes(int(rng.integers(1, 64))) + data[at:])
    if roll < 0.4:
        return bytes(data[:at] + data[at + int(rng.integers(1, 64)) :])
    for spot in rng.integers(len(data), size=int(rng.integers(1, 9))):
        data[spot] ^= int(rng.integers(1, 256))
    return bytes(data)


def test_damaged_files_are_refused_naming_the_file_or_load_what_was_saved(tmp_path):
    """A seeded generator damages a graph checkpoint 400 times: half of them its bytes
    anywhere (the zip's CRCs catch most), half one byte of a member's .npy header,
    zipped again with valid CRCs (a crafted file, or a writer's bug): there
    numpy's header parser raised errors the loader let through."""
    path = tmp_path / "g.npz"
    save(small_graph(), path)
    raw = path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    rng = np.random.default_rng(32)
    for round_ in range(400):
        if round_ % 2:
            path.write_bytes(damaged(raw, rng))
        else:
            name = sorted(members)[int(rng.integers(len(members)))]
            member = bytearray(members[name])
            header_end = member.index(b"\n") + 1
            member[int(rng.integers(header_end))] = int(rng.integers(256))
            with zipfile.ZipFile(path, "w") as archive:
                for other, content in members.items():
                    archive.writestr(other, bytes(member) if other == name else content)
        try:
            graph = load(path)
        except CheckpointError as err:
            assert "g.npz" in str(err)
            continue
        np.testing.assert_array_equal(graph["w"].value, np.arange(6.0).reshape(3, 2))
        np.testing.assert_array_equal(graph["b"].value, np.ones(2))


@pytest.mark.parametrize(
    "text, match",
    [
        (b"notes about my run\n", r"not a graphnet checkpoint \(a text file\)"),
        (b"", r"not a graphnet checkpoint \(an empty file\)"),
        (b"\x80\x04\x95", "not a graphnet checkpoint .*pickle"),
        (b"\x93NUMPY\x01\x00", "single .npy array"),
        (b"PK\x03\x04" + b"\0" * 100, "truncated or corrupted"),
    ],
)
def test_files_that_are_not_checkpoints(tmp_path, text, match):
    path = tmp_path / "notes.npz"
    path.write_bytes(text)
    with pytest.raises(CheckpointError, match=match):
        load(path)


def test_a_device_or_a_folder_is_not_a_checkpoint(tmp_path):
    for path in ("/dev/zero", tmp_path):
        with pytest.raises(CheckpointError, match="not a regular file"):
            load(path)


@pytest.mark.parametrize(
    "document, match",
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper than 64"),
        (b"[" * 200 + b"]" * 200, "nested deeper than 64"),
        (b'{"format": "graphnet-checkpoint", "version": 1' + b"0" * 5000 + b"}", "5001 digits"),
        (b'{"format": "graphnet-checkpoint", "version": ' + b"1" * 5000 + b"}", "5000 digits"),
        (b"[]", r"not a graphnet checkpoint \(format None\)"),
        (b"null", "not a graphnet checkpoint"),
        (b'"graphnet-checkpoint"', "not a graphnet checkpoint"),
        (
            b'{"format": "graphnet-checkpoint", "version": 1, "kind": "model"}',
            r"document\.arrays: missing",
        ),
        (b'{"format": "graphnet-checkpoint", "version": true, "kind": "model"}', "version True"),
        (b"\xff\xfe{}", "corrupted checkpoint document"),
    ],
)
def test_hostile_documents(tmp_path, document, match):
    path = tmp_path / "doc.npz"
    np.savez(path, **{checkpoint.DOC_KEY: np.frombuffer(document, np.uint8)})
    with pytest.raises(CheckpointError, match=match) as info:
        load(path)
    assert "doc.npz" in str(info.value)


#: What a seeded mutation of a checkpoint's document puts in place of a field.
HOSTILE_FIELDS = [
    2**32, 2**63, -(2**63) - 1, 10**30, -1, 0, 1.5, 1e308, math.inf, math.nan, "x", "",
    [], [3, 2], {}, None, True, "9" * 1000, [[[[1]]]], {"a": 1}, [None], -0.0,
]  # fmt: skip


def fields(doc, where=(), items=6):
    """Every field's path in a checkpoint document (a list's first `items` items)."""
    for key, value in doc.items() if isinstance(doc, dict) else enumerate(doc[:items]):
        yield (*where, key)
        if isinstance(value, (dict, list)):
            yield from fields(value, (*where, key), items)


def mutated_document(doc, rng, items=6):
    """`doc` with one field (a third of the time two) deleted, given a hostile value, or
    (a list's) its last item repeated; the fields among a list's first `items` items."""
    for _ in range(1 if rng.random() < 0.7 else 2):
        paths = list(fields(doc, items=items))
        *parents, last = paths[rng.integers(len(paths))]
        container = doc
        for key in parents:
            container = container[key]
        how = rng.integers(3)
        if how == 0 and isinstance(container, dict):
            del container[last]
        elif how == 1 and isinstance(container[last], list) and container[last]:
            container[last].append(container[last][-1])
        else:
            container[last] = HOSTILE_FIELDS[rng.integers(len(HOSTILE_FIELDS))]
    return doc


@pytest.mark.slow
def test_seeded_mutations_of_the_document_are_refused_or_load(tmp_path, solver_file):
    """120 documents of a Solver's and a Graph's checkpoints, each with a field or two
    deleted, given a hostile value or lengthened, loaded into a Solver (a Graph) and on
    their own: each load is a CheckpointError naming the file, or loads (a field such as
    a loss history's entry takes any number). 1800 such documents, loaded 3600 times,
    found nothing else once."""
    rng = np.random.default_rng(33)
    (tmp_path / "solver.npz").write_bytes(solver_file)
    save(small_graph(), tmp_path / "graph.npz")
    originals = {}
    for name in ("solver", "graph"):
        rewrite(tmp_path / f"{name}.npz", lambda a, d, name=name: originals.update({name: d}))
    for i in range(120):
        name = "solver" if i % 3 else "graph"
        path = tmp_path / f"m{i}.npz"
        path.write_bytes((tmp_path / f"{name}.npz").read_bytes())
        document = mutated_document(json.loads(json.dumps(originals[name])), rng)
        rewrite(path, lambda a, d, document=document: (d.clear(), d.update(document)))
        for into in (None, fresh_solver() if name == "solver" else small_graph()):
            try:
                load(path, into=into)
            except CheckpointError as err:
                assert f"m{i}.npz" in str(err)


def sequence_and_conv_graph():
    """A graph of every kind of node a checkpoint keeps: integer inputs (words, labels),
    integer consts (a causal mask, a loss mask), params, batchnorm states and a dropout
    stream; the sequence gates (word embedding, RNN, LSTM, masked attention, layernorm,
    temporal affine, the masked temporal softmax loss) beside a conv branch."""
    import graphnet as gn

    rng = np.random.default_rng(0)
    T, D, H, V = 4, 5, 6, 7

    def param(name, *shape, scale=0.3):
        return g.param(name, rng.standard_normal(shape) * scale)

    g = gn.Graph()
    words = g.input("words", shape=(None, T), dtype=np.int64)
    y = g.input("y", shape=(None, T), dtype=np.int64)
    x = g.word_embedding(words, param("W_embed", V, D), name="embed")
    h0 = g.mean(x, axis=1) @ param("Wp", D, H)
    h = g.rnn(x, h0, param("Wx", D, H), param("Wh", H, H), param("b", H), name="rnn")
    h2 = g.lstm(h, param("h0", 3, H), param("Wx2", H, 4 * H), param("Wh2", H, 4 * H),
                param("b2", 4 * H), name="lstm")  # fmt: skip
    a = g.attention(h2, h, h2, mask=np.tril(np.ones((T, T), bool)), name="attention")
    a = g.layernorm(a + h, param("ln_gamma", H), param("ln_beta", H), name="layernorm")
    scores = g.temporal_affine(a, param("Wo", H, V), param("bo", V), name="scores")
    loss = g.temporal_softmax_loss(scores, y, np.array([[1, 1, 1, 0]] * 3), name="words_loss")
    image = g.input("image", shape=(None, 2, 6, 6))
    c = g.conv(image, param("cw", 3, 2, 3, 3), param("cb", 3), stride=1, pad=1, name="conv")
    c = g.spatial_batchnorm(c, param("sgamma", 3), param("sbeta", 3), name="sbn")
    c = g.dropout(g.max_pool(g.relu(c), 2, 2, 2), p=0.5, seed=3, name="dropout")
    f = g.affine(g.flatten(c), param("fw", 27, V), param("fb", V), name="fc")
    g.add(loss, g.softmax_loss(f, g.index(y, (slice(None), 0))), name="loss")
    return g


SEQUENCE_AND_CONV_FEED = {
    "words": np.array([[0, 1, 1, 6], [2, 2, 3, 4], [5, 0, 6, 6]]),
    "y": np.array([[1, 2, 3, 4], [0, 0, 6, 5], [1, 1, 1, 1]]),
    "image": np.random.default_rng(1).standard_normal((3, 2, 6, 6)),
}


def changed_array(arrays, doc, rng):
    """One of the arrays given another dtype or shape, twice its values, or one value
    replaced (NaN, Inf, -1, 10**9, -0.0); the document's list says so 7 times in 10."""
    key = sorted(k for k in arrays)[int(rng.integers(len(arrays)))]
    array, how = arrays[key], rng.integers(4)
    if how == 0:
        array = array.astype(rng.choice(["<f4", "<i8", "<i4", "|u1", "<f2", "|b1"]))
    elif how == 1:
        array = array.reshape(-1) if array.ndim != 1 else array.reshape(1, -1)
    elif how == 2:
        array = np.concatenate([array.reshape(-1)] * 2)
    elif array.size:
        array = array.copy()
        hostile = [np.nan, np.inf, -1, 10**9, -0.0] if array.dtype.kind == "f" else [-1, 10**9]
        array.reshape(-1)[rng.integers(array.size)] = rng.choice(hostile)
    arrays[key] = array
    if rng.random() < 0.7:
        doc["arrays"][key] = {"shape": list(array.shape), "dtype": array.dtype.str}


def assert_consistent_and_runs(graph):
    """Every param and state array as the graph's nodes need them, finite (variances not
    negative); a training step and an eval forward run or raise GraphError."""
    import graphnet as gn

    for name in graph.params:
        value = graph[name].value
        assert value.dtype == graph.dtype and np.all(np.isfinite(value)), name
        assert graph[name].static_shape in (None, value.shape), name
    for node_ in graph.nodes:
        for key, value in node_.state.items():
            if isinstance(value, np.ndarray):
                assert value.dtype == node_.dtype and np.all(np.isfinite(value)), node_.name
                assert key != "running_var" or np.all(value >= 0), node_.name
    feed = {k: v for k, v in SEQUENCE_AND_CONV_FEED.items() if k in graph}
    for training in (True, False):
        graph.train(training)
        try:
            graph.forward(**feed)
            if training:
                graph.backward()
        except gn.GraphError:
            pass


@pytest.mark.slow
def test_seeded_damage_to_a_sequence_and_conv_graph_is_refused_or_loads_consistent_arrays(
    tmp_path,
):
    """150 damaged checkpoints of sequence_and_conv_graph(), in turns: a document field or
    two of any node deleted, made hostile or lengthened; an array changed, the document
    listing the change or not; 1-8 bytes of the file changed, cut or inserted. Each load
    is a CheckpointError naming the file, or a graph whose arrays its nodes can use and
    which trains and evaluates. (600 such files, loaded and run, found an integer or a
    negative running variance that loaded: refused now.)"""
    graph = sequence_and_conv_graph()
    graph.forward(**SEQUENCE_AND_CONV_FEED)
    graph.backward()
    original = tmp_path / "graph.npz"
    save(graph, original)
    saved = {}
    rewrite(original, lambda a, d: saved.update(arrays=a, doc=d))
    path = tmp_path / "damaged.npz"
    for i in range(150):
        rng = np.random.default_rng([34, i])
        path.write_bytes(original.read_bytes())
        if i % 3 == 0:
            document = mutated_document(json.loads(json.dumps(saved["doc"])), rng, items=50)
            rewrite(path, lambda a, d, document=document: (d.clear(), d.update(document)))
        elif i % 3 == 1:
            rewrite(path, lambda a, d, rng=rng: changed_array(a, d, rng))
        else:
            path.write_bytes(damaged(original.read_bytes(), rng))
        try:
            loaded = load(path)
        except CheckpointError as err:
            assert "damaged.npz" in str(err), (i, err)
            continue
        assert_consistent_and_runs(loaded)


@pytest.mark.slow
def test_unlisted_members_are_never_read(model_file, tmp_path):
    """Members the document does not list (here a NaN array and a deflated bomb) are not
    read at all: the model loads, and memory stays small."""
    with zipfile.ZipFile(model_file, "a", zipfile.ZIP_DEFLATED) as archive:
        for i in range(300):
            archive.writestr(f"extra/{i}.npy", bytes(1 << 20))
    with zipfile.ZipFile(model_file, "a") as archive:
        with archive.open("param/EXTRA.npy", "w") as member:
            np.lib.format.write_array(member, np.full(4, np.nan))
    assert os.path.getsize(model_file) < 2_000_000
    tracemalloc.start()
    try:
        model = load(model_file)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "EXTRA" not in model.params and peak < 20 << 20


@pytest.mark.slow
def test_300_deflated_members_listed_in_the_document_are_refused_before_inflating(tmp_path):
    """The attack the per-member ratio let through: 300 listed members of 1 MB of zeros
    each, deflated to a few hundred KB in all."""
    arrays = {f"param/P{i}": np.zeros(1 << 18, np.float32) for i in range(300)}
    doc = {
        "format": checkpoint.FORMAT,
        "version": 1,
        "kind": "graph",
        "arrays": {k: {"shape": [1 << 18], "dtype": "<f4"} for k in arrays},
        "graph": {"dtype": "<f4", "training": True, "nodes": []},
    }
    arrays[checkpoint.DOC_KEY] = np.frombuffer(json.dumps(doc).encode(), np.uint8)
    np.savez_compressed(tmp_path / "bomb.npz", **arrays)
    assert os.path.getsize(tmp_path / "bomb.npz") < 500_000
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match="compressed"):
            load(tmp_path / "bomb.npz")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 << 20


def test_memory_error_while_reading_is_the_loaders_error(model_file, monkeypatch):
    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(_npz.np, "frombuffer", no_memory)
    with pytest.raises(CheckpointError, match=r"m\.npz: not enough memory"):
        load(model_file)


# ---- the model configuration -----------------------------------------------------------------


def test_a_config_asking_for_more_than_the_file_holds_fails_before_allocating(tmp_path):
    """hidden_dim=10**7 over stored arrays of 10 columns: refused when the first param's
    shape is known, before its 640 MB of weights are drawn."""
    np.random.seed(0)
    save(TwoLayerNet(input_dim=8, hidden_dim=10, num_classes=3), tmp_path / "m.npz")
    rewrite(tmp_path / "m.npz", lambda a, d: set_path(d, "model.config.hidden_dim", 10**7))
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=r"W1.*\(8, 10000000\).*\(8, 10\)"):
            load(tmp_path / "m.npz")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 << 20


@pytest.mark.parametrize(
    "key, value",
    [
        ("input_dim", [1, 10**10, 10**10]),
        ("num_filters", 10**30),
        ("filter_size", -3),
        ("hidden_dim", "many"),
    ],
)
def test_absurd_convnet_configs_are_refused(tmp_path, key, value):
    np.random.seed(0)
    save(
        ThreeLayerConvNet(
            input_dim=(1, 8, 8), num_filters=4, filter_size=3, hidden_dim=5, num_classes=3
        ),
        tmp_path / "m.npz",
    )
    rewrite(tmp_path / "m.npz", lambda a, d: set_path(d, f"model.config.{key}", value))
    with pytest.raises(CheckpointError, match="m.npz"):
        load(tmp_path / "m.npz")


def test_a_graph_checkpoint_with_a_conv_stride_of_10_to_the_30(tmp_path):
    import graphnet as gn

    g = gn.Graph()
    x = g.input("x", shape=(None, 1, 5, 5))
    w = g.param("w", np.ones((1, 1, 3, 3)))
    b = g.param("b", np.zeros(1))
    g.conv(x, w, b, stride=1, pad=1, name="c")
    save(g, tmp_path / "g.npz")
    doc_node = lambda d: next(n for n in d["graph"]["nodes"] if n["name"] == "c")  # noqa: E731
    rewrite(tmp_path / "g.npz", lambda a, d: set_path(doc_node(d), "attrs.stride", 10**30))
    with pytest.raises(CheckpointError, match=r"nodes\[3\]\.attrs\.stride"):
        load(tmp_path / "g.npz")
