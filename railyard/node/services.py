"""The Streams service: client requests -> commands, proposals and reads.

Writes (create, delete, put) are validated here first, so bad input is
refused without a trip through the log (`streams.validate`, the same rules
`apply` runs). A follower forwards a valid write to the leader over a
long-lived channel (one hop: a forwarded request is never forwarded again);
with no leader known it answers UNAVAILABLE. The leader stamps the command's
timestamp, proposes it (requests arriving together share one fsync, see the
driver) and answers with the state machine's result for its entry.

Reads are linearizable by default: a ReadIndex round (`Driver.read_barrier`)
makes sure this node has applied every write acknowledged before the read
began, on followers too. `stale=True` skips the round and reads what this
node has applied.

Failures are mapped to status codes in `node/errors.py`, nowhere else.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import grpc

from railyard.node.driver import Driver
from railyard.node.errors import (
    LEADER_ADDRESS_KEY,
    LEADER_ID_KEY,
    ServiceError,
    abort,
    exception_error,
    result_error,
    rpc,
    unavailable,
)
from railyard.node.transport import CHANNEL_OPTIONS
from railyard.proto import commands_pb2 as cmd
from railyard.proto import railyard_pb2 as pb
from railyard.proto import railyard_pb2_grpc as pb_grpc
from railyard.raft import NodeId
from railyard.streams import (
    Appended,
    Limits,
    StaleProducerSequence,
    StreamCreated,
    StreamInfo,
    StreamNotFound,
    validate,
    validate_append,
)

Resp = TypeVar("Resp")

# Metadata that marks a request forwarded by a follower: the receiver serves
# it or refuses it, never forwards it again (no forwarding loops).
FORWARDED_KEY = "railyard-forwarded"
# A request without a deadline still gets one (every call is bounded).
DEFAULT_REQUEST_TIMEOUT_S = 10.0
# A ReadIndex round needs one heartbeat round trip; if it has not come back
# in this many election timeouts the leader is gone and the client should retry.
READ_TIMEOUT_ELECTIONS = 2
# GetRecords defaults and caps: enough records per call to amortise a round
# trip, and responses well under gRPC's 4 MiB default message limit.
DEFAULT_READ_LIMIT = 1000
MAX_READ_LIMIT = 10_000
DEFAULT_READ_MAX_BYTES = 1 << 20
MAX_READ_MAX_BYTES = 3 << 20
# Batches of one PutRecordStream proposed and not yet answered. Beyond this
# the server stops reading the stream and gRPC flow control holds the
# producer back; a producer's own window is normally smaller.
STREAM_WINDOW_BATCHES = 256

_POSITIONS: dict[int, str] = {
    pb.TRIM_HORIZON: "TRIM_HORIZON",
    pb.LATEST: "LATEST",
    pb.AT_SEQUENCE: "AT_SEQUENCE",
    pb.AFTER_SEQUENCE: "AFTER_SEQUENCE",
    pb.AT_TIMESTAMP: "AT_TIMESTAMP",
}


def now_ms() -> int:
    return int(time.time() * 1000)


def _field_shape(f: Any) -> tuple[Any, ...]:
    return (f.number, f.type, f.is_repeated, f.message_type and f.message_type.full_name)


def _shares_append_fields() -> bool:
    """Do PutRecordsRequest's fields have AppendRecordsCommand's numbers and types?"""
    request = pb.PutRecordsRequest.DESCRIPTOR.fields_by_name
    command = cmd.AppendRecordsCommand.DESCRIPTOR.fields_by_name
    return all(
        name in command and _field_shape(f) == _field_shape(command[name])
        for name, f in request.items()
    )


# PutRecordsRequest is field for field the start of AppendRecordsCommand
# (stream, records, producer_id, producer_sequence), so the request's bytes
# are the command's first fields: the command is built by concatenation, one
# C-level serialization instead of a Python copy of every record (the
# leader's largest per-record cost). Checked here, never assumed.
_APPEND_BY_CONCATENATION = _shares_append_fields()
# Command.append_records: field 3, length-delimited.
_APPEND_RECORDS_TAG = bytes(
    [(cmd.Command.DESCRIPTOR.fields_by_name["append_records"].number << 3) | 2]
)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def append_command_bytes(
    request: pb.PutRecordsRequest, timestamp_ms: int, create_if_missing: bool
) -> bytes:
    """The serialized `Command` appending `request`'s records, stamped by the leader.

    The leader's fields come last: on the wire the last value of a field
    wins, so nothing in the request can override them; fields unknown to
    this version are dropped first.
    """
    stamp = cmd.AppendRecordsCommand(
        timestamp_ms=timestamp_ms, create_if_missing=create_if_missing
    ).SerializeToString()
    if not _APPEND_BY_CONCATENATION:
        command = cmd.Command(
            append_records=cmd.AppendRecordsCommand(
                stream=request.stream,
                records=list(request.records),
                producer_id=request.producer_id,
                producer_sequence=request.producer_sequence,
            )
        )
        command.append_records.MergeFromString(stamp)
        return command.SerializeToString()
    request.DiscardUnknownFields()
    body = request.SerializeToString() + stamp
    return _APPEND_RECORDS_TAG + _varint(len(body)) + body


def stream_info_to_pb(info: StreamInfo) -> pb.StreamInfo:
    return pb.StreamInfo(
        name=info.name,
        retention=cmd.Retention(
            max_age_ms=info.retention.max_age_ms,
            max_records=info.retention.max_records,
            max_bytes=info.retention.max_bytes,
        ),
        first_sequence=info.first_sequence,
        last_sequence=info.last_sequence,
        record_count=info.record_count,
        bytes=info.bytes,
        created_ms=info.created_ms,
    )


def request_timeout(context: Any) -> float:
    remaining = context.time_remaining()
    return DEFAULT_REQUEST_TIMEOUT_S if remaining is None else max(0.0, remaining)


@dataclass
class NodeContext:
    """What the services share about this node."""

    cluster: str
    node_id: NodeId
    address: str
    addresses: Mapping[str, str]  # every node id -> "host:port"
    driver: Driver
    limits: Limits
    auto_create_streams: bool
    heartbeat_interval_ms: int
    election_timeout_ms: int
    started_at: float = field(default_factory=time.monotonic)
    # Monotonic time of the last message from each peer (kept by the transport).
    last_heard: dict[str, float] = field(default_factory=dict)

    def leader(self) -> NodeId | None:
        return self.driver.soft_state.leader_id

    def is_leader(self) -> bool:
        return self.leader() == self.node_id


class Forwarder:
    """Long-lived channels to the other nodes, for writes sent to a follower."""

    def __init__(self, node: NodeContext) -> None:
        self.node = node
        self._channels: dict[str, grpc.aio.Channel] = {}

    def channel(self, node_id: str) -> grpc.aio.Channel:
        if node_id not in self._channels:
            self._channels[node_id] = grpc.aio.insecure_channel(
                self.node.addresses[node_id], options=CHANNEL_OPTIONS
            )
        return self._channels[node_id]

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close(grace=None)

    async def forward(self, method: str, request: Any, context: Any) -> Any:
        """Send the request to the leader; its answer (or its error) is ours."""
        leader = self.node.leader()
        if leader is None:
            raise unavailable("no leader is known; retry shortly", None)
        forwarded = any(key == FORWARDED_KEY for key, _ in context.invocation_metadata() or ())
        if forwarded:
            raise unavailable(f"not the leader (leader: {leader})", leader)
        stub = pb_grpc.StreamsStub(self.channel(leader))
        try:
            response = await getattr(stub, method)(
                request,
                timeout=request_timeout(context),
                metadata=((FORWARDED_KEY, self.node.node_id),),
            )
            # A forwarded write costs a second hop: name the leader, so a
            # client that reads trailing metadata can go there directly.
            context.set_trailing_metadata(
                (
                    (LEADER_ID_KEY, leader),
                    (LEADER_ADDRESS_KEY, self.node.addresses.get(leader, "")),
                )
            )
            return response
        except grpc.aio.AioRpcError as exc:
            metadata = cast(Sequence[tuple[str, str | bytes]], exc.trailing_metadata() or ())
            trailing = tuple(
                (k, v.decode() if isinstance(v, bytes) else str(v)) for k, v in metadata
            )
            if exc.code() is grpc.StatusCode.UNAVAILABLE and not trailing:
                # The leader itself is unreachable: naming it would send the
                # client to a dead node.
                raise unavailable(
                    f"leader {leader} did not answer ({exc.details()})", None
                ) from exc
            raise ServiceError(exc.code(), exc.details() or "", trailing=trailing) from exc


class StreamsService(pb_grpc.StreamsServicer):
    def __init__(self, node: NodeContext) -> None:
        self.node = node
        self.driver = node.driver
        self.addresses = node.addresses
        self.forwarder = Forwarder(node)

    # ------------------------------------------------------------ helpers

    async def _write(
        self,
        command: cmd.Command,
        request: Any,
        context: Any,
        respond: Callable[[Any], Resp],
    ) -> Resp:
        invalid = validate(command, self.node.limits)
        if invalid is not None:
            error = result_error(invalid)
            assert error is not None
            raise error
        if not self.node.is_leader():
            method = type(request).__name__.removesuffix("Request")
            response: Resp = await self.forwarder.forward(method, request, context)
            return response
        # asyncio.timeout, not wait_for: no extra task per request on the hot path.
        async with asyncio.timeout(request_timeout(context)):
            result = await self.driver.propose(command.SerializeToString())
        error = result_error(result)
        if error is not None:
            raise error
        return respond(result)

    async def _read(self, context: Any, stale: bool, fn: Callable[..., Any], *args: Any) -> Any:
        if not stale:
            remaining = request_timeout(context)
            timeout = min(remaining, READ_TIMEOUT_ELECTIONS * self.node.election_timeout_ms / 1000)
            try:
                async with asyncio.timeout(timeout):
                    await self.driver.read_barrier()
            except TimeoutError:
                if timeout >= remaining:
                    raise
                raise unavailable(
                    "the leader did not confirm a read index in time; retry",
                    self.node.leader(),
                ) from None
        return await self.driver.machine_call(fn, *args)

    # ------------------------------------------------------------ writes

    @rpc
    async def CreateStream(
        self, request: pb.CreateStreamRequest, context: Any
    ) -> pb.CreateStreamResponse:
        command = cmd.Command(
            create_stream=cmd.CreateStreamCommand(
                name=request.name, retention=request.retention, timestamp_ms=now_ms()
            )
        )

        def respond(result: StreamCreated) -> pb.CreateStreamResponse:
            return pb.CreateStreamResponse(stream=stream_info_to_pb(result.info))

        return await self._write(command, request, context, respond)

    @rpc
    async def DeleteStream(
        self, request: pb.DeleteStreamRequest, context: Any
    ) -> pb.DeleteStreamResponse:
        command = cmd.Command(delete_stream=cmd.DeleteStreamCommand(name=request.name))
        return await self._write(
            command, request, context, lambda _result: pb.DeleteStreamResponse()
        )

    def _append(
        self, stream: str, records: list[cmd.Record], producer_id: str, producer_sequence: int
    ) -> cmd.Command:
        return cmd.Command(
            append_records=cmd.AppendRecordsCommand(
                stream=stream,
                records=records,
                producer_id=producer_id,
                producer_sequence=producer_sequence,
                timestamp_ms=now_ms(),
                create_if_missing=self.node.auto_create_streams,
            )
        )

    @rpc
    async def PutRecord(self, request: pb.PutRecordRequest, context: Any) -> pb.PutRecordResponse:
        record = cmd.Record(data=request.data, key=request.key, has_key=request.has_key)
        command = self._append(
            request.stream, [record], request.producer_id, request.producer_sequence
        )

        def respond(result: Appended) -> pb.PutRecordResponse:
            return pb.PutRecordResponse(
                sequence=result.sequences[0], timestamp_ms=result.timestamp_ms
            )

        return await self._write(command, request, context, respond)

    @rpc
    async def PutRecords(
        self, request: pb.PutRecordsRequest, context: Any
    ) -> pb.PutRecordsResponse:
        invalid = _validate_put(request, self.node.limits)
        if invalid is not None:
            raise invalid
        if not self.node.is_leader():
            response: pb.PutRecordsResponse = await self.forwarder.forward(
                "PutRecords", request, context
            )
            return response
        data = append_command_bytes(request, now_ms(), self.node.auto_create_streams)
        async with asyncio.timeout(request_timeout(context)):
            result = await self.driver.propose(data)
        error = result_error(result)
        if error is not None:
            raise error
        return pb.PutRecordsResponse(
            sequences=list(result.sequences), timestamp_ms=result.timestamp_ms
        )

    async def PutRecordStream(
        self, requests: AsyncIterator[pb.PutRecordsRequest], context: Any
    ) -> AsyncIterator[pb.PutRecordsResponse]:
        """A streaming producer: every batch is proposed as it arrives, answered in order.

        Only the leader serves the stream (a follower answers UNAVAILABLE
        naming the leader, and the producer reconnects there). The first
        batch that fails ends the call with its status, and no later batch
        of this call is proposed after it; the producer then resends every
        unacknowledged batch with its producer sequence, so each is applied
        once. A resent batch that was applied before -- even if later
        batches of the same producer overtook it -- is acknowledged with its
        original sequences: the machine remembers each producer's last
        `Limits.producer_window` results, more than a producer keeps in
        flight. Only a batch older than that window (a producer with a
        larger window, or another client reusing the id) is acknowledged
        without sequences: applied before, positions no longer known.
        """
        if not self.node.is_leader():
            leader = self.node.leader()
            await abort(
                context,
                unavailable(f"not the leader (leader: {leader or 'unknown'})", leader),
                self.addresses,
            )
            return
        window: asyncio.Queue[asyncio.Future[pb.PutRecordsResponse] | None] = asyncio.Queue(
            STREAM_WINDOW_BATCHES
        )
        reader = asyncio.ensure_future(self._start_batches(requests, context, window))
        try:
            while (pending := await window.get()) is not None:
                try:
                    response = await pending
                except Exception as exc:
                    error = exception_error(exc)
                    if error is None:
                        raise
                    await abort(context, error, self.addresses)
                    return
                yield response
            await reader
        finally:
            reader.cancel()
            while not window.empty():
                left = window.get_nowait()
                if left is not None:
                    left.cancel()

    async def _start_batches(
        self,
        requests: AsyncIterator[pb.PutRecordsRequest],
        context: Any,
        window: asyncio.Queue[asyncio.Future[pb.PutRecordsResponse] | None],
    ) -> None:
        """Propose each incoming batch at once (in arrival order); stop at the first failure."""
        broken = asyncio.Event()

        def seen(outcome: asyncio.Future[pb.PutRecordsResponse]) -> None:
            # Also marks the failure as retrieved: a call that ended early never awaits it.
            if not outcome.cancelled() and outcome.exception() is not None:
                broken.set()

        async for request in requests:
            if broken.is_set():
                break
            outcome = self._start_batch(request, context)
            outcome.add_done_callback(seen)
            await window.put(outcome)
        await window.put(None)

    def _start_batch(
        self, request: pb.PutRecordsRequest, context: Any
    ) -> asyncio.Future[pb.PutRecordsResponse]:
        error = _validate_put(request, self.node.limits)
        if error is None and not self.node.is_leader():
            leader = self.node.leader()
            error = unavailable(f"not the leader (leader: {leader or 'unknown'})", leader)
        if error is not None:
            failed: asyncio.Future[pb.PutRecordsResponse] = (
                asyncio.get_running_loop().create_future()
            )
            failed.set_exception(error)
            return failed
        data = append_command_bytes(request, now_ms(), self.node.auto_create_streams)
        # Created in arrival order, each task's first step queues its proposal:
        # the batches enter the log in the producer's order.
        return asyncio.ensure_future(self._propose_batch(data, request, request_timeout(context)))

    async def _propose_batch(
        self, data: bytes, request: pb.PutRecordsRequest, timeout_s: float
    ) -> pb.PutRecordsResponse:
        async with asyncio.timeout(timeout_s):
            result = await self.driver.propose(data)
        if isinstance(result, StaleProducerSequence):
            return pb.PutRecordsResponse(producer_sequence=request.producer_sequence)
        error = result_error(result)
        if error is not None:
            raise error
        return pb.PutRecordsResponse(
            sequences=list(result.sequences),
            timestamp_ms=result.timestamp_ms,
            producer_sequence=request.producer_sequence,
        )

    # ------------------------------------------------------------ reads

    @rpc
    async def ListStreams(
        self, request: pb.ListStreamsRequest, context: Any
    ) -> pb.ListStreamsResponse:
        infos = await self._read(context, False, self.driver.machine.list_streams)
        return pb.ListStreamsResponse(streams=[stream_info_to_pb(i) for i in infos])

    @rpc
    async def DescribeStream(
        self, request: pb.DescribeStreamRequest, context: Any
    ) -> pb.DescribeStreamResponse:
        info = await self._read(context, False, self.driver.machine.describe, request.name)
        _raise_not_found(info)
        return pb.DescribeStreamResponse(stream=stream_info_to_pb(info))

    @rpc
    async def GetIteratorIndex(
        self, request: pb.GetIteratorIndexRequest, context: Any
    ) -> pb.GetIteratorIndexResponse:
        position = _POSITIONS.get(request.position)
        if position is None:
            raise ServiceError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "position: expected TRIM_HORIZON, LATEST, AT_SEQUENCE, AFTER_SEQUENCE "
                "or AT_TIMESTAMP",
            )
        sequence = await self._read(
            context,
            False,
            self.driver.machine.resolve_position,
            request.stream,
            position,
            request.sequence,
            request.timestamp_ms,
        )
        if not isinstance(sequence, int):
            error = result_error(sequence)
            assert error is not None
            raise error
        return pb.GetIteratorIndexResponse(sequence=sequence)

    @rpc
    async def GetRecords(
        self, request: pb.GetRecordsRequest, context: Any
    ) -> pb.GetRecordsResponse:
        limit = min(request.limit or DEFAULT_READ_LIMIT, MAX_READ_LIMIT)
        max_bytes = min(request.max_bytes or DEFAULT_READ_MAX_BYTES, MAX_READ_MAX_BYTES)
        response = pb.GetRecordsResponse()
        add = response.records.add

        def sink(sequence: int, data: bytes, key: bytes | None, ts: int) -> None:
            # Each record is encoded straight into the answer: no object of our own per record.
            if key is None:
                add(sequence=sequence, data=data, timestamp_ms=ts)
            else:
                add(sequence=sequence, data=data, key=key, has_key=True, timestamp_ms=ts)

        result = await self._read(
            context,
            request.stale,
            self.driver.machine.scan,
            request.stream,
            request.from_sequence,
            limit,
            max_bytes,
            sink,
        )
        _raise_not_found(result)
        response.next_sequence, response.behind_latest = result
        return response


def _validate_put(request: pb.PutRecordsRequest, limits: Limits) -> ServiceError | None:
    """`validate_append`'s verdict on a request, read in place (no command is built).

    The request has the fields the rules read (stream, producer id, records),
    so the same function judges it: the leader refuses what `apply` would.
    """
    return result_error(validate_append(cast(cmd.AppendRecordsCommand, request), limits))


def _raise_not_found(result: object) -> None:
    if isinstance(result, StreamNotFound):
        error = result_error(result)
        assert error is not None
        raise error
