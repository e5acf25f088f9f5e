"""The Raft protocol as a pure state machine: no I/O, no clock, no global random."""

from railyard.raft.types import (
    NO_INDEX,
    NO_TERM,
    Entry,
    EntryKind,
    HardState,
    Index,
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
    "NO_INDEX",
    "NO_TERM",
    "Entry",
    "EntryKind",
    "HardState",
    "Index",
    "Message",
    "MessageType",
    "NodeId",
    "ReadState",
    "Ready",
    "Role",
    "SnapshotMeta",
    "SoftState",
    "Term",
]
