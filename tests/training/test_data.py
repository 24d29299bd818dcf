"""Tests for graphnet.data: CIFAR-10 on small fake batches, downloads from local file://
URLs, and scikit-learn's bundled digits. Nothing here touches the network."""

import builtins
import hashlib
import io
import os
import pickle
import struct
import sys
import tarfile

import numpy as np
import pytest

from graphnet import data

PER_BATCH = 20
BATCH_NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
# A planted pixel: value 255 at (channel, row, col) of one training image; every other
# pixel is below 255, so finding the 255 finds where the loader put that position.
PLANT_IMAGE, PLANT_CHANNEL, PLANT_ROW, PLANT_COL = 23, 2, 5, 17


class _Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 str opcodes, as the official batches were written.

    Python 3 pickles bytes under protocol 2 through a call to _codecs.encode; the real
    files contain no such call, so the fakes must not either.
    """

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def py2_pickle(obj, numpy_module=b"numpy.core.multiarray"):
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    # numpy 2 names its new module; the real files name numpy 1's.
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"c" + numpy_module + b"\n")


def fake_batch(index, n=PER_BATCH, row_size=3072):
    rng = np.random.default_rng(index)
    pixels = rng.integers(0, 255, size=(n, row_size), dtype=np.uint8)
    labels = [(i + index) % 10 for i in range(n)]
    return {
        b"batch_label": b"fake batch %d" % index,
        b"labels": labels,
        b"data": pixels,
        b"filenames": [b"img_%d.png" % i for i in range(n)],
    }


def fake_cifar_folder(parent):
    """parent/cifar-10-batches-py holding six small fake batches, one pixel planted."""
    folder = parent / "cifar-10-batches-py"
    folder.mkdir()
    for index, name in enumerate(BATCH_NAMES):
        batch = fake_batch(index)
        if index == PLANT_IMAGE // PER_BATCH:
            offset = PLANT_CHANNEL * 1024 + PLANT_ROW * 32 + PLANT_COL
            batch[b"data"][PLANT_IMAGE % PER_BATCH, offset] = 255
        (folder / name).write_bytes(py2_pickle(batch))
    return folder


@pytest.fixture
def cifar_dir(tmp_path):
    return fake_cifar_folder(tmp_path)


# ---------------------------------------------------------------- load_cifar10


def test_load_cifar10_shapes_dtypes_and_labels(cifar_dir):
    X_train, y_train, X_test, y_test = data.load_cifar10(cifar_dir)
    assert X_train.shape == (5 * PER_BATCH, 32, 32, 3)
    assert X_test.shape == (PER_BATCH, 32, 32, 3)
    assert X_train.dtype == X_test.dtype == np.float64
    assert y_train.dtype == y_test.dtype == np.int64
    expected_train = np.concatenate([fake_batch(i)[b"labels"] for i in range(5)])
    np.testing.assert_array_equal(y_train, expected_train)
    np.testing.assert_array_equal(y_test, fake_batch(5)[b"labels"])


def test_load_cifar10_accepts_the_parent_folder(cifar_dir):
    X_from_parent = data.load_cifar10(cifar_dir.parent)[0]
    np.testing.assert_array_equal(X_from_parent, data.load_cifar10(cifar_dir)[0])


def test_channel_order_channels_last_then_first(cifar_dir):
    X_train = data.load_cifar10(cifar_dir)[0]
    assert list(zip(*np.nonzero(X_train == 255))) == [
        (PLANT_IMAGE, PLANT_ROW, PLANT_COL, PLANT_CHANNEL)
    ]

    d = data.get_CIFAR10_data(
        num_training=90, num_validation=10, num_test=5, subtract_mean=False, cifar10_dir=cifar_dir
    )
    assert list(zip(*np.nonzero(d["X_train"] == 255))) == [
        (PLANT_IMAGE, PLANT_CHANNEL, PLANT_ROW, PLANT_COL)
    ]


def test_reads_numpy2_module_name(cifar_dir):
    (cifar_dir / "test_batch").write_bytes(
        py2_pickle(fake_batch(5), numpy_module=b"numpy._core.multiarray")
    )
    assert data.load_cifar10(cifar_dir)[2].shape == (PER_BATCH, 32, 32, 3)


# ---------------------------------------------------------------- get_CIFAR10_data


def test_get_cifar10_data_splits(cifar_dir):
    X_train, y_train, X_test, y_test = data.load_cifar10(cifar_dir)
    d = data.get_CIFAR10_data(
        num_training=70, num_validation=20, num_test=15, subtract_mean=False, cifar10_dir=cifar_dir
    )
    assert sorted(d) == ["X_test", "X_train", "X_val", "y_test", "y_train", "y_val"]
    to_nchw = (0, 3, 1, 2)
    for split, X, y in [
        ("train", X_train[:70], y_train[:70]),
        ("val", X_train[70:90], y_train[70:90]),
        ("test", X_test[:15], y_test[:15]),
    ]:
        assert d[f"X_{split}"].dtype == np.float32
        assert d[f"X_{split}"].flags.c_contiguous
        np.testing.assert_array_equal(d[f"X_{split}"], X.transpose(to_nchw))
        np.testing.assert_array_equal(d[f"y_{split}"], y)


def test_get_cifar10_data_subtracts_the_training_mean(cifar_dir):
    raw = data.get_CIFAR10_data(
        num_training=70,
        num_validation=20,
        num_test=15,
        subtract_mean=False,
        cifar10_dir=cifar_dir,
        dtype=np.float64,
    )
    d = data.get_CIFAR10_data(
        num_training=70, num_validation=20, num_test=15, cifar10_dir=cifar_dir, dtype=np.float64
    )
    mean_image = raw["X_train"].mean(axis=0)
    np.testing.assert_allclose(d["X_train"].mean(axis=0), 0, atol=1e-9)
    for split in ("train", "val", "test"):
        np.testing.assert_allclose(d[f"X_{split}"], raw[f"X_{split}"] - mean_image)


def test_get_cifar10_data_rejects_oversized_splits(cifar_dir):
    with pytest.raises(ValueError, match="holds 100 training"):
        data.get_CIFAR10_data(num_training=90, num_validation=20, cifar10_dir=cifar_dir)


def test_default_dir_missing_says_how_to_download(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHNET_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="--download") as info:
        data.get_CIFAR10_data()
    assert "download_cifar10" in str(info.value)


# ---------------------------------------------------------------- broken files


def test_missing_batch_is_named(cifar_dir):
    (cifar_dir / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3") as info:
        data.load_cifar10(cifar_dir)
    assert "test_batch" in str(info.value)  # says what the folder should hold


def test_truncated_batch(cifar_dir):
    path = cifar_dir / "data_batch_2"
    path.write_bytes(path.read_bytes()[:30000])
    with pytest.raises(data.DataError, match="data_batch_2.*truncated"):
        data.load_cifar10(cifar_dir)


@pytest.mark.parametrize(
    "field, value, message",
    [
        (b"data", np.zeros((PER_BATCH, 3071), np.uint8), r"shape \(N, 3072\)"),
        (b"data", np.zeros((PER_BATCH, 3072), np.int16), "uint8"),
        (b"labels", list(range(PER_BATCH - 1)), "one per image"),
        (b"labels", [10] * PER_BATCH, r"0\.\.9"),
    ],
)
def test_malformed_batch(cifar_dir, field, value, message):
    batch = fake_batch(0)
    batch[field] = value
    (cifar_dir / "data_batch_1").write_bytes(py2_pickle(batch))
    with pytest.raises(data.DataError, match=message) as info:
        data.load_cifar10(cifar_dir)
    assert "data_batch_1" in str(info.value)


def test_batch_that_is_not_a_dict(cifar_dir):
    (cifar_dir / "test_batch").write_bytes(py2_pickle([1, 2, 3]))
    with pytest.raises(data.DataError, match="test_batch.*dict"):
        data.load_cifar10(cifar_dir)


class _WritesMarker:
    def __init__(self, call):
        self.call = call

    def __reduce__(self):
        return self.call


@pytest.mark.parametrize(
    "make_call, global_name",
    [
        (lambda marker: (builtins.open, (str(marker), "w")), "open"),
        (lambda marker: (os.system, (f"touch '{marker}'",)), "system"),
    ],
)
def test_malicious_pickle_is_rejected(cifar_dir, tmp_path, make_call, global_name):
    marker = tmp_path / "pwned"
    batch = fake_batch(4)
    batch[b"batch_label"] = _WritesMarker(make_call(marker))
    (cifar_dir / "data_batch_5").write_bytes(py2_pickle(batch))
    with pytest.raises(data.UnsafePickleError, match=global_name) as info:
        data.load_cifar10(cifar_dir)
    assert isinstance(info.value, ValueError)
    assert "data_batch_5" in str(info.value)
    assert not marker.exists()


# ---------------------------------------------------------------- download_cifar10


def _tar_gz(path, files):
    """files: {member name: bytes, or a TarInfo for non-regular members}."""
    with tarfile.open(path, "w:gz") as tar:
        for name, content in files.items():
            if isinstance(content, tarfile.TarInfo):
                tar.addfile(content)
            else:
                info = tarfile.TarInfo(name)
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return path, hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def fake_archive(tmp_path, cifar_dir):
    files = {f"cifar-10-batches-py/{name}": (cifar_dir / name).read_bytes() for name in BATCH_NAMES}
    return _tar_gz(tmp_path / "cifar-10-python.tar.gz", files)


@pytest.mark.parametrize("progress", [False, True])
def test_download_from_local_url(tmp_path, fake_archive, cifar_dir, progress):
    archive, md5 = fake_archive
    folder = data.download_cifar10(
        tmp_path / "dl", url=archive.as_uri(), md5=md5, progress=progress
    )
    assert folder == tmp_path / "dl" / "cifar-10-batches-py"
    for got, want in zip(data.load_cifar10(folder), data.load_cifar10(cifar_dir)):
        np.testing.assert_array_equal(got, want)
    assert not list((tmp_path / "dl").glob("*.part"))

    # Already there: nothing is fetched, so an unreachable URL does not matter.
    again = data.download_cifar10(folder, url=(tmp_path / "gone.tar.gz").as_uri(), md5=md5)
    assert again == folder


def test_download_checksum_mismatch_leaves_nothing(tmp_path, fake_archive):
    archive, _ = fake_archive
    target = tmp_path / "dl"
    with pytest.raises(data.ChecksumError, match="expected 0{32}"):
        data.download_cifar10(target, url=archive.as_uri(), md5="0" * 32, progress=False)
    assert not target.exists()  # not even the folder it would have gone to


def _link(name, target, kind):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


UNSAFE_PATH, LINK = "unsafe member path", "is a link or special file"


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("../escaped", b"x", UNSAFE_PATH),
        ("cifar-10-batches-py/../../escaped", b"x", UNSAFE_PATH),
        ("/tmp/graphnet-escaped", b"x", UNSAFE_PATH),
        (
            "cifar-10-batches-py/test_batch",
            _link("cifar-10-batches-py/test_batch", "/etc/passwd", tarfile.SYMTYPE),
            LINK,
        ),
        (
            "cifar-10-batches-py/test_batch",
            _link("cifar-10-batches-py/test_batch", "/etc/passwd", tarfile.LNKTYPE),
            LINK,
        ),
    ],
)
def test_download_refuses_unsafe_archive_members(tmp_path, name, content, message):
    archive, md5 = _tar_gz(tmp_path / "evil.tar.gz", {name: content})
    target = tmp_path / "a" / "dl"
    with pytest.raises(data.DataError) as info:
        data.download_cifar10(target, url=archive.as_uri(), md5=md5, progress=False)
    # Checked as a substring, not a regex: tmp_path itself contains this test's name.
    assert message in str(info.value)
    assert not (tmp_path / "a" / "escaped").exists()
    assert not os.path.exists("/tmp/graphnet-escaped")
    assert not (target / "cifar-10-batches-py").exists()


# ---------------------------------------------------------------- digits


@pytest.fixture
def sklearn():
    return pytest.importorskip("sklearn")


def test_load_digits(sklearn):
    X, y = data.load_digits()
    assert X.shape == (1797, 1, 8, 8) and X.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0
    assert set(np.unique(y)) == set(range(10))


def test_digits_splits_are_disjoint_and_deterministic(sklearn):
    d = data.get_digits_data(subtract_mean=False)
    assert [len(d[f"X_{s}"]) for s in ("train", "val", "test")] == [1257, 180, 360]
    assert d["X_train"].shape[1:] == (1, 8, 8)
    rows = {s: {x.tobytes() for x in d[f"X_{s}"]} for s in ("train", "val", "test")}
    assert len(rows["train"] | rows["val"] | rows["test"]) == 1797  # disjoint, complete

    same = data.get_digits_data(subtract_mean=False)
    other = data.get_digits_data(subtract_mean=False, seed=1)
    np.testing.assert_array_equal(same["X_val"], d["X_val"])
    np.testing.assert_array_equal(same["y_test"], d["y_test"])
    assert not np.array_equal(other["y_test"], d["y_test"])


def test_digits_mean_subtraction_and_sizes(sklearn):
    d = data.get_digits_data(num_validation=100, num_test=200, num_training=500)
    assert [len(d[f"y_{s}"]) for s in ("train", "val", "test")] == [500, 100, 200]
    np.testing.assert_allclose(d["X_train"].mean(axis=0), 0, atol=1e-6)
    with pytest.raises(ValueError, match="cannot split"):
        data.get_digits_data(num_training=2000)


def test_digits_without_sklearn_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(ImportError, match=r"pip install graphnet\[digits\]"):
        data.load_digits()
