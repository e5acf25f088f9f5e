"""Plain values the Raft core takes in and hands out.

Everything here is a frozen dataclass or an enum: the core never shares a
mutable object with its driver. `node/` maps these to protobuf at the edge;
`storage/` persists `Entry` and `HardState`; `sim/` passes `Message` values
between cores on a simulated network.

Vocabulary follows the Raft paper (Figure 2): `current_term`, `voted_for`,
`commit_index`, `prev_log_index`, `leader_commit`, `match_index`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NewType

Term = NewType("Term", int)
Index = NewType("Index", int)
NodeId = NewType("NodeId", str)

NO_TERM = Term(0)
NO_INDEX = Index(0)


class EntryKind(enum.IntEnum):
    """What an entry carries; the integer values are persisted and sent."""

    NORMAL = 0  # an application command, opaque to the core
    NOOP = 1  # appended by each new leader at the start of its term (Raft §8)
    CONFIG = 2  # a new configuration (`Membership`), in force from its append on


@dataclass(frozen=True, slots=True)
class Entry:
    term: Term
    index: Index
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable before any message that depends on it is sent."""

    current_term: Term = NO_TERM
    voted_for: NodeId | None = None
    commit_index: Index = NO_INDEX


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state for status displays; never persisted."""

    role: Role = Role.FOLLOWER
    leader_id: NodeId | None = None


@dataclass(frozen=True, slots=True)
class Member:
    """One server of a configuration. The addresses are opaque to the core: it
    only carries them, so the driver knows where to reach every member."""

    node_id: NodeId
    address: str = ""
    peer_address: str = ""


@dataclass(frozen=True, slots=True)
class Membership:
    """A configuration: the voters (who elect and form quorums) and the learners
    (who only receive the log). An id is in at most one of the two."""

    voters: tuple[Member, ...]
    learners: tuple[Member, ...] = ()

    @classmethod
    def of_voters(cls, ids: Sequence[NodeId]) -> Membership:
        """Voters known by id only (no addresses)."""
        return cls(tuple(Member(node_id) for node_id in ids))

    @property
    def voter_ids(self) -> tuple[NodeId, ...]:
        return tuple(member.node_id for member in self.voters)

    @property
    def learner_ids(self) -> tuple[NodeId, ...]:
        return tuple(member.node_id for member in self.learners)

    def member(self, node_id: NodeId) -> Member | None:
        for member in self.voters + self.learners:
            if member.node_id == node_id:
                return member
        return None

    def is_voter(self, node_id: NodeId) -> bool:
        return any(member.node_id == node_id for member in self.voters)

    def is_learner(self, node_id: NodeId) -> bool:
        return any(member.node_id == node_id for member in self.learners)


NO_MEMBERSHIP = Membership(())


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """Identifies a snapshot: the last index and term it covers and the configuration then.

    `voters` is kept for drivers and stores written before configurations
    carried learners and addresses; when `membership` is set, `voters` is its
    voter ids. A snapshot without `membership` stands for its voters alone.
    """

    index: Index
    term: Term
    voters: tuple[NodeId, ...]
    membership: Membership | None = None

    def __post_init__(self) -> None:
        if self.membership is not None and self.membership.voter_ids != self.voters:
            raise ValueError(
                f"snapshot voters {self.voters} differ from its membership's "
                f"{self.membership.voter_ids}"
            )

    @classmethod
    def of(cls, index: Index, term: Term, membership: Membership) -> SnapshotMeta:
        return cls(index, term, membership.voter_ids, membership)

    @property
    def configuration(self) -> Membership:
        """The configuration at the snapshot's index."""
        if self.membership is not None:
            return self.membership
        return Membership.of_voters(self.voters)


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read may be served once `applied >= index` (Raft §6.4)."""

    index: Index
    context: int


class MessageType(enum.Enum):
    VOTE = "vote"
    VOTE_RESPONSE = "vote_response"
    PRE_VOTE = "pre_vote"
    PRE_VOTE_RESPONSE = "pre_vote_response"
    APPEND = "append"
    APPEND_RESPONSE = "append_response"
    HEARTBEAT = "heartbeat"
    HEARTBEAT_RESPONSE = "heartbeat_response"
    SNAPSHOT = "snapshot"  # the node streams the snapshot file alongside this
    SNAPSHOT_RESPONSE = "snapshot_response"
    TIMEOUT_NOW = "timeout_now"  # leadership transfer: campaign at once (Raft §3.10)
    READ_INDEX = "read_index"  # follower asks the leader for a read index
    READ_INDEX_RESPONSE = "read_index_response"


@dataclass(frozen=True, slots=True)
class Message:
    """One message between cores. Fields not used by a type keep their defaults.

    - VOTE / PRE_VOTE: `last_log_index`, `last_log_term`; a PRE_VOTE carries the
      term the sender would campaign in. `context` 1 marks a campaign the leader
      asked for (TIMEOUT_NOW) or an operator forced: it bypasses leader stickiness.
    - *_RESPONSE of a vote: `vote_granted`.
    - APPEND: `prev_log_index`, `prev_log_term`, `entries`, `leader_commit`.
    - APPEND_RESPONSE: `success`; on success `match_index` is the last index
      known to match; on failure `conflict_index`/`conflict_term` are the hint
      for fast backtracking and `match_index` is the follower's last index.
      `prev_log_index` echoes the append's, so the leader can tell stale replies.
    - HEARTBEAT: `leader_commit` (at most the follower's match index), `context`
      (the leader's latest ReadIndex round).
    - HEARTBEAT_RESPONSE: `context` echoed; `match_index` the follower's last
      index (not a durability promise: a leader only uses it to notice a
      follower whose log ends below what it acknowledged).
    - SNAPSHOT: `snapshot` (metadata; the bytes travel beside the message).
    - SNAPSHOT_RESPONSE: `success`, `match_index`.
    - READ_INDEX / READ_INDEX_RESPONSE: `context`, `read_index`, `success`.
    """

    type: MessageType
    to: NodeId
    sender: NodeId
    term: Term
    prev_log_index: Index = NO_INDEX
    prev_log_term: Term = NO_TERM
    entries: tuple[Entry, ...] = ()
    leader_commit: Index = NO_INDEX
    last_log_index: Index = NO_INDEX
    last_log_term: Term = NO_TERM
    vote_granted: bool = False
    success: bool = False
    match_index: Index = NO_INDEX
    conflict_index: Index = NO_INDEX
    conflict_term: Term = NO_TERM
    snapshot: SnapshotMeta | None = None
    context: int = 0
    read_index: Index = NO_INDEX


@dataclass(frozen=True, slots=True)
class Ready:
    """A batch of work for the driver. Handle it in this order, then call `advance`:

    1. If `snapshot` is set, install it (restore the state machine from the
       received file, reset the log to start after `snapshot.index`).
    2. Send `messages` at once: they do not depend on local durability
       (a leader may replicate in parallel with its own fsync, Raft §10.2.1).
    3. Persist `entries` and `hard_state` durably, in one write. `entries`
       may overwrite a suffix of the stored log: the first entry's index says
       where the stored log is cut before the new entries are written.
    4. Send `persisted_messages`: votes and append acknowledgements, which
       promise that step 3 is on disk.
    5. Apply `committed_entries` in order to the state machine.
    6. Serve `read_states` once the state machine has applied their index.

    `membership`, like `soft_state`, is set when the configuration in force
    changed (a CONFIG entry was appended or cut off, a snapshot installed):
    the driver connects to members it did not know and drops the others.
    It is the latest configuration in the log, committed or not (Raft
    dissertation §4.1: a server uses a configuration as soon as it has it).
    """

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: tuple[Entry, ...] = ()
    snapshot: SnapshotMeta | None = None
    messages: tuple[Message, ...] = ()
    persisted_messages: tuple[Message, ...] = ()
    committed_entries: tuple[Entry, ...] = ()
    read_states: tuple[ReadState, ...] = field(default=())
    membership: Membership | None = None

    def is_empty(self) -> bool:
        return not (
            self.soft_state
            or self.hard_state
            or self.entries
            or self.snapshot
            or self.messages
            or self.persisted_messages
            or self.committed_entries
            or self.read_states
            or self.membership is not None
        )
