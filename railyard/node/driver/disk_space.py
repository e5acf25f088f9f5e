"""Guarding the data directory's disk: refuse writes before the disk is full.

A full disk is the one storage failure a node survives. `DiskGuard` keeps a
reserve of free space so the stores rarely meet ENOSPC at all, and
`is_disk_full` tells a failure that did meet it from one that is fatal.

Invariants:
- A client write is refused before it is proposed (`DiskFull`, which the
  services answer with RESOURCE_EXHAUSTED) while the disk has less than
  `DISK_RESERVE_BYTES` plus the write's amplified size free. Once one write
  is refused, every write is refused until the next look at the disk, so a
  stream's later batch cannot pass where an earlier one failed.
- A follower persists appends down to `FOLLOWER_RESERVE_SHARE` of the
  reserve and leaves them unanswered below it (the leader resends later), so
  a leader whose disk is as full as its followers' refuses client writes
  before it loses its quorum.
- The kernel is asked at most every `DISK_CHECK_INTERVAL_S`; in between,
  admitted writes are subtracted from the last figure, so the guard errs
  towards refusing.
- A received snapshot is refused before it is written when it declares
  more than `snapshot_room`, and cut off when it grows past it.
- Warnings about a full disk are rate-limited; the guard never raises
  anything but `DiskFull`, and an unreadable disk usage counts as "not
  watched" (a real failure is met by the stores and classified there).

It knows nothing of the Raft core or the stores: it sees sizes, messages
from peers, and the data directory.
"""

from __future__ import annotations

import errno
import logging
import shutil
import sqlite3
import time
from pathlib import Path

from railyard.raft import Message, NodeId

# Writes are refused while the data directory's disk has less than this free:
# room for SQLite's WAL checkpoints, a snapshot's metadata and the batches in
# flight, so the stores never meet ENOSPC halfway through a transaction.
DISK_RESERVE_BYTES = 1 << 20
# Bytes of disk one byte of command takes before a checkpoint frees the WAL:
# the log's WAL and main file, the state's WAL and main file.
WRITE_AMPLIFICATION = 4
# Bytes of disk one byte of a received snapshot takes: the staged file and the
# state database restored from it.
SNAPSHOT_AMPLIFICATION = 2
# A follower keeps accepting appends down to this share of the reserve, so a
# leader with a disk as full as its followers' refuses client writes first
# (RESOURCE_EXHAUSTED) instead of losing its quorum.
FOLLOWER_RESERVE_SHARE = 0.5
# Free space is asked of the kernel at most this often (a statvfs); between
# two looks, admitted writes are subtracted from the last figure.
DISK_CHECK_INTERVAL_S = 0.05
# Warnings about a full disk are logged at most this often.
DISK_WARNING_INTERVAL_S = 5.0
# SQLite's primary result code for "database or disk is full" (SQLITE_FULL).
SQLITE_FULL = 13
# Causes followed down an exception chain looking for a full disk: the chain
# is short (a store error raised from an sqlite3 or OS error); bounded anyway.
MAX_CAUSES = 8


class DiskFull(Exception):
    """The data directory's disk is (nearly) full: the write was refused, nothing was proposed."""

    def __init__(self, node_id: NodeId, data_dir: Path, free_bytes: int, needed_bytes: int) -> None:
        super().__init__(
            f"node {node_id}: data dir {data_dir}: disk full ({free_bytes} bytes free, a write "
            f"needs {needed_bytes}); writes are refused until space is freed, reads still work"
        )
        self.node_id = node_id
        self.data_dir = data_dir
        self.free_bytes = free_bytes


class DiskGuard:
    """Free space of one data directory's disk, checked before writes; see the module docstring.

    `data_dir=None` watches nothing: every write is admitted.
    """

    def __init__(self, node_id: NodeId, data_dir: Path | None, log: logging.Logger) -> None:
        self.node_id = node_id
        self.data_dir = data_dir
        self.log = log
        # Free space of the data directory's disk (None: not looked at yet).
        self._free_bytes: int | None = None
        self._free_checked_at = -DISK_CHECK_INTERVAL_S
        self._disk_warned_at = -DISK_WARNING_INTERVAL_S

    def check_writable(self, size: int = 0) -> None:
        """Raise DiskFull unless the disk has room for a write of `size` bytes and the reserve."""
        needed = DISK_RESERVE_BYTES + WRITE_AMPLIFICATION * size
        free = self._disk_free()
        if free is None:
            return
        if free < needed:
            assert self.data_dir is not None
            self.warn_disk_full(f"refusing writes: {free} bytes free in {self.data_dir}")
            # Refuse every write until the next look at the disk, small ones
            # too: a stream's later batch must not pass where an earlier failed.
            self._free_bytes = 0
            raise DiskFull(self.node_id, self.data_dir, free, needed)
        self._free_bytes = free - WRITE_AMPLIFICATION * size

    def follower_has_room(self, message: Message) -> bool:
        """Whether a follower may persist the entries of an APPEND (else it drops it)."""
        if not message.entries:
            return True
        size = sum(len(e.data) for e in message.entries)
        free = self._disk_free()
        needed = int(DISK_RESERVE_BYTES * FOLLOWER_RESERVE_SHARE) + WRITE_AMPLIFICATION * size
        if free is None or free >= needed:
            if free is not None:
                self._free_bytes = free - WRITE_AMPLIFICATION * size
            return True
        self.warn_disk_full(
            f"dropping appends from {message.sender}: {free} bytes free in {self.data_dir}"
        )
        return False

    def snapshot_room(self) -> int | None:
        """The largest snapshot this node may receive now: free space less the reserve,
        shared by the staged file and the state restored from it (None: not watched)."""
        free = self._disk_free()
        if free is None:
            return None
        return max(0, (free - DISK_RESERVE_BYTES) // SNAPSHOT_AMPLIFICATION)

    def warn_disk_full(self, what: str) -> None:
        """Log `what` as a full-disk warning, at most once every DISK_WARNING_INTERVAL_S."""
        now = time.monotonic()
        if now - self._disk_warned_at >= DISK_WARNING_INTERVAL_S:
            self._disk_warned_at = now
            self.log.warning("disk full: %s", what)

    def free_bytes(self) -> int | None:
        """Free bytes as last looked at (at most DISK_CHECK_INTERVAL_S ago, less what was
        admitted since); None when no data directory is watched or it cannot be read."""
        return self._disk_free()

    def _disk_free(self) -> int | None:
        if self.data_dir is None:
            return None
        now = time.monotonic()
        if self._free_bytes is None or now - self._free_checked_at >= DISK_CHECK_INTERVAL_S:
            try:
                self._free_bytes = shutil.disk_usage(self.data_dir).free
            except OSError:
                return None
            self._free_checked_at = now
        return self._free_bytes


def is_disk_full(exc: BaseException) -> bool:
    """Whether a storage failure (or what it was raised from) is a full disk."""
    seen: BaseException | None = exc
    for _ in range(MAX_CAUSES):
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            return True
        if isinstance(seen, sqlite3.Error) and getattr(seen, "sqlite_errorcode", None) == (
            SQLITE_FULL
        ):
            return True
        if "disk is full" in str(seen) or "no space left" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False
