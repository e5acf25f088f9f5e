"""What the Kinesis operations need from a railyard node, as a small protocol.

The operations are written against `Backend`, never against the node: the
node implements it (forwarding writes to the leader, reading through
ReadIndex), and the unit tests implement it in memory. Railyard streams,
sequences and producer identities appear here in railyard's own terms;
Kinesis names, shards and sequence numbers are the operations' business.

A backend reports failure by raising one of the `BackendError` subclasses
below; anything else it raises is a bug and is answered as an internal
failure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

# Positions a reader may start at (railyard's names, see `streams.queries`).
TRIM_HORIZON = "TRIM_HORIZON"
LATEST = "LATEST"
AT_SEQUENCE = "AT_SEQUENCE"
AFTER_SEQUENCE = "AFTER_SEQUENCE"
AT_TIMESTAMP = "AT_TIMESTAMP"


@dataclass(frozen=True, slots=True)
class StreamState:
    """A railyard stream as the operations see it.

    `first_sequence` is the oldest record held, `last_sequence` the last
    assigned (0 before the first append); `max_age_ms` is its age retention
    (0: none).
    """

    name: str
    first_sequence: int
    last_sequence: int
    created_ms: int
    max_age_ms: int


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Records appended with sequences first_sequence … first_sequence + count - 1."""

    first_sequence: int
    count: int
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class StoredRecord:
    sequence: int
    data: bytes
    key: bytes | None
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class ReadBatch:
    """Records read, where the next read starts, and how many records remain after it."""

    records: list[StoredRecord]
    next_sequence: int
    behind_latest: int


class BackendError(Exception):
    """Base of what a backend raises for an outcome the operations answer."""


class StreamMissing(BackendError):
    def __init__(self, name: str) -> None:
        super().__init__(f"stream {name!r} does not exist")
        self.name = name


class StreamConflict(BackendError):
    """A stream of this name exists with other settings."""

    def __init__(self, name: str) -> None:
        super().__init__(f"stream {name!r} exists with other settings")
        self.name = name


class Rejected(BackendError):
    """The request broke one of railyard's limits; nothing was changed."""


class LimitExceeded(Rejected):
    """One of the cluster's limits (its number of streams, a full disk) refused the request."""


class Unavailable(BackendError):
    """No answer in time (no leader, a leader change): the outcome of a write is unknown."""


class Backend(Protocol):
    """A railyard cluster, reached through one node."""

    @property
    def max_name_chars(self) -> int:
        """The longest railyard stream name the cluster accepts."""
        ...

    async def list_streams(self) -> list[StreamState]: ...

    async def describe(self, name: str) -> StreamState:
        """Raises StreamMissing."""
        ...

    async def create_stream(self, name: str, max_age_ms: int) -> StreamState:
        """Creates the stream, or returns it if it exists with this retention.

        Raises StreamConflict if it exists with another.
        """
        ...

    async def delete_stream(self, name: str) -> None:
        """Raises StreamMissing."""
        ...

    async def set_retention(self, name: str, max_age_ms: int) -> StreamState:
        """Raises StreamMissing."""
        ...

    async def append(
        self,
        name: str,
        records: Sequence[tuple[bytes, bytes]],
        producer_id: str,
        producer_sequence: int,
    ) -> AppendResult:
        """Appends (data, key) records once per (producer_id, producer_sequence); "" means no id.

        A repeat of an applied (producer_id, producer_sequence) returns the
        first result and appends nothing. Raises StreamMissing, Rejected,
        Unavailable.
        """
        ...

    async def resolve(self, name: str, position: str, sequence: int, timestamp_ms: int) -> int:
        """The first sequence a reader starting at `position` reads (see `streams.queries`)."""
        ...

    async def read(
        self, name: str, from_sequence: int, limit: int, max_bytes: int
    ) -> ReadBatch: ...
