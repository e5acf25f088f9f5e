"""A follower acknowledges an append once its save is durable, not after a slow apply of
earlier entries on the apply thread (driver.py, `_apply_while_saving`)."""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from railyard.node.driver import Driver
from railyard.node.driver.applying import APPLY_INLINE_MAX_BYTES
from railyard.proto import commands_pb2 as cmd
from railyard.raft import (
    NO_TERM,
    Entry,
    Index,
    Message,
    MessageType,
    NodeId,
    RaftConfig,
    RaftCore,
    Term,
)
from railyard.storage import MemoryLogStore, SnapshotStore
from railyard.streams import StreamsMachine

LEADER, ME, OTHER = NodeId("n1"), NodeId("n2"), NodeId("n3")
TERM = Term(1)
SLOW_APPLY_S = 0.5
WAIT_S = 10.0


class Outbox:
    def __init__(self) -> None:
        self.sent: list[tuple[float, Message]] = []

    def send(self, messages: Sequence[Message]) -> None:
        self.sent.extend((time.monotonic(), m) for m in messages)

    def acked(self, index: int) -> float | None:
        for at, m in self.sent:
            if m.type is MessageType.APPEND_RESPONSE and m.success and m.match_index >= index:
                return at
        return None


def _append_entry(index: int) -> Entry:
    """An append of one record large enough that applying it goes to the apply thread."""
    command = cmd.Command(
        append_records=cmd.AppendRecordsCommand(
            stream="s",
            records=[cmd.Record(data=b"x" * (APPLY_INLINE_MAX_BYTES + 1))],
            timestamp_ms=1,
            create_if_missing=True,
        )
    )
    return Entry(TERM, Index(index), data=command.SerializeToString())


def _append(prev: int, entries: tuple[Entry, ...], commit: int) -> Message:
    return Message(
        type=MessageType.APPEND,
        to=ME,
        sender=LEADER,
        term=TERM,
        prev_log_index=Index(prev),
        prev_log_term=TERM if prev else NO_TERM,
        entries=entries,
        leader_commit=Index(commit),
    )


async def test_the_ack_of_a_save_leaves_before_a_slow_apply_of_earlier_entries_ends(
    tmp_path: Path,
) -> None:
    machine = StreamsMachine.open(tmp_path / "streams.db")
    applied_at: list[float] = []
    real_apply = machine.apply

    def slow_apply(entries: Sequence[tuple[int, bytes | None]]) -> object:
        if threading.current_thread() is not threading.main_thread():
            time.sleep(SLOW_APPLY_S)
        result = real_apply(entries)
        applied_at.append(time.monotonic())
        return result

    machine.apply = slow_apply  # type: ignore[method-assign]
    outbox = Outbox()
    voters = (LEADER, ME, OTHER)
    driver = Driver(
        node_id=ME,
        voters=voters,
        core=RaftCore(RaftConfig(node_id=ME, voters=voters), random.Random(1)),
        log_store=MemoryLogStore(),
        snapshots=SnapshotStore(tmp_path / "snapshots"),
        machine=machine,
        outbox=outbox,
        snapshot_every=10_000,
        election_ticks=10,
        applied=Index(0),
        applied_term=NO_TERM,
        snapshot_index=Index(0),
        log=logging.getLogger("test.follower"),
    )
    task = asyncio.create_task(driver.run())
    try:
        await driver.deliver(_append(0, (_append_entry(1),), 0))
        await _until(lambda: outbox.acked(1) is not None)
        # Entry 2 is to be saved while entry 1, now committed, is applied (slowly).
        await driver.deliver(_append(1, (_append_entry(2),), 1))
        await _until(lambda: bool(applied_at) and outbox.acked(2) is not None)
        acked = outbox.acked(2)
        assert acked is not None
        assert acked < applied_at[0], "the ack waited for the apply of an earlier entry"
        assert driver.applied == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        driver.shutdown_workers()
        machine.close()


async def _until(done: object) -> None:
    assert callable(done)
    deadline = time.monotonic() + WAIT_S
    while not done():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)
