"""Errors of the storage ring.

Start-up problems (another cluster's store, a corrupt file, a data
directory held by another process) raise a subclass of `StorageError`
whose message names the file and what is wrong, so an operator can act on
it without reading code. A broken invariant (a gap in the log handed to
`save`) also raises: the node must stop rather than diverge.
"""

from __future__ import annotations

from pathlib import Path


class StorageError(Exception):
    """Base of every error the storage ring raises."""


class StoreMismatch(StorageError):
    """The store on disk belongs to another cluster or node."""

    def __init__(self, path: Path, found: tuple[str, str], expected: tuple[str, str]) -> None:
        self.path = path
        self.found = found
        self.expected = expected
        super().__init__(
            f"{path}: written by cluster {found[0]!r} node {found[1]!r}, "
            f"but this node is cluster {expected[0]!r} node {expected[1]!r}; "
            "refusing to use another node's log"
        )


class CorruptStore(StorageError):
    """A store file failed to open or failed its integrity check."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: corrupt store: {problem}")


class CorruptSnapshot(StorageError):
    """A snapshot's bytes do not match the checksum they were sent with."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: corrupt snapshot: {problem}")


class DirectoryLocked(StorageError):
    """Another process holds the data directory."""

    def __init__(self, path: Path, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        holder = f"process {pid}" if pid is not None else "another process"
        super().__init__(
            f"{path}: data directory is locked by {holder}; is another node already running on it?"
        )


class LogCompacted(StorageError):
    """Entries before the first index were requested: they are in the snapshot."""

    def __init__(self, lo: int, first_index: int) -> None:
        self.lo = lo
        self.first_index = first_index
        super().__init__(f"entries from index {lo} were compacted; the log starts at {first_index}")


class LogGap(StorageError):
    """Entries handed to `save` do not continue the stored log (a driver bug)."""


class StoreIOError(StorageError):
    """The disk failed a store's read or write (full, I/O error): the node must stop."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: disk error: {problem}")
