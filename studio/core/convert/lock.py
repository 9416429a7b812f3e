"""One conversion at a time per destination: an exclusive lock on `.OUT.lock` beside it.

`fcntl.flock` exists on macOS and Linux; the kernel drops the lock when the
process dies, so a killed run never leaves a stale lock. The lock file is
removed when the run ends; a run that opened the file just before that removal
notices (the path no longer names the file it locked) and takes a fresh one.
Where `fcntl` does not exist, creating the file exclusively stands in for it
(a killed run then leaves the file, and the message says which file to remove).
"""

from __future__ import annotations

import os
from pathlib import Path

from studio.core.errors import StudioError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


class DestinationLock:
    def __init__(self, path: Path, partial: Path):
        self.path, self.partial = path, partial
        self.fd: int | None = None

    def _busy(self, holder: str = "") -> StudioError:
        who = f" (process {holder})" if holder.strip().isdigit() else ""
        extra = "" if fcntl else f"; if none is running, remove {self.path}"
        return StudioError(f"another conversion{who} is writing to {self.partial}; wait for it to finish or stop "
                           f"it{extra}.")

    def acquire(self) -> "DestinationLock":
        if fcntl is None:
            try:
                self.fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                raise self._busy(_read(self.path)) from None
            os.write(self.fd, str(os.getpid()).encode())
            return self
        for _ in range(100):
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _read(self.path)
                os.close(fd)
                raise self._busy(holder) from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, str(os.getpid()).encode())
                self.fd = fd
                return self
            os.close(fd)  # the holder removed the file as we opened it: lock the new one
        raise self._busy()

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)  # while still locked, so no other run holds this file
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _read(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(32).decode("ascii", "replace")
    except OSError:
        return ""
