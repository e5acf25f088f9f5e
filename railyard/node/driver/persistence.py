"""Persisting a Ready: entries and hard state in one log-store transaction.

The driver owns one `LogWriter`: `start_save` hands a Ready's entries and
hard state to the log thread, `finish_save` waits for the fsync, and after a
save that met a full disk `rebuild_core` builds a core from what is durable,
as a restart would (`build_core`, the one place a core is built: start-up
uses it too).

Invariants:
- Entries and hard state go in ONE `LogStore.save` (one fsync), on the
  driver's log thread, so saves land in submission order.
- A hard state that changed only its commit index is not fsync'd on its own:
  the commit index is volatile in Raft (Figure 2) and a restart learns it
  again from the leader (etcd's MustSync makes the same call). It rides along
  with the next write of entries.
- A storage error is fatal (`FatalError`): the node stops rather than
  acknowledge what might not be on disk. One exception: a save that meets a
  full disk (its transaction rolled back, nothing acknowledged) raises
  `SaveFailedDiskFull`, and the driver rebuilds its core from the store
  (`rebuild_core`) so reads go on. A disk that stays full for
  `MAX_RESTARTS_ON_FULL_DISK` rebuilds in a row is fatal.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from railyard.node.driver.catch_up import marker_path
from railyard.node.driver.disk_space import is_disk_full
from railyard.node.driver.fatal import FatalError
from railyard.raft import Entry, HardState, Index, RaftConfig, RaftCore
from railyard.storage import LogStore

# Core restarts after a save that met a full disk, in a row (no successful
# save in between), before the node gives up and stops.
MAX_RESTARTS_ON_FULL_DISK = 20


class SaveFailedDiskFull(Exception):
    """A log save met a full disk: nothing of it is durable (the transaction rolled back)."""


@dataclass(slots=True)
class Saving:
    """A save handed to the log thread, which `LogWriter.finish_save` waits on."""

    future: asyncio.Future[float]  # the save's own duration, in seconds
    hard_state: HardState | None
    count: int
    started: float


class LogWriter:
    """Writes one driver's Readys to its log store; see the module docstring."""

    def __init__(
        self,
        log_store: LogStore,
        io: concurrent.futures.ThreadPoolExecutor,
        log: logging.Logger,
        on_saved: Callable[[float], None] | None = None,
    ) -> None:
        self.log_store = log_store
        self.io = io
        self.log = log
        # Told each successful save's duration in seconds, on the event loop.
        self.on_saved = on_saved
        # The hard state last written, and a newer one that differs from it
        # only in commit_index (not worth an fsync of its own, see start_save).
        self._saved_hard_state = log_store.hard_state()
        self._unsaved_hard_state: HardState | None = None
        self._restarts_on_full_disk = 0

    def start_save(
        self, hard_state: HardState | None, entries: Sequence[Entry], *, inline: bool = False
    ) -> Saving | None:
        """Hand entries and hard state to the log thread as one transaction (one fsync).

        Returns what `finish_save` waits on, or None when nothing needs
        writing. A hard state that changed only its commit index is not
        written on its own (see the module docstring): it rides along with
        the next write instead. With `inline`, the save runs here, on the
        caller's thread, and is done when this returns: the caller knows
        nothing else uses the log store meanwhile and has nothing to do
        while it waits (see `Driver._handle_ready`).
        """
        if hard_state is not None:
            saved = self._saved_hard_state
            if not entries and (hard_state.current_term, hard_state.voted_for) == (
                saved.current_term,
                saved.voted_for,
            ):
                self._unsaved_hard_state = hard_state
                return None
        elif self._unsaved_hard_state is not None and entries:
            hard_state = self._unsaved_hard_state
        if hard_state is None and not entries:
            return None
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        if inline:
            future: asyncio.Future[float] = loop.create_future()
            try:
                future.set_result(self._save(hard_state, entries))
            except Exception as exc:
                future.set_exception(exc)
        else:
            future = loop.run_in_executor(self.io, self._save, hard_state, entries)
        return Saving(future, hard_state, len(entries), started)

    def _save(self, hard_state: HardState | None, entries: Sequence[Entry]) -> float:
        """On the log thread: timed there, so the figure is the save's alone (seconds)."""
        started = time.perf_counter()
        self.log_store.save(hard_state, entries)
        return time.perf_counter() - started

    async def finish_save(self, saving: Saving) -> None:
        """Wait for the save to be durable; raise SaveFailedDiskFull or FatalError if it failed."""
        try:
            seconds = await saving.future
        except Exception as exc:
            if is_disk_full(exc):
                raise SaveFailedDiskFull(f"cannot persist the raft log: {exc}") from exc
            raise FatalError(f"cannot persist the raft log: {exc}") from exc
        self._restarts_on_full_disk = 0
        if self.on_saved is not None:
            self.on_saved(seconds)
        if saving.hard_state is not None:
            self._saved_hard_state = saving.hard_state
            self._unsaved_hard_state = None
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug(
                "persisted %d entries in %.1f ms",
                saving.count,
                (time.perf_counter() - saving.started) * 1e3,
            )

    async def rebuild_core(
        self, failure: SaveFailedDiskFull, old: RaftCore, applied: Index, data_dir: Path | None
    ) -> RaftCore:
        """After a save met a full disk: a core rebuilt from what is durable.

        The failed transaction rolled back, so the log store holds exactly
        what was durable before it; nothing of that Ready was acknowledged
        (persisted messages leave only after the save). A core rebuilt from
        the store is the core of a node that crashed and restarted at this
        point -- a case Raft handles at any moment -- without losing the
        process: reads go on, the leader (if this node was it) steps down,
        and writes resume when space returns. Exiting instead would also be
        safe, but would take reads away from a node whose only fault is a
        full disk. A disk that stays full after many restarts in a row is
        fatal. A node that has not durably caught up since it started with an
        empty store (see `catch_up.py`) keeps refusing votes for candidates
        with a log.
        """
        self._restarts_on_full_disk += 1
        if self._restarts_on_full_disk > MAX_RESTARTS_ON_FULL_DISK:
            raise FatalError(f"{failure} ({MAX_RESTARTS_ON_FULL_DISK} times in a row)") from failure
        self.log.error("%s; restarting the core from what is on disk", failure)
        # Still catching up if the old core was, or if what caught it up was
        # in the save that failed: the marker outlives both until it is durable.
        started_empty = old.status().awaiting_catch_up or (
            data_dir is not None and marker_path(data_dir).exists()
        )
        loop = asyncio.get_running_loop()
        rebuild = functools.partial(build_core, started_empty=started_empty)
        core = await loop.run_in_executor(
            self.io, rebuild, self.log_store, old.config, old.rng, applied
        )
        self._saved_hard_state = self.log_store.hard_state()
        self._unsaved_hard_state = None
        return core


def build_core(
    store: LogStore,
    config: RaftConfig,
    rng: random.Random,
    applied: Index,
    *,
    started_empty: bool,
) -> RaftCore:
    """The core of a node whose log store holds what is durable (blocking: reads the store).

    Built from the hard state, the snapshot metadata, the entries after it
    and the state machine's `applied` index: entries between `applied` and
    the commit index are applied again. The one place a core is built, at
    start-up and after a save met a full disk.
    """
    hard_state = store.hard_state()
    if hard_state.commit_index < applied:
        # Applied entries are committed by definition (a snapshot installed
        # just before a crash can be ahead of the stored commit index).
        hard_state = replace(hard_state, commit_index=applied)
    return RaftCore(
        config,
        rng,
        hard_state=hard_state,
        snapshot=store.snapshot_meta(),
        entries=store.entries(store.first_index(), Index(store.last_index() + 1)),
        applied=applied,
        started_empty=started_empty,
    )
