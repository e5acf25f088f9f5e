"""A snapshot's configuration survives the wire (node/peers/codec.py), and a
malformed one is refused as a bad request."""

from __future__ import annotations

import pytest

from railyard.node.peers.codec import snapshot_meta_from_pb, snapshot_meta_to_pb
from railyard.proto import railyard_pb2 as pb
from railyard.raft import Index, Member, Membership, NodeId, SnapshotMeta, Term

N1, N2, N4 = NodeId("n1"), NodeId("n2"), NodeId("n4")


def test_a_snapshot_carries_voters_learners_and_addresses() -> None:
    membership = Membership(
        (Member(N1, "h1:1", "h1:2"), Member(N2, "h2:1", "")),
        (Member(N4, "h4:1", "h4:2"),),
    )
    meta = SnapshotMeta.of(Index(40), Term(3), membership)
    assert snapshot_meta_from_pb(snapshot_meta_to_pb(meta)) == meta


def test_a_snapshot_without_a_configuration_stays_without() -> None:
    meta = SnapshotMeta(Index(40), Term(3), (N1, N2))
    decoded = snapshot_meta_from_pb(snapshot_meta_to_pb(meta))
    assert decoded == meta and decoded.membership is None


def test_a_configuration_that_contradicts_the_voters_is_refused() -> None:
    wire = snapshot_meta_to_pb(SnapshotMeta(Index(40), Term(3), (N1, N2)))
    wire.membership.voters.add(id="n9", address="h9:1")
    with pytest.raises(ValueError):
        snapshot_meta_from_pb(wire)


def test_a_member_listed_twice_is_refused() -> None:
    wire = pb.SnapshotMeta(index=40, term=3, voters=["n1"])
    wire.membership.voters.add(id="n1", address="h1:1")
    wire.membership.learners.add(id="n1", address="h1:1")
    with pytest.raises(ValueError, match="listed twice"):
        snapshot_meta_from_pb(wire)
