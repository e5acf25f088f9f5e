"""The Raft protocol as a pure state machine: no I/O, no clock, no global random.

A driver owns one `RaftCore` and loops: feed it `tick()`, peer messages
(`step`) and requests (`propose`, `read_index`, ...); while `has_ready()`,
take `ready()`, handle it in the order its docstring gives, then `advance`.
The driver also tells the core how every SNAPSHOT it sent ended
(`report_snapshot`) and which peers are unreachable (`report_unreachable`).

Modules: `core` (state and API), `election`, `replication` (leader),
`follower`, `reads` (ReadIndex), `roles` (transitions), `membership`
(configurations and their changes), `log`, `progress`, `quorum`, `config`,
`errors`, `status`, `types`.
"""

from railyard.raft.config import (
    DEFAULT_ELECTION_TICKS,
    DEFAULT_HEARTBEAT_TICKS,
    DEFAULT_MAX_BYTES_PER_APPEND,
    DEFAULT_MAX_ENTRIES_PER_APPEND,
    DEFAULT_MAX_INFLIGHT_APPENDS,
    RaftConfig,
)
from railyard.raft.core import RaftCore
from railyard.raft.errors import (
    AddressInUse,
    AlreadyMember,
    ChangeInProgress,
    ConfChangeError,
    InvariantViolation,
    LastVoter,
    NotALearner,
    NotCaughtUp,
    NotLeader,
    ProposalDropped,
    RaftError,
    UnknownMember,
    UnknownPeer,
)
from railyard.raft.membership import (
    ConfChange,
    ConfChangeKind,
    decode_membership,
    encode_membership,
    membership_from_record,
    membership_to_record,
)
from railyard.raft.status import CoreStatus, PeerStatus
from railyard.raft.types import (
    NO_INDEX,
    NO_MEMBERSHIP,
    NO_TERM,
    Entry,
    EntryKind,
    HardState,
    Index,
    Member,
    Membership,
    Message,
    MessageType,
    NodeId,
    ReadState,
    Ready,
    Role,
    SnapshotMeta,
    SoftState,
    Term,
)

__all__ = [
    "DEFAULT_ELECTION_TICKS",
    "DEFAULT_HEARTBEAT_TICKS",
    "DEFAULT_MAX_BYTES_PER_APPEND",
    "DEFAULT_MAX_ENTRIES_PER_APPEND",
    "DEFAULT_MAX_INFLIGHT_APPENDS",
    "NO_INDEX",
    "NO_MEMBERSHIP",
    "NO_TERM",
    "AddressInUse",
    "AlreadyMember",
    "ChangeInProgress",
    "ConfChange",
    "ConfChangeError",
    "ConfChangeKind",
    "CoreStatus",
    "Entry",
    "EntryKind",
    "HardState",
    "Index",
    "InvariantViolation",
    "LastVoter",
    "Member",
    "Membership",
    "Message",
    "MessageType",
    "NodeId",
    "NotALearner",
    "NotCaughtUp",
    "NotLeader",
    "PeerStatus",
    "ProposalDropped",
    "RaftConfig",
    "RaftCore",
    "RaftError",
    "ReadState",
    "Ready",
    "Role",
    "SnapshotMeta",
    "SoftState",
    "Term",
    "UnknownMember",
    "UnknownPeer",
    "decode_membership",
    "encode_membership",
    "membership_from_record",
    "membership_to_record",
]
