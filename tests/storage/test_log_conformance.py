"""The log store contract, run against every implementation.

Any `LogStore` must pass these (openraft's log-store suite idea): the
simulator relies on `MemoryLogStore` behaving exactly like the durable
`SqliteLogStore` the node uses. Tests that reopen the store check
durability; for the in-memory store "reopen" returns the same object.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from railyard.raft import Entry, EntryKind, HardState, Index, NodeId, SnapshotMeta, Term
from railyard.storage import LogCompacted, LogGap, LogStore, MemoryLogStore, SqliteLogStore


class Harness:
    """A store under test and a way to reopen it as after a restart."""

    def __init__(self, open_store: Callable[[], LogStore], durable: bool) -> None:
        self._open = open_store
        self.durable = durable
        self.store = open_store()

    def reopen(self) -> LogStore:
        if self.durable:
            self.store.close()
            self.store = self._open()
        return self.store


@pytest.fixture(params=["memory", "sqlite"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    if request.param == "memory":
        memory = MemoryLogStore()
        h = Harness(lambda: memory, durable=False)
    else:
        path = tmp_path / "log.db"
        h = Harness(lambda: SqliteLogStore.open(path, cluster="c", node_id="n1"), durable=True)
    try:
        yield h
    finally:
        h.store.close()


def ents(lo: int, hi: int, term: int = 1, size: int = 10) -> list[Entry]:
    """Entries [lo, hi) of `term`, each with `size` bytes of data naming its index."""
    return [
        Entry(Term(term), Index(i), EntryKind.NORMAL, f"{i}:{term}".encode().ljust(size, b"."))
        for i in range(lo, hi)
    ]


def indexes(entries: Sequence[Entry]) -> list[int]:
    return [e.index for e in entries]


def test_empty_store(harness: Harness) -> None:
    s = harness.store
    assert s.first_index() == 1
    assert s.last_index() == 0
    assert s.term(Index(0)) == 0
    assert s.term(Index(1)) is None
    assert s.entries(Index(1), Index(10)) == []
    assert s.hard_state() == HardState()
    assert s.snapshot_meta() is None


def test_append_and_read_back(harness: Harness) -> None:
    s = harness.store
    written = ents(1, 11, term=2)
    s.save(None, written)
    assert (s.first_index(), s.last_index()) == (1, 10)
    assert s.entries(Index(1), Index(11)) == written
    assert s.entries(Index(4), Index(7)) == written[3:6]
    assert s.term(Index(10)) == 2
    assert s.term(Index(11)) is None


def test_kinds_and_empty_data_round_trip(harness: Harness) -> None:
    s = harness.store
    written = [
        Entry(Term(1), Index(1), EntryKind.NOOP, b""),
        Entry(Term(1), Index(2), EntryKind.NORMAL, b"\x00\xff"),
        Entry(Term(1), Index(3), EntryKind.CONFIG, b"cfg"),
    ]
    s.save(None, written)
    assert harness.reopen().entries(Index(1), Index(4)) == written


def test_hi_beyond_last_is_clamped(harness: Harness) -> None:
    s = harness.store
    s.save(None, ents(1, 4))
    assert indexes(s.entries(Index(2), Index(100))) == [2, 3]
    assert s.entries(Index(4), Index(100)) == []
    assert s.entries(Index(3), Index(3)) == []


def test_max_bytes_bounds_a_read_but_returns_at_least_one(harness: Harness) -> None:
    s = harness.store
    s.save(None, ents(1, 11, size=10))
    assert indexes(s.entries(Index(1), Index(11), max_bytes=35)) == [1, 2, 3]
    assert indexes(s.entries(Index(1), Index(11), max_bytes=30)) == [1, 2, 3]
    assert indexes(s.entries(Index(5), Index(11), max_bytes=1)) == [5]
    assert indexes(s.entries(Index(5), Index(11), max_bytes=0)) == [5]
    assert len(s.entries(Index(1), Index(11), max_bytes=10_000)) == 10


def test_hard_state_is_durable(harness: Harness) -> None:
    hs = HardState(Term(7), NodeId("n3"), Index(0))
    harness.store.save(hs, [])
    assert harness.reopen().hard_state() == hs
    hs2 = HardState(Term(8), None, Index(0))
    harness.store.save(hs2, [])
    assert harness.reopen().hard_state() == hs2


def test_save_writes_entries_and_hard_state_together(harness: Harness) -> None:
    hs = HardState(Term(3), NodeId("n1"), Index(2))
    harness.store.save(hs, ents(1, 4, term=3))
    s = harness.reopen()
    assert s.hard_state() == hs
    assert s.last_index() == 3


def test_entries_are_durable_across_reopen(harness: Harness) -> None:
    written = ents(1, 6)
    harness.store.save(None, written[:2])
    harness.store.save(None, written[2:])
    s = harness.reopen()
    assert s.entries(Index(1), Index(6)) == written
    assert (s.first_index(), s.last_index()) == (1, 5)


def test_save_overwrites_a_conflicting_suffix(harness: Harness) -> None:
    s = harness.store
    s.save(None, ents(1, 11, term=1))
    s.save(None, ents(6, 8, term=2))
    s = harness.reopen()
    assert s.last_index() == 7
    assert [e.term for e in s.entries(Index(1), Index(8))] == [1] * 5 + [2] * 2
    assert s.term(Index(8)) is None


def test_save_at_last_plus_one_appends(harness: Harness) -> None:
    s = harness.store
    s.save(None, ents(1, 3))
    s.save(None, ents(3, 5, term=2))
    assert indexes(s.entries(Index(1), Index(10))) == [1, 2, 3, 4]


def test_save_with_a_gap_is_refused(harness: Harness) -> None:
    s = harness.store
    s.save(None, ents(1, 3))
    with pytest.raises(LogGap):
        s.save(None, ents(5, 6))
    with pytest.raises(LogGap):
        s.save(None, [*ents(3, 4), *ents(5, 6)])
    assert s.last_index() == 2


def test_truncate_suffix(harness: Harness) -> None:
    s = harness.store
    s.save(None, ents(1, 11))
    s.truncate_suffix(Index(6))
    assert harness.reopen().last_index() == 5
    harness.store.truncate_suffix(Index(20))  # beyond the end: nothing to do
    assert harness.store.last_index() == 5
    assert harness.store.term(Index(6)) is None


def test_compact_drops_the_prefix_and_remembers_the_snapshot(harness: Harness) -> None:
    s = harness.store
    s.save(None, ents(1, 11, term=2))
    meta = SnapshotMeta(Index(6), Term(2), (NodeId("n1"), NodeId("n2")))
    s.compact(meta)
    s = harness.reopen()
    assert s.snapshot_meta() == meta
    assert (s.first_index(), s.last_index()) == (7, 10)
    assert s.term(Index(6)) == 2
    assert s.term(Index(5)) is None
    assert indexes(s.entries(Index(7), Index(11))) == [7, 8, 9, 10]
    with pytest.raises(LogCompacted):
        s.entries(Index(6), Index(11))


def test_compact_everything_leaves_an_empty_log_after_the_snapshot(harness: Harness) -> None:
    s = harness.store
    s.save(None, ents(1, 6))
    s.compact(SnapshotMeta(Index(5), Term(1), (NodeId("n1"),)))
    s = harness.reopen()
    assert (s.first_index(), s.last_index()) == (6, 5)
    assert s.entries(Index(6), Index(10)) == []
    s.save(None, ents(6, 8))
    assert indexes(s.entries(Index(6), Index(10))) == [6, 7]


def test_snapshot_beyond_the_log_discards_it(harness: Harness) -> None:
    """A snapshot from the leader past our last entry replaces the whole log (Raft §7)."""
    s = harness.store
    s.save(None, ents(1, 4))
    s.compact(SnapshotMeta(Index(20), Term(3), (NodeId("n1"),)))
    s = harness.reopen()
    assert (s.first_index(), s.last_index()) == (21, 20)
    assert s.term(Index(20)) == 3


def test_snapshot_with_another_term_discards_the_log(harness: Harness) -> None:
    """The log's entry at the snapshot index has another term: nothing after it is valid."""
    s = harness.store
    s.save(None, ents(1, 11, term=1))
    s.compact(SnapshotMeta(Index(5), Term(2), (NodeId("n1"),)))
    s = harness.reopen()
    assert (s.first_index(), s.last_index()) == (6, 5)


def test_older_compaction_is_ignored(harness: Harness) -> None:
    s = harness.store
    s.save(None, ents(1, 11))
    newer = SnapshotMeta(Index(8), Term(1), (NodeId("n1"),))
    s.compact(newer)
    s.compact(SnapshotMeta(Index(4), Term(1), (NodeId("n1"),)))
    assert harness.reopen().snapshot_meta() == newer
    assert harness.store.first_index() == 9


def test_entries_at_or_before_the_snapshot_are_ignored_by_save(harness: Harness) -> None:
    s = harness.store
    s.save(None, ents(1, 6))
    s.compact(SnapshotMeta(Index(5), Term(1), (NodeId("n1"),)))
    s.save(None, ents(4, 8))
    assert indexes(s.entries(Index(6), Index(10))) == [6, 7]


def test_truncate_into_the_snapshot_is_refused(harness: Harness) -> None:
    s = harness.store
    s.save(None, ents(1, 6))
    s.compact(SnapshotMeta(Index(3), Term(1), (NodeId("n1"),)))
    with pytest.raises(LogGap):
        s.truncate_suffix(Index(3))


def test_reads_before_first_index_raise(harness: Harness) -> None:
    s = harness.store
    s.save(None, ents(1, 6))
    s.compact(SnapshotMeta(Index(2), Term(1), (NodeId("n1"),)))
    with pytest.raises(LogCompacted):
        s.entries(Index(1), Index(6))
