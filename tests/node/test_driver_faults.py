"""The driver in one process (one voter, stores in tmp_path) under disk faults, and how a
fatal error is described. Findings F8 and F10 of docs/FINDINGS.md."""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from railyard.node.api.status_codes import exception_error
from railyard.node.driver import Driver, LeadershipLost
from railyard.node.driver.disk_space import DiskFull
from railyard.node.process import describe_failure, leaves
from railyard.proto import commands_pb2 as cmd
from railyard.raft import (
    NO_TERM,
    Entry,
    HardState,
    Index,
    Message,
    NodeId,
    RaftConfig,
    RaftCore,
    Role,
)
from railyard.storage import MemoryLogStore, SnapshotStore, StoreIOError
from railyard.streams import CorruptState, StreamCreated, StreamsMachine

ME = NodeId("n1")
# Bounded waits in event-loop turns of WAIT_STEP_S each.
WAIT_STEPS = 500
WAIT_STEP_S = 0.01


class _NoPeers:
    def send(self, messages: Sequence[Message]) -> None:
        pass


class FlakyStore(MemoryLogStore):
    """A log store whose next save fails like SQLite on a full disk (and rolls back)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.fail_next_save = False

    def save(self, hard_state: HardState | None, entries: Sequence[Entry]) -> None:
        if self.fail_next_save:
            self.fail_next_save = False
            try:
                raise sqlite3.OperationalError("database or disk is full")
            except sqlite3.Error as exc:
                raise StoreIOError(self.path, str(exc)) from exc
        super().save(hard_state, entries)


@dataclass
class Running:
    driver: Driver
    store: FlakyStore
    task: asyncio.Task[None]

    async def until_leader(self) -> None:
        for _ in range(WAIT_STEPS):
            if self.driver.soft_state.role is Role.LEADER:
                return
            self.driver.post(self.driver.core.tick)
            await asyncio.sleep(WAIT_STEP_S)
        raise AssertionError("no leader")

    async def create(self, name: str) -> Any:
        command = cmd.Command(create_stream=cmd.CreateStreamCommand(name=name, timestamp_ms=1))
        return await asyncio.wait_for(self.driver.propose(command.SerializeToString()), 10)


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    store = FlakyStore(tmp_path / "raft.db")
    machine = StreamsMachine.open(tmp_path / "streams.db")
    config = RaftConfig(node_id=ME, voters=(ME,), election_ticks=2)
    driver = Driver(
        node_id=ME,
        core=RaftCore(config, random.Random(1)),
        log_store=store,
        snapshots=SnapshotStore(tmp_path / "snapshots"),
        machine=machine,
        outbox=_NoPeers(),
        snapshot_every=10_000,
        election_ticks=2,
        applied=Index(0),
        applied_term=NO_TERM,
        snapshot_index=Index(0),
        log=logging.getLogger("test.driver"),
        data_dir=tmp_path,
    )
    task = asyncio.create_task(driver.run())
    try:
        yield Running(driver, store, task)
    finally:
        task.cancel()
        with pytest.raises((asyncio.CancelledError, BaseExceptionGroup)):
            await task
        driver.shutdown_workers()
        machine.close()


async def test_a_save_on_a_full_disk_restarts_the_core_and_loses_nothing_acknowledged(
    running: Running,
) -> None:
    """F8: the failed save is not acknowledged, the node keeps running, and writes resume."""
    await running.until_leader()
    assert isinstance(await running.create("a"), StreamCreated)
    running.store.fail_next_save = True
    with pytest.raises(LeadershipLost):
        await running.create("b")
    assert not running.task.done(), "the driver stopped on a full disk"
    await running.until_leader()
    assert isinstance(await running.create("c"), StreamCreated)
    names = [s.name for s in await running.driver.machine_call(running.driver.machine.list_streams)]
    assert names == ["a", "c"]


async def test_writes_are_refused_while_the_disk_is_nearly_full(
    running: Running, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """F8: below the reserve, a write is refused before it is proposed, naming node and dir."""
    await running.until_leader()

    class Usage:
        free = 1000

    monkeypatch.setattr("railyard.node.driver.disk_space.shutil.disk_usage", lambda _path: Usage())
    running.driver.disk._free_bytes = None  # forget the cached figure
    with pytest.raises(DiskFull) as raised:
        await running.create("a")
    error = exception_error(raised.value)
    assert error is not None and error.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "n1" in error.message and str(tmp_path) in error.message
    monkeypatch.undo()
    running.driver.disk._free_bytes = None
    assert isinstance(await running.create("a"), StreamCreated)


def test_a_fatal_error_names_every_failure_and_its_first_cause() -> None:
    """F10: nested TaskGroup failures are unwrapped, and a cause hidden by a failing
    clean-up (a ROLLBACK after a failed fsync) is still named."""
    try:
        try:
            raise sqlite3.OperationalError("disk I/O error")
        except sqlite3.Error:
            raise sqlite3.OperationalError("cannot rollback - no transaction is active")  # noqa: B904
    except sqlite3.Error as exc:
        inner = StoreIOError(Path("/data/n1/raft.db"), str(exc))
        inner.__cause__ = exc
    group = ExceptionGroup("outer", [ExceptionGroup("inner", [inner]), ValueError("x")])
    found = leaves(group)
    assert found[0] is inner and isinstance(found[1], ValueError)
    line = describe_failure(found[0])
    assert "raft.db" in line and "disk I/O error" in line, line


async def test_a_damaged_state_found_while_serving_is_data_loss_and_stops_the_node(
    running: Running, tmp_path: Path
) -> None:
    """F11: a read that finds a record failing its checksum answers DATA_LOSS naming the
    file (not UNKNOWN), and the node stops rather than serve a diverged replica."""
    await running.until_leader()

    def damaged_read() -> None:
        raise CorruptState(tmp_path / "streams.db", "record 1 of 's' fails its checksum")

    with pytest.raises(CorruptState) as raised:
        await running.driver.machine_call(damaged_read)
    error = exception_error(raised.value)
    assert error is not None and error.code is grpc.StatusCode.DATA_LOSS
    assert "streams.db" in error.message
    with pytest.raises(BaseExceptionGroup) as stopped:
        await asyncio.wait_for(asyncio.shield(running.task), 10)
    assert any("damaged state" in str(e) for e in leaves(stopped.value))


async def test_a_snapshot_is_taken_after_enough_bytes_whatever_the_entry_count(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The in-memory log is bounded in bytes too (snapshot_every is 10,000 entries here)."""
    monkeypatch.setattr("railyard.node.driver.snapshotting.SNAPSHOT_EVERY_BYTES", 8)
    await running.until_leader()
    assert isinstance(await running.create("a-stream-name"), StreamCreated)
    for _ in range(WAIT_STEPS):
        if running.driver.stats.snapshots_taken:
            break
        await asyncio.sleep(WAIT_STEP_S)
    assert running.driver.stats.snapshots_taken == 1
    assert running.driver.snapshotter.snapshot_index == running.driver.applied
