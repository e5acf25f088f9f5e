"""RaftLog: lookups, appends with conflicts, hints, hand-offs, compaction."""

from __future__ import annotations

import pytest

from railyard.raft import Entry, Index, InvariantViolation, SnapshotMeta, Term
from railyard.raft.log import RaftLog
from tests.raft.helpers import log_of


def make_log(*terms: int, committed: int = 0, snapshot: SnapshotMeta | None = None) -> RaftLog:
    start = snapshot.index + 1 if snapshot else 1
    return RaftLog(snapshot, log_of(*terms, start=start), Index(committed), Index(0))


def terms_of(log: RaftLog) -> list[int]:
    return [e.term for e in log.slice(log.first_index, Index(log.last_index + 1))]


def test_term_lookup_and_bounds() -> None:
    log = make_log(1, 1, 2)
    assert log.term(Index(0)) == 0
    assert log.term(Index(3)) == 2
    assert log.term(Index(4)) is None
    assert (log.first_index, log.last_index, log.last_term) == (1, 3, 2)


def test_append_matching_entries_never_truncates() -> None:
    log = make_log(1, 1, 2, 2)
    assert log.try_append(Index(1), Term(1), log_of(1, 2, start=2)) == 3
    assert terms_of(log) == [1, 1, 2, 2]  # the entry at 4 survives a shorter append


def test_append_truncates_at_first_conflict_only() -> None:
    log = make_log(1, 1, 2, 2)
    log.stable_to(Index(4), Term(2))
    assert log.try_append(Index(2), Term(1), log_of(3, 3, 3, start=3)) == 5
    assert terms_of(log) == [1, 1, 3, 3, 3]
    assert log.stable_index == 2  # the replaced entries are no longer durable
    assert [e.index for e in log.take_unhanded_entries()] == [3, 4, 5]


def test_append_rejects_mismatch() -> None:
    log = make_log(1, 2)
    assert log.try_append(Index(2), Term(1), log_of(2, start=3)) is None
    assert log.try_append(Index(5), Term(2), ()) is None
    assert terms_of(log) == [1, 2]


def test_conflict_below_commit_is_an_invariant_violation() -> None:
    log = make_log(1, 1, committed=2)
    with pytest.raises(InvariantViolation):
        log.try_append(Index(1), Term(1), log_of(5, start=2))


def test_term_searches() -> None:
    log = make_log(1, 1, 3, 3, 3, 5)
    assert log.first_index_of_term_at(Index(4)) == 3
    assert log.first_index_of_term_at(Index(1)) == 1
    assert log.last_index_of_term(Term(3)) == 5
    assert log.last_index_of_term(Term(2)) is None
    assert log.last_index_of_term(Term(5)) == 6


def test_up_to_date_compares_term_then_index() -> None:
    log = make_log(1, 2, 2)
    assert log.is_up_to_date(Index(1), Term(3))  # higher last term wins though shorter
    assert log.is_up_to_date(Index(3), Term(2))
    assert not log.is_up_to_date(Index(2), Term(2))
    assert not log.is_up_to_date(Index(9), Term(1))  # longer but older term loses


def test_entries_for_append_respects_count_and_bytes() -> None:
    entries = [Entry(Term(1), Index(i), data=b"x" * 10) for i in range(1, 11)]
    log = RaftLog(None, entries, Index(0), Index(0))
    assert len(log.entries_for_append(Index(1), 4, 1_000)) == 4
    assert len(log.entries_for_append(Index(1), 100, 35)) == 3
    assert len(log.entries_for_append(Index(1), 100, 1)) == 1  # always at least one
    assert log.entries_for_append(Index(11), 100, 100) == ()


def test_committed_entries_are_handed_once() -> None:
    log = make_log(1, 1, 1)
    log.commit_to(Index(2))
    assert [e.index for e in log.take_committed_entries()] == [1, 2]
    assert not log.has_committed_to_hand()
    log.commit_to(Index(3))
    assert [e.index for e in log.take_committed_entries()] == [3]


def test_commit_never_goes_back_or_beyond_log() -> None:
    log = make_log(1, 1)
    assert log.commit_to(Index(2))
    assert not log.commit_to(Index(1))
    assert log.committed == 2
    with pytest.raises(InvariantViolation):
        log.commit_to(Index(3))


def test_compact_and_restore() -> None:
    log = make_log(1, 1, 2, 2, committed=3)
    log.take_committed_entries()
    log.compact(SnapshotMeta(Index(2), Term(1), ()))
    assert (log.first_index, log.term(Index(2)), log.term(Index(1))) == (3, 1, None)
    assert terms_of(log) == [2, 2]
    with pytest.raises(InvariantViolation):
        log.compact(SnapshotMeta(Index(4), Term(2), ()))  # beyond what was applied
    log.restore(SnapshotMeta(Index(10), Term(4), ()))
    assert (log.last_index, log.last_term, log.committed) == (10, 4, 10)


def test_restart_rejects_holes() -> None:
    with pytest.raises(InvariantViolation):
        RaftLog(None, [Entry(Term(1), Index(1)), Entry(Term(1), Index(3))], Index(0), Index(0))
