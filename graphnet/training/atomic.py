"""Writing files so that a crash or a full disk never leaves a half-written one.

Every file goes to a temporary name beside its target (same folder, so the rename cannot
cross file systems; same suffix, so writers that pick a format by suffix pick the right
one), is flushed to disk, and is renamed over the target; the rename itself is then made
durable. Until that rename the target keeps its previous content. A process killed
mid-write leaves only the temporary file, which remove_stale_temporaries() clears.
"""

import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable, List, Union

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["write_atomically", "remove_stale_temporaries", "check_name_length"]

_MARK = ".tmp"


def _temporary_prefix(name):
    return f".{name}."


def write_atomically(path: PathLike, write: Callable[[str], object]) -> Path:
    """Call write(temporary_path), then move what it wrote to `path` atomically.

    Missing parent folders are created. If `write` or the move fails, the temporary file
    is removed and `path` is left as it was; an OSError without a file name (a write
    error on an open file, such as ENOSPC) is given `path` as its file name. Returns
    `path`.
    """
    path = Path(path)
    directory = path.parent.resolve()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=_temporary_prefix(path.name), suffix=_MARK + path.suffix, dir=directory
        )
        os.close(fd)
    except OSError as err:
        raise _naming(err, path) from None
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp made it 0600; a plain file would not be
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(err, OSError):
            raise _naming(err, path) from None
        raise
    _sync_folder(directory)
    return path


def check_name_length(path: PathLike, setting: str) -> None:
    """ValueError naming `setting` if a component of `path`, or the temporary name
    write_atomically writes it under first, is longer than its file system takes
    (NAME_MAX: 255 bytes on most), so that a setting that names files is refused when it
    is given, not when the first file is written."""
    path = Path(path)
    # mkstemp's names: the prefix, 8 random characters, then the suffix
    temporary = f"{_temporary_prefix(path.name)}{'x' * 8}{_MARK}{path.suffix}"
    limit = _name_max(path.parent)
    for name in (*path.parent.parts, temporary):
        if len(os.fsencode(name)) > limit:
            raise ValueError(
                f"{setting}: {os.fspath(path)!r:.100} has a file name of "
                f"{len(os.fsencode(name))} bytes (with the temporary name it is written "
                f"under first), more than the {limit} its file system takes"
            )


def _name_max(folder):
    """The longest file name in bytes the file system of `folder` (or of its nearest
    existing parent) takes; 255, most file systems' limit, where the OS does not say."""
    folder = Path(os.path.abspath(folder))
    # os.path.exists: False for a name too long as well, where Path.exists raises
    while not os.path.exists(folder) and folder != folder.parent:
        folder = folder.parent
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (AttributeError, ValueError, OSError):  # no os.pathconf on Windows
        return 255


def _naming(err, path):
    if err.filename is None and err.errno is not None:
        err.filename = os.fspath(path)
    return err


def _sync_folder(directory):
    """Make a rename in `directory` durable (where the platform allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(directory: PathLike, names: Iterable[str]) -> List[Path]:
    """Remove the temporary files write_atomically() left in `directory` for any of
    `names` (a process killed mid-write). Returns the paths removed."""
    removed: List[Path] = []
    prefixes = tuple(_temporary_prefix(name) for name in names)
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        if entry.name.startswith(prefixes) and _MARK in entry.name and entry.is_file():
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass
    return removed
