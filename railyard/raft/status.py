"""A read-only snapshot of a core's state for status displays and tests."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from railyard.raft.types import NO_INDEX, NO_MEMBERSHIP, Index, Membership, NodeId, Role, Term


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """The leader's view of one member: `state` is "probe", "replicate" or "snapshot".

    `lost_log_count` counts, for the current leader, the times the peer's log was
    found to end below entries it had acknowledged (its store was lost or wiped).
    `learner` marks a learner; `caught_up` says whether a promotion would be
    accepted now (dissertation §4.2.1, see `RaftCore.propose_conf_change`).
    """

    match_index: Index
    next_index: Index
    state: str
    recent_active: bool
    lost_log_count: int = 0
    learner: bool = False
    caught_up: bool = False


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

    `membership` is the configuration in force (the latest in the log),
    appended at `membership_index` (0: the bootstrap configuration; a snapshot's
    index for one that came with a snapshot); `membership_committed` whether
    that entry is committed.
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
    membership: Membership = NO_MEMBERSHIP
    membership_index: Index = NO_INDEX
    membership_committed: bool = True
