"""The client's typed exceptions, and the one place gRPC status codes map to them.

Nodes translate domain outcomes to status codes in one place
(node/api/status_codes.py); this module translates them back. The CLI prints
`str(error)`: each message says what went wrong and, where it can, what to do.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import grpc

__all__ = [
    "LAST_PRODUCER_SEQUENCE_KEY",
    "LEADER_ADDRESS_KEY",
    "LEADER_ID_KEY",
    "MAYBE_APPLIED_KEY",
    "AlreadyApplied",
    "AlreadyExists",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "RailyardError",
    "ResourceExhausted",
    "StaleProducerSequence",
    "Unavailable",
    "error_from_rpc",
    "leader_hint",
    "maybe_applied",
]

# Trailing metadata with which a node names the leader it knows (railyard.proto).
LEADER_ID_KEY = "railyard-leader"
LEADER_ADDRESS_KEY = "railyard-leader-address"
# ... and with which it names a producer's last applied sequence (a stale one was sent).
LAST_PRODUCER_SEQUENCE_KEY = "railyard-last-producer-sequence"
# ... and with which it says a failed write may still have been applied.
MAYBE_APPLIED_KEY = "railyard-maybe-applied"


class RailyardError(Exception):
    """Base of every error the client raises."""

    def __init__(self, message: str, *, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


class NotFound(RailyardError):
    """The stream (or node) does not exist."""


class InvalidArgument(RailyardError):
    """The request was refused as malformed; the message names the field."""


class AlreadyExists(RailyardError):
    """A stream with that name exists already."""


class FailedPrecondition(RailyardError):
    """The cluster cannot do this in its current state (e.g. no such node to lead)."""


class StaleProducerSequence(FailedPrecondition):
    """The sequence is older than the results the cluster remembers for the producer id.

    The cluster keeps the results of each producer id's last 64 sequences
    (`last_sequence` is the highest); an older one was applied before, by an
    earlier attempt of the same put or by another client using the same
    producer id, or is a retry so late that its result is forgotten.
    """

    def __init__(self, message: str, *, last_sequence: int) -> None:
        super().__init__(message, code=grpc.StatusCode.FAILED_PRECONDITION)
        self.last_sequence = last_sequence


class AlreadyApplied(RailyardError):
    """A retried put was applied by an earlier attempt, but its sequence numbers are lost.

    Raised only when the cluster has since applied so many later puts of the
    same producer id (its exactly-once table keeps the results of each
    producer's last 64 sequences) that it forgot this one's, so the records
    are in the stream exactly once; `put` cannot return where.
    """


class ResourceExhausted(RailyardError):
    """The cluster refused the write for lack of resources (e.g. the leader's disk is full)."""


class PermissionDenied(RailyardError):
    """The node refused the caller (e.g. another cluster)."""


class Unavailable(RailyardError):
    """No node could serve the request in time; `leader` is the last leader hint."""

    def __init__(
        self,
        message: str,
        *,
        leader: str | None = None,
        leader_address: str | None = None,
        code: grpc.StatusCode | None = grpc.StatusCode.UNAVAILABLE,
    ) -> None:
        super().__init__(message, code=code)
        self.leader = leader
        self.leader_address = leader_address


class DeadlineExceeded(RailyardError):
    """The request did not complete within the client's timeout; it may have been applied."""


_BY_CODE: dict[grpc.StatusCode, type[RailyardError]] = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}


def leader_hint(error: grpc.aio.AioRpcError) -> tuple[str | None, str | None]:
    """(leader id, leader address) from an error's trailing metadata, if any."""
    leader_id: str | None = None
    leader_address: str | None = None
    metadata = cast(Iterable[tuple[str, str | bytes]], error.trailing_metadata() or ())
    for key, value in metadata:
        text = value.decode() if isinstance(value, bytes) else str(value)
        if key == LEADER_ID_KEY and text:
            leader_id = text
        elif key == LEADER_ADDRESS_KEY and text:
            leader_address = text
    return leader_id, leader_address


def maybe_applied(error: grpc.aio.AioRpcError) -> bool:
    """Does the node say this failed write may still have been applied?"""
    return MAYBE_APPLIED_KEY in _metadata(error)


def error_from_rpc(error: grpc.aio.AioRpcError, endpoint: str) -> RailyardError:
    """The typed exception for a failed call to `endpoint`."""
    code = error.code()
    details = (error.details() or code.name.lower()).strip()
    if code == grpc.StatusCode.UNAVAILABLE:
        leader_id, leader_address = leader_hint(error)
        return Unavailable(
            f"{endpoint}: unavailable ({details})",
            leader=leader_id,
            leader_address=leader_address,
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(
            f"{endpoint}: no answer in time; the request may or may not have been applied"
        )
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        last = _metadata(error).get(LAST_PRODUCER_SEQUENCE_KEY, "")
        if last.isdigit():
            return StaleProducerSequence(details, last_sequence=int(last))
    cls = _BY_CODE.get(code, RailyardError)
    return cls(details, code=code)


def _metadata(error: grpc.aio.AioRpcError) -> dict[str, str]:
    metadata = cast(Iterable[tuple[str, str | bytes]], error.trailing_metadata() or ())
    return {
        key: value.decode() if isinstance(value, bytes) else str(value) for key, value in metadata
    }
