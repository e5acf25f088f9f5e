"""The Ready/advance contract: what is handed out, when, and restart from disk."""

from __future__ import annotations

from railyard.raft import (
    EntryKind,
    HardState,
    Index,
    MessageType,
    NodeId,
    Role,
    SoftState,
    Term,
)
from tests.raft.helpers import N1, N2, drain, elect, log_of, message, new_core, sent
from tests.raft.network import Network


def test_fresh_core_has_nothing_to_do() -> None:
    core = new_core()
    assert not core.has_ready()
    assert core.ready().is_empty()


def test_soft_and_hard_state_are_handed_only_on_change() -> None:
    core = new_core(count=1)
    core.campaign()
    ready = core.ready()
    assert ready.soft_state == SoftState(Role.LEADER, N1)
    assert ready.hard_state is not None and ready.hard_state.current_term == 1
    core.advance(ready)
    ready = core.ready()  # the no-op commits now that it is durable
    assert ready.soft_state is None
    assert ready.hard_state == HardState(Term(1), N1, Index(1))
    core.advance(ready)
    assert not core.has_ready()


def test_single_node_commits_only_durable_entries() -> None:
    """The leader counts its own copy only after advance() (Raft §10.2.1)."""
    core = new_core(count=1)
    core.campaign()
    first = core.ready()
    assert [e.kind for e in first.entries] == [EntryKind.NOOP]
    assert first.committed_entries == ()
    core.advance(first)
    index = core.propose(b"x")
    ready = core.ready()
    assert [e.index for e in ready.entries] == [index]
    assert [e.index for e in ready.committed_entries] == [1]  # not yet the new one
    core.advance(ready)
    ready = core.ready()
    assert [e.data for e in ready.committed_entries] == [b"x"]


def test_leader_does_not_count_itself_before_advance() -> None:
    core = new_core(N1, count=5)
    core.campaign()
    ready = core.ready()  # not advanced: the no-op is not durable on the leader
    for peer in ("n2", "n3"):
        core.step(message(MessageType.VOTE_RESPONSE, NodeId(peer), N1, 1, vote_granted=True))
    ready = core.ready()
    appends = sent(ready, MessageType.APPEND)
    for append in appends[:2]:  # two followers acknowledge: 2 of 5, plus leader = 3
        core.step(
            message(
                MessageType.APPEND_RESPONSE,
                append.to,
                N1,
                1,
                success=True,
                match_index=Index(1),
            )
        )
    assert core.log.committed == 0
    core.advance(ready)
    assert core.log.committed == 1


def test_entries_are_handed_once() -> None:
    core = new_core(count=1)
    core.campaign()
    first = core.ready()
    second = core.ready()
    assert first.entries and not second.entries


def test_committed_entries_follow_persisted_entries() -> None:
    follower = new_core(N2)
    follower.step(
        message(MessageType.APPEND, N1, N2, 1, entries=tuple(log_of(1, 1)), leader_commit=Index(2))
    )
    ready = follower.ready()
    assert [e.index for e in ready.entries] == [1, 2]
    assert [e.index for e in ready.committed_entries] == [1, 2]
    assert ready.hard_state == HardState(Term(1), None, Index(2))


def test_restart_keeps_term_vote_and_log_and_does_not_reapply() -> None:
    core = new_core(
        N1,
        hard_state=HardState(Term(3), N2, Index(2)),
        entries=log_of(1, 2, 3),
        applied=2,
    )
    status = core.status()
    assert (status.term, status.voted_for, status.commit_index) == (3, N2, 2)
    assert (status.last_index, status.applied_index, status.role) == (3, 2, Role.FOLLOWER)
    ready = core.ready()
    assert ready.committed_entries == () and ready.hard_state is None
    # The vote survived the restart: another candidate of term 3 is refused.
    core.step(
        message(
            MessageType.VOTE, NodeId("n3"), N1, 3, last_log_index=Index(9), last_log_term=Term(3)
        )
    )
    (reply,) = sent(drain(core))
    assert not reply.vote_granted


def test_restart_hands_committed_but_unapplied_entries() -> None:
    core = new_core(
        N1, hard_state=HardState(Term(1), None, Index(3)), entries=log_of(1, 1, 1), applied=1
    )
    assert [e.index for e in core.ready().committed_entries] == [2, 3]


def test_cluster_restart_from_disk_preserves_committed_data() -> None:
    net = Network(3)
    net.elect(N1)
    net.propose(N1, b"a", b"b")
    for node in net.voters:
        net.crash(node)
    for node in net.voters:
        net.restart(node)
    net.tick(times=40)
    leader = net.leader()
    assert leader is not None
    net.propose(leader, b"c")
    for node in net.voters:
        assert net.applied_data(node) == [b"a", b"b", b"c"]


def test_crash_loses_only_what_was_not_persisted() -> None:
    net = Network(3)
    net.elect(N1)
    net.propose(N1, b"a")
    net.cores[N2].step(
        message(
            MessageType.APPEND,
            N1,
            N2,
            1,
            prev_log_index=net.cores[N2].log.last_index,
            prev_log_term=net.cores[N2].log.last_term,
            entries=(),
        )
    )
    net.crash(N2)  # the un-handled Ready above is lost with the process
    net.restart(N2)
    assert net.cores[N2].log.last_index == net.disks[N2].entries[-1].index


def test_status_reports_leader_progress() -> None:
    core = new_core(N1)
    elect(core)
    status = core.status()
    assert status.role is Role.LEADER and status.leader_id == N1
    assert set(status.progress) == {N1, N2, NodeId("n3")}
    assert status.progress[N2].state == "probe"
    assert status.ticks_since_quorum_contact == 0
    assert core.log_entries(Index(1), Index(2))[0].kind is EntryKind.NOOP


def test_status_counts_ticks_since_leader_contact() -> None:
    core = new_core(N2)
    core.step(message(MessageType.HEARTBEAT, N1, N2, 1))
    for _ in range(4):
        core.tick()
    assert core.status().ticks_since_leader_contact == 4
    core.step(message(MessageType.HEARTBEAT, N1, N2, 1))
    assert core.status().ticks_since_leader_contact == 0
