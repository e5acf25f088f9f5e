"""Snapshots of the state machine: taking one and compacting the log, installing a received one.

The driver owns a `Snapshotter` and calls it at fixed points of its loop:
`maybe_snapshot` after each Ready, `install` when a Ready carries a snapshot
the core accepted, `receive` when a SNAPSHOT message arrives with its bytes
staged, `discard_refused` at the end of each round. The snapshotter borrows
the driver's ways of running work (`DriverCalls`: a call inside the driver,
the reads thread, the log thread) and compacts the core through a callable,
because the driver may rebuild its core after a full disk.

Invariants:
- A snapshot is taken every `snapshot_every` applied entries, or once the
  entries applied since the last one hold `SNAPSHOT_EVERY_BYTES`: the core
  keeps the log after the last compaction in memory, so memory stays
  bounded whatever the entries' size. One snapshot is in flight at a time.
- The state is frozen on the driver's loop, between two applies
  (`StreamsMachine.freeze`), so it is exactly the state at the snapshot's
  index; it is copied on the snapshot thread, so neither applying nor reads
  wait for the copy.
- The core is compacted (inside the driver, between steps) and then the log
  store, only after the snapshot file is durable. A snapshot that meets a
  full disk is given up and retried later: the log still holds everything.
  Any other failure is fatal.
- A received snapshot becomes the node's latest only once the core accepted
  its SNAPSHOT message (its meta comes back in `Ready.snapshot`); the staged
  files of refused ones are deleted at the end of the round, so none can be
  taken for the node's own snapshot at the next start.
- Every snapshot taken or installed is timed here and nowhere else: its
  duration goes to its log line and to `on_snapshot` (the metrics record
  what they are told).
- Installing orders its effects for a crash in between: the snapshot file
  is installed first (start-up restores a state machine behind it), the log
  is reset last (start-up compacts a log behind the latest snapshot). A copy
  of our own state still reading the file is waited for first.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from railyard.node.driver.disk_space import DISK_WARNING_INTERVAL_S, DiskGuard, is_disk_full
from railyard.node.driver.fatal import FatalError
from railyard.node.observability import event
from railyard.raft import NO_INDEX, Index, SnapshotMeta, Term
from railyard.storage import LogStore, SnapshotReceiver, SnapshotStore
from railyard.streams import FrozenState, StreamsMachine

T = TypeVar("T")

# A snapshot is also taken once the entries applied since the last one hold
# this many bytes of data, whatever `snapshot_every` says: the core keeps the
# log after the last compaction in memory, so this bounds a node's memory
# when entries are large (500-record batches of ~55 KB each).
SNAPSHOT_EVERY_BYTES = 64 << 20


class DriverCalls(Protocol):
    """The driver's ways of running work, which snapshotting borrows (see `Driver`)."""

    async def call(self, fn: Callable[[], T]) -> T: ...

    async def machine_call(self, fn: Callable[..., T], *args: Any) -> T: ...

    async def log_call(self, fn: Callable[..., T], *args: Any) -> T: ...


@dataclass
class SnapshotStats:
    """Counters for Status."""

    snapshots_taken: int = 0
    snapshots_installed: int = 0


class Snapshotter:
    """Takes and installs snapshots for one driver; see the module docstring."""

    def __init__(
        self,
        *,
        driver: DriverCalls,
        compact_core: Callable[[SnapshotMeta], None],
        snapshot_meta: Callable[[Index], SnapshotMeta],
        snapshots: SnapshotStore,
        machine: StreamsMachine,
        log_store: LogStore,
        snapshot_every: int,
        snapshot_index: Index,
        disk: DiskGuard,
        log: logging.Logger,
        on_snapshot: Callable[[float], None] | None = None,
    ) -> None:
        self.driver = driver
        self.compact_core = compact_core
        # The core's metadata, with the configuration in force at the index,
        # so a snapshot carries the membership to whoever installs it.
        self.snapshot_meta = snapshot_meta
        self.snapshots = snapshots
        self.machine = machine
        self.log_store = log_store
        self.snapshot_every = snapshot_every
        self.snapshot_index = snapshot_index
        self.disk = disk
        self.log = log
        # Told each snapshot's duration in seconds (taken or installed): the
        # metrics' histogram, which measures nothing itself.
        self.on_snapshot = on_snapshot
        self.stats = SnapshotStats()
        self.io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="snapshot")
        self._received: dict[tuple[Index, Term], SnapshotReceiver] = {}
        self._task: asyncio.Task[None] | None = None
        self._write: asyncio.Future[Path] | None = None
        self._retry_at = 0.0
        self._bytes_since_snapshot = 0

    def shutdown(self) -> None:
        """Wait for the snapshot copy in progress to finish (called at exit)."""
        self.io.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------ taking

    def note_applied(self, size: int) -> None:
        """Count `size` bytes of entry data applied (towards SNAPSHOT_EVERY_BYTES)."""
        self._bytes_since_snapshot += size

    def maybe_snapshot(self, tg: asyncio.TaskGroup | None, applied: Index) -> None:
        """Every `snapshot_every` entries or `SNAPSHOT_EVERY_BYTES` applied: snapshot, compact.

        Called on the driver's loop between two applies, with the index of
        the last applied entry; the copy and the compaction run in a task of
        `tg`.
        """
        if self._task is not None or tg is None:
            return
        if time.monotonic() < self._retry_at:
            return
        if applied == NO_INDEX or applied <= self.snapshot_index:
            return
        if (
            applied - self.snapshot_index < self.snapshot_every
            and self._bytes_since_snapshot < SNAPSHOT_EVERY_BYTES
        ):
            return
        self._bytes_since_snapshot = 0
        meta = self.snapshot_meta(applied)
        try:
            # Frozen here, between two applies: exactly the state at `meta.index`.
            frozen = self.machine.freeze()
        except Exception as exc:
            raise FatalError(f"cannot snapshot the state at index {meta.index}: {exc}") from exc
        write = asyncio.get_running_loop().run_in_executor(
            self.io, self._write_snapshot, meta, frozen
        )
        self._write = write
        self._task = tg.create_task(self._finish_snapshot(meta, write, time.perf_counter()))

    def _write_snapshot(self, meta: SnapshotMeta, frozen: FrozenState) -> Path:
        try:
            return self.snapshots.create(meta, frozen.write_to)
        finally:
            frozen.close()

    async def _finish_snapshot(
        self, meta: SnapshotMeta, write: asyncio.Future[Path], started: float
    ) -> None:
        try:
            await write
            await self.driver.call(lambda: self._compact(meta))
            await self.driver.log_call(self.log_store.compact, meta)
        except Exception as exc:
            if not is_disk_full(exc):
                raise FatalError(f"cannot write snapshot at index {meta.index}: {exc}") from exc
            # A snapshot is an optimisation: the log still holds everything.
            self._retry_at = time.monotonic() + DISK_WARNING_INTERVAL_S
            self.disk.warn_disk_full(f"snapshot at index {meta.index} not written: {exc}")
            return
        finally:
            self._task = None
            self._write = None
        self.stats.snapshots_taken += 1
        self._report("snapshot_taken", "snapshot index=%d term=%d; log compacted", meta, started)

    def _compact(self, meta: SnapshotMeta) -> None:
        if meta.index > self.snapshot_index:
            self.compact_core(meta)
            self.snapshot_index = meta.index

    # ------------------------------------------------------------ receiving

    def receive(self, meta: SnapshotMeta, receiver: SnapshotReceiver) -> None:
        """Remember the staged file of a SNAPSHOT message about to be stepped.

        A second message for the same snapshot replaces the first one's file.
        """
        key = (meta.index, meta.term)
        previous = self._received.pop(key, None)
        if previous is not None:
            previous.abort()
        self._received[key] = receiver

    async def install(self, meta: SnapshotMeta) -> None:
        """Make the accepted snapshot the latest, restore the state machine from it, reset the log.

        Order matters for a crash in between: the file is installed first
        (start-up restores a state machine behind it), the log is reset last
        (start-up compacts a log behind the latest snapshot).
        """
        started = time.perf_counter()
        receiver = self._received.pop((meta.index, meta.term), None)
        if self._write is not None:
            # A copy of our own state still reads the file about to be replaced.
            await asyncio.wait([self._write])
        try:
            if receiver is not None:
                path = await self.driver.machine_call(receiver.install)
            else:
                latest = await self.driver.machine_call(self.snapshots.latest)
                if latest is None or (latest[0].index, latest[0].term) != (meta.index, meta.term):
                    raise FatalError(f"the core installed snapshot {meta} but its file is missing")
                path = latest[1]
            await self.driver.machine_call(self.machine.restore_from, path)
            await self.driver.log_call(self._reset_log, meta)
        except Exception as exc:
            raise FatalError(f"cannot install snapshot at index {meta.index}: {exc}") from exc
        self.snapshot_index = meta.index
        self.stats.snapshots_installed += 1
        self._report("snapshot_installed", "installed snapshot index=%d term=%d", meta, started)

    def _report(self, kind: str, message: str, meta: SnapshotMeta, started: float) -> None:
        """A snapshot's duration, measured here only, to `on_snapshot` and its log line."""
        seconds = time.perf_counter() - started
        if self.on_snapshot is not None:
            self.on_snapshot(seconds)
        self.log.info(
            message,
            meta.index,
            meta.term,
            extra=event(kind, index=meta.index, term=meta.term, seconds=seconds),
        )

    def _reset_log(self, meta: SnapshotMeta) -> None:
        self.log_store.compact(meta)
        if self.log_store.last_index() > meta.index:
            self.log_store.truncate_suffix(Index(meta.index + 1))

    def discard_refused(self) -> None:
        """Delete the staged files of SNAPSHOT messages the core did not accept this round."""
        for receiver in self._received.values():
            self.log.info(
                "discarded snapshot index=%d term=%d: not accepted",
                receiver.meta.index,
                receiver.meta.term,
            )
            receiver.abort()  # one unlink of a temporary file
        self._received.clear()

    def abort_received(self) -> None:
        """Delete the staged files of every received snapshot, silently (the node is stopping)."""
        for receiver in self._received.values():
            receiver.abort()
        self._received.clear()
