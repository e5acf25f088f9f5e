"""This node as a `railyard.kinesis.Backend`: the Kinesis endpoint's way into the cluster.

Writes go the way the Streams service's do: on the leader they are
validated and proposed (`StreamsService.propose_append` for appends); on a
follower they are forwarded to the leader (`Forwarder`). Reads take a
ReadIndex round (`Driver.read_barrier`) and query the state machine on the
reads thread, so a follower's endpoint reads what the leader's would.

A Kinesis client never sees "not leader": across a leader change the
backend waits and tries again, for up to `RETRY_DEADLINE_S`, whenever that
cannot apply a write twice — reads; creates and deletes (repeating one
ends in the same state); appends with a producer id (the state machine
answers a repeat with the first result); and any write while no leader is
known (nothing was sent). An append without a producer id whose outcome
is unknown is reported as `Unavailable` at once.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

import grpc
from aiohttp import web

from railyard.config import KinesisKey, split_address
from railyard.kinesis import (
    AppendResult,
    Credential,
    KinesisApi,
    KinesisHttp,
    LimitExceeded,
    ReadBatch,
    Rejected,
    StoredRecord,
    StreamConflict,
    StreamMissing,
    StreamState,
    Unavailable,
    start_server,
)
from railyard.node.api.commands import create_stream_command, now_ms
from railyard.node.api.context import NO_CREATE_KEY, NodeContext
from railyard.node.api.status_codes import ServiceError, exception_error, result_error
from railyard.node.api.streams_service import READ_TIMEOUT_ELECTIONS, StreamsService
from railyard.proto import commands_pb2 as cmd
from railyard.proto import railyard_pb2 as pb
from railyard.streams import (
    Appended,
    InvalidArgument,
    StreamCreated,
    StreamInfo,
    StreamNotFound,
    StreamUpdated,
    validate,
    validate_append,
)

T = TypeVar("T")

# Long enough to ride out an election (a timeout of up to twice
# election_timeout_ms, then a vote round), short of botocore's 60 s read
# timeout.
RETRY_DEADLINE_S = 10.0
# Pauses between attempts grow from the first to the last, doubling.
FIRST_PAUSE_S = 0.02
LAST_PAUSE_S = 0.5
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class _Call:
    """The part of a gRPC servicer context `Forwarder.forward` reads, for a call from HTTP."""

    def __init__(self, deadline: float) -> None:
        self._deadline = deadline

    def time_remaining(self) -> float:
        return max(0.0, self._deadline - time.monotonic())

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    def set_trailing_metadata(self, metadata: object) -> None:
        """The leader hint is for gRPC clients; an HTTP client has no use for it."""


def _state(info: StreamInfo | pb.StreamInfo) -> StreamState:
    return StreamState(
        info.name,
        info.first_sequence,
        info.last_sequence,
        info.created_ms,
        info.retention.max_age_ms,
    )


class NodeKinesisBackend:
    def __init__(self, node: NodeContext, streams: StreamsService) -> None:
        self.node = node
        self.streams = streams
        self.driver = node.driver

    @property
    def max_name_chars(self) -> int:
        return self.node.limits.max_stream_name_len

    # ------------------------------------------------------------ the retry loop

    async def _attempts(
        self, name: str, attempt: Callable[[_Call], Awaitable[T]], *, repeatable: bool
    ) -> T:
        deadline = time.monotonic() + RETRY_DEADLINE_S
        pause = FIRST_PAUSE_S
        while True:
            sent = self.node.leader() is not None
            try:
                if sent:
                    return await attempt(_Call(deadline))
                problem = "no leader is known"
            except Exception as exc:
                error = exception_error(exc)
                if error is None:
                    raise
                if error.code not in _RETRYABLE:
                    raise _backend_error(name, error) from exc
                if not repeatable:
                    raise Unavailable(error.message) from exc
                problem = error.message
            if time.monotonic() + pause > deadline:
                raise Unavailable(f"{problem} (for {RETRY_DEADLINE_S:.0f} s)")
            await asyncio.sleep(pause)
            pause = min(pause * 2, LAST_PAUSE_S)

    async def _propose(self, command: cmd.Command, call: _Call) -> object:
        invalid = validate(command, self.node.limits)
        if invalid is not None:
            raise result_error(invalid) or AssertionError(invalid)
        async with asyncio.timeout(call.time_remaining()):
            return await self.driver.propose(command.SerializeToString())

    # ------------------------------------------------------------ writes

    async def create_stream(self, name: str, max_age_ms: int) -> StreamState:
        request = pb.CreateStreamRequest(name=name, retention=cmd.Retention(max_age_ms=max_age_ms))

        async def attempt(call: _Call) -> StreamState:
            if not self.node.is_leader():
                response = await self.streams.forwarder.forward("CreateStream", request, call)
                return _state(response.stream)
            command = create_stream_command(
                name, request.retention, now_ms(), self.node.resource_limits.max_streams
            )
            result = await self._propose(command, call)
            if isinstance(result, StreamCreated):
                return _state(result.info)
            raise result_error(result) or AssertionError(result)

        return await self._attempts(name, attempt, repeatable=True)

    async def delete_stream(self, name: str) -> None:
        request = pb.DeleteStreamRequest(name=name)

        async def attempt(call: _Call) -> None:
            if not self.node.is_leader():
                await self.streams.forwarder.forward("DeleteStream", request, call)
                return
            command = cmd.Command(delete_stream=cmd.DeleteStreamCommand(name=name))
            error = result_error(await self._propose(command, call))
            if error is not None:
                raise error

        await self._attempts(name, attempt, repeatable=True)

    async def set_retention(self, name: str, max_age_ms: int) -> StreamState:
        """An UpdateStream: the retention becomes `max_age_ms` alone, as Kinesis has no other."""
        request = pb.UpdateStreamRequest(name=name, retention=cmd.Retention(max_age_ms=max_age_ms))

        async def attempt(call: _Call) -> StreamState:
            if not self.node.is_leader():
                response = await self.streams.forwarder.forward("UpdateStream", request, call)
                return _state(response.stream)
            command = cmd.Command(
                update_stream=cmd.UpdateStreamCommand(
                    name=name, retention=request.retention, timestamp_ms=now_ms()
                )
            )
            result = await self._propose(command, call)
            if isinstance(result, StreamUpdated):
                return _state(result.info)
            raise result_error(result) or AssertionError(result)

        return await self._attempts(name, attempt, repeatable=True)

    async def append(
        self,
        name: str,
        records: Sequence[tuple[bytes, bytes]],
        producer_id: str,
        producer_sequence: int,
    ) -> AppendResult:
        batch = pb.PutRecordsRequest(
            stream=name,
            records=[cmd.Record(data=data, key=key, has_key=True) for data, key in records],
            producer_id=producer_id,
            producer_sequence=producer_sequence,
        )

        async def attempt(call: _Call) -> AppendResult:
            if not self.node.is_leader():
                response = await self.streams.forwarder.forward(
                    "PutRecords", batch, call, extra_metadata=((NO_CREATE_KEY, "1"),)
                )
                return AppendResult(
                    response.sequences[0], len(response.sequences), response.timestamp_ms
                )
            # The request has the fields the rules read, as in the Streams service.
            invalid = validate_append(cast(cmd.AppendRecordsCommand, batch), self.node.limits)
            if invalid is not None:
                raise result_error(invalid) or AssertionError(invalid)
            appended: Appended = await self.streams.propose_append(
                batch, call.time_remaining(), create_if_missing=False
            )
            return AppendResult(
                appended.sequences.start, len(appended.sequences), appended.timestamp_ms
            )

        return await self._attempts(name, attempt, repeatable=bool(producer_id))

    # ------------------------------------------------------------ reads

    async def _read(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        async def attempt(call: _Call) -> Any:
            timeout = min(
                call.time_remaining(), READ_TIMEOUT_ELECTIONS * self.node.election_timeout_ms / 1000
            )
            async with asyncio.timeout(timeout):
                await self.driver.read_barrier()
            result = await self.driver.machine_call(fn, *args)
            if isinstance(result, StreamNotFound):
                raise StreamMissing(name)
            if isinstance(result, InvalidArgument):
                raise Rejected(f"{result.field}: {result.message}")
            return result

        return await self._attempts(name, attempt, repeatable=True)

    async def list_streams(self) -> list[StreamState]:
        infos = await self._read("", self.driver.machine.list_streams)
        return [_state(i) for i in infos]

    async def describe(self, name: str) -> StreamState:
        return _state(await self._read(name, self.driver.machine.describe, name))

    async def resolve(self, name: str, position: str, sequence: int, timestamp_ms: int) -> int:
        found: int = await self._read(
            name, self.driver.machine.resolve_position, name, position, sequence, timestamp_ms
        )
        return found

    async def read(self, name: str, from_sequence: int, limit: int, max_bytes: int) -> ReadBatch:
        result = await self._read(
            name, self.driver.machine.read, name, from_sequence, limit, max_bytes
        )
        return ReadBatch(
            [StoredRecord(r.sequence, r.data, r.key, r.timestamp_ms) for r in result.records],
            result.next_sequence,
            result.behind_latest,
        )


def _backend_error(name: str, error: ServiceError) -> Exception:
    if error.code is grpc.StatusCode.NOT_FOUND:
        return StreamMissing(name)
    if error.code is grpc.StatusCode.ALREADY_EXISTS:
        return StreamConflict(name)
    if error.code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return LimitExceeded(error.message)
    if error.code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
        return Rejected(error.message)
    return error


async def start_kinesis_endpoint(
    address: str,
    node: NodeContext,
    streams: StreamsService,
    credentials: Sequence[KinesisKey],
    ssl_context: ssl.SSLContext | None = None,
) -> web.AppRunner:
    """Serve the Kinesis protocol on `address` (host:port) until the runner is cleaned up.

    Over HTTPS with `ssl_context`, plain HTTP without.

    Iterators are sealed with the cluster's name, so an iterator from any
    node of this cluster works on every other (see `kinesis.positions`).
    """
    api = KinesisApi(NodeKinesisBackend(node, streams), token_key=node.cluster.encode())
    keys = {k.access_key_id: Credential(k.secret_access_key, k.role) for k in credentials}
    host, port = split_address(address)
    return await start_server(KinesisHttp(api, keys), host.strip("[]"), port, ssl_context)
