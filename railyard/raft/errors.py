"""Errors raised by the Raft core's public API.

Protocol outcomes (a rejected vote, a refused append) are never exceptions:
they are reply messages. Only misuse of the API by the driver raises, and a
broken invariant raises `InvariantViolation`, which the driver must not catch:
the node stops rather than diverge.
"""

from __future__ import annotations

from railyard.raft.types import NodeId


class RaftError(Exception):
    """Base class of every error the core raises."""


class NotLeader(RaftError):
    """The request needs the leader; `leader_id` is the leader this node knows, if any."""

    def __init__(self, leader_id: NodeId | None) -> None:
        super().__init__(f"not the leader (leader: {leader_id or 'unknown'})")
        self.leader_id = leader_id


class ProposalDropped(RaftError):
    """The leader refuses proposals for now (a leadership transfer is in progress)."""

    def __init__(self, reason: str = "leadership transfer in progress") -> None:
        super().__init__(f"proposal dropped: {reason}")
        self.reason = reason


class UnknownPeer(RaftError):
    """The node named is not a voter of this cluster."""

    def __init__(self, peer: NodeId) -> None:
        super().__init__(f"unknown peer {peer!r}")
        self.peer = peer


class InvariantViolation(RaftError):
    """The core found its own state or its driver's input impossible; never caught."""
