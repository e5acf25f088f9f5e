"""A follower whose store was wiped rejoins: the leader forgets its old match index.

Raft assumes a node never loses what it stored. When one does (its data
directory deleted), it comes back with an empty log while the leader still
holds the `match_index` it acknowledged; rejections that report a log ending
below it must reset that progress, and stale replies must still be ignored.
"""

from __future__ import annotations

from railyard.raft import (
    HardState,
    Index,
    Message,
    MessageType,
    NodeId,
    RaftCore,
    SnapshotMeta,
    Term,
)
from tests.raft.helpers import N1, N2, N3, ack_append, drain, elect, log_of, message, new_core, sent
from tests.raft.network import Disk, Network

# Entries the cluster held before the follower lost its store (as in the F9 run).
HISTORY = 72


def leader_with_history() -> tuple[RaftCore, Message]:
    """N1 leads term 2 over HISTORY entries of term 1; N2 acknowledged the lot.

    Returns the leader and its first append to N2 (the no-op at HISTORY + 1).
    """
    core = new_core(
        N1, entries=log_of(*[1] * HISTORY), hard_state=HardState(Term(1), None, Index(HISTORY))
    )
    drain(core)
    ready = elect(core)
    (append,) = [m for m in sent(ready, MessageType.APPEND) if m.to == N2]
    ack_append(core, append)
    drain(core)
    assert core.status().progress[N2].match_index == HISTORY + 1
    assert core.status().progress[N2].state == "replicate"
    return core, append


def rejection(append: Message, *, follower_last: int) -> Message:
    """What a follower whose log ends at `follower_last` < prev answers to `append`."""
    return message(
        MessageType.APPEND_RESPONSE,
        append.to,
        append.sender,
        append.term,
        prev_log_index=append.prev_log_index,
        success=False,
        match_index=Index(follower_last),
        conflict_index=Index(follower_last + 1),
    )


def appends_to_emptied_n2(core: RaftCore) -> tuple[Message, Message]:
    """Two appends streamed to N2 after it lost its store, unanswered yet."""
    core.propose(b"after")
    (first,) = [m for m in sent(drain(core), MessageType.APPEND) if m.to == N2]
    core.propose(b"later")
    (second,) = [m for m in sent(drain(core), MessageType.APPEND) if m.to == N2]
    return first, second


def test_rejection_from_emptied_follower_resets_progress_and_resends_log() -> None:
    core, _ = leader_with_history()
    first, second = appends_to_emptied_n2(core)
    assert first.prev_log_index == HISTORY + 1  # the match index itself
    # Indistinguishable from a reordered reply older than the acknowledgement: ignored.
    core.step(rejection(first, follower_last=0))
    assert not sent(drain(core))
    assert core.status().progress[N2].match_index == HISTORY + 1
    # Beyond the match index the rejection is current, and the log end proves the loss.
    core.step(rejection(second, follower_last=0))
    (resend,) = [m for m in sent(drain(core), MessageType.APPEND) if m.to == N2]
    assert resend.prev_log_index == 0 and resend.entries[0].index == 1
    progress = core.status().progress[N2]
    assert (progress.match_index, progress.state, progress.lost_log_count) == (0, "probe", 1)
    committed = core.log.committed
    ack_append(core, resend)
    assert core.status().progress[N2].state == "replicate"
    assert core.log.committed >= committed  # the commit index never went back


def test_emptied_follower_gets_snapshot_when_its_entries_were_compacted() -> None:
    core, _ = leader_with_history()
    meta = core.snapshot_meta(Index(60))
    core.compact(meta)
    _, second = appends_to_emptied_n2(core)
    core.step(rejection(second, follower_last=0))
    (snapshot,) = [m for m in sent(drain(core)) if m.to == N2]
    assert snapshot.type is MessageType.SNAPSHOT and snapshot.snapshot == meta


def test_heartbeat_response_below_match_probes_at_match() -> None:
    core, _ = leader_with_history()
    core.step(message(MessageType.HEARTBEAT_RESPONSE, N2, N1, 2, match_index=Index(0)))
    (probe,) = [m for m in sent(drain(core), MessageType.APPEND) if m.to == N2]
    assert probe.prev_log_index == HISTORY + 1 and not probe.entries
    # The emptied follower rejects the probe: now the leader knows and resends all.
    core.step(rejection(probe, follower_last=0))
    (resend,) = [m for m in sent(drain(core), MessageType.APPEND) if m.to == N2]
    assert resend.prev_log_index == 0
    assert core.status().progress[N2].lost_log_count == 1


def test_stale_rejection_at_or_below_match_is_still_ignored() -> None:
    core, append = leader_with_history()
    # A rejection of the first append, sent before the follower caught up, arriving late.
    core.step(rejection(append, follower_last=10))
    assert not sent(drain(core))
    progress = core.status().progress[N2]
    assert (progress.match_index, progress.state, progress.lost_log_count) == (
        HISTORY + 1,
        "replicate",
        0,
    )


def test_stale_heartbeat_response_costs_a_probe_but_keeps_match() -> None:
    core, _ = leader_with_history()
    core.step(message(MessageType.HEARTBEAT_RESPONSE, N2, N1, 2, match_index=Index(10)))
    (probe,) = [m for m in sent(drain(core), MessageType.APPEND) if m.to == N2]
    ack_append(core, probe)  # the follower did hold its log: it accepts the probe
    progress = core.status().progress[N2]
    assert (progress.match_index, progress.state, progress.lost_log_count) == (
        HISTORY + 1,
        "replicate",
        0,
    )


def test_follower_heartbeat_response_reports_its_last_index() -> None:
    follower = new_core(N2, entries=log_of(1, 1, 1), hard_state=HardState(Term(1)))
    follower.step(message(MessageType.HEARTBEAT, N1, N2, 1))
    (reply,) = sent(drain(follower), MessageType.HEARTBEAT_RESPONSE)
    assert reply.match_index == 3


# ---------------------------------------------------------------- whole cluster


def wipe(net: Network, node: NodeId) -> None:
    """Stop `node`, delete everything it stored, start it again."""
    net.crash(node)
    net.disks[node] = Disk()
    net.restart(node)


def test_wiped_follower_rejoins_from_the_log() -> None:
    net = Network(3)
    net.elect(N1)
    for number in range(10):
        net.propose(N1, str(number).encode())
    wipe(net, N2)
    assert net.cores[N2].status().last_index == 0
    net.propose(N1, b"after")
    assert net.applied_data(N2) == net.applied_data(N1)
    assert net.cores[N1].status().progress[N2].lost_log_count == 1
    assert net.cores[N1].status().progress[N2].match_index == net.cores[N1].log.last_index


def test_wiped_follower_of_an_idle_leader_rejoins_by_snapshot() -> None:
    net = Network(3)
    net.elect(N1)
    for number in range(10):
        net.propose(N1, str(number).encode())
    leader = net.cores[N1]
    applied = net.disks[N1].applied_index
    meta = SnapshotMeta(applied, leader.term_of(applied) or Term(0), net.voters)
    leader.compact(meta)
    net.disks[N1].snapshot = meta
    net.disks[N1].entries = [e for e in net.disks[N1].entries if e.index > applied]
    wipe(net, N3)
    net.tick([N1], times=3)  # no new proposal: heartbeats alone reveal the loss
    assert net.disks[N3].snapshot == meta
    assert net.cores[N3].log.committed == leader.log.committed
    net.propose(N1, b"after")
    assert net.applied_data(N3)[-1:] == [b"after"]
