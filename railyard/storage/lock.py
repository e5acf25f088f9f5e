"""An exclusive lock on a node's data directory.

Two node processes on one directory would interleave writes to the same log
and state databases and corrupt both; the lock turns that mistake into a
clear error at start-up. It is an `fcntl.flock` on `<dir>/LOCK`, which the
kernel releases when the holder exits, even by `kill -9`, so a crash never
leaves a stale lock behind. The holder writes its pid into the file so the
error can name it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

from railyard.storage.errors import DirectoryLocked

LOCK_FILE_NAME = "LOCK"


class DataDirLock:
    """Hold with `acquire()`/`release()` or as a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lock_file = self.path / LOCK_FILE_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise `DirectoryLocked` naming the directory and the holder's pid."""
        if self._fd is not None:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise DirectoryLocked(self.path, holder) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
