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


class ConfChangeError(RaftError):
    """A membership change the leader refuses; nothing was appended."""


class ChangeInProgress(ConfChangeError):
    """Another change is not yet committed, or the leader has not yet committed an
    entry of its own term (the rule that closes the 2015 single-server bug)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"a membership change cannot start now: {reason}")
        self.reason = reason


class UnknownMember(ConfChangeError):
    """The change names a node that is not a member of the configuration."""

    def __init__(self, node_id: NodeId) -> None:
        super().__init__(f"{node_id!r} is not a member")
        self.node_id = node_id


class AlreadyMember(ConfChangeError):
    """Adding a node that is already a member (`role` says as what)."""

    def __init__(self, node_id: NodeId, role: str) -> None:
        super().__init__(f"{node_id!r} is already a {role}")
        self.node_id = node_id
        self.role = role


class AddressInUse(ConfChangeError):
    """The address given belongs to another member."""

    def __init__(self, address: str, owner: NodeId) -> None:
        super().__init__(f"address {address!r} is already used by {owner!r}")
        self.address = address
        self.owner = owner


class NotALearner(ConfChangeError):
    """Only a learner can be promoted."""

    def __init__(self, node_id: NodeId) -> None:
        super().__init__(f"{node_id!r} is not a learner: only learners are promoted")
        self.node_id = node_id


class NotCaughtUp(ConfChangeError):
    """The learner has not caught up with the leader's log yet (dissertation §4.2.1)."""

    def __init__(self, node_id: NodeId, match_index: int, last_index: int) -> None:
        super().__init__(
            f"{node_id!r} has not caught up (holds up to {match_index} of {last_index})"
        )
        self.node_id = node_id
        self.match_index = match_index
        self.last_index = last_index


class LastVoter(ConfChangeError):
    """The change would leave the configuration without a voter."""

    def __init__(self, node_id: NodeId) -> None:
        super().__init__(f"{node_id!r} is the last voter and cannot be removed")
        self.node_id = node_id
