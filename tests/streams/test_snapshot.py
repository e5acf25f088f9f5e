"""Snapshots of the streams machine: consistent copy, atomic restore."""

from __future__ import annotations

import concurrent.futures
import sqlite3
from pathlib import Path

import pytest

from railyard.streams import CorruptState, StreamsMachine, snapshot_problem
from tests.streams.helpers import query_dump, sql_dump, workload

ENTRIES = 400
CUT = 250


def test_round_trip_restores_every_stream_exactly(tmp_path: Path) -> None:
    datas = workload(seed=3, count=ENTRIES)
    entries = list(enumerate(datas, start=1))
    source = StreamsMachine.open(tmp_path / "source.db")
    target = StreamsMachine.open(tmp_path / "target.db")
    try:
        source.apply(entries[:CUT])
        snapshot = tmp_path / "snap.db"
        source.snapshot_to(snapshot)
        at_snapshot = query_dump(source)
        source.apply(entries[CUT:])

        target.apply(list(enumerate(workload(seed=99, count=50), start=1)))  # other state
        target.restore_from(snapshot)
        assert target.last_applied == CUT
        assert query_dump(target) == at_snapshot

        target.apply(entries[CUT:])  # catching up from the log after the snapshot
        assert query_dump(target) == query_dump(source)
        assert sql_dump(target) == sql_dump(source)
    finally:
        source.close()
        target.close()


def test_a_frozen_state_copies_as_of_the_freeze_while_applying_goes_on(tmp_path: Path) -> None:
    entries = list(enumerate(workload(seed=7, count=ENTRIES), start=1))
    source = StreamsMachine.open(tmp_path / "source.db")
    target = StreamsMachine.open(tmp_path / "target.db")
    try:
        source.apply(entries[:CUT])
        at_freeze = query_dump(source)
        frozen = source.freeze()
        try:
            source.apply(entries[CUT:])  # applied after the freeze, before the copy
            frozen.write_to(tmp_path / "snap.db")
        finally:
            frozen.close()
        assert frozen.applied == CUT
        target.restore_from(tmp_path / "snap.db")
        assert target.last_applied == CUT
        assert query_dump(target) == at_freeze
        assert query_dump(target) != query_dump(source)
    finally:
        source.close()
        target.close()


def test_restored_state_survives_reopen(tmp_path: Path) -> None:
    source = StreamsMachine.open(tmp_path / "source.db")
    source.apply(list(enumerate(workload(seed=5, count=100), start=1)))
    source.snapshot_to(tmp_path / "snap.db")
    expected = query_dump(source)
    source.close()

    path = tmp_path / "target.db"
    target = StreamsMachine.open(path)
    target.restore_from(tmp_path / "snap.db")
    target.close()
    target = StreamsMachine.open(path)
    try:
        assert query_dump(target) == expected
        assert not list(tmp_path.glob("*.restore"))
    finally:
        target.close()


def test_a_corrupt_snapshot_is_refused_and_the_state_kept(tmp_path: Path) -> None:
    sm = StreamsMachine.open(tmp_path / "s.db")
    try:
        sm.apply(list(enumerate(workload(seed=8, count=60), start=1)))
        before = query_dump(sm)
        bad = tmp_path / "bad.db"
        bad.write_bytes(b"not a database" * 1000)
        with pytest.raises(CorruptState) as info:
            sm.restore_from(bad)
        assert "restore" in str(info.value)
        assert query_dump(sm) == before
        assert not list(tmp_path.glob("*.restore*"))
    finally:
        sm.close()


def test_snapshot_file_is_a_self_contained_database(tmp_path: Path) -> None:
    sm = StreamsMachine.open(tmp_path / "s.db")
    try:
        sm.apply(list(enumerate(workload(seed=2, count=30), start=1)))
        sm.snapshot_to(tmp_path / "snap.db")
        assert not (tmp_path / "snap.db-wal").exists()
        copy = StreamsMachine.open(tmp_path / "snap.db")
        try:
            assert query_dump(copy) == query_dump(sm)
        finally:
            copy.close()
    finally:
        sm.close()


def _wal_frames(path: Path) -> int:
    """Frames in the database's WAL now (a passive checkpoint reports them)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        ((_, frames, _),) = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        return int(frames)
    finally:
        conn.close()


def test_checkpoints_from_another_thread_keep_the_state_and_let_the_wal_start_over(
    tmp_path: Path,
) -> None:
    entries = list(enumerate(workload(seed=5, count=ENTRIES), start=1))
    machine = StreamsMachine.open(tmp_path / "state.db")
    reference = StreamsMachine.open(tmp_path / "reference.db")
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as checkpointer:
            running = None
            for index, data in entries:
                machine.apply([(index, data)])
                if running is None or running.done():
                    if running is not None:
                        running.result()  # raises what the checkpoint raised
                    running = checkpointer.submit(machine.checkpoint)
            assert running is not None
            running.result()
        reference.apply(entries)
        assert query_dump(machine) == query_dump(reference)
        grown = _wal_frames(tmp_path / "state.db")
        machine.checkpoint()
        machine.apply([(ENTRIES + 1, workload(seed=6, count=1)[0])])
        # Everything was copied, so the writer wrote its next commit at the WAL's start.
        assert _wal_frames(tmp_path / "state.db") < grown
    finally:
        machine.close()
        reference.close()


def test_a_restore_between_checkpoints_leaves_checkpointing_working(tmp_path: Path) -> None:
    entries = list(enumerate(workload(seed=8, count=CUT), start=1))
    source = StreamsMachine.open(tmp_path / "source.db")
    target = StreamsMachine.open(tmp_path / "target.db")
    try:
        source.apply(entries)
        snapshot = tmp_path / "snap.db"
        source.snapshot_to(snapshot)
        target.apply(entries[:10])
        target.checkpoint()  # opens its checkpoint connection to the old file
        target.restore_from(snapshot)
        target.checkpoint()  # on the restored file
        assert query_dump(target) == query_dump(source)
    finally:
        source.close()
        target.close()


def test_a_received_snapshot_must_hold_the_state_its_metadata_names(tmp_path: Path) -> None:
    """Checked before a received snapshot replaces anything (issue 14)."""
    sm = StreamsMachine.open(tmp_path / "s.db")
    try:
        sm.apply(list(enumerate(workload(seed=2, count=30), start=1)))
        sm.snapshot_to(tmp_path / "snap.db")
    finally:
        sm.close()
    assert snapshot_problem(tmp_path / "snap.db", 30) is None
    assert "applied to 30" in (snapshot_problem(tmp_path / "snap.db", 31) or "")
    conn = sqlite3.connect(tmp_path / "snap.db")
    conn.execute("UPDATE state SET last_applied = 31")
    conn.commit()
    conn.close()
    assert "checksum" in (snapshot_problem(tmp_path / "snap.db", 31) or "")
    (tmp_path / "other.db").write_bytes(b"SQLite format 3\x00" + b"\x00" * 100)
    assert snapshot_problem(tmp_path / "other.db", 30) is not None
