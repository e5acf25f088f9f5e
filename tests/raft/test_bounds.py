"""What a peer may not do to a core, however it reaches it (issue 14, robustness).

Each test replays a message a forger (or a buggy peer) sent to a real cluster:
the core must refuse it before it changes anything that would be persisted.
"""

from __future__ import annotations

import pytest

from railyard.raft import Entry, HardState, Index, MessageType, RaftCore, Role, SnapshotMeta, Term
from railyard.raft.bounds import MAX_INDEX, MAX_TERM, MAX_TERM_JUMP
from railyard.raft.election import CAMPAIGN_TRANSFER_CONTEXT, TRANSFER_NOTICE_CONTEXT
from tests.raft.helpers import N1, N2, N3, drain, elect, message, new_core, sent
from tests.raft.network import Network


def _follower_of_n2(term: int = 3) -> RaftCore:
    core = new_core(N1, hard_state=HardState(Term(term)))
    core.step(message(MessageType.HEARTBEAT, N2, N1, term))
    drain(core)
    return core


@pytest.mark.parametrize("term", [(1 << 63) - 1, 1 << 63, MAX_TERM + 1, 3 + MAX_TERM_JUMP + 1])
@pytest.mark.parametrize("kind", [MessageType.VOTE, MessageType.APPEND, MessageType.HEARTBEAT])
def test_an_absurd_term_is_refused_and_nothing_changes(term: int, kind: MessageType) -> None:
    core = _follower_of_n2()
    reason = core.step(message(kind, N3, N1, term, context=CAMPAIGN_TRANSFER_CONTEXT))
    assert reason is not None and "term" in reason
    ready = drain(core)
    assert ready.hard_state is None and not sent(ready)
    assert core.current_term == 3 and core.leader_id == N2


def test_a_large_but_possible_jump_is_taken() -> None:
    core = _follower_of_n2()
    assert core.step(message(MessageType.HEARTBEAT, N3, N1, 3 + MAX_TERM_JUMP)) is None
    assert core.current_term == 3 + MAX_TERM_JUMP and core.leader_id == N3


@pytest.mark.parametrize(
    "fields",
    [
        {"prev_log_index": Index(MAX_INDEX + 1)},
        {"leader_commit": Index(1 << 63)},
        {"entries": (Entry(Term(3), Index(1)), Entry(Term(3), Index(1 << 63)))},
        {"entries": (Entry(Term(4), Index(1)),)},  # newer than the append's own term
        {"snapshot": SnapshotMeta(Index((1 << 63) - 1), Term(3), (N1, N2, N3))},
        {"snapshot": SnapshotMeta(Index(5), Term(9), (N1, N2, N3))},
    ],
)
def test_absurd_indexes_and_entry_terms_are_refused(fields: dict[str, object]) -> None:
    core = _follower_of_n2()
    kind = MessageType.SNAPSHOT if "snapshot" in fields else MessageType.APPEND
    assert core.step(message(kind, N2, N1, 3, **fields)) is not None
    ready = drain(core)
    assert not ready.entries and ready.snapshot is None and not sent(ready)
    assert core.log.last_index == 0


def test_forged_timeout_now_at_a_higher_term_is_dropped_without_its_term() -> None:
    core = _follower_of_n2()
    core.step(message(MessageType.TIMEOUT_NOW, N3, N1, 4))
    ready = drain(core)
    assert core.role is Role.FOLLOWER and core.current_term == 3
    assert ready.hard_state is None and not sent(ready)


def test_timeout_now_from_a_follower_of_the_same_term_is_ignored() -> None:
    core = _follower_of_n2()
    core.step(message(MessageType.TIMEOUT_NOW, N3, N1, 3))
    assert core.role is Role.FOLLOWER and core.current_term == 3
    assert not sent(drain(core))


def test_timeout_now_from_the_leader_is_obeyed() -> None:
    core = _follower_of_n2()
    core.step(message(MessageType.TIMEOUT_NOW, N2, N1, 3))
    assert core.role is Role.CANDIDATE and core.current_term == 4


def test_a_flagged_vote_without_the_leaders_notice_does_not_break_the_lease() -> None:
    core = _follower_of_n2()
    core.step(message(MessageType.VOTE, N3, N1, 4, context=CAMPAIGN_TRANSFER_CONTEXT))
    ready = drain(core)
    assert core.current_term == 3 and core.leader_id == N2 and core.voted_for is None
    assert ready.hard_state is None and not sent(ready)


def test_the_notice_expires_after_an_election_timeout() -> None:
    core = _follower_of_n2()
    core.step(message(MessageType.TIMEOUT_NOW, N2, N1, 3, context=TRANSFER_NOTICE_CONTEXT))
    for _ in range(9):
        core.tick()
        core.step(message(MessageType.HEARTBEAT, N2, N1, 3))
    core.tick()
    core.step(message(MessageType.HEARTBEAT, N2, N1, 3))
    core.step(message(MessageType.VOTE, N3, N1, 4, context=CAMPAIGN_TRANSFER_CONTEXT))
    assert core.current_term == 3 and core.leader_id == N2


def test_a_leader_grants_a_flagged_vote_only_to_its_transferee() -> None:
    core = new_core(N1)
    elect(core)
    drain(core)
    term = core.current_term
    vote = message(
        MessageType.VOTE,
        N3,
        N1,
        term + 1,
        context=CAMPAIGN_TRANSFER_CONTEXT,
        last_log_index=core.log.last_index,
        last_log_term=core.log.last_term,
    )
    core.step(vote)
    assert core.role is Role.LEADER and core.current_term == term
    core.transfer_leadership(N3)
    core.step(vote)
    assert core.role is Role.FOLLOWER and core.voted_for == N3


def test_forged_timeout_now_flapping_moves_no_leadership() -> None:
    """The replay of 59 forged TIMEOUT_NOW frames in 20 s: with the rule, no election."""
    net = Network(5)
    net.elect(N1)
    term = net.cores[N1].current_term
    for round_ in range(60):
        target = (N2, N3)[round_ % 2]
        net.cores[target].step(message(MessageType.TIMEOUT_NOW, N3, target, term))
        net.cores[target].step(message(MessageType.TIMEOUT_NOW, N2, target, term + 1))
        net.settle()
    assert net.leader() == N1 and net.cores[N1].current_term == term


def test_transfer_in_a_five_node_cluster_is_prompt() -> None:
    """The notice lets the transferee win at once although every voter is in a lease."""
    net = Network(5)
    net.elect(N1)
    net.propose(N1, b"a")
    net.cores[N1].transfer_leadership(N3)
    net.settle()
    assert net.leader() == N3
