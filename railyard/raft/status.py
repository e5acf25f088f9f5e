"""A read-only snapshot of a core's state for status displays and tests."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from railyard.raft.types import Index, NodeId, Role, Term


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """The leader's view of one voter: `state` is "probe", "replicate" or "snapshot".

    `lost_log_count` counts, for the current leader, the times the peer's log was
    found to end below entries it had acknowledged (its store was lost or wiped).
    """

    match_index: Index
    next_index: Index
    state: str
    recent_active: bool
    lost_log_count: int = 0


@dataclass(frozen=True, slots=True)
class CoreStatus:
    """Everything `status()` reports; `progress` is empty unless the node leads.

    `ticks_since_leader_contact` counts for followers and candidates since a
    leader was last heard; `ticks_since_quorum_contact` counts for a leader
    since a quorum of voters (itself included) was last heard. Each is 0 for
    the roles it does not apply to.

    `awaiting_catch_up` is True while a node that started with an empty store
    has not yet caught up with a leader: it refuses to vote for candidates
    with history (see `railyard.raft.election`).
    """

    node_id: NodeId
    term: Term
    role: Role
    leader_id: NodeId | None
    voted_for: NodeId | None
    commit_index: Index
    applied_index: Index
    last_index: Index
    snapshot_index: Index
    progress: Mapping[NodeId, PeerStatus] = field(default_factory=dict)
    ticks_since_leader_contact: int = 0
    ticks_since_quorum_contact: int = 0
    awaiting_catch_up: bool = False
