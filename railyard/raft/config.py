"""Static configuration of one Raft core.

Everything is counted in ticks: the driver decides how long a tick lasts
(`node/` turns milliseconds into ticks). The defaults follow etcd-io/raft's
recommended ratios.
"""

from __future__ import annotations

from dataclasses import dataclass

from railyard.raft.errors import RaftError
from railyard.raft.types import Member, Membership, NodeId

# Ten heartbeats per election timeout leaves room for lost heartbeats before
# followers give up on a leader (etcd's recommended ElectionTick = 10 * HeartbeatTick).
DEFAULT_ELECTION_TICKS = 10
# One tick per heartbeat: the driver picks the tick length as the heartbeat interval.
DEFAULT_HEARTBEAT_TICKS = 1
# Appends in flight per follower before the leader waits for acknowledgements;
# deep enough to keep a fast link busy, bounded so a dead peer costs little memory.
DEFAULT_MAX_INFLIGHT_APPENDS = 256
# Entry bytes in flight per follower before the leader waits for
# acknowledgements: two full appends keep a LAN link busy, while a follower
# that cannot keep up holds at most this much ahead of the next heartbeat
# (256 appends of 4 MiB queued 1 GiB, and the heartbeats behind it came too
# late: elections under load, issue 14).
DEFAULT_MAX_INFLIGHT_BYTES = 8 << 20
# Entries and bytes per append: big batches amortize per-message costs, the byte
# bound keeps one message well under gRPC's default size limits.
DEFAULT_MAX_ENTRIES_PER_APPEND = 1024
DEFAULT_MAX_BYTES_PER_APPEND = 4 << 20


@dataclass(frozen=True, slots=True)
class RaftConfig:
    """Identity, bootstrap membership and timing of one core; see the module docstring for units.

    `voters` (with their addresses in `members`, optional) is the bootstrap
    configuration: the one in force until the log or a snapshot holds one,
    which from then on wins (`railyard.raft.membership`). Empty `voters`: a
    node joining an existing cluster, which knows no configuration until a
    leader sends it one and never campaigns before it is a voter.
    """

    node_id: NodeId
    voters: tuple[NodeId, ...]
    election_ticks: int = DEFAULT_ELECTION_TICKS
    heartbeat_ticks: int = DEFAULT_HEARTBEAT_TICKS
    pre_vote: bool = True
    check_quorum: bool = True
    max_inflight_appends: int = DEFAULT_MAX_INFLIGHT_APPENDS
    max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES
    max_entries_per_append: int = DEFAULT_MAX_ENTRIES_PER_APPEND
    max_bytes_per_append: int = DEFAULT_MAX_BYTES_PER_APPEND
    members: tuple[Member, ...] = ()

    def __post_init__(self) -> None:
        if self.members and tuple(m.node_id for m in self.members) != self.voters:
            raise RaftError(f"members {self.members} must list exactly the voters {self.voters}")
        if len(set(self.voters)) != len(self.voters):
            raise RaftError(f"voters must be distinct: {self.voters}")
        if self.heartbeat_ticks < 1:
            raise RaftError("heartbeat_ticks must be at least 1")
        if self.election_ticks <= self.heartbeat_ticks:
            raise RaftError("election_ticks must be greater than heartbeat_ticks")
        if self.max_inflight_appends < 1 or self.max_entries_per_append < 1:
            raise RaftError("max_inflight_appends and max_entries_per_append must be positive")
        if self.max_bytes_per_append < 1:
            raise RaftError("max_bytes_per_append must be positive")
        if self.max_inflight_bytes < 0:
            raise RaftError("max_inflight_bytes must be 0 (no bound) or positive")

    @property
    def bootstrap(self) -> Membership:
        """The configuration of a store that holds none (see the class docstring)."""
        if self.members:
            return Membership(self.members)
        return Membership.of_voters(self.voters)
