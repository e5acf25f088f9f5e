"""The leader's side of log replication (Raft §5.3, §5.4.2; etcd-io/raft's progress flow).

The leader sends each follower appends according to its `Progress` state,
reads acknowledgements, moves `next_index` back with the follower's conflict
hint on a rejection (one round trip per conflicting term), and commits by
counting durable match indexes, but only entries of its own term (§5.4.2).
Followers whose entries were compacted get a SNAPSHOT instead.

Raft assumes a node never loses what it stored; a follower whose store was
wiped comes back with a short log while the leader still holds its old
`match_index`. A rejection (or a heartbeat response) reporting a last index
below `match_index` reveals it: the leader forgets that progress and probes
from the follower's real log end (`_forget_lost_log`). A reordered reply from
before the acknowledgements can look the same; treating it so only costs a
resend, never safety, as the commit index never decreases.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from railyard.raft import election
from railyard.raft.progress import Progress, ProgressState
from railyard.raft.quorum import committed_index
from railyard.raft.roles import become_follower
from railyard.raft.types import NO_INDEX, Index, Message, MessageType, NodeId

if TYPE_CHECKING:
    from railyard.raft.core import RaftCore


def maybe_send_append(core: RaftCore, to: NodeId, send_if_empty: bool) -> bool:
    """Send `to` the entries it lacks (or a snapshot); False when nothing was sent."""
    progress = core.progress[to]
    if progress.is_paused():
        return False
    log = core.log
    prev_index = Index(progress.next_index - 1)
    prev_term = log.term(prev_index)
    if prev_term is None:
        return maybe_send_snapshot(core, to, progress)
    config = core.config
    entries = log.entries_for_append(
        progress.next_index, config.max_entries_per_append, config.max_bytes_per_append
    )
    if not entries and not send_if_empty:
        return False
    core.messages.append(
        Message(
            MessageType.APPEND,
            to,
            core.node_id,
            core.current_term,
            prev_log_index=prev_index,
            prev_log_term=prev_term,
            entries=entries,
            leader_commit=log.committed,
        )
    )
    progress.sent_append(
        Index(prev_index + len(entries)), len(entries), sum(len(e.data) for e in entries)
    )
    return True


def maybe_send_snapshot(core: RaftCore, to: NodeId, progress: Progress) -> bool:
    """The follower needs compacted entries: send the latest snapshot's metadata."""
    snapshot = core.latest_snapshot
    if snapshot is None or not progress.recent_active:
        # A peer not heard from lately is likely down: do not start a costly transfer.
        return False
    core.messages.append(
        Message(MessageType.SNAPSHOT, to, core.node_id, core.current_term, snapshot=snapshot)
    )
    progress.become_snapshot(snapshot.index)
    return True


def broadcast_append(core: RaftCore, send_if_empty: bool) -> None:
    """Send every follower what it lacks, as many appends as its progress allows."""
    for peer in core.peers:
        send_appends(core, peer, send_if_empty)


def send_appends(core: RaftCore, to: NodeId, send_if_empty: bool) -> None:
    if maybe_send_append(core, to, send_if_empty):
        while maybe_send_append(core, to, send_if_empty=False):
            pass


def broadcast_heartbeat(core: RaftCore, context: int) -> None:
    """Heartbeats carry commit = min(leader commit, match) so a follower never
    commits an entry it may not hold yet (etcd-io/raft's sendHeartbeat)."""
    committed = core.log.committed
    for peer in core.peers:
        progress = core.progress[peer]
        core.messages.append(
            Message(
                MessageType.HEARTBEAT,
                peer,
                core.node_id,
                core.current_term,
                leader_commit=min(progress.match_index, committed),
                context=context,
            )
        )


def maybe_commit(core: RaftCore) -> bool:
    """Advance the commit index to what a quorum stores, for current-term entries only."""
    progress = core.progress
    quorum_index = committed_index([progress[voter].match_index for voter in core.voters])
    log = core.log
    if quorum_index <= log.committed:
        return False
    # Raft §5.4.2: never commit an older term's entry by counting replicas.
    if log.term(quorum_index) != core.current_term:
        return False
    log.commit_to(quorum_index)
    core.on_commit_advanced()
    return True


def handle_append_response(core: RaftCore, message: Message) -> None:
    progress = core.progress.get(message.sender)
    if progress is None:
        return
    progress.recent_active = True
    progress.last_contact_tick = core.tick_count
    progress.answered = True
    if not message.success:
        _handle_rejection(core, message, progress)
        return
    if message.match_index > core.log.last_index:
        return  # a claim beyond our log, which no correct peer makes
    updated = progress.maybe_update(message.match_index)
    track_catch_up_round(core, progress)
    # A probe answered at the match index we knew (etcd-io/raft does the same):
    # nothing new, but the logs are known to match there, so resume streaming.
    confirmed = (
        progress.state is ProgressState.PROBE and message.match_index == progress.match_index
    )
    if not updated and not confirmed:
        return  # nothing new
    caught_up_by_snapshot = False
    if progress.state is ProgressState.PROBE:
        progress.become_replicate()
    elif progress.state is ProgressState.SNAPSHOT:
        if progress.match_index >= progress.pending_snapshot:
            progress.become_probe()
            progress.become_replicate()
            caught_up_by_snapshot = True
    else:
        progress.inflights.free_le(message.match_index)
    maybe_commit(core)
    # After a snapshot, an append goes out even with no entries: it carries the
    # leader's whole commit index (a heartbeat carries min(commit, match)), which
    # a follower that started empty needs to leave `awaiting_catch_up`.
    send_appends(core, message.sender, send_if_empty=caught_up_by_snapshot)
    _maybe_finish_transfer(core, message.sender, progress)


def _is_stale_rejection(progress: Progress, rejected: Index) -> bool:
    """True when a rejection answers an append the leader has moved past."""
    if progress.state is ProgressState.REPLICATE:
        # About an append already overtaken by an acknowledgement.
        return rejected <= progress.match_index
    if progress.state is ProgressState.PROBE:
        return rejected != progress.next_index - 1  # answers an earlier probe
    return True  # SNAPSHOT: waiting for the snapshot's outcome


def _handle_rejection(core: RaftCore, message: Message, progress: Progress) -> None:
    """Back `next_index` off using the follower's conflict hint (Raft §5.3)."""
    rejected = message.prev_log_index
    if _is_stale_rejection(progress, rejected):
        return
    follower_last = message.match_index
    if follower_last < progress.match_index and follower_last < rejected:
        _forget_lost_log(progress, follower_last)
        maybe_send_append(core, message.sender, send_if_empty=True)
        return
    hint = message.conflict_index
    if message.conflict_term:
        last_of_term = core.log.last_index_of_term(message.conflict_term)
        if last_of_term is not None:
            hint = Index(last_of_term + 1)
    progress.become_probe()
    progress.next_index = Index(max(min(hint, rejected), progress.match_index + 1))
    maybe_send_append(core, message.sender, send_if_empty=True)


def _forget_lost_log(progress: Progress, follower_last: Index) -> None:
    """The follower's log ends at `follower_last`, below entries it acknowledged:
    its store was lost (Raft assumes it never is). Forget what it acknowledged and
    probe from its log's end, so it gets entries or a snapshot again.

    Lowering `match_index` is safe: the commit index never decreases, the quorum
    count merely waits for acknowledgements the follower can still back. The
    entries up to `follower_last` are not known to match, so match restarts at 0.
    """
    progress.match_index = NO_INDEX
    progress.become_probe()
    progress.next_index = Index(follower_last + 1)
    progress.lost_log_count += 1


def handle_heartbeat_response(core: RaftCore, message: Message) -> None:
    progress = core.progress.get(message.sender)
    if progress is None:
        return
    progress.recent_active = True
    progress.last_contact_tick = core.tick_count
    progress.answered = True
    track_catch_up_round(core, progress)
    if progress.state is ProgressState.REPLICATE and message.match_index < progress.match_index:
        # The follower's log ends below its acknowledgements: it lost its log, or
        # this reply is older than them. A probe at match_index tells which: the
        # follower rejects it only if its log really ends below.
        progress.become_probe()
    progress.probe_sent = False
    if progress.state is ProgressState.REPLICATE and progress.inflights.full():
        # An append may have been lost: let one more through rather than stall.
        progress.inflights.free_first_one()
    if progress.match_index < core.log.last_index or progress.state is ProgressState.PROBE:
        # Even with nothing new to send: an empty append at next_index reveals lost
        # appends (the follower rejects it and the leader probes again).
        send_appends(core, message.sender, send_if_empty=True)
    if message.context:
        core.reads.acknowledge(core, message.sender, message.context)


def handle_snapshot_response(core: RaftCore, message: Message) -> None:
    """The follower installed (or already had) the snapshot: resume replication."""
    progress = core.progress.get(message.sender)
    if progress is None:
        return
    if progress.state is ProgressState.SNAPSHOT and not message.success:
        report_snapshot(core, message.sender, success=False)
        return
    handle_append_response(core, message)


def report_snapshot(core: RaftCore, peer: NodeId, success: bool) -> None:
    progress = core.progress.get(peer)
    if progress is None or progress.state is not ProgressState.SNAPSHOT:
        return
    if not success:
        progress.pending_snapshot = progress.match_index
    progress.become_probe()
    # Wait for the next heartbeat response before probing (etcd-io/raft does the same).
    progress.probe_sent = True


def report_unreachable(core: RaftCore, peer: NodeId) -> None:
    progress = core.progress.get(peer)
    if progress is not None and progress.state is ProgressState.REPLICATE:
        progress.become_probe()


def tick_leader(core: RaftCore) -> None:
    """Heartbeats every heartbeat_ticks; CheckQuorum and transfer expiry per election timeout."""
    config = core.config
    if config.check_quorum and ticks_since_quorum_contact(core) >= config.election_ticks:
        # CheckQuorum: a leader cut off from a quorum steps down (Raft §6.2).
        become_follower(core, core.current_term, None)
        return
    core.election_elapsed += 1
    if core.election_elapsed >= config.election_ticks:
        core.election_elapsed = 0
        for peer, progress in core.progress.items():
            progress.recent_active = peer == core.node_id
        core.lead_transferee = None  # a transfer not done in an election timeout is abandoned
    core.heartbeat_elapsed += 1
    if core.heartbeat_elapsed >= config.heartbeat_ticks:
        core.heartbeat_elapsed = 0
        broadcast_heartbeat(core, core.reads.heartbeat_context())


def ticks_since_quorum_contact(core: RaftCore) -> int:
    """Ticks since a quorum of voters (the leader, if a voter, included) was last heard from."""
    own = core.node_id
    now = core.tick_count
    progress = core.progress
    last_contacts = [
        Index(now if voter == own else progress[voter].last_contact_tick) for voter in core.voters
    ]
    return now - committed_index(last_contacts)


def transfer_leadership(core: RaftCore, to: NodeId) -> None:
    """Bring `to` up to date, then tell it to campaign at once (Raft §3.10)."""
    if core.lead_transferee == to:
        return
    core.lead_transferee = to
    core.election_elapsed = 0  # the transfer must finish within one election timeout
    progress = core.progress[to]
    if progress.match_index == core.log.last_index:
        send_timeout_now(core, to)
    else:
        maybe_send_append(core, to, send_if_empty=True)


def _maybe_finish_transfer(core: RaftCore, peer: NodeId, progress: Progress) -> None:
    if core.lead_transferee == peer and progress.match_index == core.log.last_index:
        send_timeout_now(core, peer)


def send_timeout_now(core: RaftCore, to: NodeId) -> None:
    """Tell `to` to campaign, and first every other follower that it may (`election`)."""
    term = core.current_term
    for peer in core.peers:
        if peer != to:
            core.messages.append(
                Message(
                    MessageType.TIMEOUT_NOW,
                    peer,
                    core.node_id,
                    term,
                    context=election.TRANSFER_NOTICE_CONTEXT,
                )
            )
    core.messages.append(Message(MessageType.TIMEOUT_NOW, to, core.node_id, term))


def most_up_to_date_follower(core: RaftCore) -> NodeId | None:
    """The voter (other than the leader) holding the most of the leader's log."""
    best: NodeId | None = None
    best_match = -1
    for peer in core.voters:
        if peer == core.node_id:
            continue
        match = core.progress[peer].match_index
        if match > best_match:
            best, best_match = peer, match
    return best


def hand_over_on_removal(core: RaftCore) -> None:
    """The leader's own removal committed: it stops leading (dissertation §4.2.2).

    A voter holding the whole log is told to campaign at once, as in a
    leadership transfer, so the cluster does not wait an election timeout.
    """
    successor = most_up_to_date_follower(core)
    if successor is not None and core.progress[successor].match_index == core.log.last_index:
        send_timeout_now(core, successor)
    become_follower(core, core.current_term, None)


def track_catch_up_round(core: RaftCore, progress: Progress) -> None:
    """End the peer's catch-up round if it now holds the round's target (§4.2.1)."""
    if progress.match_index >= progress.round_target:
        now = core.tick_count
        progress.last_round_ticks = now - progress.round_start_tick
        progress.round_target = core.log.last_index
        progress.round_start_tick = now


def is_caught_up(core: RaftCore, progress: Progress) -> bool:
    """The last round took less than an election timeout, and so far does the current
    one: a learner that stopped answering is not caught up (dissertation §4.2.1)."""
    timeout = core.config.election_ticks
    last = progress.last_round_ticks
    return (
        last is not None
        and last < timeout
        and core.tick_count - progress.round_start_tick < timeout
    )
