"""A follower's handlers for what the leader sends: appends, heartbeats, snapshots.

Replies that promise durability (append and snapshot acknowledgements) go to
`persisted_messages`: the driver sends them only after the entries and hard
state of the same Ready are on disk.

A node that started with an empty store leaves `awaiting_catch_up` here, once
it has caught up with a leader (`_maybe_finish_catch_up`; the rule and its
safety argument are in `election`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from railyard.raft.types import NO_INDEX, NO_TERM, Index, Message, MessageType

if TYPE_CHECKING:
    from railyard.raft.core import RaftCore

# Replies that promise entries are durable up to their `match_index`.
_ACKNOWLEDGEMENTS = frozenset({MessageType.APPEND_RESPONSE, MessageType.SNAPSHOT_RESPONSE})


def _heard_from_leader(core: RaftCore, message: Message) -> None:
    core.election_elapsed = 0
    core.leader_contact_tick = core.tick_count
    core.leader_id = message.sender


def _maybe_finish_catch_up(core: RaftCore, message: Message) -> None:
    """Leave `awaiting_catch_up` once the commit index reached the leader's commit
    index at its first append and is on an entry of the leader's term (unless
    that leader had committed nothing)."""
    if not core.awaiting_catch_up:
        return
    target = core.catch_up_target
    if target is None:
        if message.type is not MessageType.APPEND:
            return  # heartbeats and snapshots do not carry the leader's commit index
        target = core.catch_up_target = message.leader_commit
    log = core.log
    if log.committed < target:
        return
    if target == NO_INDEX or log.term(log.committed) == core.current_term:
        core.awaiting_catch_up = False


def handle_append(core: RaftCore, message: Message) -> None:
    """AppendEntries receiver (Raft Figure 2, §5.3)."""
    _append(core, message)
    _maybe_finish_catch_up(core, message)


def _append(core: RaftCore, message: Message) -> None:
    _heard_from_leader(core, message)
    log = core.log
    if message.prev_log_index < log.committed:
        # Stale or duplicate: everything up to our commit index already matches.
        _reply_append(core, message, success=True, match_index=log.committed)
        return
    last_new = log.try_append(message.prev_log_index, message.prev_log_term, message.entries)
    if last_new is None:
        _reject_append(core, message)
        return
    if log.truncated_from:
        _withdraw_acks_beyond(core, Index(log.truncated_from - 1))
    # Commit only what this append proved we hold (Figure 2, rule 5).
    log.commit_to(Index(min(message.leader_commit, last_new)))
    _reply_append(core, message, success=True, match_index=last_new)


def _withdraw_acks_beyond(core: RaftCore, index: Index) -> None:
    """Entries after `index` were just replaced. Acknowledgements of them not yet
    handed out would leave only after the replacement is on disk, so they would be
    false: they never leave (to their recipient, an older leader, they are lost)."""
    core.persisted_messages[:] = [
        queued
        for queued in core.persisted_messages
        if not (queued.type in _ACKNOWLEDGEMENTS and queued.success and queued.match_index > index)
    ]


def _reply_append(core: RaftCore, message: Message, *, success: bool, match_index: Index) -> None:
    core.persisted_messages.append(
        Message(
            MessageType.APPEND_RESPONSE,
            message.sender,
            core.node_id,
            core.current_term,
            prev_log_index=message.prev_log_index,
            success=success,
            match_index=match_index,
        )
    )


def _reject_append(core: RaftCore, message: Message) -> None:
    """Reply with a conflict hint: the first index of the conflicting term, or our log's end."""
    log = core.log
    prev_index = message.prev_log_index
    if prev_index > log.last_index:
        conflict_index, conflict_term = Index(log.last_index + 1), NO_TERM
    else:
        conflict_index = log.first_index_of_term_at(prev_index)
        conflict_term = log.term(prev_index) or NO_TERM
    core.persisted_messages.append(
        Message(
            MessageType.APPEND_RESPONSE,
            message.sender,
            core.node_id,
            core.current_term,
            prev_log_index=prev_index,
            success=False,
            match_index=log.last_index,
            conflict_index=conflict_index,
            conflict_term=conflict_term,
        )
    )


def handle_heartbeat(core: RaftCore, message: Message) -> None:
    _heard_from_leader(core, message)
    log = core.log
    # The leader sends min(its commit, our match), so we hold every entry up to it.
    log.commit_to(Index(min(message.leader_commit, log.last_index)))
    _maybe_finish_catch_up(core, message)
    core.messages.append(
        Message(
            MessageType.HEARTBEAT_RESPONSE,
            message.sender,
            core.node_id,
            core.current_term,
            context=message.context,
            # Not a promise (nothing waits for the disk): it lets a leader notice a
            # log that ends below what we acknowledged, as after a wiped store.
            match_index=log.last_index,
        )
    )


def handle_snapshot(core: RaftCore, message: Message) -> None:
    """InstallSnapshot receiver (Raft §7): accept only a snapshot ahead of our commit."""
    _install_snapshot(core, message)
    _maybe_finish_catch_up(core, message)


def _install_snapshot(core: RaftCore, message: Message) -> None:
    _heard_from_leader(core, message)
    snapshot = message.snapshot
    log = core.log
    if snapshot is None:
        return
    if snapshot.index <= log.committed:
        match_index = log.committed  # stale: we already have all it covers
    elif log.matches(snapshot.index, snapshot.term):
        log.commit_to(snapshot.index)  # we hold its last entry: keep the log, fast-forward
        match_index = snapshot.index
    else:
        log.restore(snapshot)
        _withdraw_acks_beyond(core, snapshot.index)
        core.pending_snapshot = snapshot
        core.latest_snapshot = snapshot
        match_index = snapshot.index
    core.persisted_messages.append(
        Message(
            MessageType.SNAPSHOT_RESPONSE,
            message.sender,
            core.node_id,
            core.current_term,
            success=True,
            match_index=match_index,
        )
    )
