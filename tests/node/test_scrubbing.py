"""A start checks what is bounded by the streams; the scrub checks every record after it.

A record damaged in the middle of a stream no longer refuses the start
(`recovery.open_state` reads the ends of each stream only), but the
driver's background scrub (`driver/scrubbing.py`) finds it within a bounded
time, logs the file and the record, and stops the node with a FatalError.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest

from railyard.config import parse_config
from railyard.node.driver import FatalError
from railyard.node.driver.scrubbing import Scrubber
from railyard.node.observability import NodeMetrics
from railyard.node.recovery import STATE_FILE, open_state
from railyard.raft import Entry, EntryKind, HardState, Index, NodeId, Term
from railyard.streams import StreamsMachine
from tests.streams.helpers import append, create

CONFIG = """
[cluster]
name = "scrub"
data_dir = "data"

[[nodes]]
id = "n1"
address = "127.0.0.1:1"
[[nodes]]
id = "n2"
address = "127.0.0.1:2"
[[nodes]]
id = "n3"
address = "127.0.0.1:3"
"""
LOG = logging.getLogger("test.scrub")
BATCHES = 40
PER_BATCH = 500  # 20,000 records in stream "s": 10 steps of the scrub
DAMAGED = 12_345  # a record in the middle of the stream
# A pass over 20,000 records takes well under a second; generous for a loaded machine.
FOUND_WITHIN_S = 30.0


def _write_state(tmp_path: Path) -> Path:
    """A data directory whose log and state hold stream "s" with 20,000 records."""
    config = parse_config(CONFIG, source=None, base_dir=tmp_path)
    state = open_state(config, NodeId("n1"), LOG)
    try:
        commands = [create("s")] + [
            append("s", [b"r%06d" % (b * PER_BATCH + i + 1) for i in range(PER_BATCH)], ts=b)
            for b in range(BATCHES)
        ]
        entries = [
            Entry(Term(1), Index(i), EntryKind.NORMAL, data)
            for i, data in enumerate(commands, start=1)
        ]
        state.log_store.save(HardState(Term(1), None, Index(len(entries))), entries)
        state.machine.apply([(e.index, e.data) for e in entries])
        return state.machine.path
    finally:
        state.close()


def _damage_record(path: Path, sequence: int) -> None:
    conn = sqlite3.connect(path)
    with conn:
        changed = conn.execute(
            "UPDATE records SET data = x'00' WHERE data = ?", (b"r%06d" % sequence,)
        ).rowcount
    conn.close()
    assert changed == 1


async def _scrub_until_stopped(scrubber: Scrubber) -> FatalError:
    with pytest.raises(FatalError) as raised:
        await asyncio.wait_for(scrubber.run(), FOUND_WITHIN_S)
    return raised.value


def test_a_damaged_record_does_not_stop_the_start_but_the_scrub_stops_the_node(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _write_state(tmp_path)
    assert path.name == STATE_FILE
    _damage_record(path, DAMAGED)
    config = parse_config(CONFIG, source=None, base_dir=tmp_path)
    state = open_state(config, NodeId("n1"), LOG)  # not refused: the record is not read
    scrubber = Scrubber(state.machine, LOG, NodeMetrics(peers=(), enabled=False))
    try:
        assert state.machine.last_applied == BATCHES + 1
        with caplog.at_level(logging.ERROR, logger=LOG.name):
            error = asyncio.run(_scrub_until_stopped(scrubber))
        assert str(path) in str(error) and f"record {DAMAGED} of 's'" in str(error)
        logged = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(logged) == 1
        assert str(path) in logged[0].getMessage()
        assert f"record {DAMAGED} of 's'" in logged[0].getMessage()
        assert scrubber.passes == 0
    finally:
        scrubber.shutdown()
        state.close()


async def _passes(
    scrubber: Scrubber, machine: StreamsMachine, snapshot: Path, progress: list[int]
) -> list[int]:
    """Passes done after the first pass, and after a restore from `snapshot`;
    `progress` gets the rows of the first pass under way, as Status shows them."""
    task = asyncio.create_task(scrubber.run())
    seen = []
    try:
        async with asyncio.timeout(FOUND_WITHIN_S):
            while scrubber.passes < 1:
                progress.append(scrubber.rows)
                await asyncio.sleep(0.01)
            seen.append(scrubber.passes)
            progress.append(scrubber.rows)
            await asyncio.to_thread(machine.restore_from, snapshot)
            while scrubber.passes < 2:
                await asyncio.sleep(0.01)
            seen.append(scrubber.passes)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    return seen


def test_an_intact_state_is_scrubbed_once_and_again_when_a_snapshot_replaces_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _write_state(tmp_path)
    machine = StreamsMachine.open(path, quick_check=False)
    snapshot = tmp_path / "snapshot.db"
    machine.snapshot_to(snapshot)
    scrubber = Scrubber(machine, LOG, NodeMetrics(peers=(), enabled=False))
    try:
        with caplog.at_level(logging.INFO, logger=LOG.name):
            progress: list[int] = []
            assert asyncio.run(_passes(scrubber, machine, snapshot, progress)) == [1, 2]
        # Rows counted up step by step while the pass ran, and 0 once it ended.
        under_way = [rows for rows in progress[:-1] if rows]
        assert under_way and under_way == sorted(under_way) and under_way[0] < 20_000
        assert progress[-1] == 0
        done = [r.getMessage() for r in caplog.records if "state scrubbed" in r.getMessage()]
        assert len(done) == 2
        # Each pass: the 20,000 records (no producer rows).
        assert all(m.startswith("state scrubbed: 20000 rows checked") for m in done), done
    finally:
        scrubber.shutdown()
        machine.close()
