"""Raft values <-> protobuf, at the edge of the node.

The core speaks frozen dataclasses (`railyard.raft`); the wire speaks
`railyard.v1` messages. This module is the only place that knows both, so a
field added to one side is mapped here or nowhere. Decoding never trusts the
peer: an unknown message type is refused as a `ValueError`, which the
transport answers as a bad request.
"""

from __future__ import annotations

from typing import Any

from railyard.proto import railyard_pb2 as pb
from railyard.raft import (
    Entry,
    EntryKind,
    Index,
    Member,
    Membership,
    Message,
    MessageType,
    NodeId,
    SnapshotMeta,
    Term,
)

_TYPE_TO_PB: dict[MessageType, pb.MessageType.ValueType] = {
    MessageType.VOTE: pb.MESSAGE_TYPE_VOTE,
    MessageType.VOTE_RESPONSE: pb.MESSAGE_TYPE_VOTE_RESPONSE,
    MessageType.PRE_VOTE: pb.MESSAGE_TYPE_PRE_VOTE,
    MessageType.PRE_VOTE_RESPONSE: pb.MESSAGE_TYPE_PRE_VOTE_RESPONSE,
    MessageType.APPEND: pb.MESSAGE_TYPE_APPEND,
    MessageType.APPEND_RESPONSE: pb.MESSAGE_TYPE_APPEND_RESPONSE,
    MessageType.HEARTBEAT: pb.MESSAGE_TYPE_HEARTBEAT,
    MessageType.HEARTBEAT_RESPONSE: pb.MESSAGE_TYPE_HEARTBEAT_RESPONSE,
    MessageType.SNAPSHOT: pb.MESSAGE_TYPE_SNAPSHOT,
    MessageType.SNAPSHOT_RESPONSE: pb.MESSAGE_TYPE_SNAPSHOT_RESPONSE,
    MessageType.TIMEOUT_NOW: pb.MESSAGE_TYPE_TIMEOUT_NOW,
    MessageType.READ_INDEX: pb.MESSAGE_TYPE_READ_INDEX,
    MessageType.READ_INDEX_RESPONSE: pb.MESSAGE_TYPE_READ_INDEX_RESPONSE,
}
_TYPE_FROM_PB = {v: k for k, v in _TYPE_TO_PB.items()}

_KIND_TO_PB: dict[EntryKind, pb.EntryKind.ValueType] = {
    EntryKind.NORMAL: pb.ENTRY_KIND_NORMAL,
    EntryKind.NOOP: pb.ENTRY_KIND_NOOP,
    EntryKind.CONFIG: pb.ENTRY_KIND_CONFIG,
}
_KIND_FROM_PB = {v: k for k, v in _KIND_TO_PB.items()}


def peer(cluster: str, node_id: str) -> pb.Peer:
    return pb.Peer(cluster=cluster, node_id=node_id)


def envelope(sender: pb.Peer, messages: list[pb.RaftMessage]) -> pb.RaftEnvelope:
    # `from` is a Python keyword, hence the keyword-argument dict.
    fields: dict[str, Any] = {"from": sender, "messages": messages}
    return pb.RaftEnvelope(**fields)


def envelope_sender(env: pb.RaftEnvelope | pb.SnapshotChunk) -> pb.Peer:
    sender: pb.Peer = getattr(env, "from")
    return sender


def member_to_pb(member: Member) -> pb.MemberAddress:
    return pb.MemberAddress(
        id=member.node_id, address=member.address, peer_address=member.peer_address
    )


def membership_to_pb(membership: Membership) -> pb.MemberSet:
    return pb.MemberSet(
        voters=[member_to_pb(m) for m in membership.voters],
        learners=[member_to_pb(m) for m in membership.learners],
    )


def membership_from_pb(m: pb.MemberSet) -> Membership:
    """The configuration a peer sent; ValueError if an id is listed twice."""

    def members(items: Any) -> tuple[Member, ...]:
        return tuple(Member(NodeId(i.id), i.address, i.peer_address) for i in items)

    membership = Membership(members(m.voters), members(m.learners))
    ids = membership.voter_ids + membership.learner_ids
    if len(set(ids)) != len(ids):
        raise ValueError(f"a member is listed twice in a snapshot's configuration: {ids}")
    return membership


def snapshot_meta_to_pb(meta: SnapshotMeta) -> pb.SnapshotMeta:
    out = pb.SnapshotMeta(index=meta.index, term=meta.term, voters=list(meta.voters))
    if meta.membership is not None:
        out.membership.CopyFrom(membership_to_pb(meta.membership))
    return out


def snapshot_meta_from_pb(m: pb.SnapshotMeta) -> SnapshotMeta:
    """ValueError (a bad request) when the configuration contradicts `voters`."""
    return SnapshotMeta(
        index=Index(m.index),
        term=Term(m.term),
        voters=tuple(NodeId(v) for v in m.voters),
        membership=membership_from_pb(m.membership) if m.HasField("membership") else None,
    )


def entry_to_pb(e: Entry) -> pb.Entry:
    return pb.Entry(term=e.term, index=e.index, kind=_KIND_TO_PB[e.kind], data=e.data)


def entry_from_pb(e: pb.Entry) -> Entry:
    kind = _KIND_FROM_PB.get(e.kind)
    if kind is None:
        raise ValueError(f"unknown entry kind {e.kind}")
    return Entry(term=Term(e.term), index=Index(e.index), kind=kind, data=e.data)


def message_to_pb(m: Message) -> pb.RaftMessage:
    out = pb.RaftMessage(
        type=_TYPE_TO_PB[m.type],
        to=m.to,
        sender=m.sender,
        term=m.term,
        prev_log_index=m.prev_log_index,
        prev_log_term=m.prev_log_term,
        entries=[entry_to_pb(e) for e in m.entries],
        leader_commit=m.leader_commit,
        last_log_index=m.last_log_index,
        last_log_term=m.last_log_term,
        vote_granted=m.vote_granted,
        success=m.success,
        match_index=m.match_index,
        conflict_index=m.conflict_index,
        conflict_term=m.conflict_term,
        context=m.context,
        read_index=m.read_index,
    )
    if m.snapshot is not None:
        out.snapshot.CopyFrom(snapshot_meta_to_pb(m.snapshot))
    return out


def message_from_pb(m: pb.RaftMessage) -> Message:
    mtype = _TYPE_FROM_PB.get(m.type)
    if mtype is None:
        raise ValueError(f"unknown message type {m.type}")
    return Message(
        type=mtype,
        to=NodeId(m.to),
        sender=NodeId(m.sender),
        term=Term(m.term),
        prev_log_index=Index(m.prev_log_index),
        prev_log_term=Term(m.prev_log_term),
        entries=tuple(entry_from_pb(e) for e in m.entries),
        leader_commit=Index(m.leader_commit),
        last_log_index=Index(m.last_log_index),
        last_log_term=Term(m.last_log_term),
        vote_granted=m.vote_granted,
        success=m.success,
        match_index=Index(m.match_index),
        conflict_index=Index(m.conflict_index),
        conflict_term=Term(m.conflict_term),
        snapshot=snapshot_meta_from_pb(m.snapshot) if m.HasField("snapshot") else None,
        context=m.context,
        read_index=Index(m.read_index),
    )
