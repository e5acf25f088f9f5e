"""Outcomes -> gRPC status codes, in one place.

Handlers raise `ServiceError` (or let a core/driver exception through);
`guard` turns either into an aborted call with the right code and message.
The mapping, once:

- unknown stream -> NOT_FOUND; a stream that exists -> ALREADY_EXISTS;
- bad input (the message names the field) -> INVALID_ARGUMENT;
- no leader, leader lost mid-request, proposal dropped -> UNAVAILABLE, with
  the leader this node knows in trailing metadata (`railyard-leader`,
  `railyard-leader-address`); a write whose outcome is unknown (leadership
  changed after it was proposed: it may still be applied) also carries
  `railyard-maybe-applied`;
- no answer within the caller's deadline -> DEADLINE_EXCEEDED;
- a damaged store found while serving -> DATA_LOSS naming the file (the
  node stops, see `Driver.machine_call`);
- the leader's disk is full (nothing was proposed) -> RESOURCE_EXHAUSTED,
  naming the node and its data directory;
- a `[limits]` value reached (streams in the cluster, calls or puts at once)
  -> RESOURCE_EXHAUSTED naming the limit, its value and the key to raise;
- a producer sequence older than the producer's last -> FAILED_PRECONDITION
  (the request was applied before; its result is no longer remembered);
- a membership change the leader refuses (`ConfChangeError`) -> FAILED_PRECONDITION.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, TypeVar

import grpc

from railyard.node.driver import LeadershipLost, NodeStopped
from railyard.node.driver.disk_space import DiskFull
from railyard.raft import ConfChangeError, NodeId, NotLeader, ProposalDropped
from railyard.storage import CorruptStore
from railyard.streams import (
    Appended,
    BatchTooLarge,
    CorruptState,
    InvalidArgument,
    RecordTooLarge,
    StaleProducerSequence,
    StreamCreated,
    StreamDeleted,
    StreamExists,
    StreamNotFound,
    StreamUpdated,
    TooManyStreams,
)

LEADER_ID_KEY = "railyard-leader"
LEADER_ADDRESS_KEY = "railyard-leader-address"
# Trailing metadata of a stale producer sequence: the producer's last applied one.
LAST_PRODUCER_SEQUENCE_KEY = "railyard-last-producer-sequence"
# Trailing metadata of a write that may have been applied although it failed
# (a client retries it only with its producer id and sequence).
MAYBE_APPLIED_KEY = "railyard-maybe-applied"

Q = TypeVar("Q")
R = TypeVar("R")


class ServiceError(Exception):
    """A request's failure as a gRPC status (code, message, leader hint)."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        leader: NodeId | None = None,
        trailing: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.leader = leader
        self.trailing = trailing


class AlreadyApplied(ServiceError):
    """A producer sequence older than the remembered window: applied before, result forgotten."""


def result_error(result: object) -> ServiceError | None:
    """The error an apply (or validate) result stands for; None for a success."""
    if (
        isinstance(result, Appended | StreamCreated | StreamUpdated | StreamDeleted)
        or result is None
    ):
        return None
    if isinstance(result, InvalidArgument):
        return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, f"{result.field}: {result.message}")
    if isinstance(result, RecordTooLarge):
        return ServiceError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"records[{result.position}]: {result.size} bytes is over the limit of "
            f"{result.limit} bytes per record (data + key)",
        )
    if isinstance(result, BatchTooLarge):
        return ServiceError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"records: {result.records} records / {result.bytes} bytes is over the limit of "
            f"{result.max_records} records / {result.max_bytes} bytes per request",
        )
    if isinstance(result, StreamNotFound):
        return ServiceError(grpc.StatusCode.NOT_FOUND, f"stream {result.name!r} does not exist")
    if isinstance(result, StreamExists):
        return ServiceError(
            grpc.StatusCode.ALREADY_EXISTS,
            f"stream {result.name!r} already exists with other retention settings",
        )
    if isinstance(result, TooManyStreams):
        return over_limit(
            f"stream {result.name!r} not created: the cluster holds its maximum of streams",
            "max_streams",
            result.limit,
        )
    if isinstance(result, StaleProducerSequence):
        return AlreadyApplied(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"producer_sequence: {result.producer_sequence} of producer "
            f"{result.producer_id!r} is older than its last ({result.last_sequence}); "
            "it was applied before",
            # For the client: its producer sequence can move on past this.
            trailing=((LAST_PRODUCER_SEQUENCE_KEY, str(result.last_sequence)),),
        )
    raise TypeError(f"unexpected apply result {result!r}")


def over_limit(what: str, key: str, value: int) -> ServiceError:
    """RESOURCE_EXHAUSTED for `what` beyond ``[limits] key = value``, saying how to raise it."""
    return ServiceError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"{what}: the limit is {value} (raise [limits] {key} in the cluster file)",
    )


def unavailable(message: str, leader: NodeId | None) -> ServiceError:
    return ServiceError(grpc.StatusCode.UNAVAILABLE, message, leader=leader)


def exception_error(exc: BaseException) -> ServiceError | None:
    """The status for an exception raised by the core or the driver, if it has one."""
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, NotLeader):
        return unavailable(f"not the leader (leader: {exc.leader_id or 'unknown'})", exc.leader_id)
    if isinstance(exc, LeadershipLost):
        return ServiceError(
            grpc.StatusCode.UNAVAILABLE,
            "leadership changed before the request was applied; retry (with the same "
            "producer id and sequence it is applied once)",
            leader=exc.leader_id,
            trailing=((MAYBE_APPLIED_KEY, "1"),),
        )
    if isinstance(exc, CorruptState | CorruptStore):
        return ServiceError(grpc.StatusCode.DATA_LOSS, f"node's store is damaged: {exc}")
    if isinstance(exc, NodeStopped):
        return unavailable(f"{exc}; retry on another node", None)
    if isinstance(exc, DiskFull):
        return ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
    if isinstance(exc, ProposalDropped):
        return unavailable(str(exc), None)
    if isinstance(exc, TimeoutError):
        return ServiceError(grpc.StatusCode.DEADLINE_EXCEEDED, "no answer within the deadline")
    if isinstance(exc, ConfChangeError):
        return ServiceError(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
    return None


class HasAddresses(Protocol):
    addresses: Mapping[str, str]  # node id -> "host:port", to name the leader's address


S = TypeVar("S", bound=HasAddresses)


def rpc(
    handler: Callable[[S, Q, Any], Awaitable[R]],
) -> Callable[[S, Q, Any], Awaitable[R]]:
    """Decorate a unary servicer method: map a failure to an aborted call."""

    @functools.wraps(handler)
    async def wrapper(self: S, request: Q, context: Any) -> R:
        try:
            return await handler(self, request, context)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            error = exception_error(exc)
            if error is None:
                raise
            await abort(context, error, self.addresses)
            raise AssertionError("abort returned") from exc

    return wrapper


async def abort(
    context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    error: ServiceError,
    addresses: Mapping[str, str],
) -> None:
    trailing: tuple[tuple[str, str], ...] = error.trailing
    named = any(key == LEADER_ID_KEY for key, _ in trailing)
    if error.code is grpc.StatusCode.UNAVAILABLE and error.leader and not named:
        trailing += (
            (LEADER_ID_KEY, error.leader),
            (LEADER_ADDRESS_KEY, addresses.get(error.leader, "")),
        )
    await context.abort(error.code, error.message, trailing_metadata=trailing)
