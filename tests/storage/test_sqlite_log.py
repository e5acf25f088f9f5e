"""Start-up checks of the durable log store: identity, integrity, settings."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from railyard.raft import Entry, HardState, Index, NodeId, Term
from railyard.storage import CorruptStore, SqliteLogStore, StoreMismatch


def open_store(path: Path, cluster: str = "alpha", node_id: str = "n1") -> SqliteLogStore:
    return SqliteLogStore.open(path, cluster=cluster, node_id=node_id)


def test_store_of_another_node_is_refused_naming_both(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    open_store(path).close()
    with pytest.raises(StoreMismatch) as info:
        open_store(path, node_id="n2")
    message = str(info.value)
    assert str(path) in message
    assert "'n1'" in message and "'n2'" in message


def test_store_of_another_cluster_is_refused_naming_both(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    open_store(path).close()
    with pytest.raises(StoreMismatch) as info:
        open_store(path, cluster="beta")
    assert "'alpha'" in str(info.value) and "'beta'" in str(info.value)


def test_a_file_that_is_not_a_database_is_reported_by_name(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    path.write_bytes(b"this is not an sqlite file at all" * 200)
    with pytest.raises(CorruptStore) as info:
        open_store(path)
    assert str(path) in str(info.value)


def test_a_damaged_page_is_reported_by_name(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    store = open_store(path)
    for i in range(1, 200, 50):
        store.save(None, [Entry(Term(1), Index(j), data=b"x" * 300) for j in range(i, i + 50)])
    store.close()
    raw = bytearray(path.read_bytes())
    page_size = 4096
    for offset in range(2 * page_size, len(raw), page_size):
        raw[offset : offset + 64] = b"\xa5" * 64  # scribble over every b-tree page header
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptStore) as info:
        open_store(path)
    assert str(path) in str(info.value)


def test_unknown_format_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    open_store(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'format'")
    conn.close()
    with pytest.raises(CorruptStore, match="format version"):
        open_store(path)


def test_connection_uses_wal_and_full_sync(tmp_path: Path) -> None:
    store = open_store(tmp_path / "log.db")
    try:
        conn = store._conn
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        store.close()


def test_a_hole_in_the_stored_log_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    store = open_store(path)
    store.save(
        HardState(Term(1), NodeId("n1"), Index(0)), [Entry(Term(1), Index(i)) for i in range(1, 6)]
    )
    store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM entries WHERE idx = 3")
    conn.close()
    with pytest.raises(CorruptStore, match="entries"):
        open_store(path)


def _tamper(path: Path, sql: str) -> None:
    """Change the file behind the store's back, as a bad disk would."""
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(sql)
    conn.close()


def _store_with_entries(path: Path) -> None:
    store = open_store(path)
    hs = HardState(Term(2), NodeId("n1"), Index(3))
    store.save(hs, [Entry(Term(2), Index(i), data=b"payload %d" % i) for i in range(1, 6)])
    store.close()


def test_a_changed_entry_fails_its_checksum_naming_file_and_index(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    _store_with_entries(path)
    _tamper(path, "UPDATE entries SET data = x'00' WHERE idx = 3")
    store = open_store(path)
    try:
        assert store.entries(Index(1), Index(3)) != []  # undamaged entries still read
        with pytest.raises(CorruptStore, match="entry 3") as info:
            store.entries(Index(1), Index(6))
        assert str(path) in str(info.value)
        with pytest.raises(CorruptStore):
            store.term(Index(3))
    finally:
        store.close()


def test_a_changed_term_fails_its_checksum(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    _store_with_entries(path)
    _tamper(path, "UPDATE entries SET term = 9 WHERE idx = 4")
    store = open_store(path)
    try:
        with pytest.raises(CorruptStore, match="entry 4"):
            store.term(Index(4))
    finally:
        store.close()


def test_a_changed_hard_state_is_refused_at_open(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    _store_with_entries(path)
    _tamper(path, "UPDATE hard_state SET current_term = 1")
    with pytest.raises(CorruptStore, match="hard state") as info:
        open_store(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("size", [0, 1, 100, 4096])
def test_a_cut_short_file_is_not_taken_for_a_new_store(tmp_path: Path, size: int) -> None:
    """An existing file without an identity is damage, never an empty log to start afresh."""
    path = tmp_path / "log.db"
    _store_with_entries(path)
    with path.open("r+b") as f:
        f.truncate(size)
    with pytest.raises(CorruptStore) as info:
        open_store(path)
    assert str(path) in str(info.value)


def test_an_interrupted_creation_leaves_nothing_in_the_way(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    (tmp_path / "log.db.creating").write_bytes(b"half-built store")
    store = open_store(path)
    try:
        assert store.last_index() == 0
        assert not (tmp_path / "log.db.creating").exists()
    finally:
        store.close()


PAGE = 4096
WAL_HEADER_BYTES = 32
FRAME_BYTES = 24 + PAGE


def _crash_image(source: Path, target: Path, saves: int) -> list[int]:
    """Files as kill -9 leaves them (the WAL not checkpointed); the WAL size after each save."""
    store = open_store(source / "log.db")
    sizes = []
    try:
        for i in range(1, saves + 1):
            store.save(
                HardState(Term(1), NodeId("n1"), Index(i)),
                [Entry(Term(1), Index(i), data=b"e%d" % i)],
            )
            sizes.append((source / "log.db-wal").stat().st_size)
        target.mkdir()
        for name in ("log.db", "log.db-wal"):
            (target / name).write_bytes((source / name).read_bytes())
    finally:
        store.close()
    return sizes


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_damage_before_the_last_commit_in_the_wal_is_refused(tmp_path: Path) -> None:
    """SQLite would silently drop every commit after a damaged WAL frame."""
    _crash_image(tmp_path, tmp_path / "image", saves=6)
    wal = tmp_path / "image" / "log.db-wal"
    _flip(wal, WAL_HEADER_BYTES + FRAME_BYTES + 24 + 100)  # page data of frame 2
    with pytest.raises(CorruptStore, match="committed transactions") as info:
        open_store(tmp_path / "image" / "log.db")
    assert str(wal) in str(info.value)


def test_a_damaged_wal_header_is_refused(tmp_path: Path) -> None:
    _crash_image(tmp_path, tmp_path / "image", saves=4)
    _flip(tmp_path / "image" / "log.db-wal", 9)  # the page size field
    with pytest.raises(CorruptStore, match=r"log\.db-wal"):
        open_store(tmp_path / "image" / "log.db")


def test_a_torn_last_commit_is_dropped_and_the_store_opens(tmp_path: Path) -> None:
    """The last save was never acknowledged if its frames are torn: losing it is correct."""
    sizes = _crash_image(tmp_path, tmp_path / "image", saves=5)
    wal = tmp_path / "image" / "log.db-wal"
    _flip(wal, sizes[-2] + 24 + 10)  # the first frame of the last save
    store = open_store(tmp_path / "image" / "log.db")
    try:
        assert store.last_index() == 4
        assert store.hard_state().commit_index == 4
    finally:
        store.close()


def test_garbage_after_the_last_frame_is_ignored(tmp_path: Path) -> None:
    _crash_image(tmp_path, tmp_path / "image", saves=3)
    with (tmp_path / "image" / "log.db-wal").open("ab") as f:
        f.write(b"\x37\x7f\x06\x82" * 3000)
    store = open_store(tmp_path / "image" / "log.db")
    try:
        assert store.last_index() == 3
    finally:
        store.close()
