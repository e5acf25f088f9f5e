"""A durable note that this node is awaiting catch-up after starting with an empty store.

The core refuses votes for candidates with a log while `awaiting_catch_up`
(see `raft/election.py`), but the core's state lives in memory: a node that
crashed midway through catching up would restart with some entries on disk,
look like any node with a log, and vote at once, for a candidate that may
lack entries this node acknowledged before its store was lost. The marker
file closes that hole: created (and synced) before the node first steps a
message, removed only once the core has left the state, and honoured at
every start while it exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from railyard.storage import fsync_directory

MARKER_FILE = "awaiting-catch-up"
# How often `clear_when_caught_up` looks, only while a marker exists (a node
# that started empty, for well under a second): until the marker is gone,
# a restart counts the node as still catching up, and two such nodes of
# three can elect nobody (docs/FINDINGS.md, F14), so the window stays short.
CATCH_UP_POLL_S = 0.005


def marker_path(data_dir: Path) -> Path:
    return data_dir / MARKER_FILE


def note_awaiting(data_dir: Path) -> None:
    """Create the marker durably (file and directory synced); a no-op if it exists."""
    path = marker_path(data_dir)
    if path.exists():
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, b"started with an empty store; votes after catching up with a leader\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_directory(data_dir)


def forget_awaiting(data_dir: Path) -> None:
    """Remove the marker durably."""
    with contextlib.suppress(FileNotFoundError):
        marker_path(data_dir).unlink()
        fsync_directory(data_dir)


async def clear_when_caught_up(
    data_dir: Path,
    awaiting: Callable[[], bool],
    commit_index: Callable[[], int],
    applied_index: Callable[[], int],
    interval_s: float,
    log: logging.Logger,
) -> None:
    """Remove the marker once the core left `awaiting_catch_up` durably.

    The core leaves the state when its commit index reaches the target, as
    it steps the append that carries the entries there: before they are on
    disk. The marker goes only once this node has applied up to that commit
    index, since entries are applied only after they are persisted here; a
    crash in between finds the marker and waits again.
    """
    if not marker_path(data_dir).exists():
        return
    while awaiting():
        await asyncio.sleep(interval_s)
    caught_up_at = commit_index()
    while applied_index() < caught_up_at:
        await asyncio.sleep(interval_s)
    await asyncio.to_thread(forget_awaiting, data_dir)
    log.info("caught up with the leader: votes normally again")
