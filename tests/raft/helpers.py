"""Helpers to drive one core message by message."""

from __future__ import annotations

import random
from collections.abc import Sequence

from railyard.raft import (
    Entry,
    HardState,
    Index,
    Message,
    MessageType,
    NodeId,
    RaftCore,
    Ready,
    Role,
    SnapshotMeta,
    Term,
)
from tests.raft.network import ids, make_config

N1, N2, N3, N4, N5 = ids(5)


def new_core(
    node: NodeId = N1,
    count: int = 3,
    *,
    seed: int = 0,
    hard_state: HardState | None = None,
    entries: Sequence[Entry] = (),
    snapshot: SnapshotMeta | None = None,
    applied: int = 0,
    **config: object,
) -> RaftCore:
    return RaftCore(
        make_config(node, ids(count), **config),
        random.Random(seed),
        hard_state=hard_state or HardState(),
        entries=entries,
        snapshot=snapshot,
        applied=Index(applied),
    )


def log_of(*terms: int, start: int = 1) -> list[Entry]:
    """Entries with the given terms at consecutive indexes from `start`."""
    return [Entry(Term(term), Index(start + offset)) for offset, term in enumerate(terms)]


def drain(core: RaftCore) -> Ready:
    """Take one Ready (possibly empty) and acknowledge it as handled."""
    ready = core.ready()
    core.advance(ready)
    return ready


def sent(ready: Ready, kind: MessageType | None = None) -> list[Message]:
    """Every message of a Ready, both immediate and after-persist, optionally of one type."""
    every = list(ready.messages) + list(ready.persisted_messages)
    return [m for m in every if kind is None or m.type is kind]


def message(kind: MessageType, sender: NodeId, to: NodeId, term: int, **fields: object) -> Message:
    return Message(kind, to, sender, Term(term), **fields)  # type: ignore[arg-type]


def elect(core: RaftCore) -> Ready:
    """Make `core` leader by granting the votes it asks for; returns the Ready after."""
    core.campaign()
    ready = drain(core)
    for request in sent(ready, MessageType.VOTE):
        core.step(
            message(
                MessageType.VOTE_RESPONSE, request.to, core.node_id, request.term, vote_granted=True
            )
        )
        if core.role is Role.LEADER:
            break
    assert core.role is Role.LEADER
    return drain(core)


def ack_append(core: RaftCore, append: Message, *, match: int | None = None) -> None:
    """The follower `append.to` accepts `append`."""
    last = append.prev_log_index + len(append.entries) if match is None else match
    core.step(
        message(
            MessageType.APPEND_RESPONSE,
            append.to,
            core.node_id,
            append.term,
            success=True,
            match_index=Index(last),
            prev_log_index=append.prev_log_index,
        )
    )
