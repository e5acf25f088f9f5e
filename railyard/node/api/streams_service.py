"""The Streams service: client requests -> commands, proposals and reads.

Writes (create, delete, put) are validated here first, so bad input is
refused without a trip through the log (`streams.validate`, the same rules
`apply` runs). A follower forwards a valid write to the leader over a
long-lived channel (one hop: a forwarded request is never forwarded again);
with no leader known it answers UNAVAILABLE. The leader stamps the command's
timestamp, proposes it (requests arriving together share one fsync, see the
driver) and answers with the state machine's result for its entry.

The node's `[limits]` hold here too (`admission.py`): a client beyond one is
refused with RESOURCE_EXHAUSTED. The cluster's `max_streams` travels in each
command that may create a stream and is enforced when it is applied; the
leader refuses a new stream at once when the limit is already reached.
A GetRecords answer holds at most `max_get_records_bytes` of records (a
request asking for more is clipped, not refused).

Reads are linearizable by default: a ReadIndex round (`Driver.read_barrier`)
makes sure this node has applied every write acknowledged before the read
began, on followers too. `stale=True` skips the round and reads what this
node has applied.

Failures are mapped to status codes in `status_codes.py`, nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar, cast

import grpc

from railyard.node.api.commands import (
    append_command_bytes,
    create_stream_command,
    now_ms,
    stream_info_to_pb,
)
from railyard.node.api.context import (
    FORWARDED_KEY,
    NO_CREATE_KEY,
    Forwarder,
    NodeContext,
    request_timeout,
)
from railyard.node.api.status_codes import (
    AlreadyApplied,
    ServiceError,
    abort,
    exception_error,
    result_error,
    rpc,
    unavailable,
)
from railyard.node.security import identity_of
from railyard.proto import commands_pb2 as cmd
from railyard.proto import railyard_pb2 as pb
from railyard.proto import railyard_pb2_grpc as pb_grpc
from railyard.streams import (
    Appended,
    Limits,
    StreamCreated,
    StreamNotFound,
    StreamUpdated,
    TooManyStreams,
    validate,
    validate_append,
)

Resp = TypeVar("Resp")

# A ReadIndex round needs one heartbeat round trip; if it has not come back
# in this many election timeouts the leader is gone and the client should retry.
READ_TIMEOUT_ELECTIONS = 2
# GetRecords defaults and caps: enough records per call to amortise a round
# trip; the bytes are capped by [limits] max_get_records_bytes.
DEFAULT_READ_LIMIT = 1000
MAX_READ_LIMIT = 10_000
DEFAULT_READ_MAX_BYTES = 1 << 20

_POSITIONS: dict[int, str] = {
    pb.TRIM_HORIZON: "TRIM_HORIZON",
    pb.LATEST: "LATEST",
    pb.AT_SEQUENCE: "AT_SEQUENCE",
    pb.AFTER_SEQUENCE: "AFTER_SEQUENCE",
    pb.AT_TIMESTAMP: "AT_TIMESTAMP",
}


class StreamsService(pb_grpc.StreamsServicer):
    def __init__(self, node: NodeContext) -> None:
        self.node = node
        self.driver = node.driver
        self.addresses = node.addresses
        self.forwarder = Forwarder(node)
        self.admission = node.admission
        self.limits = node.resource_limits

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
        command = create_stream_command(
            request.name, request.retention, now_ms(), self.limits.max_streams
        )
        if self.node.is_leader():
            await self._refuse_beyond_max_streams(request.name)

        def respond(result: StreamCreated) -> pb.CreateStreamResponse:
            return pb.CreateStreamResponse(stream=stream_info_to_pb(result.info))

        return await self._write(command, request, context, respond)

    async def _refuse_beyond_max_streams(self, name: str) -> None:
        """At the limit already, a new stream is refused without a trip through the log.

        Only a shortcut: `apply` refuses it anyway, on every replica alike.
        """
        limit = self.limits.max_streams
        machine = self.driver.machine
        if machine.stream_count < limit:
            return
        found = await self.driver.machine_call(machine.describe, name)
        if isinstance(found, StreamNotFound):
            raise result_error(TooManyStreams(name, limit)) or AssertionError(name)

    @rpc
    async def UpdateStream(
        self, request: pb.UpdateStreamRequest, context: Any
    ) -> pb.UpdateStreamResponse:
        command = cmd.Command(
            update_stream=cmd.UpdateStreamCommand(
                name=request.name, retention=request.retention, timestamp_ms=now_ms()
            )
        )

        def respond(result: StreamUpdated) -> pb.UpdateStreamResponse:
            return pb.UpdateStreamResponse(stream=stream_info_to_pb(result.info))

        return await self._write(command, request, context, respond)

    @rpc
    async def DeleteStream(
        self, request: pb.DeleteStreamRequest, context: Any
    ) -> pb.DeleteStreamResponse:
        command = cmd.Command(delete_stream=cmd.DeleteStreamCommand(name=request.name))
        return await self._write(
            command, request, context, lambda _result: pb.DeleteStreamResponse()
        )

    @rpc
    async def PutRecord(self, request: pb.PutRecordRequest, context: Any) -> pb.PutRecordResponse:
        batch = single_record_batch(request)

        def respond(appended: Appended) -> pb.PutRecordResponse:
            return pb.PutRecordResponse(
                sequence=appended.sequences[0], timestamp_ms=appended.timestamp_ms
            )

        return await self._put(batch, request, context, respond)

    @rpc
    async def PutRecords(
        self, request: pb.PutRecordsRequest, context: Any
    ) -> pb.PutRecordsResponse:
        def respond(appended: Appended) -> pb.PutRecordsResponse:
            return pb.PutRecordsResponse(
                sequences=list(appended.sequences), timestamp_ms=appended.timestamp_ms
            )

        return await self._put(request, request, context, respond)

    async def _put(
        self,
        batch: pb.PutRecordsRequest,
        request: Any,
        context: Any,
        respond: Callable[[Appended], Resp],
    ) -> Resp:
        """A unary put: check `batch`, forward `request` from a follower, else propose it.

        Counted against its connection's `max_inflight_per_connection`,
        unless a follower forwarded it (counted there, by its client's
        connection).
        """
        _raise_invalid(batch, self.node.limits)
        keys = [key for key, _ in context.invocation_metadata() or ()]
        held = (
            contextlib.nullcontext()
            if FORWARDED_KEY in keys and self._from_a_node(context)
            else self.admission.put(context.peer())
        )
        with held:
            if not self.node.is_leader():
                method = type(request).__name__.removesuffix("Request")
                forwarded: Resp = await self.forwarder.forward(method, request, context)
                return forwarded
            appended = await self.propose_append(
                batch, request_timeout(context), create_if_missing=NO_CREATE_KEY not in keys
            )
            return respond(appended)

    def _from_a_node(self, context: Any) -> bool:
        """Whether a call comes from a member node: any caller without TLS, which checks no one."""
        if self.node.tls is None:
            return True
        identity = identity_of(context)
        return identity is not None and identity.node

    async def propose_append(
        self, batch: pb.PutRecordsRequest, timeout_s: float, *, create_if_missing: bool = True
    ) -> Appended:
        """The one path of every put on the leader: stamp, propose, wait, map the result.

        `batch` was validated. A missing stream is created if the cluster's
        `auto_create_streams` and `create_if_missing` both allow it. Raises
        the `ServiceError` its result stands for (`AlreadyApplied` for a
        producer sequence older than the remembered window), or what
        `Driver.propose` raises.
        """
        data = append_command_bytes(
            batch,
            now_ms(),
            self.node.auto_create_streams and create_if_missing,
            self.limits.max_streams,
        )
        # asyncio.timeout, not wait_for: no extra task per request on the hot path.
        async with asyncio.timeout(timeout_s):
            result = await self.driver.propose(data)
        if isinstance(result, Appended):
            return result
        raise result_error(result) or TypeError(f"an append applied as {result!r}")

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

        The call holds one of the node's `max_client_streams`; a batch that
        arrives while `max_inflight_per_connection` of this call's batches
        are unanswered fails with RESOURCE_EXHAUSTED (a producer's window
        is smaller, so only a client that ignores its answers meets it).
        """
        if not self.node.is_leader():
            leader = self.node.leader()
            await abort(
                context,
                unavailable(f"not the leader (leader: {leader or 'unknown'})", leader),
                self.addresses,
            )
            return
        try:
            with self.admission.client_stream():
                async for response in self._answer_batches(requests, context):
                    yield response
        except ServiceError as refused:
            await abort(context, refused, self.addresses)

    async def _answer_batches(
        self, requests: AsyncIterator[pb.PutRecordsRequest], context: Any
    ) -> AsyncIterator[pb.PutRecordsResponse]:
        """Answer the call's batches in order; the first failure aborts the call."""
        window = _Window()
        reader = asyncio.ensure_future(self._start_batches(requests, context, window))
        try:
            while (pending := await window.batches.get()) is not None:
                try:
                    response = await pending
                except Exception as exc:
                    error = exception_error(exc)
                    if error is None:
                        raise
                    await abort(context, error, self.addresses)
                    return
                window.unanswered -= 1
                yield response
            await reader
        finally:
            reader.cancel()
            if reader.done() and not reader.cancelled():
                reader.exception()  # retrieved: a call that ended early never awaits it
            while not window.batches.empty():
                left = window.batches.get_nowait()
                if left is not None:
                    left.cancel()

    async def _start_batches(
        self, requests: AsyncIterator[pb.PutRecordsRequest], context: Any, window: _Window
    ) -> None:
        """Propose each incoming batch at once (in arrival order); stop at the first failure."""
        broken = asyncio.Event()

        def seen(outcome: asyncio.Future[pb.PutRecordsResponse]) -> None:
            # Also marks the failure as retrieved: a call that ended early never awaits it.
            if not outcome.cancelled() and outcome.exception() is not None:
                broken.set()

        try:
            async for request in requests:
                if broken.is_set():
                    break
                outcome = self._start_batch(request, context, window.unanswered)
                outcome.add_done_callback(seen)
                window.unanswered += 1
                window.batches.put_nowait(outcome)
                if outcome.done():  # refused at once: no later batch is proposed
                    break
        finally:
            # Also when reading failed (a malformed message ends the call once
            # the batches before it are answered): the answering loop must not
            # wait for batches that never come.
            window.batches.put_nowait(None)

    def _start_batch(
        self, request: pb.PutRecordsRequest, context: Any, unanswered: int
    ) -> asyncio.Future[pb.PutRecordsResponse]:
        error = validate_put(request, self.node.limits)
        if error is None and unanswered >= self.limits.max_inflight_per_connection:
            error = self.admission.too_many_puts(unanswered)
        if error is None and not self.node.is_leader():
            leader = self.node.leader()
            error = unavailable(f"not the leader (leader: {leader or 'unknown'})", leader)
        if error is not None:
            failed: asyncio.Future[pb.PutRecordsResponse] = (
                asyncio.get_running_loop().create_future()
            )
            failed.set_exception(error)
            return failed
        # Created in arrival order, each task's first step queues its proposal:
        # the batches enter the log in the producer's order.
        return asyncio.ensure_future(self._propose_batch(request, request_timeout(context)))

    async def _propose_batch(
        self, request: pb.PutRecordsRequest, timeout_s: float
    ) -> pb.PutRecordsResponse:
        try:
            appended = await self.propose_append(request, timeout_s)
        except AlreadyApplied:
            return pb.PutRecordsResponse(producer_sequence=request.producer_sequence)
        return pb.PutRecordsResponse(
            sequences=list(appended.sequences),
            timestamp_ms=appended.timestamp_ms,
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
            request.stale,
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
        max_bytes = min(
            request.max_bytes or DEFAULT_READ_MAX_BYTES, self.limits.max_get_records_bytes
        )
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
        self.driver.metrics.records_read(len(response.records))
        return response


class _Window:
    """One PutRecordStream's batches in arrival order (None ends them), and how many are
    proposed but not yet answered."""

    def __init__(self) -> None:
        self.batches: asyncio.Queue[asyncio.Future[pb.PutRecordsResponse] | None] = asyncio.Queue()
        self.unanswered = 0


def single_record_batch(request: pb.PutRecordRequest) -> pb.PutRecordsRequest:
    """A PutRecord as the batch of one record every put path takes."""
    return pb.PutRecordsRequest(
        stream=request.stream,
        records=[cmd.Record(data=request.data, key=request.key, has_key=request.has_key)],
        producer_id=request.producer_id,
        producer_sequence=request.producer_sequence,
    )


def _raise_invalid(request: pb.PutRecordsRequest, limits: Limits) -> None:
    error = validate_put(request, limits)
    if error is not None:
        raise error


def validate_put(request: pb.PutRecordsRequest, limits: Limits) -> ServiceError | None:
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
