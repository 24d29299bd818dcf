"""Fetch an archive with a checksum, and unpack it without trusting its member names."""

import gzip
import hashlib
import http.client
import lzma
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
import zlib
from pathlib import Path, PurePosixPath

from ._common import DataError

_CHUNK = 1 << 20


class ChecksumError(DataError):
    """A downloaded file's MD5 digest differs from the published one."""


class DownloadError(DataError):
    """The server could not be reached or the transfer broke off; `url` says what failed."""

    def __init__(self, message, url):
        super().__init__(message)
        self.url = url


# What the network side of a download raises: URLError, timeouts and resets are OSErrors,
# a connection closed early is an HTTPException, a malformed URL a ValueError.
_NETWORK_ERRORS = (OSError, http.client.HTTPException, ValueError)
# What reading a damaged archive raises (a truncated gzip stream: EOFError).
_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError)


def file_md5(path):
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _progress_bar(total, desc, enabled):
    """A tqdm bar if asked for and tqdm is installed; otherwise None (no bar)."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(
        total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, file=sys.stderr
    )


def download(url, dest, md5, progress=True, timeout=60):
    """Download `url` to `dest` if its MD5 digest is `md5`.

    The bytes go to a temporary file beside `dest` that is renamed over it only once the
    checksum matches, so an interrupted or corrupted download never leaves a `dest`
    behind. Raises ChecksumError on a mismatch.
    """
    dest = Path(dest)
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    try:
        digest = hashlib.md5()
        with (
            os.fdopen(fd, "wb") as out,
            _network(url, urllib.request.urlopen, url, timeout=timeout) as resp,
        ):
            size = resp.headers.get("Content-Length")
            bar = _progress_bar(int(size) if size and size.isdigit() else None, dest.name, progress)
            try:
                for chunk in iter(lambda: _network(url, resp.read, _CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
        if digest.hexdigest() != md5:
            raise ChecksumError(
                f"{url}: MD5 is {digest.hexdigest()}, expected {md5}; "
                "the download is corrupted or not the expected file"
            )
        os.replace(tmp_name, dest)
    except BaseException:
        os.unlink(tmp_name)
        raise
    return dest


def _network(url, call, *args, **kwargs):
    """call(*args, **kwargs), a network error becoming a DownloadError naming `url`."""
    try:
        return call(*args, **kwargs)
    except _NETWORK_ERRORS as err:
        reason = getattr(err, "reason", None) or err
        raise DownloadError(f"cannot download {url}: {reason}", url) from None


def _check_member(archive, member):
    """Reject members that could write outside the target folder or aren't plain files."""
    parts = PurePosixPath(member.name).parts
    if member.name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
        raise DataError(f"{archive}: unsafe member path {member.name!r}")
    if not (member.isfile() or member.isdir()):
        raise DataError(
            f"{archive}: member {member.name!r} is a link or special file; "
            "only regular files and folders are extracted"
        )


def _check_gzip_stream(archive):
    """Decompress a gzip file to its end, where its CRC is checked: tarfile stops reading
    at the tar's end-of-archive blocks and never gets there, so a damaged byte would
    otherwise unpack silently into a damaged file."""
    with open(archive, "rb") as f:
        if f.read(2) != b"\x1f\x8b":
            return
    with gzip.open(archive, "rb") as stream:
        while stream.read(_CHUNK):
            pass


def safe_extract(archive, dest):
    """Extract the tar `archive` into `dest`, which it creates if needed.

    Files are unpacked into a scratch folder inside `dest` and then moved into place,
    so a failure half-way leaves no partial tree. Existing files are replaced.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
    try:
        _check_gzip_stream(archive)
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(archive, member)
            # Our own checks are the guarantee; the 'data' filter, where this Python
            # has it, adds sane permissions and silences 3.12+'s deprecation warning.
            extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(scratch, members=members, **extra)
        for member in members:
            if member.isfile():
                target = dest / member.name
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(scratch / member.name, target)
    except _ARCHIVE_ERRORS as err:
        reason = " ".join(str(err).split())  # tarfile lists one line per method it tried
        raise DataError(
            f"{archive}: truncated, corrupted or not a tar archive ({type(err).__name__}: {reason})"
        ) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
