"""Read the pickled CIFAR-10 batches by interpreting their opcodes, never with `pickle`.

A pickle is a small program for a stack machine, and the standard unpickler runs it:
every global it names is imported and called with arguments taken from the file. Even
with the globals limited to numpy's array reconstruction, those arguments (a dtype's
state) can make numpy treat bytes from the file as object pointers and follow them.

So this module reads the opcodes itself and builds plain values only: dicts, lists,
tuples, ints, floats, bytes, str, bools and None. An array is built in the one form numpy
writes one, `_reconstruct(ndarray, (0,), b'b')` followed by BUILD with the state
`(1, shape, dtype, fortran, raw bytes)`, where the dtype is `numpy.dtype(name, False,
True)` with exactly the state numpy writes for that name, and the name is one of the
integer types a batch holds (uint8 pixels, integer labels). The array is then made here,
from that name alone, over a byte string of exactly the announced size. Every length the
file announces is checked against the bytes left before anything is read, and the file,
the number of objects and the number of arrays are bounded, so a crafted file costs at
most a small multiple of its size.
"""

import os
import reprlib
import stat
import struct
from typing import Union

import numpy as np

from ._common import DataError

#: Larger than any batch of the official format (31 MB), far below what could hurt.
MAX_FILE_BYTES = 256 << 20
#: Objects a file may create (a batch: 10,000 labels and 10,000 file names).
MAX_OBJECTS = 200_000
#: Arrays a file may hold (a batch: one, or two with an array of labels).
MAX_ARRAYS = 8
#: Integers longer than this (LONG1/LONG4 bytes) are not in any batch.
MAX_LONG_BYTES = 16

_RECONSTRUCT = ("numpy.core.multiarray", "_reconstruct")
_ALLOWED_GLOBALS = {
    _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}
#: The dtypes an array may have: numpy's name -> the byte orders its state may give.
_ARRAY_DTYPES = {"u1": "|", "i1": "|", **{f"{k}{n}": "<>" for k in "ui" for n in (2, 4, 8)}}


class UnsafePickleError(DataError):
    """The pickle names a global outside the allowed numpy array reconstruction."""


class _Global:
    def __init__(self, module, name):
        self.key = (module, name)


class _Pending:
    """What REDUCE made and BUILD finishes (an array, or its dtype). It may sit on the
    stack and in the memo, but never inside a container: BUILD replaces it in both."""

    def __init__(self, kind, name=None):
        self.kind, self.name, self.memo_keys = kind, name, []


class _Mark:
    """The MARK opcode's place on the stack."""


_MARK = _Mark()


def load_array_pickle(path: Union[str, "os.PathLike[str]"]) -> object:
    """Read the pickle at `path` allowing only plain values and integer numpy arrays.

    Raises FileNotFoundError if `path` is missing, UnsafePickleError if the pickle names
    any global but numpy's array reconstruction, and DataError naming the file if it is
    not a regular file, is too large, truncated or corrupted, or holds anything else.
    """
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise DataError(f"{path}: not a regular file (a folder, a device or a pipe)")
    if info.st_size > MAX_FILE_BYTES:
        raise DataError(
            f"{path}: {info.st_size} bytes, more than any CIFAR-10 batch "
            f"(the limit is {MAX_FILE_BYTES})"
        )
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise DataError(f"{path}: grew past {MAX_FILE_BYTES} bytes while being read")
        return _Reader(data, path).run()
    except MemoryError:
        raise DataError(f"{path}: not enough memory to read it") from None


class _Reader:
    def __init__(self, data, path):
        self.data, self.path = memoryview(data), path
        self.pos = 0
        self.stack, self.marks, self.memo = [], [], {}
        self.objects = self.arrays = 0

    # ----- errors and raw reads ---------------------------------------------------------

    def fail(self, what, at=None):
        raise DataError(
            f"{self.path}: corrupted or not a CIFAR-10 batch: {what} (pickle "
            f"byte {self.pos if at is None else at})"
        )

    def take(self, n):
        if n < 0 or n > len(self.data) - self.pos:
            self.fail(
                f"a length of {n} bytes, but {len(self.data) - self.pos} are left (truncated?)"
                if n >= 0
                else f"a negative length {n}"
            )
        start, self.pos = self.pos, self.pos + n
        return self.data[start : self.pos]

    def unpack(self, fmt):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def line(self):
        """Text up to the next newline (GLOBAL's module and name), at most 256 bytes."""
        end = bytes(self.data[self.pos : self.pos + 257]).find(b"\n")
        if end < 0:
            self.fail("a GLOBAL name without its newline within 256 bytes")
        text = bytes(self.take(end + 1)[:-1])
        try:
            return text.decode("ascii")
        except UnicodeDecodeError:
            self.fail("a GLOBAL name that is not ASCII")

    def text(self, n):
        try:
            return str(self.take(n), "utf-8")
        except UnicodeDecodeError:
            self.fail("a string that is not UTF-8")

    # ----- the stack ---------------------------------------------------------------------

    def push(self, value):
        self.objects += 1
        if self.objects > MAX_OBJECTS:
            self.fail(f"more than {MAX_OBJECTS} objects")
        self.stack.append(value)

    def pop(self):
        if not self.stack or self.stack[-1] is _MARK:
            self.fail("an opcode that needs a value on an empty stack")
        return self.stack.pop()

    def pop_mark(self):
        """The values pushed since the last MARK, which is removed."""
        if not self.marks:
            self.fail("an opcode that needs a MARK without one")
        start = self.marks.pop()
        items = self.stack[start + 1 :]
        del self.stack[start:]
        return [self.plain(v) for v in items]

    def plain(self, value):
        """`value` if it may go into a container: not a half-built array or dtype. (A
        _Global may: REDUCE's arguments hold one, and it is only a name.)"""
        if isinstance(value, _Pending):
            self.fail("an unfinished array or dtype used as a value")
        return value

    def top(self, kind):
        if not self.stack or not isinstance(self.stack[-1], kind):
            self.fail(f"an opcode that needs a {kind.__name__} under it")
        return self.stack[-1]

    def set_items(self, pairs):
        target = self.top(dict)
        for key, value in pairs:
            if not isinstance(key, (str, bytes, int)) or isinstance(key, bool):
                self.fail(f"a dict key of type {type(key).__name__}")
            target[key] = value

    # ----- the machine -------------------------------------------------------------------

    def run(self):
        while True:
            at = self.pos
            op = self.take(1)[0]
            handler = _OPCODES.get(op)
            if handler is None:
                self.fail(f"unsupported pickle opcode 0x{op:02x}", at)
            if handler(self) is _STOP:
                break
        result = self.pop()
        return self.plain(result)

    def reduce(self):
        args, func = self.pop(), self.pop()
        if not isinstance(func, _Global) or not isinstance(args, tuple):
            self.fail("a REDUCE that does not call a numpy global with a tuple")
        if func.key[1] == "_reconstruct":
            if (
                len(args) != 3
                or not isinstance(args[0], _Global)
                or args[0].key != ("numpy", "ndarray")
                or args[1] != (0,)
                or args[2] not in (b"b", "b")
            ):
                self.fail(
                    "an array reconstruction other than numpy's _reconstruct(ndarray, (0,), b'b')"
                )
            self.arrays += 1
            if self.arrays > MAX_ARRAYS:
                self.fail(f"more than {MAX_ARRAYS} arrays")
            self.push(_Pending("array"))
        elif func.key == ("numpy", "dtype"):
            name = _text(args[0]) if args else None
            # (name, False, True); numpy of Python 2 days wrote the flags as 0 and 1
            if len(args) != 3 or name not in _ARRAY_DTYPES or args[1:] != (False, True):
                self.fail(
                    f"a dtype other than the integer types of a batch (numpy.dtype{_short(args)})"
                )
            self.push(_Pending("dtype", name))
        else:
            self.fail(f"a call of {'.'.join(func.key)}")

    def build(self):
        state = self.pop()
        pending = self.top(_Pending)
        if pending.kind == "dtype":
            built = self.dtype(pending.name, state)
        else:
            built = self.array(state)
        self.stack[-1] = built
        for key in pending.memo_keys:
            if self.memo.get(key) is pending:
                self.memo[key] = built

    def dtype(self, name, state):
        order = _text(state[1]) if isinstance(state, tuple) and len(state) == 8 else None
        if (
            order is None
            or len(order) != 1
            or order not in _ARRAY_DTYPES[name]
            or state[0] != 3
            or state[2:] != (None,) * 3 + (-1, -1, 0)
        ):
            self.fail(f"the dtype {name!r} with a state numpy never writes ({_short(state)})")
        return np.dtype(order + name)

    def array(self, state):
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            self.fail("an array state that is not (version, shape, dtype, fortran, data)")
        if len(state) == 5 and state[0] != 1:
            self.fail(f"array state version {_short(state[0])}")
        shape, dtype, fortran, raw = state[-4:]
        if (
            not isinstance(shape, tuple)
            or not all(type(d) is int and 0 <= d for d in shape)
            or len(shape) > 8
        ):
            self.fail(f"an array shape {_short(shape)}")
        if (
            not isinstance(dtype, np.dtype)
            or type(fortran) not in (bool, int)
            or fortran not in (0, 1)
        ):
            self.fail(
                "an array whose dtype was not built from an allowed name, or whose "
                "order flag is not a bool"
            )
        if not isinstance(raw, bytes):
            self.fail(f"array data of type {type(raw).__name__}, not bytes")
        size = dtype.itemsize
        for d in shape:
            size *= d
        if size != len(raw):
            self.fail(
                f"an array of shape {shape} and dtype {dtype} announced with "
                f"{len(raw)} bytes of data instead of {size}"
            )
        return np.frombuffer(raw, dtype).reshape(shape, order="F" if fortran else "C")

    def memo_put(self, key):
        if not self.stack or self.stack[-1] is _MARK:
            self.fail("a memo store from an empty stack")
        if len(self.memo) >= MAX_OBJECTS and key not in self.memo:
            self.fail(f"more than {MAX_OBJECTS} memo entries")
        value = self.stack[-1]
        if isinstance(value, _Pending):
            value.memo_keys.append(key)
        self.memo[key] = value

    def memo_get(self, key):
        if key not in self.memo:
            self.fail(f"memo entry {key} read before it was stored")
        self.push(self.memo[key])

    def global_(self, module, name):
        if not (isinstance(module, str) and isinstance(name, str)):
            self.fail("a global named by something other than two strings")
        if (module, name) not in _ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"{self.path}: refusing to load, the pickle asks for the global "
                f"{module[:100]}.{name[:100]}; only numpy array reconstruction is allowed"
            )
        self.push(_Global(module, name))


def _text(value):
    """A name or byte order as str: Python 2 wrote them as byte strings."""
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return value if isinstance(value, str) else None


# The file's values as the messages show them: containers four levels deep at most, so
# that a list nested 100,000 deep (a few bytes an opcode) is not repr's RecursionError.
_REPR = reprlib.Repr()
_REPR.maxlevel = 4
_REPR.maxtuple = _REPR.maxlist = 10  # a dtype's state has 8 items
_REPR.maxstring = _REPR.maxother = 80


def _short(value):
    text = _REPR.repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


_STOP = object()


def _long(reader, n):
    if n > MAX_LONG_BYTES:
        reader.fail(f"an integer of {n} bytes")
    reader.push(int.from_bytes(reader.take(n), "little", signed=True))


def _tuple(reader, n):
    items = [reader.plain(reader.pop()) for _ in range(n)][::-1]
    reader.push(tuple(items))


def _append(reader, values):
    reader.top(list).extend(values)


def _mark(reader):
    reader.marks.append(len(reader.stack))
    reader.push(_MARK)


def _dup(reader):
    value = reader.plain(reader.pop())
    reader.stack.append(value)
    reader.push(value)


def _setitem(reader):
    value = reader.plain(reader.pop())
    reader.set_items([(reader.plain(reader.pop()), value)])


def _pairs(reader, items):
    if len(items) % 2:
        reader.fail("SETITEMS with an odd number of values")
    return zip(items[::2], items[1::2])


def _stack_global(reader):
    name = reader.pop()
    reader.global_(reader.pop(), name)


def _frame(reader):
    size = reader.unpack("<Q")
    if size > len(reader.data) - reader.pos:
        reader.fail(f"a frame of {size} bytes, more than are left (truncated?)")


_OPCODES = {
    0x80: lambda r: r.take(1),  # PROTO n
    0x95: _frame,  # FRAME (protocol 4+)
    ord("."): lambda r: _STOP,  # STOP
    ord("("): _mark,  # MARK
    ord("0"): lambda r: r.pop(),  # POP
    ord("1"): lambda r: r.pop_mark(),  # POP_MARK
    ord("2"): _dup,  # DUP
    ord("N"): lambda r: r.push(None),
    0x88: lambda r: r.push(True),  # NEWTRUE
    0x89: lambda r: r.push(False),  # NEWFALSE
    ord("J"): lambda r: r.push(r.unpack("<i")),  # BININT
    ord("K"): lambda r: r.push(r.unpack("<B")),  # BININT1
    ord("M"): lambda r: r.push(r.unpack("<H")),  # BININT2
    0x8A: lambda r: _long(r, r.unpack("<B")),  # LONG1
    0x8B: lambda r: _long(r, r.unpack("<i")),  # LONG4
    ord("G"): lambda r: r.push(r.unpack(">d")),  # BINFLOAT
    ord("U"): lambda r: r.push(bytes(r.take(r.unpack("<B")))),  # SHORT_BINSTRING (Python 2)
    ord("T"): lambda r: r.push(bytes(r.take(r.unpack("<i")))),  # BINSTRING (Python 2)
    ord("C"): lambda r: r.push(bytes(r.take(r.unpack("<B")))),  # SHORT_BINBYTES
    ord("B"): lambda r: r.push(bytes(r.take(r.unpack("<I")))),  # BINBYTES
    0x8E: lambda r: r.push(bytes(r.take(r.unpack("<Q")))),  # BINBYTES8
    0x8C: lambda r: r.push(r.text(r.unpack("<B"))),  # SHORT_BINUNICODE
    ord("X"): lambda r: r.push(r.text(r.unpack("<I"))),  # BINUNICODE
    0x8D: lambda r: r.push(r.text(r.unpack("<Q"))),  # BINUNICODE8
    ord("}"): lambda r: r.push({}),  # EMPTY_DICT
    ord("]"): lambda r: r.push([]),  # EMPTY_LIST
    ord(")"): lambda r: r.push(()),  # EMPTY_TUPLE
    ord("t"): lambda r: r.push(tuple(r.pop_mark())),  # TUPLE
    0x85: lambda r: _tuple(r, 1),  # TUPLE1
    0x86: lambda r: _tuple(r, 2),  # TUPLE2
    0x87: lambda r: _tuple(r, 3),  # TUPLE3
    ord("l"): lambda r: r.push(r.pop_mark()),  # LIST
    ord("a"): lambda r: _append(r, [r.plain(r.pop())]),  # APPEND
    ord("e"): lambda r: _append(r, r.pop_mark()),  # APPENDS
    ord("s"): _setitem,  # SETITEM
    ord("u"): lambda r: r.set_items(_pairs(r, r.pop_mark())),  # SETITEMS
    ord("q"): lambda r: r.memo_put(r.unpack("<B")),  # BINPUT
    ord("r"): lambda r: r.memo_put(r.unpack("<I")),  # LONG_BINPUT
    0x94: lambda r: r.memo_put(len(r.memo)),  # MEMOIZE
    ord("h"): lambda r: r.memo_get(r.unpack("<B")),  # BINGET
    ord("j"): lambda r: r.memo_get(r.unpack("<I")),  # LONG_BINGET
    ord("c"): lambda r: r.global_(r.line(), r.line()),  # GLOBAL
    0x93: _stack_global,  # STACK_GLOBAL
    ord("R"): lambda r: r.reduce(),  # REDUCE
    ord("b"): lambda r: r.build(),  # BUILD
}
