"""The native put protocol: PutRecord over framed TCP, without gRPC's per-call cost.

A grpc.aio call costs a node about 0.4 ms of CPU before any of railyard's
work, and its client 0.3 ms (`bench/grpc_floor.py`); a frame on an asyncio
TCP connection costs tens of microseconds on each side. A node with a
``native_address`` serves single puts there::

    connection := PREAMBLE (client) frame*   (both ways)
    frame      := size (4 bytes) id (8 bytes) message (`size` bytes, protobuf)

The client sends `NativeRequest`s under ids of its choosing, the node
answers each with a `NativeResponse` under the same id, in the order they
finish. Each request is its own proposal on the leader
(`StreamsService.propose_append`, the path of every put), with the same
validation, deduplication (producer id and sequence) and answers as a gRPC
PutRecord: a failure is a `NativeError` holding the gRPC status code,
message and trailing metadata the call would have had. Only the leader
serves puts: a follower answers UNAVAILABLE naming the leader (as
PutRecordStream does) instead of forwarding.

Id 0 carries the node's word on the connection: an empty answer once it is
accepted (the role, `max_native_connections`), which the client waits for
before it sends a request, or a refusal (an error: the role, the limit,
no preamble), after which the node closes it. A refusal comes after the
answers of every request the node read, so a request still unanswered then
was never read: the client fails those with the refusal itself.

Bounds, everything here being hostile until authenticated:

- under ``[tls]`` mutual TLS with the cluster CA, the handshake made per
  connection with the current certificates (SIGHUP reaches new connections)
  within `HANDSHAKE_TIMEOUT_S`, at most `MAX_HANDSHAKES` at once; then the
  certificate's role is checked (writer, as for a gRPC PutRecord) before
  the connection takes a slot, and again on each request (membership
  changes);
- at most ``[limits] max_native_connections`` connections; one idle (nothing
  read, nothing under way) for `IDLE_TIMEOUT_S` is closed;
- the preamble within `HANDSHAKE_TIMEOUT_S`; a message over the largest
  valid request is refused by its id and its bytes skipped unread; one that
  does not decode is refused by its id;
- the bytes received and not yet answered, over all connections, at most
  about `MAX_HELD_BYTES`: past it no connection is read until answers
  free room (counted as they arrive, not as headers claim them); a frame
  begun must be complete within `FRAME_TIMEOUT_S`, whatever paused it;
  a client that reads none of its answers for `WRITE_STALL_S` is cut off;
- puts under way per connection at most ``max_inflight_per_connection``;
  one more is refused with RESOURCE_EXHAUSTED and the connection goes on;
- answers the client does not read stop the reading of its requests
  (the write buffer's high-water mark), and one read's frames are handled
  `MAX_FRAMES_PER_CALLBACK` at a time, so neither a flood of tiny requests
  nor refusals can queue unbounded answers or hold the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
import struct
import time
from collections.abc import Callable, Collection
from typing import cast

import grpc
from google.protobuf.message import DecodeError

from railyard.certs import Identity, identity_of_pem
from railyard.node.api.authorization import refusal
from railyard.node.api.context import DEFAULT_REQUEST_TIMEOUT_S, NodeContext
from railyard.node.api.status_codes import (
    LEADER_ADDRESS_KEY,
    LEADER_ID_KEY,
    ServiceError,
    exception_error,
    over_limit,
    unavailable,
)
from railyard.node.api.streams_service import (
    StreamsService,
    single_record_batch,
    validate_put,
)
from railyard.node.observability import NodeMetrics
from railyard.node.observability.refusals import RefusalLog
from railyard.proto import railyard_pb2 as pb
from railyard.sockets import tune_socket

PREAMBLE = b"RAILYARD-NATIVE/1\n"
HEADER = struct.Struct(">IQ")
PUT_METHOD = "/railyard.v1.Streams/PutRecord"
# The preamble (and, with TLS, the handshake) of a client that means to talk.
HANDSHAKE_TIMEOUT_S = 5.0
# TLS handshakes under way at once: each costs CPU before anyone is known.
MAX_HANDSHAKES = 64
FRAME_TIMEOUT_S = 10.0
# A connection with nothing read and nothing under way this long is closed
# (the client opens a new one when it needs it).
IDLE_TIMEOUT_S = 300.0
IDLE_CHECK_S = 30.0
# A request's message holds one record and a few short fields around it.
MESSAGE_OVERHEAD_BYTES = 64 << 10
# Bytes of requests received and not yet answered, over every connection of
# the node: past it, connections stop being read until it is under the second.
MAX_HELD_BYTES = 256 << 20
RESUME_HELD_BYTES = 192 << 20
# A client that reads none of its answers this long is cut off.
WRITE_STALL_S = 30.0
# At shutdown, answers already written get this long to leave.
CLOSE_FLUSH_S = 1.0
# Answers queued for a client that does not read: past this, stop reading it.
WRITE_HIGH_WATER_BYTES = 256 << 10
# Frames handled per read before the loop serves others.
MAX_FRAMES_PER_CALLBACK = 64
# A request may ask for at most this long (the node's own default otherwise).
MAX_TIMEOUT_S = 60.0
REFUSAL = 0  # the id of the node's word on the whole connection
OK = grpc.StatusCode.OK.value[0]
_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


class NativeServer:
    """Serves the native protocol on one address; `start`, then `close`."""

    def __init__(
        self,
        address: str,
        node: NodeContext,
        streams: StreamsService,
        *,
        log: logging.Logger,
        tls: Callable[[], ssl.SSLContext] | None = None,
        members: Callable[[], tuple[Collection[str], bool]] = lambda: ((), False),
        metrics: NodeMetrics | None = None,
    ) -> None:
        self.address = address
        self.metrics = metrics
        self.node = node
        self.streams = streams
        self.log = log
        self.tls = tls
        # The members whose node certificates may call (and whether any node may).
        self.members = members
        self.max_message_bytes = node.limits.max_record_bytes + MESSAGE_OVERHEAD_BYTES
        self.refusals = RefusalLog(log)
        self.connections: set[_Connection] = set()
        self.established = 0
        self.handshakes = 0
        self.held_bytes = 0
        # Connections whose reading stopped for the budget, resumed once it has room.
        self.waiting_for_room: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self._idle_check: asyncio.Task[None] | None = None

    async def start(self) -> None:
        host, _, port = self.address.rpartition(":")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), host.strip("[]"), int(port), reuse_address=True
        )
        self._idle_check = loop.create_task(self._close_idle())

    async def close(self, grace_s: float = 0.0) -> None:
        """Stop taking connections and requests; answer what is under way, within `grace_s`."""
        if self._server is None:
            return
        self._server.close()
        if self._idle_check is not None:
            self._idle_check.cancel()
        for connection in list(self.connections):
            connection.stop_reading()
        tasks = [task for c in list(self.connections) for task in c.tasks]
        if tasks and grace_s > 0:
            await asyncio.wait(tasks, timeout=grace_s)
        # Written answers are flushed before the connections end, briefly.
        for connection in list(self.connections):
            connection.close()
        flush_until = time.monotonic() + CLOSE_FLUSH_S
        while self.connections and time.monotonic() < flush_until:
            await asyncio.sleep(0.01)
        for connection in list(self.connections):
            connection.abort()
        await self._server.wait_closed()

    async def _close_idle(self) -> None:
        while True:
            await asyncio.sleep(IDLE_CHECK_S)
            now = time.monotonic()
            for connection in list(self.connections):
                if connection.idle_since(now) >= IDLE_TIMEOUT_S:
                    connection.abort()

    def charge(self, change: int) -> None:
        """Count bytes received and not yet answered (negative: freed); see `over_budget`."""
        self.held_bytes += change
        if change < 0 and self.waiting_for_room and self.held_bytes <= RESUME_HELD_BYTES:
            waiting, self.waiting_for_room = self.waiting_for_room, set()
            for connection in waiting:
                connection.room_again()

    def over_budget(self) -> bool:
        return self.held_bytes > MAX_HELD_BYTES

    def refusal_of(self, identity: Identity | None) -> str | None:
        """Why this connection's requests are refused (None: they are served)."""
        if self.tls is None:
            return None
        members, any_node = self.members()
        return refusal(identity, PUT_METHOD, members, any_node)

    async def put(self, request: pb.PutRecordRequest, timeout_s: float) -> pb.PutRecordResponse:
        batch = single_record_batch(request)
        invalid = validate_put(batch, self.node.limits)
        if invalid is not None:
            raise invalid
        if not self.node.is_leader():
            raise unavailable(
                f"node {self.node.node_id} is not the leader; send puts to the leader",
                self.node.leader(),
            )
        appended = await self.streams.propose_append(batch, timeout_s)
        return pb.PutRecordResponse(
            sequence=appended.sequences[0], timestamp_ms=appended.timestamp_ms
        )

    def error_of(self, exc: BaseException) -> pb.NativeError:
        error = exception_error(exc)
        if error is None:
            self.refusals.warning(
                "native-internal", "a native put failed: %s: %s", type(exc).__name__, exc
            )
            error = ServiceError(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")
        metadata = dict(error.trailing)
        if error.code is grpc.StatusCode.UNAVAILABLE and error.leader:
            metadata.setdefault(LEADER_ID_KEY, error.leader)
            metadata.setdefault(LEADER_ADDRESS_KEY, self.node.addresses.get(error.leader, ""))
        return pb.NativeError(code=error.code.value[0], message=error.message, metadata=metadata)


class _Connection(asyncio.Protocol):
    """One client connection: frames in, proposals, answers out."""

    def __init__(self, server: NativeServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        # Bytes of `buffer` counted in the server's budget.
        self.charged = 0
        self.established = False
        self.greeted = False
        # No more requests are read (a refusal, or the node stopping).
        self.stopped = False
        self.lost = False
        self.identity: Identity | None = None
        self.peer = "?"
        self.tasks: set[asyncio.Task[None]] = set()
        self.in_flight = 0
        self.paused_by_writes = False
        self.paused_for_others = False
        self.paused_for_room = False
        # The frame being received: its header, and bytes of a refused one to skip.
        self.header: tuple[int, int] | None = None
        self.skip = 0
        self.last_read = time.monotonic()
        self.timer: asyncio.TimerHandle | None = None
        self.stall_timer: asyncio.TimerHandle | None = None
        self.pending_refusal: ServiceError | None = None

    # ------------------------------------------------------------ connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance.
        self.transport = cast(asyncio.Transport, transport)
        self.server.connections.add(self)
        try:
            peername = transport.get_extra_info("peername")
            self.peer = f"{peername[0]}:{peername[1]}" if peername else "?"
            tune_socket(transport.get_extra_info("socket"))
            if self.server.tls is None:
                self._established()
                return
            if self.server.handshakes >= MAX_HANDSHAKES:
                self.server.refusals.warning(
                    "native-handshakes",
                    "closed a native connection from %s: %d TLS handshakes under way already",
                    self.peer,
                    MAX_HANDSHAKES,
                )
                self.abort()
                return
            # Nothing is read before the handshake takes the transport over.
            self.transport.pause_reading()
            self.server.handshakes += 1
            task = asyncio.get_running_loop().create_task(self._handshake())
            self.tasks.add(task)
            task.add_done_callback(self._handshake_done)
        except Exception as exc:
            self.server.refusals.warning(
                "native-accept", "closed a native connection from %s: %s", self.peer, exc
            )
            self.abort()

    async def _handshake(self) -> None:
        assert self.server.tls is not None and self.transport is not None
        try:
            secure = await asyncio.get_running_loop().start_tls(
                self.transport,
                self,
                self.server.tls(),
                server_side=True,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S,
            )
        except Exception as exc:
            self.server.refusals.warning(
                "native-handshake",
                "refused a native connection from %s: TLS handshake failed (%s)",
                self.peer,
                exc,
            )
            # The TLS layer took the transport over: no `connection_lost` comes here.
            self.abort()
            self._cleanup()
            return
        if secure is None or self.lost:
            self._cleanup()
            return
        self.transport = secure
        ssl_object = secure.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if der:
            self.identity = identity_of_pem(ssl.DER_cert_to_PEM_cert(der).encode())
        self._established()

    def _handshake_done(self, task: asyncio.Task[None]) -> None:
        # A callback, not a `finally`: a task cancelled before it ran never enters it.
        self.tasks.discard(task)
        self.server.handshakes -= 1
        if task.cancelled() and not self.established:
            self.abort()
            self._cleanup()

    def _established(self) -> None:
        """Authenticated (or plaintext): check the role, take a slot, welcome the client."""
        assert self.transport is not None
        self.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER_BYTES)
        reason = self.server.refusal_of(self.identity)
        if reason is not None:
            who = self.identity.describe() if self.identity else "a caller without a certificate"
            self.server.refusals.warning(
                "native-permission",
                "refused a native connection from %s (%s): %s",
                who,
                self.peer,
                reason,
            )
            self.refuse(ServiceError(grpc.StatusCode.PERMISSION_DENIED, reason))
            return
        limit = self.server.node.resource_limits.max_native_connections
        if self.server.established >= limit:
            self.server.refusals.warning(
                "native-connections",
                "refused a native connection from %s: %d open already",
                self.peer,
                self.server.established,
            )
            self.refuse(
                over_limit(
                    f"node {self.server.node.node_id} has {self.server.established} native "
                    "connections open already",
                    "max_native_connections",
                    limit,
                )
            )
            return
        self.established = True
        self.server.established += 1
        self.last_read = time.monotonic()
        # An empty answer under id 0: accepted (the client waits for it to connect).
        self.write(REFUSAL, pb.NativeResponse())
        self._set_timer(HANDSHAKE_TIMEOUT_S, self._preamble_expired)
        if self.server.tls is not None:
            self.transport.resume_reading()
        if self.buffer:
            self._process()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cleanup()

    def _cleanup(self) -> None:
        """Forget the connection (once): its slot, its buffer's bytes, its timers, its tasks."""
        if self.lost:
            return
        self.lost = True
        self.stopped = True
        self.server.connections.discard(self)
        self.server.waiting_for_room.discard(self)
        if self.established:
            self.established = False
            self.server.established -= 1
        self.buffer.clear()
        self._recharge()
        self._cancel_timer()
        if self.stall_timer is not None:
            self.stall_timer.cancel()
        for task in list(self.tasks):
            task.cancel()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def stop_reading(self) -> None:
        self.stopped = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
        self._cancel_timer()

    def refuse(self, error: ServiceError) -> None:
        """Read no more; once every request read is answered, answer id 0 with `error` and close."""
        self.stop_reading()
        self.pending_refusal = error
        self._maybe_send_refusal()

    def _maybe_send_refusal(self) -> None:
        error = self.pending_refusal
        if error is None or self.in_flight or self.transport is None:
            return
        self.pending_refusal = None
        self.write(
            REFUSAL,
            pb.NativeResponse(
                error=pb.NativeError(code=error.code.value[0], message=error.message)
            ),
        )
        self.transport.close()

    def idle_since(self, now: float) -> float:
        return 0.0 if self.in_flight or self.header is not None else now - self.last_read

    # ------------------------------------------------------------ timers, pauses

    def _set_timer(self, delay_s: float, callback: Callable[[], None]) -> None:
        self._cancel_timer()
        self.timer = asyncio.get_running_loop().call_later(delay_s, callback)

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _preamble_expired(self) -> None:
        self.timer = None
        if not self.greeted and not self.stopped:
            self.server.refusals.warning(
                "native-preamble", "closed a native connection from %s: no preamble", self.peer
            )
            self.abort()

    def _frame_expired(self) -> None:
        # Whatever paused the reading meanwhile: a frame (or a skip) is held
        # for at most FRAME_TIMEOUT_S from its header.
        self.timer = None
        if self.stopped:
            return
        self.server.refusals.warning(
            "native-slow-frame",
            "closed a native connection from %s: a frame unfinished after %gs",
            self.peer,
            FRAME_TIMEOUT_S,
        )
        self.abort()

    def _write_stalled(self) -> None:
        self.stall_timer = None
        if self.paused_by_writes and not self.lost:
            self.server.refusals.warning(
                "native-stalled",
                "closed a native connection from %s: it read none of its answers for %gs",
                self.peer,
                WRITE_STALL_S,
            )
            self.abort()

    def pause_writing(self) -> None:
        self.paused_by_writes = True
        if self.stall_timer is None:
            self.stall_timer = asyncio.get_running_loop().call_later(
                WRITE_STALL_S, self._write_stalled
            )
        self._update_reading()

    def resume_writing(self) -> None:
        self.paused_by_writes = False
        if self.stall_timer is not None:
            self.stall_timer.cancel()
            self.stall_timer = None
        self._update_reading()
        self._drain()

    def room_again(self) -> None:
        self.paused_for_room = False
        self._update_reading()
        self._drain()

    def _update_reading(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing() or self.stopped:
            return
        if self.paused_by_writes or self.paused_for_others or self.paused_for_room:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def _resume_after_others(self) -> None:
        self.paused_for_others = False
        self._update_reading()
        self._drain()

    def _recharge(self) -> None:
        change = len(self.buffer) - self.charged
        if change:
            self.charged += change
            self.server.charge(change)

    # ------------------------------------------------------------ frames in

    def data_received(self, data: bytes) -> None:
        if self.stopped:
            return
        self.last_read = time.monotonic()
        self.buffer += data
        self._recharge()
        if not self.established:
            # What a TLS client sends at once after its handshake, before the
            # role check has run: kept for it, within one read's worth.
            if len(self.buffer) > WRITE_HIGH_WATER_BYTES:
                self.abort()
            return
        self._process()

    def _process(self) -> None:
        if not self.greeted:
            n = len(PREAMBLE)
            if bytes(self.buffer[:n]) != PREAMBLE[: len(self.buffer[:n])]:
                self._refuse_preamble()
                return
            if len(self.buffer) < n:
                return
            del self.buffer[:n]
            self._recharge()
            self.greeted = True
            self._cancel_timer()
        self._drain()

    def _drain(self) -> None:
        """Handle the buffered frames while nothing says stop; see the module docstring."""
        buffer = self.buffer
        offset = 0
        handled = 0
        server = self.server
        transport = self.transport
        while not (
            self.stopped
            or self.paused_by_writes
            or self.paused_for_others
            or transport is None
            or transport.is_closing()
        ):
            if self.skip:
                dropped = min(self.skip, len(buffer) - offset)
                self.skip -= dropped
                offset += dropped
                if self.skip:
                    break
                self._cancel_timer()
                continue
            if self.header is None:
                if len(buffer) - offset < HEADER.size:
                    break
                size, request_id = HEADER.unpack_from(buffer, offset)
                offset += HEADER.size
                handled += 1
                if request_id == REFUSAL:
                    self._refuse_frame("request id 0 is reserved for the node's word")
                    break
                self._set_timer(FRAME_TIMEOUT_S, self._frame_expired)
                if size > server.max_message_bytes:
                    self._answer_error(request_id, self._oversized(size))
                    self.skip = size
                    continue
                self.header = (size, request_id)
            size, request_id = self.header
            if len(buffer) - offset < size:
                break
            body = bytes(buffer[offset : offset + size])
            offset += size
            self.header = None
            self._cancel_timer()
            self._serve(request_id, body)
            if handled >= MAX_FRAMES_PER_CALLBACK:
                self.paused_for_others = True
                self._update_reading()
                asyncio.get_running_loop().call_soon(self._resume_after_others)
                break
        del buffer[:offset]
        self._recharge()
        if not self.stopped and server.over_budget() and not self.paused_for_room:
            self.paused_for_room = True
            server.waiting_for_room.add(self)
            self._update_reading()

    def _oversized(self, size: int) -> ServiceError:
        return ServiceError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"a request of {size} bytes is over the limit of {self.server.max_message_bytes} "
            f"bytes (a record holds at most {self.server.node.limits.max_record_bytes} bytes, "
            "data + key)",
        )

    def _refuse_frame(self, why: str) -> None:
        self.server.refusals.warning(
            "native-frame", "refusing a native connection from %s: %s", self.peer, why
        )
        self.refuse(ServiceError(grpc.StatusCode.INVALID_ARGUMENT, why))

    def _refuse_preamble(self) -> None:
        self.server.refusals.warning(
            "native-preamble",
            "closed a native connection from %s: it does not speak %r",
            self.peer,
            PREAMBLE.decode().strip(),
        )
        self.refuse(
            ServiceError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"this is railyard's native put port: expected {PREAMBLE!r} first",
            )
        )

    # ------------------------------------------------------------ requests

    def _serve(self, request_id: int, body: bytes) -> None:
        """Answer at once, or start the put (its bytes counted in the budget until it ends)."""
        server = self.server
        started = time.perf_counter()
        try:
            request = pb.NativeRequest.FromString(body)
        except DecodeError:
            self._answer_error(
                request_id,
                ServiceError(
                    grpc.StatusCode.INVALID_ARGUMENT, "the message is not a NativeRequest"
                ),
            )
            return
        reason = server.refusal_of(self.identity)
        if reason is not None:
            server.refusals.warning(
                "native-permission", "refused a native put from %s: %s", self.peer, reason
            )
            self._answer_error(request_id, ServiceError(grpc.StatusCode.PERMISSION_DENIED, reason))
            return
        if request.WhichOneof("body") != "put_record":
            self._answer_error(
                request_id,
                ServiceError(
                    grpc.StatusCode.UNIMPLEMENTED,
                    "the native port serves put_record only; use the gRPC address for the rest",
                ),
            )
            return
        if self.in_flight >= server.node.resource_limits.max_inflight_per_connection:
            self._answer_error(request_id, server.node.admission.too_many_puts(self.in_flight))
            return
        size = len(body)
        self.in_flight += 1
        server.charge(size)
        task = asyncio.get_running_loop().create_task(self._put(request_id, request, started))
        self.tasks.add(task)
        # A callback, not a `finally`: a task cancelled before it ran never enters it.
        task.add_done_callback(functools.partial(self._put_done, size))

    async def _put(self, request_id: int, request: pb.NativeRequest, started: float) -> None:
        timeout_s = (
            min(request.timeout_ms / 1000, MAX_TIMEOUT_S)
            if request.timeout_ms
            else DEFAULT_REQUEST_TIMEOUT_S
        )
        try:
            response = await self.server.put(request.put_record, timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = self.server.error_of(exc)
            self._count(error.code, started)
            self.write(request_id, pb.NativeResponse(error=error))
        else:
            self._count(OK, started)
            self.write(request_id, pb.NativeResponse(put_record=response))

    def _put_done(self, size: int, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.in_flight -= 1
        self.server.charge(-size)
        self._maybe_send_refusal()

    def _answer_error(self, request_id: int, error: ServiceError) -> None:
        answer = self.server.error_of(error)
        self._count(answer.code, time.perf_counter())
        self.write(request_id, pb.NativeResponse(error=answer))

    def _count(self, code: int, started: float) -> None:
        metrics = self.server.metrics
        if metrics is not None and metrics.enabled:
            metrics.native_request(_CODE_NAMES.get(code, "UNKNOWN"), started)

    def write(self, request_id: int, response: pb.NativeResponse) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        body = response.SerializeToString()
        with contextlib.suppress(RuntimeError):  # a transport closed under us
            transport.write(HEADER.pack(len(body), request_id) + body)
