"""Values the streams machine hands out: apply results and query answers.

Every outcome of a command is a value, errors included (`StreamNotFound`,
`RecordTooLarge`, ...): each replica computes the same value from the same
entry, and the node maps it to a gRPC status in one place. Nothing here
raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


@dataclass(frozen=True, slots=True)
class Retention:
    """Limits after which the oldest records are trimmed; 0 means no limit."""

    max_age_ms: int = 0
    max_records: int = 0
    max_bytes: int = 0


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """A stream as `describe` shows it.

    `first_sequence` is the trim horizon (the oldest record still held), 0
    when the stream holds no record; `last_sequence` is the last sequence
    ever assigned, 0 before the first append. `created_ms` is the machine
    clock (leader timestamps, see `machine.py`) when the stream was created.
    """

    name: str
    retention: Retention
    first_sequence: int
    last_sequence: int
    record_count: int
    bytes: int
    created_ms: int


class StoredRecord(NamedTuple):
    """One record as read back. A tuple: reads build many of these, cheaply."""

    sequence: int
    data: bytes
    key: bytes | None
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class ReadResult:
    """Records from a read, where the next read starts, and how many remain after it."""

    records: list[StoredRecord]
    next_sequence: int
    behind_latest: int


# ------------------------------------------------------------ apply results


@dataclass(frozen=True, slots=True)
class Appended:
    """Records were appended (or had been: `duplicate` marks a retried producer sequence)."""

    stream: str
    sequences: range
    timestamp_ms: int
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class StreamCreated:
    info: StreamInfo


@dataclass(frozen=True, slots=True)
class StreamUpdated:
    """The stream's new retention is in force (records beyond it are gone)."""

    info: StreamInfo


@dataclass(frozen=True, slots=True)
class StreamDeleted:
    name: str


@dataclass(frozen=True, slots=True)
class InvalidArgument:
    field: str
    message: str


@dataclass(frozen=True, slots=True)
class RecordTooLarge:
    """Record number `position` of the batch (from 0) is `size` bytes (data + key)."""

    position: int
    size: int
    limit: int


@dataclass(frozen=True, slots=True)
class BatchTooLarge:
    records: int
    bytes: int
    max_records: int
    max_bytes: int


@dataclass(frozen=True, slots=True)
class StreamNotFound:
    name: str


@dataclass(frozen=True, slots=True)
class StreamExists:
    """A stream of this name exists with different retention settings."""

    name: str


@dataclass(frozen=True, slots=True)
class TooManyStreams:
    """Stream `name` would be one more than the cluster's `limit` of streams; not created."""

    name: str
    limit: int


@dataclass(frozen=True, slots=True)
class StaleProducerSequence:
    """This sequence is older than the window of results remembered for its producer.

    The machine remembers the results of a producer's last
    `Limits.producer_window` sequences (Raft dissertation §6.3); this one is
    at or below `last_sequence - window`, so whether and where it was
    applied is no longer known. A producer keeps fewer requests in flight
    than the window, so this is a very late retry of a request that was
    applied, or another client reusing the producer id.
    """

    producer_id: str
    producer_sequence: int
    last_sequence: int


ApplyResult = (
    Appended
    | StreamCreated
    | StreamUpdated
    | StreamDeleted
    | InvalidArgument
    | RecordTooLarge
    | BatchTooLarge
    | StreamNotFound
    | StreamExists
    | StaleProducerSequence
    | TooManyStreams
)
