"""Exceptions of the streams machine: misuse and broken invariants only.

Bad requests are never exceptions here (see `results.py`). These are for a
driver that applies entries out of order, or a state file that cannot be
used; the node must stop rather than continue with a diverged state.
"""

from __future__ import annotations

from pathlib import Path


class StreamsError(Exception):
    """Base of the exceptions the streams machine raises."""


class CorruptState(StreamsError):
    """A state database or snapshot file failed to open or its integrity check."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: corrupt streams state: {problem}")


class ApplyOrderError(StreamsError):
    """An entry was handed to `apply` after a gap: some committed entry was skipped."""

    def __init__(self, index: int, last_applied: int) -> None:
        self.index = index
        self.last_applied = last_applied
        super().__init__(f"entry {index} applied after {last_applied}: entries must be contiguous")


class StateIOError(StreamsError):
    """The disk failed a read or write of the state database (full, I/O error)."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: disk error: {problem}")
