"""The native put protocol: PutRecord over framed TCP, without gRPC's per-call cost.

A grpc.aio call costs a node about 0.4 ms of CPU before any of railyard's
work, and its client 0.3 ms (`bench/grpc_floor.py`); a length-prefixed
protobuf frame on an asyncio TCP connection costs tens of microseconds on
each side. A node with a ``native_address`` serves single puts there::

    connection := PREAMBLE (client) frame*   (both ways)
    frame      := size (4 bytes, big-endian) message (protobuf, `size` bytes)

The client sends `NativeRequest`s, the node answers each with a
`NativeResponse` of the same id, in the order they finish. Each request is
its own proposal on the leader (`StreamsService.propose_append`, the path of
every put), with the same validation, deduplication (producer id and
sequence) and answers as a gRPC PutRecord: a failure is a `NativeError`
holding the gRPC status code, message and trailing metadata the call would
have had, so a client maps both the same way.

Only the leader serves puts: a follower answers UNAVAILABLE naming the
leader (its gRPC address; the client finds the leader's native address in
its Status), as PutRecordStream does, instead of forwarding.

Bounds, everything here being hostile until authenticated:

- under ``[tls]`` mutual TLS with the cluster CA, and each request checked
  against the certificate's role as a gRPC PutRecord is (writer);
- the client's preamble within `HANDSHAKE_TIMEOUT_S`, else the connection
  is closed; a frame over `max_frame_bytes` (the largest valid request) or
  one that does not decode ends the connection, after a refusal (id 0);
- a frame begun must be complete within `FRAME_TIMEOUT_S` (no slow drip
  holding a buffer);
- connections count against ``[limits] max_client_streams`` and puts
  under way against ``max_inflight_per_connection``; one past it is refused
  with RESOURCE_EXHAUSTED and the connection goes on;
- answers not read by the client stop the reading of its requests (the
  transport's write buffer high-water mark), so a client that only writes
  holds no more than its in-flight puts.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import struct
import time
from collections.abc import Callable, Collection
from contextlib import ExitStack

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
    unavailable,
)
from railyard.node.api.streams_service import StreamsService, validate_put
from railyard.node.observability.refusals import RefusalLog
from railyard.node.sockets import tune_socket
from railyard.proto import commands_pb2 as cmd
from railyard.proto import railyard_pb2 as pb

PREAMBLE = b"RAILYARD-NATIVE/1\n"
FRAME_SIZE = struct.Struct(">I")
PUT_METHOD = "/railyard.v1.Streams/PutRecord"
# The preamble (and, with TLS, the handshake) of a client that means to talk.
HANDSHAKE_TIMEOUT_S = 5.0
FRAME_TIMEOUT_S = 10.0
# A request frame holds one record and a few short fields around it.
FRAME_OVERHEAD_BYTES = 64 << 10
# Answers queued for a client that does not read: past this, stop reading it.
WRITE_HIGH_WATER_BYTES = 256 << 10
# A request may ask for at most this long (the node's own default otherwise).
MAX_TIMEOUT_S = 60.0


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
    ) -> None:
        self.address = address
        self.node = node
        self.streams = streams
        self.log = log
        self.tls = tls
        # The members whose node certificates may call (and whether any node may).
        self.members = members
        self.max_frame_bytes = node.limits.max_record_bytes + FRAME_OVERHEAD_BYTES
        self.refusals = RefusalLog(log)
        self.connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        host, _, port = self.address.rpartition(":")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self),
            host.strip("[]"),
            int(port),
            ssl=self.tls() if self.tls is not None else None,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S if self.tls is not None else None,
            reuse_address=True,
        )

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for connection in list(self.connections):
            connection.abort()
        await self._server.wait_closed()

    def refusal_of(self, identity: Identity | None) -> str | None:
        """Why this connection's requests are refused (None: they are served)."""
        if self.tls is None:
            return None
        members, any_node = self.members()
        return refusal(identity, PUT_METHOD, members, any_node)

    async def put(self, request: pb.PutRecordRequest, timeout_s: float) -> pb.PutRecordResponse:
        batch = pb.PutRecordsRequest(
            stream=request.stream,
            records=[cmd.Record(data=request.data, key=request.key, has_key=request.has_key)],
            producer_id=request.producer_id,
            producer_sequence=request.producer_sequence,
        )
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
            self.log.exception("native put failed", exc_info=exc)
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
        self.greeted = False
        self.closing = False
        self.identity: Identity | None = None
        self.peer = "?"
        self.tasks: set[asyncio.Task[None]] = set()
        self.held = ExitStack()
        self.key = ""
        self.admission = server.node.admission
        self.in_flight = 0
        self.reading_paused_by_writes = False
        self.frame_started: float | None = None
        self.timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER_BYTES)
        tune_socket(transport.get_extra_info("socket"))
        peername = transport.get_extra_info("peername")
        self.peer = f"{peername[0]}:{peername[1]}" if peername else "?"
        self.key = f"native {self.peer} {id(self)}"
        self.server.connections.add(self)
        try:
            self.held.enter_context(self.admission.client_stream())
        except ServiceError as exc:
            self.server.refusals.warning(
                "native-connections", "refused a native connection from %s: %s", self.peer, exc
            )
            self.refuse(exc)
            return
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            der = ssl_object.getpeercert(binary_form=True)
            if der:
                self.identity = identity_of_pem(ssl.DER_cert_to_PEM_cert(der).encode())
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(HANDSHAKE_TIMEOUT_S, self._handshake_expired)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.server.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
        for task in self.tasks:
            task.cancel()
        self.held.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def refuse(self, error: ServiceError) -> None:
        """Answer id 0 with `error`, then close (after the answer is written)."""
        self.write(
            pb.NativeResponse(
                id=0,
                error=pb.NativeError(code=error.code.value[0], message=error.message),
            )
        )
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def pause_writing(self) -> None:
        if self.transport is not None and not self.closing:
            self.reading_paused_by_writes = True
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and self.reading_paused_by_writes and not self.closing:
            self.reading_paused_by_writes = False
            self.transport.resume_reading()

    def _handshake_expired(self) -> None:
        self.timer = None
        if not self.greeted and not self.closing:
            self.server.refusals.warning(
                "native-preamble", "closed a native connection from %s: no preamble", self.peer
            )
            self.abort()

    def _frame_expired(self) -> None:
        self.timer = None
        started = self.frame_started
        if started is None or self.closing:
            return
        left = started + FRAME_TIMEOUT_S - time.monotonic()
        if left > 0:
            self.timer = asyncio.get_running_loop().call_later(left, self._frame_expired)
            return
        self.server.refusals.warning(
            "native-slow-frame",
            "closed a native connection from %s: a frame unfinished after %gs",
            self.peer,
            FRAME_TIMEOUT_S,
        )
        self.abort()

    # ------------------------------------------------------------ frames in

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.buffer += data
        if not self.greeted:
            if len(self.buffer) < len(PREAMBLE):
                if not PREAMBLE.startswith(bytes(self.buffer)):
                    self._refuse_preamble()
                return
            if self.buffer[: len(PREAMBLE)] != PREAMBLE:
                self._refuse_preamble()
                return
            del self.buffer[: len(PREAMBLE)]
            self.greeted = True
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
        buffer = self.buffer
        offset = 0
        header = FRAME_SIZE.size
        while len(buffer) - offset >= header and not self.closing:
            (size,) = FRAME_SIZE.unpack_from(buffer, offset)
            if size > self.server.max_frame_bytes:
                self._refuse_frame(
                    f"a frame of {size} bytes is over the limit of "
                    f"{self.server.max_frame_bytes} bytes"
                )
                return
            end = offset + header + size
            if len(buffer) < end:
                break
            try:
                request = pb.NativeRequest.FromString(bytes(buffer[offset + header : end]))
            except DecodeError:
                self._refuse_frame("a frame is not a NativeRequest message")
                return
            offset = end
            self._serve(request)
        del buffer[:offset]
        if buffer and not self.closing:
            if self.frame_started is None or offset:
                self.frame_started = time.monotonic()
            if self.timer is None:
                self.timer = asyncio.get_running_loop().call_later(
                    FRAME_TIMEOUT_S, self._frame_expired
                )
        else:
            self.frame_started = None

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

    def _refuse_frame(self, why: str) -> None:
        self.server.refusals.warning(
            "native-frame", "closed a native connection from %s: %s", self.peer, why
        )
        self.refuse(ServiceError(grpc.StatusCode.INVALID_ARGUMENT, why))

    # ------------------------------------------------------------ requests

    def _serve(self, request: pb.NativeRequest) -> None:
        reason = self.server.refusal_of(self.identity)
        if reason is not None:
            self._answer_error(request.id, ServiceError(grpc.StatusCode.PERMISSION_DENIED, reason))
            return
        if request.WhichOneof("body") != "put_record":
            self._answer_error(
                request.id,
                ServiceError(
                    grpc.StatusCode.UNIMPLEMENTED,
                    "the native port serves put_record only; use the gRPC address for the rest",
                ),
            )
            return
        limit = self.server.node.resource_limits.max_inflight_per_connection
        if self.in_flight >= limit:
            self._answer_error(request.id, self.admission.too_many_puts(self.in_flight))
            return
        self.in_flight += 1
        task = asyncio.get_running_loop().create_task(self._put(request))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _put(self, request: pb.NativeRequest) -> None:
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
            self.write(pb.NativeResponse(id=request.id, error=self.server.error_of(exc)))
        else:
            self.write(pb.NativeResponse(id=request.id, put_record=response))
        finally:
            self.in_flight -= 1

    def _answer_error(self, request_id: int, error: ServiceError) -> None:
        self.write(pb.NativeResponse(id=request_id, error=self.server.error_of(error)))

    def write(self, response: pb.NativeResponse) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        body = response.SerializeToString()
        transport.write(FRAME_SIZE.pack(len(body)) + body)
