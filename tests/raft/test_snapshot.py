"""Snapshots: start from one, compact, send to a lagging follower, install."""

from __future__ import annotations

from railyard.raft import HardState, Index, MessageType, Role, SnapshotMeta, Term
from tests.raft.helpers import N1, N2, N3, drain, log_of, message, new_core, sent
from tests.raft.network import Network, ids


def snap(index: int, term: int) -> SnapshotMeta:
    return SnapshotMeta(Index(index), Term(term), ids(3))


def test_start_from_snapshot() -> None:
    core = new_core(
        N1,
        snapshot=snap(10, 2),
        entries=log_of(2, 3, start=11),
        hard_state=HardState(Term(3), None, Index(11)),
        applied=10,
    )
    status = core.status()
    assert (status.snapshot_index, status.last_index, status.applied_index) == (10, 12, 10)
    assert core.term_of(Index(10)) == 2
    assert [e.index for e in core.ready().committed_entries] == [11]


def test_follower_installs_snapshot_ahead_of_commit() -> None:
    follower = new_core(N2, entries=log_of(1, 1), hard_state=HardState(Term(1), None, Index(1)))
    follower.step(message(MessageType.SNAPSHOT, N1, N2, 2, snapshot=snap(20, 2)))
    ready = follower.ready()
    assert ready.snapshot == snap(20, 2)
    assert ready.hard_state == HardState(Term(2), None, Index(20))
    (reply,) = ready.persisted_messages
    assert reply.type is MessageType.SNAPSHOT_RESPONSE and reply.match_index == 20
    follower.advance(ready)
    status = follower.status()
    assert (status.last_index, status.commit_index, status.applied_index) == (20, 20, 20)


def test_stale_snapshot_is_not_installed() -> None:
    follower = new_core(N2, entries=log_of(1, 1, 1), hard_state=HardState(Term(1), None, Index(3)))
    follower.step(message(MessageType.SNAPSHOT, N1, N2, 1, snapshot=snap(2, 1)))
    ready = drain(follower)
    assert ready.snapshot is None
    (reply,) = sent(ready)
    assert reply.match_index == 3
    assert follower.status().last_index == 3


def test_snapshot_matching_log_only_fast_forwards_commit() -> None:
    follower = new_core(N2, entries=log_of(1, 1, 1, 1), hard_state=HardState(Term(1)))
    follower.step(message(MessageType.SNAPSHOT, N1, N2, 1, snapshot=snap(3, 1)))
    ready = drain(follower)
    assert ready.snapshot is None
    assert [e.index for e in ready.committed_entries] == [1, 2, 3]
    assert follower.status().last_index == 4  # the entry after the snapshot is kept


def test_leader_sends_snapshot_when_entries_are_compacted() -> None:
    net = Network(3)
    net.elect(N1)
    net.isolate(N3)
    for number in range(10):
        net.propose(N1, str(number).encode())
    leader = net.cores[N1]
    applied = net.disks[N1].applied_index
    meta = SnapshotMeta(applied, leader.term_of(applied) or Term(0), net.voters)
    leader.compact(meta)
    net.disks[N1].snapshot = meta
    net.disks[N1].entries = [e for e in net.disks[N1].entries if e.index > applied]
    assert leader.status().snapshot_index == applied
    net.heal()
    net.tick(times=3)
    snapshots = [m for m in net.delivered if m.type is MessageType.SNAPSHOT]
    assert snapshots and snapshots[0].to == N3 and snapshots[0].snapshot == meta
    assert net.disks[N3].snapshot == meta
    net.propose(N1, b"after")
    assert net.cores[N3].log.committed == net.cores[N1].log.committed
    assert net.applied_data(N3)[-1:] == [b"after"]
    assert leader.status().progress[N3].state == "replicate"


def test_failed_snapshot_report_returns_to_probe() -> None:
    core = new_core(
        N1, snapshot=snap(5, 1), hard_state=HardState(Term(1), None, Index(5)), applied=5
    )
    core.campaign()
    ready = drain(core)
    for request in sent(ready, MessageType.VOTE):
        core.step(message(MessageType.VOTE_RESPONSE, request.to, N1, 2, vote_granted=True))
    assert core.role is Role.LEADER
    drain(core)
    # N2 has nothing: it rejects the probe, the leader has no entries that far back.
    core.step(
        message(
            MessageType.APPEND_RESPONSE,
            N2,
            N1,
            2,
            success=False,
            prev_log_index=Index(5),
            conflict_index=Index(1),
        )
    )
    (snapshot_message,) = sent(drain(core), MessageType.SNAPSHOT)
    assert snapshot_message.snapshot == snap(5, 1)
    assert core.status().progress[N2].state == "snapshot"
    core.report_snapshot(N2, success=False)
    assert core.status().progress[N2].state == "probe"
    core.step(message(MessageType.HEARTBEAT_RESPONSE, N2, N1, 2))
    assert sent(drain(core), MessageType.SNAPSHOT)  # retried after the next heartbeat
    assert N3 in core.status().progress


def test_unsent_snapshot_message_names_the_latest_snapshot() -> None:
    net = Network(3)
    net.elect(N1)
    net.isolate(N3)
    net.propose(N1, b"a", b"b")
    leader = net.cores[N1]
    first = SnapshotMeta(Index(2), leader.term_of(Index(2)) or Term(0), net.voters)
    leader.compact(first)
    net.heal()
    # N3 lost the appends: it rejects, and what it lacks is compacted.
    leader.step(
        message(
            MessageType.APPEND_RESPONSE,
            N3,
            N1,
            leader.current_term,
            success=False,
            prev_log_index=Index(3),
            conflict_index=Index(2),
        )
    )
    assert [m.snapshot for m in leader.messages if m.type is MessageType.SNAPSHOT] == [first]
    second = SnapshotMeta(Index(3), leader.term_of(Index(3)) or Term(0), net.voters)
    leader.compact(second)
    (snapshot_message,) = sent(leader.ready(), MessageType.SNAPSHOT)
    assert snapshot_message.snapshot == second
