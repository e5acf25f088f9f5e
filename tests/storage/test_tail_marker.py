"""The log's tail marker: a WAL cut short is refused; crashes at any point are not.

The marker (railyard/storage/tail_marker.py) records where the log ended
after its last completed save. These tests cut the WAL at many offsets and
expect a refusal naming the file, and simulate a crash between each
log-cutting transaction and the marker's update, which must still open.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from railyard.raft import Entry, HardState, Index, NodeId, SnapshotMeta, Term
from railyard.storage import CorruptStore, SqliteLogStore
from railyard.storage.tail_marker import SIZE, Tail, TailMarker

PAGE = 4096
WAL_HEADER_BYTES = 32
FRAME_BYTES = 24 + PAGE
SAVES = 6


def open_store(path: Path) -> SqliteLogStore:
    return SqliteLogStore.open(path, cluster="alpha", node_id="n1")


def ents(lo: int, hi: int, term: int) -> list[Entry]:
    return [Entry(Term(term), Index(i), data=b"%d:%d" % (i, term)) for i in range(lo, hi)]


def hs(term: int, commit: int, vote: str | None = "n1") -> HardState:
    return HardState(Term(term), NodeId(vote) if vote else None, Index(commit))


def _copy(source: Path, target: Path) -> Path:
    """The store's files as kill -9 leaves them: the writer open, the WAL not checkpointed."""
    target.mkdir()
    for name in ("log.db", "log.db-wal", "log.db.tail"):
        if (source / name).exists():
            shutil.copyfile(source / name, target / name)
    return target / "log.db"


def _wal_image(tmp_path: Path) -> tuple[Path, list[int]]:
    """A crash image after SAVES saves, and the WAL's size after each of them."""
    store = open_store(tmp_path / "log.db")
    sizes = []
    try:
        for i in range(1, SAVES + 1):
            store.save(hs(1, i - 1), ents(i, i + 1, term=1))
            sizes.append((tmp_path / "log.db-wal").stat().st_size)
        return _copy(tmp_path, tmp_path / "image"), sizes
    finally:
        store.close()


def _cut_offsets(sizes: list[int]) -> list[int]:
    """Every frame boundary before the last save's end, and points inside frames and headers."""
    boundaries = range(WAL_HEADER_BYTES, sizes[-1], FRAME_BYTES)
    inside = [b + d for b in boundaries for d in (1, 24, FRAME_BYTES // 2)]
    return sorted({0, 1, 16, *boundaries, *inside, sizes[-1] - 1} - {sizes[-1]})


def test_a_wal_cut_anywhere_before_the_last_save_ends_is_refused_naming_it(
    tmp_path: Path,
) -> None:
    db, sizes = _wal_image(tmp_path)
    wal = db.with_name("log.db-wal")
    pristine = wal.read_bytes()
    offsets = _cut_offsets(sizes)
    assert len(offsets) > 3 * SAVES
    for offset in offsets:
        wal.write_bytes(pristine[:offset])
        with pytest.raises(CorruptStore) as info:
            open_store(db).close()
        named = wal if offset > 0 else db
        assert info.value.path == named, offset
        assert str(named) in str(info.value)
        assert "cut short" in str(info.value) and "rejoin" in str(info.value)
    wal.write_bytes(pristine)
    store = open_store(db)
    try:
        assert store.last_index() == SAVES
    finally:
        store.close()


def test_the_refusal_says_where_the_log_ends_and_what_was_saved(tmp_path: Path) -> None:
    db, sizes = _wal_image(tmp_path)
    wal = db.with_name("log.db-wal")
    wal.write_bytes(wal.read_bytes()[: sizes[2]])  # three saves left of six
    with pytest.raises(CorruptStore, match=r"log ends at index 3 but index 6 \(term 1\)"):
        open_store(db)


@pytest.mark.parametrize(
    ("before_vote_state", "refusal"),
    [(hs(1, 0), "term 2 was saved"), (hs(2, 0, vote=None), "vote cast in term 2 was lost")],
    ids=["with a new term", "within its term"],
)
def test_a_lost_vote_is_refused(tmp_path: Path, before_vote_state: HardState, refusal: str) -> None:
    """A save of the hard state alone (a vote) cut from the WAL is refused too."""
    store = open_store(tmp_path / "log.db")
    try:
        store.save(before_vote_state, ents(1, 4, term=1))
        before_vote = (tmp_path / "log.db-wal").stat().st_size
        store.save(hs(2, 0, vote="n3"), [])
        db = _copy(tmp_path, tmp_path / "image")
    finally:
        store.close()
    wal = db.with_name("log.db-wal")
    wal.write_bytes(wal.read_bytes()[:before_vote])
    with pytest.raises(CorruptStore, match=refusal):
        open_store(db)


def test_a_torn_last_save_opens_with_the_previous_marker(tmp_path: Path) -> None:
    """A save that did not complete never updated the marker: losing it is a repair."""
    store = open_store(tmp_path / "log.db")
    try:
        for i in range(1, SAVES):
            store.save(hs(1, i - 1), ents(i, i + 1, term=1))
        marker_before = (tmp_path / "log.db.tail").read_bytes()
        wal_before = (tmp_path / "log.db-wal").stat().st_size
        store.save(hs(1, SAVES - 1), ents(SAVES, SAVES + 1, term=1))
        db = _copy(tmp_path, tmp_path / "image")
    finally:
        store.close()
    db.with_name("log.db.tail").write_bytes(marker_before)
    wal = db.with_name("log.db-wal")
    wal.write_bytes(wal.read_bytes()[: wal_before + FRAME_BYTES // 2])
    store = open_store(db)
    try:
        assert store.last_index() == SAVES - 1
    finally:
        store.close()


def test_a_missing_marker_opens_and_is_written_again_by_the_next_save(tmp_path: Path) -> None:
    db, _ = _wal_image(tmp_path)
    marker = db.with_name("log.db.tail")
    marker.unlink()
    store = open_store(db)
    try:
        assert store.last_index() == SAVES
        assert not marker.exists()
        store.save(None, ents(SAVES + 1, SAVES + 2, term=1))
        assert marker.stat().st_size == SIZE
    finally:
        store.close()
    assert open_store(db).last_index() == SAVES + 1


def test_a_new_store_opens_and_its_first_save_writes_the_marker(tmp_path: Path) -> None:
    store = open_store(tmp_path / "log.db")
    try:
        assert not (tmp_path / "log.db.tail").exists()
        store.save(hs(1, 0), ents(1, 3, term=1))
    finally:
        store.close()
    store = open_store(tmp_path / "log.db")
    try:
        assert store.last_index() == 2
    finally:
        store.close()


@pytest.mark.parametrize("damage", ["flip", "short", "long", "empty"])
def test_a_damaged_marker_is_refused_naming_it(tmp_path: Path, damage: str) -> None:
    db, _ = _wal_image(tmp_path)
    marker = db.with_name("log.db.tail")
    raw = bytearray(marker.read_bytes())
    if damage == "flip":
        raw[9] ^= 0x01
    elif damage == "short":
        del raw[-1]
    elif damage == "long":
        raw += b"\x00"
    else:
        raw.clear()
    marker.write_bytes(bytes(raw))
    with pytest.raises(CorruptStore, match="tail marker") as info:
        open_store(db)
    assert info.value.path == marker
    assert "rejoin" in str(info.value)


def test_a_database_lost_beside_its_marker_is_not_created_afresh(tmp_path: Path) -> None:
    db, _ = _wal_image(tmp_path)
    db.unlink()
    db.with_name("log.db-wal").unlink()
    with pytest.raises(CorruptStore, match="database is missing") as info:
        open_store(db)
    assert info.value.path == db
    assert not db.exists()


def test_a_stale_marker_is_lenient(tmp_path: Path) -> None:
    """A marker is never fsync'd after a save: after power loss it may be older; that opens."""
    store = open_store(tmp_path / "log.db")
    try:
        store.save(hs(1, 0), ents(1, 3, term=1))
        old = (tmp_path / "log.db.tail").read_bytes()
        store.save(hs(2, 2), ents(3, 9, term=2))
        store.compact(SnapshotMeta(Index(4), Term(2), (NodeId("n1"),)))
    finally:
        store.close()
    (tmp_path / "log.db.tail").write_bytes(old)
    store = open_store(tmp_path / "log.db")
    try:
        assert store.last_index() == 8
    finally:
        store.close()


# ------------------------------------------------- crashes around log-cutting transactions


class _Crash(Exception):
    """The process died right after the transaction committed."""


def _crash_after_commit(store: SqliteLogStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The next marker update (after a commit) never happens: as kill -9 just before it."""

    def crash(self: TailMarker, tail: Tail) -> None:
        raise _Crash

    monkeypatch.setattr(TailMarker, "record", crash)


def _cut_log(store: SqliteLogStore, how: str) -> None:
    meta = SnapshotMeta(Index(6), Term(3), (NodeId("n1"),))
    if how == "save over a conflicting suffix":
        store.save(None, ents(6, 12, term=3))  # ends further on, with another term
    elif how == "save a shorter conflicting suffix":
        store.save(None, ents(6, 8, term=3))
    elif how == "truncate_suffix":
        store.truncate_suffix(Index(4))
    elif how == "compact with a snapshot of another term":
        store.compact(meta)
    else:
        raise AssertionError(how)


CUTS = [
    "save over a conflicting suffix",
    "save a shorter conflicting suffix",
    "truncate_suffix",
    "compact with a snapshot of another term",
]


def _store_ending_at_10(path: Path) -> SqliteLogStore:
    store = open_store(path)
    store.save(hs(2, 3), ents(1, 11, term=2))
    return store


@pytest.mark.parametrize("how", CUTS)
def test_a_crash_between_a_cut_and_the_marker_update_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    store = _store_ending_at_10(tmp_path / "log.db")
    expected_last = {CUTS[0]: 11, CUTS[1]: 7, CUTS[2]: 3, CUTS[3]: 6}[how]
    with monkeypatch.context() as patch:
        _crash_after_commit(store, patch)
        with pytest.raises(_Crash):
            _cut_log(store, how)
    store.close()
    store = open_store(tmp_path / "log.db")
    try:
        assert store.last_index() == expected_last
    finally:
        store.close()


@pytest.mark.parametrize("how", CUTS)
def test_a_crash_before_a_cut_commits_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """The marker was lowered, then the process died before the transaction committed."""
    store = _store_ending_at_10(tmp_path / "log.db")
    with monkeypatch.context() as patch:
        patch.setattr(store, "_conn", _NoCommit(store._conn))
        with pytest.raises(_Crash):
            _cut_log(store, how)
    store.close()
    store = open_store(tmp_path / "log.db")
    try:
        assert store.last_index() == 10
        assert store.term(Index(10)) == 2
    finally:
        store.close()


class _NoCommit:
    """A connection whose process dies at COMMIT (the transaction is never durable)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "COMMIT":
            raise _Crash  # the store rolls back, as a dead process's transaction is
        return self._conn.execute(sql, *args)

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        return self._conn.executemany(sql, rows)


@pytest.mark.parametrize("how", CUTS)
def test_without_lowering_first_the_same_crash_would_refuse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """The control for the test above: lowering the marker first is what keeps it open."""
    store = _store_ending_at_10(tmp_path / "log.db")
    with monkeypatch.context() as patch:
        patch.setattr(TailMarker, "lower", lambda self, tail: None)
        _crash_after_commit(store, patch)
        with pytest.raises(_Crash):
            _cut_log(store, how)
    store.close()
    with pytest.raises(CorruptStore):
        open_store(tmp_path / "log.db")


def test_the_lowered_marker_is_synced_before_the_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unsynced, the disk could keep the cut but the old marker, and refuse a sound store."""
    store = _store_ending_at_10(tmp_path / "log.db")
    synced: list[int] = []
    real = os.fdatasync

    def fdatasync(fd: int) -> None:
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    try:
        store.save(None, ents(11, 12, term=2))
        assert synced == [], "an append needs no sync of the marker"
        store.truncate_suffix(Index(8))
        assert len(synced) == 1
    finally:
        store.close()
