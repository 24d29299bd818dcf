"""Crafted CIFAR-10 batch files and archives, as an attacker or a broken download makes
them. Each must be a DataError naming the file, and the process reading it must survive:
every crafted batch is read in a child process, so that a crash fails its test."""

import hashlib
import io
import json
import os
import pickle as P
import struct
import tarfile

import numpy as np
import pytest

from graphnet import data
from isolation import assert_survived, run_in_child

from .test_data import BATCH_NAMES, fake_cifar_folder

N = 4  # images in a crafted batch


@pytest.fixture
def cifar_dir(tmp_path):
    return fake_cifar_folder(tmp_path)


# ---- a small pickle assembler: the opcodes a Python 2 batch is made of -----------------


def string(raw):
    if len(raw) < 256:
        return P.SHORT_BINSTRING + bytes([len(raw)]) + raw
    return P.BINSTRING + struct.pack("<i", len(raw)) + raw


def integer(value):
    return P.BININT + struct.pack("<i", value)


def seq(*items, close=P.TUPLE):
    return P.MARK + b"".join(items) + close


def dtype(name=b"u1", args=(P.NEWFALSE, P.NEWTRUE), state=None):
    if state is None:
        state = seq(integer(3), string(b"|"), P.NONE * 3, integer(-1), integer(-1), integer(0))
    return P.GLOBAL + b"numpy\ndtype\n" + seq(string(name), *args) + P.REDUCE + state + P.BUILD


def array(shape, dt=None, raw=None, reconstruct_args=None, fortran=P.NEWFALSE):
    dt = dtype() if dt is None else dt
    if raw is None:
        raw = string(bytes(int(np.prod(shape))))
    if reconstruct_args is None:
        reconstruct_args = seq(P.GLOBAL + b"numpy\nndarray\n", seq(integer(0)), string(b"b"))
    shape_ops = seq(*(integer(d) for d in shape))
    return (
        P.GLOBAL
        + b"numpy.core.multiarray\n_reconstruct\n"
        + reconstruct_args
        + P.REDUCE
        + seq(integer(1), shape_ops, dt, fortran, raw)
        + P.BUILD
    )


def labels(values=None):
    values = list(range(N)) if values is None else values
    return seq(*(integer(v) for v in values), close=P.LIST)


def batch(data_ops=None, labels_ops=None, extra=b""):
    data_ops = array((N, 3072)) if data_ops is None else data_ops
    labels_ops = labels() if labels_ops is None else labels_ops
    return (
        P.PROTO
        + b"\x02"
        + P.EMPTY_DICT
        + seq(string(b"data"), data_ops, string(b"labels"), labels_ops, extra, close=P.SETITEMS)
        + P.STOP
    )


def read_in_child(folder):
    """load_cifar10(folder) in a child process: the error it raised, as a dict."""
    result = run_in_child(f"""
        import json
        from graphnet import data
        try:
            data.load_cifar10({str(folder)!r})
            print(json.dumps({{"error": None}}))
        except Exception as err:
            print(json.dumps({{"error": type(err).__name__, "message": str(err)[:2000],
                              "data_error": isinstance(err, data.DataError)}}))
    """)
    assert_survived(result)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_assembler_writes_a_batch_the_reader_accepts(cifar_dir):
    (cifar_dir / "data_batch_1").write_bytes(batch())
    X_train, y_train, _, _ = data.load_cifar10(cifar_dir)
    assert len(X_train) == N + 4 * 20 and list(y_train[:N]) == list(range(N))


OBJECT_STATE = seq(integer(3), string(b"|"), P.NONE * 3, integer(8), integer(8), integer(1))
HASOBJECT_STATE = seq(integer(3), string(b"<"), P.NONE * 3, integer(-1), integer(-1), integer(0x3F))

# A list 100,000 deep: the messages that showed such a value got repr's RecursionError.
DEEP = P.EMPTY_LIST * 100_000 + P.APPEND * 99_999

CRAFTED = {
    # numpy's dtype state from the file: an object dtype over bytes, whose "pointers"
    # numpy followed (SIGSEGV with the unpickler that allowed numpy.dtype)
    "object dtype over bytes": batch(
        array((N, 2), dt=dtype(b"O8", state=OBJECT_STATE), raw=string(b"A" * 8 * N * 2))
    ),
    "plain object dtype": batch(array((N, 3072), dt=dtype(b"O"))),
    "integer dtype flagged as holding objects": batch(
        array((N, 3072), dt=dtype(b"u8", state=HASOBJECT_STATE), raw=string(bytes(8 * N * 3072)))
    ),
    "void dtype": batch(array((N, 3072), dt=dtype(b"V1"))),
    "float dtype": batch(array((N, 384), dt=dtype(b"f8", state=HASOBJECT_STATE))),
    "dtype with fields in its state": batch(
        array(
            (N, 3072),
            dt=dtype(
                state=seq(
                    integer(3),
                    string(b"|"),
                    seq(string(b"a")),
                    P.NONE * 2,
                    integer(-1),
                    integer(-1),
                    integer(0),
                )
            ),
        )
    ),
    "dtype state of an unknown version": batch(
        array(
            (N, 3072),
            dt=dtype(
                state=seq(
                    integer(4), string(b"|"), P.NONE * 3, integer(-1), integer(-1), integer(0)
                )
            ),
        )
    ),
    "dtype made with other arguments": batch(array((N, 3072), dt=dtype(args=(integer(7),)))),
    "a dtype argument nested 100,000 deep": batch(
        array((N, 3072), dt=dtype(args=(DEEP, P.NEWTRUE)))
    ),
    "a dtype state nested 100,000 deep": batch(array((N, 3072), dt=dtype(state=DEEP))),
    "an array state's version nested 100,000 deep": batch(
        array((N, 3072)).replace(P.MARK + integer(1) + P.MARK, P.MARK + DEEP + P.MARK, 1)
    ),
    "data shorter than its shape": batch(array((N, 3072), raw=string(bytes(100)))),
    "negative size in a shape": batch(array((-1, 3072), raw=string(b""))),
    "shape of 2**62 rows over 8 bytes": batch(array((2**30, 2**30, 4), raw=string(bytes(8)))),
    "object-array state (a list of values)": batch(
        array((N, 3072), raw=seq(integer(1), close=P.LIST))
    ),
    "reconstruct with other arguments": batch(
        array(
            (N, 3072),
            reconstruct_args=seq(P.GLOBAL + b"numpy\nndarray\n", seq(integer(5)), string(b"b")),
        )
    ),
    "array used before it is built": batch(
        data_ops=P.GLOBAL
        + b"numpy.core.multiarray\n_reconstruct\n"
        + seq(P.GLOBAL + b"numpy\nndarray\n", seq(integer(0)), string(b"b"))
        + P.REDUCE
        + P.BINPUT
        + b"\x00"
        + P.EMPTY_LIST
        + P.MARK
        + P.BINGET
        + b"\x00"
        + P.APPENDS
    ),
    "BINSTRING announcing 2**31 - 1 bytes": batch(
        array((N, 3072), raw=P.BINSTRING + struct.pack("<i", 2**31 - 1) + b"xx")
    ),
    "BINSTRING with a negative length": batch(
        array((N, 3072), raw=P.BINSTRING + struct.pack("<i", -5))
    ),
    "BINBYTES8 announcing 2**62 bytes": batch(
        array((N, 3072), raw=P.BINBYTES8 + struct.pack("<Q", 2**62))
    ),
    "BINUNICODE8 announcing 2**62 bytes": batch(
        extra=string(b"batch_label") + P.BINUNICODE8 + struct.pack("<Q", 2**62)
    ),
    "LONG4 announcing a 2**31 - 1 byte integer": batch(
        labels_ops=seq(P.LONG4 + struct.pack("<i", 2**31 - 1) + b"\x01", close=P.LIST)
    ),
    "FRAME announcing 2**62 bytes": P.PROTO + b"\x04" + P.FRAME + struct.pack("<Q", 2**62),
    "an opcode no batch holds (INST)": batch(extra=b"ibuiltins\neval\n"),
    "a global without its newline": P.PROTO + b"\x02" + P.GLOBAL + b"x" * 5000,
    "stack underflow": P.PROTO + b"\x02" + P.REDUCE + P.STOP,
    "memo read before it is written": P.PROTO + b"\x02" + b"h\x07" + P.STOP,
    "a list 200,000 levels deep": P.PROTO + b"\x02" + P.EMPTY_LIST * 200_001 + P.STOP,
    "a tuple as a dict key": batch(extra=seq(integer(1)) + string(b"x")),
    "ragged labels": batch(
        labels_ops=seq(
            seq(integer(1), close=P.LIST), integer(2), integer(3), integer(4), close=P.LIST
        )
    ),
    "labels holding a bool": batch(labels_ops=seq(P.NEWTRUE, *(integer(1),) * 3, close=P.LIST)),
    "a label of 2**70": batch(
        labels_ops=seq(
            P.LONG1 + b"\x09" + (2**70).to_bytes(9, "little"), *(integer(1),) * 3, close=P.LIST
        )
    ),
    "labels as a 2-D integer array": batch(labels_ops=array((2, 2), dt=dtype(b"i1"))),
    "an entry the format lacks": batch(extra=string(b"evil") + integer(1)),
    "int8 pixels": batch(array((N, 3072), dt=dtype(b"i1"))),
    "file names that are not strings": batch(
        extra=string(b"filenames") + seq(*(integer(1),) * N, close=P.LIST)
    ),
    "an empty file": b"",
    "a text file": b"These are my notes about CIFAR-10.\n",
    "truncated in the middle of the pixels": batch()[:2000],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CRAFTED))
def test_crafted_batch_is_a_data_error_and_the_process_survives(cifar_dir, name):
    (cifar_dir / "data_batch_3").write_bytes(CRAFTED[name])
    outcome = read_in_child(cifar_dir)
    assert outcome["data_error"], outcome
    assert "data_batch_3" in outcome["message"]


def test_damaged_batches_are_refused_naming_the_file_or_load_as_a_batch(cifar_dir):
    """A seeded generator damages a batch 300 times (1-4 bytes changed, most among the
    opcodes around the pixels, or cut short): each load is a DataError naming the file
    or a batch of the same size with labels in 0..9. (A pickle has no checksum: a
    changed pixel or label is what the file says.)"""
    good = (cifar_dir / "data_batch_2").read_bytes()
    pixels_at = good.index(P.BINSTRING + struct.pack("<i", 20 * 3072)) + 5
    opcodes = [*range(pixels_at), *range(pixels_at + 20 * 3072, len(good))]
    rng, loaded = np.random.default_rng(32), 0
    for _ in range(300):
        damaged = bytearray(good)
        if rng.random() < 0.2:
            damaged = damaged[: int(rng.integers(1, len(good)))]
        for _ in range(int(rng.integers(1, 5))):
            at = rng.choice(opcodes) if rng.random() < 0.8 else rng.integers(len(damaged))
            damaged[int(at) % len(damaged)] ^= int(rng.integers(1, 256))
        (cifar_dir / "data_batch_2").write_bytes(bytes(damaged))
        try:
            X_train, y_train, _, _ = data.load_cifar10(cifar_dir)
        except data.DataError as err:
            assert "data_batch_2" in str(err)
            continue
        assert X_train.shape == (100, 32, 32, 3) and 0 <= y_train.min() <= y_train.max() <= 9
        loaded += 1
    assert 10 < loaded < 150, loaded  # both outcomes seen


@pytest.mark.parametrize(
    "global_ops, name",
    [
        (P.GLOBAL + b"builtins\neval\n", "builtins.eval"),
        (
            P.SHORT_BINUNICODE + b"\x02os" + P.SHORT_BINUNICODE + b"\x06system" + P.STACK_GLOBAL,
            "os.system",
        ),
        (P.GLOBAL + b"numpy.core.numeric\n_frombuffer\n", "_frombuffer"),  # protocol-5 arrays
        (P.GLOBAL + b"numpy\nload\n", "numpy.load"),
    ],
)
@pytest.mark.slow
def test_a_global_outside_numpys_array_rebuild_is_refused_by_name(cifar_dir, global_ops, name):
    (cifar_dir / "test_batch").write_bytes(
        batch(extra=string(b"batch_label") + global_ops + seq(string(b"x")) + P.REDUCE)
    )
    outcome = read_in_child(cifar_dir)
    assert outcome["error"] == "UnsafePickleError", outcome
    assert name in outcome["message"] and "test_batch" in outcome["message"]


def test_a_batch_that_is_dev_zero_or_oversized_is_refused_without_reading_it(cifar_dir):
    (cifar_dir / "data_batch_1").unlink()
    (cifar_dir / "data_batch_1").symlink_to("/dev/zero")
    with pytest.raises(data.DataError, match="data_batch_1: not a regular file \\(a folder"):
        data.load_cifar10(cifar_dir)
    (cifar_dir / "data_batch_1").unlink()
    with open(cifar_dir / "data_batch_1", "wb") as f:  # sparse: no disk space used
        f.truncate(300 << 20)
    with pytest.raises(data.DataError, match="data_batch_1: .*more than any CIFAR-10 batch"):
        data.load_cifar10(cifar_dir)


def test_the_official_python2_form_still_loads(cifar_dir):
    """The flags 0 and 1 (ints) and the byte-string byte order numpy of 2009 wrote."""
    python2 = batch(array((N, 3072), dt=dtype(args=(integer(0), integer(1)))))
    (cifar_dir / "data_batch_2").write_bytes(python2)
    assert data.load_cifar10(cifar_dir)[0].shape == (N + 4 * 20, 32, 32, 3)


# ---- archives whose checksum matches but whose bytes are damaged -------------------------


def archive_bytes(cifar_dir):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in BATCH_NAMES:
            content = (cifar_dir / name).read_bytes()
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def damaged(kind, raw):
    if kind == "truncated":  # a partial download
        return raw[: len(raw) // 2]
    if kind == "flipped byte":
        middle = len(raw) // 2
        return raw[:middle] + bytes([raw[middle] ^ 0xFF]) + raw[middle + 1 :]
    return b"<html>Service unavailable</html>"  # an error page saved as the archive


@pytest.mark.parametrize("kind", ["truncated", "flipped byte", "not an archive"])
def test_damaged_archive_with_a_matching_checksum_is_a_data_error(tmp_path, cifar_dir, kind):
    raw = damaged(kind, archive_bytes(cifar_dir))
    source = tmp_path / "mirror" / "cifar-10-python.tar.gz"
    source.parent.mkdir()
    source.write_bytes(raw)
    target = tmp_path / "data"
    with pytest.raises(data.DataError, match="cifar-10-python.tar.gz.*delete it") as info:
        data.download_cifar10(
            target, url=source.as_uri(), md5=hashlib.md5(raw).hexdigest(), progress=False
        )
    assert not isinstance(info.value, (EOFError, OSError))
    assert not (target / "cifar-10-batches-py").exists()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/cifar-10-python.tar.gz",
        "file:///nonexistent/cifar-10-python.tar.gz",
        "nonsense://cifar",
    ],
)
def test_failed_download_names_the_url_says_what_to_do_and_creates_nothing(tmp_path, url):
    target = tmp_path / "new" / "data"
    with pytest.raises(data.DownloadError) as info:
        data.download_cifar10(target, url=url, progress=False)
    message = str(info.value)
    assert url in message and "by hand" in message and info.value.url == url
    assert not (tmp_path / "new").exists()
    assert os.listdir(tmp_path) == []
