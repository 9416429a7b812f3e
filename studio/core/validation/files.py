"""Files the studio reads from a model folder: regular files only, never past their size cap,
and never a path that leaves the folder it was named in.

A named pipe would block `open()` forever and a directory or a symlink loop fails
with an OSError deep inside a parser; both are refused here, before reading, in
one sentence. Opening with O_NONBLOCK and checking the opened handle (not the path)
leaves no gap between the check and the read.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path, PurePosixPath, PureWindowsPath

from studio.core.errors import StudioError

_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_BINARY = getattr(os, "O_BINARY", 0)


def _why(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "it is a symbolic link loop"
    if exc.errno == errno.ENOENT:
        return "it does not exist (or is a link to nothing)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return exc.strerror or str(exc)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def check_regular(path: Path, what: str) -> os.stat_result:
    """The file's stat (links followed) if it is a regular file; else one sentence."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise StudioError(f"cannot read {what} {path}: {_why(exc)}.") from None
    if not stat.S_ISREG(st.st_mode):
        raise StudioError(f"{what} {path} is {_kind(st.st_mode)}, not a regular file.")
    return st


def open_regular(path: Path, what: str):
    """A binary file object for a regular file; a pipe, folder or device is refused without blocking."""
    try:
        fd = os.open(path, os.O_RDONLY | _NONBLOCK | _BINARY)
    except OSError as exc:
        raise StudioError(f"cannot read {what} {path}: {_why(exc)}.") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StudioError(f"{what} {path} is {_kind(st.st_mode)}, not a regular file.")
        if _NONBLOCK:
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_capped(path: Path, what: str, limit: int) -> bytes:
    """All bytes of a regular file of at most `limit` bytes."""
    with open_regular(path, what) as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise StudioError(f"{what} {path} is {size:,} bytes; more than {limit:,} is not a real one.")
        try:
            return f.read(limit + 1)
        except OSError as exc:
            raise StudioError(f"cannot read {what} {path}: {_why(exc)}.") from None


def inside(root: Path, name: str, what: str) -> Path:
    """`root / name` for a relative name that stays in `root` as written (no `..`, not absolute).

    Symlinks are not resolved on purpose: a Hugging Face cache snapshot links every
    file to a blob outside the snapshot folder, and that is fine; what is refused is
    a file named outside the folder by the index itself."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise StudioError(f"{what} names a file {name!r} that is not a file name.")
    for pure in (PurePosixPath(name), PureWindowsPath(name)):
        if pure.is_absolute() or pure.drive or ".." in pure.parts:
            raise StudioError(f"{what} names {name!r}, which is outside the model folder; refused.")
    return root / name


def read_text(path: Path, what: str, limit: int = 256 * 1024 * 1024) -> str:
    """The UTF-8 text of a regular, non-empty file of at most `limit` bytes; else one sentence."""
    data = read_capped(path, what, limit)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise StudioError(f"{what} {path} is not UTF-8 text.") from None
    if not text.strip():
        raise StudioError(f"{what} {path} is empty.")
    return text
