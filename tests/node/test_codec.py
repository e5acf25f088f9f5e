"""Raft messages survive the trip through protobuf unchanged (node/peers/codec.py)."""

from __future__ import annotations

import pytest

from railyard.node.peers.codec import (
    envelope,
    envelope_sender,
    message_from_pb,
    message_to_pb,
    peer,
)
from railyard.proto import railyard_pb2 as pb
from railyard.raft import (
    Entry,
    EntryKind,
    Index,
    Message,
    MessageType,
    NodeId,
    SnapshotMeta,
    Term,
)

A, B = NodeId("n1"), NodeId("n2")


@pytest.mark.parametrize("kind", list(MessageType))
def test_every_message_type_round_trips(kind: MessageType) -> None:
    message = Message(
        kind,
        to=B,
        sender=A,
        term=Term(7),
        prev_log_index=Index(3),
        prev_log_term=Term(2),
        entries=(
            Entry(Term(7), Index(4), EntryKind.NOOP),
            Entry(Term(7), Index(5), EntryKind.NORMAL, b"\x00data"),
        ),
        leader_commit=Index(4),
        last_log_index=Index(5),
        last_log_term=Term(7),
        vote_granted=True,
        success=True,
        match_index=Index(5),
        conflict_index=Index(2),
        conflict_term=Term(1),
        snapshot=SnapshotMeta(Index(3), Term(2), (A, B)),
        context=99,
        read_index=Index(4),
    )
    wire = message_to_pb(message).SerializeToString()
    assert message_from_pb(pb.RaftMessage.FromString(wire)) == message


def test_defaults_round_trip_and_snapshot_stays_absent() -> None:
    message = Message(MessageType.HEARTBEAT, to=B, sender=A, term=Term(1))
    assert message_from_pb(message_to_pb(message)) == message


def test_unknown_message_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown message type"):
        message_from_pb(pb.RaftMessage(type=pb.MESSAGE_TYPE_UNSPECIFIED))


def test_envelope_names_its_sender() -> None:
    env = envelope(peer("c", "n1"), [])
    assert (envelope_sender(env).cluster, envelope_sender(env).node_id) == ("c", "n1")
