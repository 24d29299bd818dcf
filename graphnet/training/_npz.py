"""Reading a checkpoint's .npz container without trusting it.

np.load would read whatever the archive holds: members nobody asked for, deflated members
that inflate a thousandfold, headers that claim terabytes. Here nothing is read that the
caller did not ask for by name, with the dtype and shape it expects: the zip directory's
sizes are checked against those before a member is opened, graphnet's own (stored,
uncompressed) members are the only kind accepted, and all members read together cannot
exceed the file's size. The JSON document is parsed with bounds on its size, nesting and
numbers. Every problem is an ArchiveError (a ValueError) whose message the caller
prefixes with the file's name.
"""

import json
import os
import re
import stat
import tokenize
import zipfile

import numpy as np

from ..kernels.geometry import element_count

#: The largest document read (a long run's loss history is a few MB).
MAX_DOCUMENT_BYTES = 64 << 20
#: Nesting a document may have (graphnet's go about 12 deep).
MAX_DEPTH = 64
#: Digits an integer of the document may have (random states hold 128-bit integers).
MAX_INT_DIGITS = 40
#: .npy headers are padded to 64 bytes; numpy's own reader refuses more than 10,000.
MAX_NPY_HEADER = 10_000
_NUMERIC_DTYPE = re.compile(r"[<>|=]?[biuf][1248]")


class ArchiveError(ValueError):
    """The file is not an archive graphnet wrote, or is damaged."""


def numeric_dtype(text: object, what: str) -> np.dtype:
    """The numpy dtype `text` names if it is a plain bool, integer or float type (the only
    kinds a checkpoint stores), else ArchiveError naming `what`."""
    if not isinstance(text, str) or not _NUMERIC_DTYPE.fullmatch(text):
        raise ArchiveError(
            f"{what} has dtype {str(text)[:40]!r}; a checkpoint holds only "
            "bool, integer and float arrays"
        )
    return np.dtype(text)


_PICKLED = "pickled Python objects, which a checkpoint never holds and which could run code on load"


def _sniff(file, head):
    """What a file that is not a zip archive looks like, for the message."""
    if head.startswith(b"\x93NUMPY"):
        file.seek(0)
        try:
            objects = _header(file, "the array")[2].hasobject
        except ArchiveError as err:
            objects = "pickled" in str(err)
        if objects:
            raise ArchiveError(f"refused: not a graphnet checkpoint but a .npy array of {_PICKLED}")
        return "a single .npy array, not an .npz archive"
    if head[:1] == b"\x80":
        return f"a pickle ({_PICKLED})"
    if not head:
        return "an empty file"
    if all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        return "a text file"
    return "not an .npz archive"


class Archive:
    """An open checkpoint archive: read_document() and read_array() by member name."""

    def __init__(self, path):
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise ArchiveError(
                "not a graphnet checkpoint (not a regular file: a folder, a device or a pipe)"
            )
        self.size = info.st_size
        self.file = open(path, "rb")
        try:
            head = self.file.read(8)
            if not head.startswith(b"PK\x03\x04"):
                raise ArchiveError(f"not a graphnet checkpoint ({_sniff(self.file, head)})")
            self.file.seek(0)
            self.zip = zipfile.ZipFile(self.file)
        except BaseException:
            self.file.close()
            raise
        self.budget = self.size  # bytes all members read together may still take

    def close(self):
        self.zip.close()
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _member(self, key):
        """The zip entry of array `key` (key + '.npy'), checked against the directory."""
        try:
            info = self.zip.getinfo(key + ".npy")
        except KeyError:
            raise ArchiveError(f"missing array {key!r}") from None
        if info.flag_bits & 0x1:
            raise ArchiveError(f"member {info.filename!r} is encrypted")
        if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
            raise ArchiveError(
                f"refused: member {info.filename!r} is compressed; graphnet "
                "writes checkpoints uncompressed and inflates nothing (a zip "
                "bomb would cost memory)"
            )
        if info.header_offset + info.file_size > self.size or info.file_size > self.budget:
            raise ArchiveError(
                f"member {info.filename!r} claims {info.file_size} bytes, "
                "more than the file holds (truncated, or members that "
                "overlap)"
            )
        self.budget -= info.file_size
        return info

    def read_array(self, key, dtype, shape):
        """Array `key` if its .npy header says `dtype` and `shape` (which the caller got
        from the document) and its member holds exactly that many bytes."""
        info = self._member(key)
        nbytes = dtype.itemsize * element_count(shape, f"array {key!r}")
        if not nbytes <= info.file_size <= nbytes + MAX_NPY_HEADER:
            raise ArchiveError(
                f"array {key!r} is stored in {info.file_size} bytes, but the "
                f"document's {dtype} {tuple(shape)} needs {nbytes}"
            )
        with self.zip.open(info) as member:
            header_shape, fortran, header_dtype = _header(member, key)
            if header_dtype != dtype or header_shape != tuple(shape):
                raise ArchiveError(
                    f"array {key!r} is {header_dtype} {header_shape} in the "
                    f"archive, the document says {dtype} {tuple(shape)}"
                )
            raw = _data(member, key, nbytes)
        return np.frombuffer(raw, dtype).reshape(shape, order="F" if fortran else "C")

    def read_document(self, key):
        """The JSON document stored as the uint8 array `key`, parsed within bounds."""
        try:
            self.zip.getinfo(key + ".npy")
        except KeyError:
            raise ArchiveError(
                f"not a graphnet checkpoint (an .npz archive without the {key!r} entry)"
            ) from None
        info = self._member(key)
        if info.file_size > MAX_DOCUMENT_BYTES + MAX_NPY_HEADER:
            raise ArchiveError(
                f"its document is {info.file_size} bytes, more than any "
                f"graphnet writes ({MAX_DOCUMENT_BYTES})"
            )
        with self.zip.open(info) as member:
            shape, _, dtype = _header(member, key)
            if dtype != np.uint8 or len(shape) != 1 or shape[0] > info.file_size:
                raise ArchiveError(
                    f"its document {key!r} is not a byte string of the size its member holds"
                )
            raw = _data(member, key, shape[0])
        return parse_document(raw)


def _header(member, key):
    """(shape, fortran, dtype) from an .npy member's header, which numpy parses with
    ast.literal_eval (no code runs) within MAX_NPY_HEADER bytes. A damaged header fails
    there as a SyntaxError, a RecursionError (thousands of nested operators) or, when
    numpy retries it through tokenize, a TokenError (an unclosed bracket or string)."""
    try:
        version = np.lib.format.read_magic(member)
        read = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read(member, MAX_NPY_HEADER)
    except (ValueError, SyntaxError, TypeError, RecursionError, tokenize.TokenError) as err:
        raise ArchiveError(f"array {key!r} has a damaged .npy header ({err})") from None
    if dtype.hasobject:
        raise ArchiveError(f"refused: array {key!r} holds {_PICKLED}")
    return tuple(shape), fortran, dtype


def _data(member, key, nbytes):
    raw = member.read(nbytes + 1)  # one byte more: reaching the end checks the CRC
    if len(raw) != nbytes:
        raise ArchiveError(
            f"array {key!r} holds {len(raw)} bytes of data, its header says {nbytes}"
        )
    return raw


def _parse_int(text):
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ArchiveError(f"its document holds a number of {len(text)} digits")
    return int(text)


def parse_document(raw: bytes) -> object:
    """JSON bytes -> a dict, refusing nesting deeper than MAX_DEPTH and huge integers."""
    try:
        doc = json.loads(raw.decode("utf-8"), parse_int=_parse_int)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArchiveError(f"corrupted checkpoint document ({err})") from None
    except RecursionError:
        raise ArchiveError(f"its document is nested deeper than {MAX_DEPTH} levels") from None
    level, depth = [doc], 0
    while level:
        depth += 1
        if depth > MAX_DEPTH:
            raise ArchiveError(f"its document is nested deeper than {MAX_DEPTH} levels")
        level = [
            child
            for value in level
            if isinstance(value, (dict, list))
            for child in (value.values() if isinstance(value, dict) else value)
        ]
    return doc
