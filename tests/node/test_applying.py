"""Applier: the state database is checkpointed beside the applies, never inside one."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from railyard.node.driver import applying
from railyard.node.driver.applying import Applier
from railyard.node.driver.fatal import FatalError
from railyard.raft import Entry, EntryKind, Index, Term
from railyard.streams import StreamsMachine
from tests.streams.helpers import workload

ENTRIES = 60
# Small enough that a few dozen single-record entries call for several checkpoints.
EVERY_BYTES = 4 * applying.COMMIT_PAGES_BYTES


def entries(count: int, first: int = 1) -> list[Entry]:
    datas = workload(seed=11, count=first + count - 1)[first - 1 :]
    return [
        Entry(term=Term(1), index=Index(i), kind=EntryKind.NORMAL, data=d)
        for i, d in enumerate(datas, start=first)
    ]


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[StreamsMachine]:
    m = StreamsMachine.open(tmp_path / "state.db")
    try:
        yield m
    finally:
        m.close()


async def test_checkpoints_run_on_their_own_thread_one_at_a_time(
    machine: StreamsMachine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(applying, "CHECKPOINT_EVERY_BYTES", EVERY_BYTES)
    threads: list[str] = []
    running = 0
    overlapped = False
    real = machine.checkpoint

    def checkpoint() -> None:
        nonlocal running, overlapped
        running += 1
        overlapped |= running > 1
        threads.append(threading.current_thread().name)
        real()
        running -= 1

    monkeypatch.setattr(machine, "checkpoint", checkpoint)
    applier = Applier(machine)
    try:
        for entry in entries(ENTRIES):
            await applier.apply([entry], len(entry.data))
            await asyncio.sleep(0.001)  # a checkpoint may finish between applies
    finally:
        applier.shutdown()
    assert len(threads) >= 2
    assert all(name.startswith("checkpoint") for name in threads)
    assert not overlapped
    assert machine.last_applied == ENTRIES


async def test_a_failed_checkpoint_stops_the_node_at_the_next_apply(
    machine: StreamsMachine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(applying, "CHECKPOINT_EVERY_BYTES", EVERY_BYTES)

    def broken() -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(machine, "checkpoint", broken)
    applier = Applier(machine)
    try:
        with pytest.raises(FatalError, match="cannot checkpoint the state database"):
            for entry in entries(ENTRIES):
                await applier.apply([entry], len(entry.data))
                await asyncio.sleep(0.001)
    finally:
        applier.shutdown()
