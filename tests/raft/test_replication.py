"""Log replication message by message: progress states, pipelining, backtracking, commit."""

from __future__ import annotations

from typing import Any

import pytest

from railyard.raft import (
    Entry,
    HardState,
    Index,
    MessageType,
    NodeId,
    NotLeader,
    RaftCore,
    Role,
    Term,
)
from tests.raft.helpers import (
    N1,
    N2,
    N3,
    ack_append,
    drain,
    elect,
    log_of,
    message,
    new_core,
    sent,
)
from tests.raft.network import Network


def leader_with_replicating_follower(**config: Any) -> RaftCore:
    """N1 leads at term 1 and N2 acknowledged the no-op (N2 in REPLICATE)."""
    core = new_core(N1, **config)
    ready = elect(core)
    for append in sent(ready, MessageType.APPEND):
        if append.to == N2:
            ack_append(core, append)
    drain(core)
    assert core.status().progress[N2].state == "replicate"
    return core


def test_first_append_probes_one_at_a_time() -> None:
    core = new_core(N1)
    elect(core)
    assert core.status().progress[N2].state == "probe"
    core.propose(b"a")
    core.propose(b"b")
    # Probing: the no-op append is outstanding, nothing more goes to N2 or N3.
    assert not sent(drain(core), MessageType.APPEND)


def test_pipelining_is_bounded_by_the_inflight_window() -> None:
    core = leader_with_replicating_follower(max_inflight_appends=3)
    for number in range(5):
        core.propose(str(number).encode())
    to_n2 = [m for m in sent(drain(core), MessageType.APPEND) if m.to == N2]
    assert len(to_n2) == 3
    assert [m.prev_log_index for m in to_n2] == [1, 2, 3]
    ack_append(core, to_n2[0])
    more = [m for m in sent(drain(core), MessageType.APPEND) if m.to == N2]
    # The ack freed one slot: the next append carries everything pending.
    assert [(m.prev_log_index, len(m.entries)) for m in more] == [(4, 2)]


def test_batches_respect_entry_and_byte_limits() -> None:
    core = leader_with_replicating_follower(max_entries_per_append=2, max_bytes_per_append=250)
    core.propose_batch([b"x" * 100] * 3)
    appends = [m for m in sent(drain(core), MessageType.APPEND) if m.to == N2]
    assert [len(m.entries) for m in appends] == [2, 1]
    core.propose_batch([b"y" * 200] * 2)
    appends = [m for m in sent(drain(core), MessageType.APPEND) if m.to == N2]
    assert [len(m.entries) for m in appends] == [1, 1]


def test_propose_batch_is_one_append() -> None:
    core = leader_with_replicating_follower()
    first = core.propose_batch([b"a", b"b", b"c"])
    assert first == 2
    appends = [m for m in sent(drain(core), MessageType.APPEND) if m.to == N2]
    assert len(appends) == 1 and [e.data for e in appends[0].entries] == [b"a", b"b", b"c"]


def test_commit_needs_a_quorum_of_durable_copies() -> None:
    core = new_core(N1)
    ready = elect(core)
    assert core.log.committed == 0
    append = sent(ready, MessageType.APPEND)[0]
    ack_append(core, append)
    assert core.log.committed == 1  # leader (durable after advance) + one follower


def test_follower_commit_is_min_of_leader_commit_and_last_new_entry() -> None:
    follower = new_core(N2)
    append = message(
        MessageType.APPEND,
        N1,
        N2,
        1,
        entries=tuple(log_of(1, 1)),
        leader_commit=Index(10),
    )
    follower.step(append)
    assert follower.log.committed == 2
    follower.step(
        message(
            MessageType.APPEND,
            N1,
            N2,
            1,
            prev_log_index=Index(1),
            prev_log_term=Term(1),
            leader_commit=Index(10),
        )
    )
    assert follower.log.committed == 2  # an empty append proves nothing past index 1


def test_append_responses_wait_for_persistence() -> None:
    follower = new_core(N2)
    follower.step(message(MessageType.APPEND, N1, N2, 1, entries=tuple(log_of(1))))
    ready = follower.ready()
    assert [e.index for e in ready.entries] == [1]
    assert not ready.messages
    (reply,) = ready.persisted_messages
    assert reply.success and reply.match_index == 1


def test_stale_append_does_not_truncate() -> None:
    follower = new_core(N2, hard_state=HardState(Term(1)), entries=log_of(1, 1, 1))
    follower.step(message(MessageType.APPEND, N1, N2, 1, entries=tuple(log_of(1))))
    (reply,) = sent(drain(follower))
    assert reply.success and reply.match_index == 1
    assert follower.log.last_index == 3


def test_duplicate_append_below_commit_acknowledges_commit() -> None:
    follower = new_core(
        N2, hard_state=HardState(Term(1), commit_index=Index(3)), entries=log_of(1, 1, 1)
    )
    follower.step(message(MessageType.APPEND, N1, N2, 1, entries=tuple(log_of(1, 1))))
    (reply,) = sent(drain(follower))
    assert reply.success and reply.match_index == 3


def test_rejection_carries_conflict_hint() -> None:
    follower = new_core(N2, hard_state=HardState(Term(3)), entries=log_of(1, 2, 2, 2))
    follower.step(
        message(MessageType.APPEND, N1, N2, 3, prev_log_index=Index(4), prev_log_term=Term(3))
    )
    (reply,) = sent(drain(follower))
    assert not reply.success
    assert (reply.conflict_index, reply.conflict_term, reply.prev_log_index) == (2, 2, 4)
    follower.step(
        message(MessageType.APPEND, N1, N2, 3, prev_log_index=Index(9), prev_log_term=Term(3))
    )
    (reply,) = sent(drain(follower))
    assert (reply.conflict_index, reply.conflict_term) == (5, 0)


def test_fast_backtracking_skips_a_term_per_round_trip() -> None:
    """A follower with 30 conflicting entries over 3 terms costs ~3 rejections, not 30."""
    leader_log = log_of(1, *([4] * 30))
    follower_log = log_of(1, *([2] * 10), *([3] * 20))
    net = Network(3, election_ticks=10)
    net.disks[N1].entries = leader_log
    net.disks[N1].hard_state = HardState(Term(4))
    net.disks[N2].entries = follower_log
    net.disks[N2].hard_state = HardState(Term(3))
    net.disks[N3].entries = list(leader_log)
    net.disks[N3].hard_state = HardState(Term(4))
    for node in net.voters:
        net.restart(node)
    net.elect(N1)
    rejections = [
        m
        for m in net.delivered
        if m.type is MessageType.APPEND_RESPONSE and m.sender == N2 and not m.success
    ]
    assert 1 <= len(rejections) <= 3
    assert net.cores[N2].log.slice(Index(1), Index(40)) == net.cores[N1].log.slice(
        Index(1), Index(40)
    )


def test_stale_rejection_is_ignored() -> None:
    core = leader_with_replicating_follower()
    core.propose(b"a")
    drain(core)
    before = core.status().progress[N2]
    core.step(
        message(
            MessageType.APPEND_RESPONSE,
            N2,
            N1,
            1,
            success=False,
            prev_log_index=Index(0),
            conflict_index=Index(1),
        )
    )
    assert core.status().progress[N2] == before


def test_heartbeat_commit_is_capped_by_match() -> None:
    core = leader_with_replicating_follower()
    core.propose(b"a")
    ready = drain(core)
    for append in sent(ready, MessageType.APPEND):
        if append.to == N2:
            ack_append(core, append)
    drain(core)
    assert core.log.committed == 2
    core.tick()
    beats = {m.to: m for m in sent(drain(core), MessageType.HEARTBEAT)}
    assert beats[N2].leader_commit == 2
    assert beats[N3].leader_commit == 0  # N3 never acknowledged anything


def test_heartbeat_response_resumes_a_paused_probe() -> None:
    core = new_core(N1)
    elect(core)
    core.propose(b"a")
    drain(core)
    core.step(message(MessageType.HEARTBEAT_RESPONSE, N3, N1, 1))
    appends = [m for m in sent(drain(core), MessageType.APPEND) if m.to == N3]
    assert len(appends) == 1 and appends[0].prev_log_index == 0


def test_report_unreachable_falls_back_to_probe() -> None:
    core = leader_with_replicating_follower()
    core.report_unreachable(N2)
    assert core.status().progress[N2].state == "probe"


def test_propose_on_follower_names_the_leader() -> None:
    follower = new_core(N2)
    with pytest.raises(NotLeader) as no_leader:
        follower.propose(b"x")
    assert no_leader.value.leader_id is None
    follower.step(message(MessageType.HEARTBEAT, N1, N2, 1))
    with pytest.raises(NotLeader) as known:
        follower.propose(b"x")
    assert known.value.leader_id == N1


def test_replication_in_a_network() -> None:
    net = Network(5)
    net.elect(N3)
    net.propose(N3, b"a", b"b")
    net.propose(N3, b"c")
    for node in net.voters:
        assert net.applied_data(node) == [b"a", b"b", b"c"]


def test_lagging_follower_catches_up_after_heal() -> None:
    net = Network(3)
    net.elect(N1)
    net.isolate(N3)
    for number in range(20):
        net.propose(N1, str(number).encode())
    net.heal()
    net.tick(times=2)
    assert net.applied_data(N3) == [str(n).encode() for n in range(20)]
    assert net.cores[N3].role is Role.FOLLOWER


def test_follower_truncates_uncommitted_entries_of_a_deposed_leader() -> None:
    net = Network(3)
    net.elect(N1)
    net.propose(N1, b"kept")
    net.isolate(N1)
    net.cores[N1].propose(b"lost")
    net.settle()
    net.tick([N2, N3], times=30)
    new_leader = net.leader()
    assert new_leader in (N2, N3)
    net.propose(new_leader, b"new")
    net.heal()
    net.tick(times=5)
    for node in net.voters:
        assert net.applied_data(node) == [b"kept", b"new"]
    entry: Entry
    for entry in net.cores[N1].log.slice(Index(1), Index(100)):
        assert entry.data != b"lost"


def test_empty_batch_appends_nothing() -> None:
    core = leader_with_replicating_follower()
    last = core.log.last_index
    assert core.propose_batch([]) == last + 1
    assert core.log.last_index == last


@pytest.mark.parametrize("kind", [MessageType.VOTE, MessageType.PRE_VOTE])
def test_vote_requests_from_outside_the_configuration_are_ignored(kind: MessageType) -> None:
    """A removed node that never learned of its removal cannot raise our term (§4.2.3)."""
    follower = new_core(N2)
    follower.step(message(kind, NodeId("stranger"), N2, 9, last_log_index=Index(5)))
    assert follower.current_term == 0 and not sent(drain(follower))


def test_appends_from_a_leader_not_yet_in_the_configuration_are_taken() -> None:
    """A learner or a joining node hears from the leader before it holds the
    configuration that names that leader."""
    follower = new_core(N2)
    follower.step(message(MessageType.APPEND, NodeId("stranger"), N2, 9, entries=tuple(log_of(9))))
    assert follower.current_term == 9 and follower.log.last_index == 1


def test_acks_of_entries_replaced_before_persisting_are_withdrawn() -> None:
    """An ack promises durability: if the entries it covers are replaced before the
    driver persisted them, the ack must never be sent."""
    follower = new_core(N2)
    follower.step(message(MessageType.APPEND, N1, N2, 1, entries=tuple(log_of(1, 1, 1))))
    follower.step(
        message(
            MessageType.APPEND,
            N3,
            N2,
            2,
            prev_log_index=Index(1),
            prev_log_term=Term(1),
            entries=tuple(log_of(2, start=2)),
        )
    )
    ready = follower.ready()
    assert [(e.index, e.term) for e in ready.entries] == [(1, 1), (2, 2)]
    acks = [(m.to, m.match_index) for m in ready.persisted_messages if m.success]
    assert acks == [(N3, 2)]  # the ack of 1..3 to N1 is gone
