"""Configurations on disk: CONFIG entries, snapshot metadata, and stores older than both.

The configuration lives in the log and in snapshot metadata; after a restart
the core rebuilds it from what the stores return. A data directory written
before configurations were logged holds neither, and the node's cluster file
(the core's bootstrap configuration) stands in for it.
"""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

import pytest

from railyard.raft import (
    ConfChange,
    ConfChangeKind,
    Entry,
    EntryKind,
    HardState,
    Index,
    Member,
    Membership,
    NodeId,
    RaftConfig,
    RaftCore,
    SnapshotMeta,
    Term,
    encode_membership,
)
from railyard.storage import CorruptStore, LogStore, MemoryLogStore, SnapshotStore, SqliteLogStore
from railyard.storage.checksums import fields_crc

A, B, C, D = (NodeId(n) for n in ("n1", "n2", "n3", "n4"))
FILE_MEMBERS = (
    Member(A, "127.0.0.1:7001", "127.0.0.1:7101"),
    Member(B, "127.0.0.1:7002", "127.0.0.1:7102"),
    Member(C, "127.0.0.1:7003", "127.0.0.1:7103"),
)
GROWN = Membership(FILE_MEMBERS, (Member(D, "127.0.0.1:7004", "127.0.0.1:7104"),))


def open_sqlite(path: Path) -> SqliteLogStore:
    return SqliteLogStore.open(path, cluster="c", node_id="n1")


def boot(store: LogStore, members: tuple[Member, ...] = FILE_MEMBERS) -> RaftCore:
    """A core started from `store` as a node does, with `members` as its cluster file."""
    voters = tuple(m.node_id for m in members)
    snapshot = store.snapshot_meta()
    entries = store.entries(store.first_index(), Index(store.last_index() + 1))
    return RaftCore(
        RaftConfig(A, voters, members=members),
        random.Random(0),
        hard_state=store.hard_state(),
        snapshot=snapshot,
        entries=entries,
        applied=snapshot.index if snapshot else Index(0),
    )


def write_state(path: Path) -> None:
    path.write_bytes(b"state")


def config_entry(index: int, membership: Membership, term: int = 1) -> Entry:
    return Entry(Term(term), Index(index), EntryKind.CONFIG, encode_membership(membership))


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_config_entries_round_trip(tmp_path: Path, kind: str) -> None:
    store: LogStore = MemoryLogStore() if kind == "memory" else open_sqlite(tmp_path / "log.db")
    written = [Entry(Term(1), Index(1), EntryKind.NOOP), config_entry(2, GROWN)]
    store.save(HardState(Term(1), None, Index(2)), written)
    if kind == "sqlite":
        store.close()
        store = open_sqlite(tmp_path / "log.db")
    assert store.entries(Index(1), Index(3)) == written
    assert boot(store).membership == GROWN
    store.close()


def test_restart_takes_the_logged_configuration_over_the_cluster_file(tmp_path: Path) -> None:
    store = open_sqlite(tmp_path / "log.db")
    store.save(HardState(Term(1), None, Index(1)), [config_entry(1, GROWN)])
    store.close()
    other_file = (Member(A, "elsewhere:1"), Member(NodeId("n9"), "elsewhere:9"))
    core = boot(open_sqlite(tmp_path / "log.db"), other_file)
    assert core.membership == GROWN
    assert core.voters == (A, B, C) and core.learners == (D,)


def test_snapshot_metadata_keeps_the_configuration(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    store = open_sqlite(path)
    store.save(None, [config_entry(1, GROWN), Entry(Term(1), Index(2))])
    meta = SnapshotMeta.of(Index(2), Term(1), GROWN)
    store.compact(meta)
    store.close()
    store = open_sqlite(path)
    assert store.snapshot_meta() == meta
    assert boot(store, FILE_MEMBERS[:1]).membership == GROWN
    store.close()


def test_a_store_from_before_configurations_boots_from_the_cluster_file(tmp_path: Path) -> None:
    """Old compaction records hold a list of voter ids; old logs no CONFIG entry."""
    path = tmp_path / "log.db"
    store = open_sqlite(path)
    store.save(HardState(Term(3), A, Index(5)), [Entry(Term(3), Index(i)) for i in range(1, 6)])
    store.compact(SnapshotMeta(Index(4), Term(3), (A, B, C)))  # no membership: the old shape
    store.close()
    conn = sqlite3.connect(path)
    (text,) = conn.execute("SELECT voters FROM compaction").fetchone()
    conn.close()
    assert json.loads(text) == ["n1", "n2", "n3"]
    store = open_sqlite(path)
    meta = store.snapshot_meta()
    assert meta is not None and meta.membership is None
    core = boot(store)
    assert core.membership == Membership(FILE_MEMBERS)
    assert core.status().membership_index == 4
    store.close()


def test_a_malformed_configuration_in_the_compaction_record_is_named(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    store = open_sqlite(path)
    store.save(None, [Entry(Term(1), Index(1))])
    store.compact(SnapshotMeta.of(Index(1), Term(1), GROWN))
    store.close()
    conn = sqlite3.connect(path)
    bad = json.dumps({"voters": "n1"})
    conn.execute("UPDATE compaction SET voters = ?, crc = ?", (bad, fields_crc(1, 1, bad)))
    conn.commit()
    conn.close()
    with pytest.raises(CorruptStore, match="configuration is malformed"):
        open_sqlite(path)


def test_snapshot_files_keep_the_configuration(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    meta = SnapshotMeta.of(Index(7), Term(2), GROWN)
    store.create(meta, write_state)
    found = SnapshotStore(tmp_path).latest()
    assert found is not None and found[0] == meta


def test_snapshot_files_from_before_configurations_still_read(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    old = SnapshotMeta(Index(7), Term(2), (A, B, C))
    store.create(old, write_state)
    (meta_file,) = tmp_path.glob("*.json")
    assert "membership" not in json.loads(meta_file.read_text())
    found = SnapshotStore(tmp_path).latest()
    assert found is not None and found[0] == old and found[0].membership is None


def test_a_change_survives_a_restart_through_the_core(tmp_path: Path) -> None:
    """End to end on one node: the leader's change is persisted as the Ready hands it."""
    path = tmp_path / "log.db"
    store = open_sqlite(path)
    core = boot(store, FILE_MEMBERS[:1])
    core.campaign()
    for _ in range(3):
        ready = core.ready()
        store.save(ready.hard_state, ready.entries)
        core.advance(ready)
    index = core.propose_conf_change(ConfChange(ConfChangeKind.ADD_LEARNER, D, "127.0.0.1:7004"))
    ready = core.ready()
    assert ready.membership == core.membership
    store.save(ready.hard_state, ready.entries)
    core.advance(ready)
    store.close()
    again = boot(open_sqlite(path), FILE_MEMBERS[:1])
    assert again.status().membership_index == index
    assert again.learners == (D,)
