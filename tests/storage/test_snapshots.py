"""Snapshot files: atomic install, latest-only, chunked transfer, checksums."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from railyard.raft import Index, NodeId, SnapshotMeta, Term
from railyard.storage import CorruptSnapshot, SnapshotStore, sqlite_problem

VOTERS = (NodeId("n1"), NodeId("n2"), NodeId("n3"))


def meta(index: int, term: int = 1) -> SnapshotMeta:
    return SnapshotMeta(Index(index), Term(term), VOTERS)


def writer(payload: bytes) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path.write_bytes(payload)

    return write


def test_create_then_latest(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path / "snap")
    assert store.latest() is None
    path = store.create(meta(10, 2), writer(b"state at 10"))
    assert store.latest() == (meta(10, 2), path)
    assert path.read_bytes() == b"state at 10"


def test_only_the_latest_is_kept(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    store.create(meta(10), writer(b"a"))
    newest = store.create(meta(20), writer(b"b"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [newest.name, newest.with_suffix(".json").name]
    )
    reopened = SnapshotStore(tmp_path)
    assert reopened.latest() == (meta(20), newest)


def test_a_failed_writer_leaves_the_previous_snapshot(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    first = store.create(meta(10), writer(b"a"))

    def broken(path: Path) -> None:
        path.write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError):
        store.create(meta(20), broken)
    assert store.latest() == (meta(10), first)
    assert not list(tmp_path.glob(".tmp-*"))


def test_leftovers_of_a_crash_are_ignored_and_cleaned(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    good = store.create(meta(10), writer(b"a"))
    (tmp_path / ".tmp-999-0").write_bytes(b"half a snapshot")  # crash before rename
    # Crash after the data rename but before its metadata: not a snapshot yet.
    (tmp_path / "snapshot-00000000000000000030-00000000000000000001.db").write_bytes(b"x")
    reopened = SnapshotStore(tmp_path)
    assert reopened.latest() == (meta(10), good)
    assert not list(tmp_path.glob(".tmp-*"))


def test_chunks_and_checksum_feed_a_receiver(tmp_path: Path) -> None:
    payload = os.urandom(300_000)
    sender = SnapshotStore(tmp_path / "a")
    path = sender.create(meta(7, 3), writer(payload))
    chunks = list(sender.chunks(path, chunk_size=64 * 1024))
    assert len(chunks) == 5 and b"".join(chunks) == payload

    receiving = SnapshotStore(tmp_path / "b")
    receiver = receiving.receiver(meta(7, 3))
    for chunk in chunks:
        receiver.write(chunk)
    installed = receiver.commit(sender.checksum(path))
    assert installed.read_bytes() == payload
    assert receiving.latest() == (meta(7, 3), installed)
    receiving.verify(installed)


def test_receiver_refuses_bytes_that_do_not_match_the_checksum(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    previous = store.create(meta(5), writer(b"old"))
    receiver = store.receiver(meta(9))
    receiver.write(b"corrupted in flight")
    with pytest.raises(CorruptSnapshot):
        receiver.commit("0" * 64)
    assert store.latest() == (meta(5), previous)
    assert not list(tmp_path.glob(".tmp-*"))


def test_receiver_abort_discards(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    receiver = store.receiver(meta(9))
    receiver.write(b"abc")
    receiver.abort()
    receiver.abort()
    assert store.latest() is None
    assert not list(tmp_path.iterdir())


def test_verify_detects_a_damaged_file(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    path = store.create(meta(3), writer(b"good bytes"))
    path.write_bytes(b"bad bytes!")
    with pytest.raises(CorruptSnapshot) as info:
        store.verify(path)
    assert str(path) in str(info.value)


def test_an_older_received_snapshot_does_not_replace_a_newer_one(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    newer = store.create(meta(50), writer(b"new"))
    receiver = store.receiver(meta(40))
    receiver.write(b"old")
    older = receiver.commit(_sha(b"old"))
    assert older.exists()  # the caller gets a path that exists
    assert store.latest() == (meta(50), newer)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_staged_snapshot_is_not_latest_until_installed(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    own = store.create(meta(10), writer(b"own"))
    receiver = store.receiver(meta(30, 2))
    receiver.write(b"incoming")
    staged = receiver.stage(_sha(b"incoming"))
    assert staged.read_bytes() == b"incoming"
    assert store.latest() == (meta(10), own)  # the core has not accepted it yet
    installed = receiver.install()
    assert store.latest() == (meta(30, 2), installed)
    assert not own.exists()


def test_a_refused_staged_snapshot_leaves_the_own_one(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    own = store.create(meta(10), writer(b"own"))
    receiver = store.receiver(meta(30, 0))  # e.g. a stale term the core refuses
    receiver.write(b"forged")
    staged = receiver.stage(_sha(b"forged"))
    receiver.abort()
    assert not staged.exists()
    assert store.latest() == (meta(10), own)
    assert SnapshotStore(tmp_path).latest() == (meta(10), own)


def _sqlite_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "real.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    conn.close()
    return path.read_bytes()


def test_garbage_with_its_right_checksum_is_never_staged(tmp_path: Path) -> None:
    """Issue 14: a snapshot of garbage bytes with a correct checksum was installed,
    and the node could not restart. Validated before staging, it is not kept."""
    store = SnapshotStore(tmp_path / "snaps")
    own = store.create(meta(10), writer(b"own"))
    garbage = os.urandom(64 << 10)
    receiver = store.receiver(meta(30, 2))
    receiver.write(garbage)
    with pytest.raises(CorruptSnapshot, match="SQLite"):
        receiver.stage(_sha(garbage), sqlite_problem)
    assert store.latest() == (meta(10), own)
    assert [p.name for p in (tmp_path / "snaps").iterdir() if p.name.startswith(".tmp")] == []


def test_a_valid_database_is_staged_and_the_callers_check_runs(tmp_path: Path) -> None:
    data = _sqlite_bytes(tmp_path)
    store = SnapshotStore(tmp_path / "snaps")
    receiver = store.receiver(meta(30, 2))
    receiver.write(data)
    assert receiver.stage(_sha(data), sqlite_problem).read_bytes() == data
    receiver = store.receiver(meta(31, 2))
    receiver.write(data)
    with pytest.raises(CorruptSnapshot, match="applied 7, expected 31"):
        receiver.stage(_sha(data), lambda path: "applied 7, expected 31")


def test_a_damaged_database_fails_the_integrity_check(tmp_path: Path) -> None:
    data = bytearray(_sqlite_bytes(tmp_path))
    data[4096 : 4096 + 8] = b"\xff" * 8  # the table page's header
    path = tmp_path / "damaged.db"
    path.write_bytes(bytes(data))
    assert sqlite_problem(path) is not None
    assert sqlite_problem(tmp_path / "real.db") is None


def test_a_snapshot_past_the_byte_bound_is_refused_while_receiving(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    receiver = store.receiver(meta(30, 2), max_bytes=1000)
    receiver.write(b"x" * 1000)
    with pytest.raises(CorruptSnapshot, match="more than 1000 bytes"):
        receiver.write(b"x")
    assert store.latest() is None
    assert list(tmp_path.iterdir()) == []
