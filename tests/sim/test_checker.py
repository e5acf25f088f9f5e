"""The checker on hand-made histories: each property is reported when it breaks.

These do not run a core: they feed the checker what Readies would report and
show that a violation is named, and that a legal history is not blamed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from railyard.raft import (
    Entry,
    EntryKind,
    HardState,
    Index,
    Membership,
    NodeId,
    ReadState,
    Role,
    Term,
)
from railyard.sim.checker import (
    ELECTION_SAFETY,
    INTEGRITY,
    LEADER_COMMIT_RULE,
    LEADER_COMPLETENESS,
    LINEARIZABLE_READS,
    LOG_MATCHING,
    MONOTONICITY,
    STATE_MACHINE_SAFETY,
    Checker,
    Violation,
)
from railyard.sim.logview import LogView

FIRST_TERM = Term(1)
NO_COMMIT = Index(0)


@dataclass
class FakeNode:
    node_id: NodeId
    log: LogView = field(default_factory=LogView)
    term: Term = FIRST_TERM
    commit: Index = NO_COMMIT
    role: Role = Role.FOLLOWER
    applied_to: int = 0
    membership: Membership = field(init=False)

    def __post_init__(self) -> None:
        self.membership = Membership.of_voters((self.node_id,))

    @property
    def alive(self) -> bool:
        return True

    def disk_holds(self, index: Index, term: Term) -> bool:
        return self.log.term_at(index) == term

    @property
    def applied(self) -> Index:
        return Index(self.applied_to)


def entry(term: int, index: int, data: bytes = b"") -> Entry:
    kind = EntryKind.NORMAL if data else EntryKind.NOOP
    return Entry(Term(term), Index(index), kind, data)


def write(checker: Checker, node: FakeNode, *entries: Entry) -> None:
    checker.check_entries(node, entries, max(e.term for e in entries))
    node.log.write(entries)


def commit(checker: Checker, node: FakeNode, index: int) -> None:
    hs = HardState(node.term, None, Index(index))
    checker.check_hard_state(node, hs)
    node.commit = Index(index)


def make(*names: str) -> tuple[Checker, list[FakeNode]]:
    checker = Checker(proposed={b"a", b"b", b"c"})
    nodes = [FakeNode(NodeId(name)) for name in names]
    checker.nodes = list(nodes)
    return checker, nodes


def caught(prop: str) -> pytest.RaisesExc[Violation]:
    return pytest.raises(Violation, match=f"^{prop}: ")


def test_two_leaders_in_one_term() -> None:
    checker, (a, b) = make("a", "b")
    a.role = b.role = Role.LEADER
    checker.check_leader(a)
    with caught(ELECTION_SAFETY):
        checker.check_leader(b)


def test_same_index_and_term_different_entries() -> None:
    checker, (a, b) = make("a", "b")
    write(checker, a, entry(1, 1, b"a"))
    with caught(LOG_MATCHING):
        write(checker, b, entry(1, 1, b"b"))


def test_same_entry_different_history_before_it() -> None:
    checker, (a, b) = make("a", "b")
    write(checker, a, entry(1, 1, b"a"), entry(2, 2, b"c"))
    with caught(LOG_MATCHING):
        write(checker, b, entry(2, 1, b"b"), entry(2, 2, b"c"))


def test_committed_entry_missing_from_later_leader() -> None:
    checker, (a, b) = make("a", "b")
    write(checker, a, entry(1, 1, b"a"))
    commit(checker, a, 1)
    write(checker, b, entry(2, 1, b"b"))  # a legal log on its own ...
    b.term, b.role = Term(2), Role.LEADER
    with caught(LEADER_COMPLETENESS):  # ... but not for a leader of a later term
        checker.check_leader(b)


def test_a_stale_leader_of_the_same_term_is_not_blamed() -> None:
    checker, (a, b) = make("a", "b")
    a.term = b.term = Term(2)
    write(checker, a, entry(2, 1, b"a"))
    commit(checker, a, 1)
    b.term, b.role = Term(1), Role.LEADER  # a leader of an older term may lack it
    checker.check_leader(b)


def test_two_nodes_commit_different_entries() -> None:
    checker, (a, b) = make("a", "b")
    write(checker, a, entry(1, 1, b"a"))
    write(checker, b, entry(2, 1, b"b"))
    commit(checker, a, 1)
    with caught(STATE_MACHINE_SAFETY):
        commit(checker, b, 1)


def test_overwriting_a_committed_entry() -> None:
    checker, (a,) = make("a")
    write(checker, a, entry(1, 1, b"a"))
    commit(checker, a, 1)
    with caught(STATE_MACHINE_SAFETY):
        write(checker, a, entry(2, 1, b"b"))


def test_apply_out_of_order() -> None:
    checker, (a,) = make("a")
    write(checker, a, entry(1, 1, b"a"), entry(1, 2, b"b"))
    commit(checker, a, 2)
    with caught(STATE_MACHINE_SAFETY):
        checker.check_apply(a, entry(1, 2, b"b"))


def test_apply_beyond_commit() -> None:
    checker, (a,) = make("a")
    write(checker, a, entry(1, 1, b"a"))
    with caught(STATE_MACHINE_SAFETY):
        checker.check_apply(a, entry(1, 1, b"a"))


def test_term_or_commit_going_back() -> None:
    checker, (a,) = make("a")
    a.term = Term(3)
    with caught(MONOTONICITY):
        checker.check_hard_state(a, HardState(Term(2), None, Index(0)))


def test_leader_commits_an_older_terms_entry_by_counting() -> None:
    checker, (a,) = make("a")
    write(checker, a, entry(1, 1, b"a"), entry(2, 2))
    a.term, a.role = Term(2), Role.LEADER
    with caught(LEADER_COMMIT_RULE):
        checker.check_leader_commit(a, HardState(Term(2), None, Index(1)))
    checker.check_leader_commit(a, HardState(Term(2), None, Index(2)))


def test_value_nobody_proposed() -> None:
    checker, (a,) = make("a")
    with caught(INTEGRITY):
        write(checker, a, entry(1, 1, b"forged"))


def test_value_committed_twice() -> None:
    checker, (a,) = make("a")
    write(checker, a, entry(1, 1, b"a"), entry(1, 2, b"a"))
    with caught(INTEGRITY):
        commit(checker, a, 2)


def test_read_below_commit_known_at_start() -> None:
    checker, (a,) = make("a")
    write(checker, a, entry(1, 1, b"a"), entry(1, 2, b"b"))
    commit(checker, a, 2)
    checker.begin_read(a.node_id, 7)
    checker.check_read_state(a, ReadState(Index(2), 7))  # at the floor: fine
    with caught(LINEARIZABLE_READS):
        checker.check_read_state(a, ReadState(Index(1), 7))
    with caught(LINEARIZABLE_READS):
        checker.check_read_state(a, ReadState(Index(2), 8))  # never asked
