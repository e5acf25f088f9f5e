"""The client's end of the native put protocol (a node's `native_address`).

One TCP connection per node carries any number of PutRecord requests at
once, matched to their answers by id (the wire is described in
`railyard.proto` beside `NativeRequest`). A put through it costs the client
a few tens of microseconds of CPU against about 0.3 ms for a grpc.aio call.

Failures come back as `grpc.aio.AioRpcError`s with the code, details and
trailing metadata the node's gRPC PutRecord would have answered, so the
client's retry loop, leader hints and exactly-once rules treat both
transports alike. How a connection's end fails the requests on it:

- `connect_native` returns once the node accepted the connection (an
  empty answer under id 0), or raises its refusal (PERMISSION_DENIED,
  RESOURCE_EXHAUSTED, ...); a connection closed before either is a TLS
  handshake the node refused (`HandshakeFailed`);
- a later refusal (id 0) comes after the answers of every request the
  node read: those still waiting were never read, and fail with it;
- a connection lost otherwise fails every request written to it
  UNAVAILABLE and "maybe applied" (its retry carries the same producer id
  and sequence, so it is applied once either way); a request not yet
  written fails UNAVAILABLE alone;
- a request that gets no answer within at least `SILENCE_S` while nothing
  at all arrived on the connection since it was written ends the
  connection: a peer that vanished without a reset is not waited on again.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
import tempfile
import time
from pathlib import Path
from typing import cast

import grpc
from google.protobuf.message import DecodeError

from railyard.client.errors import MAYBE_APPLIED_KEY
from railyard.client.tls import ClientTls
from railyard.proto import railyard_pb2 as pb
from railyard.sockets import tune_socket

PREAMBLE = b"RAILYARD-NATIVE/1\n"
HEADER = struct.Struct(">IQ")
REFUSAL = 0
# What a node answers: a PutRecordResponse or an error sentence, never large.
MAX_ANSWER_BYTES = 1 << 20
CONNECT_TIMEOUT_S = 5.0
# A connection silent this long with a request on it is taken for dead.
SILENCE_S = 1.0
# A request asks the node for at most this long (its own cap).
MAX_TIMEOUT_S = 60.0

__all__ = [
    "CONNECT_TIMEOUT_S",
    "HandshakeFailed",
    "NativeConnection",
    "connect_native",
    "rpc_error",
    "ssl_context",
]

_CODES = {code.value[0]: code for code in grpc.StatusCode}


def rpc_error(
    code: grpc.StatusCode, details: str, metadata: tuple[tuple[str, str], ...] = ()
) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(*metadata), details, ""
    )


def _error_of(error: pb.NativeError) -> grpc.aio.AioRpcError:
    return rpc_error(
        _CODES.get(error.code, grpc.StatusCode.UNKNOWN),
        error.message,
        tuple(error.metadata.items()),
    )


class NativeConnection(asyncio.Protocol):
    """One connection to a node's native port; `put_record` from any number of tasks."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiting: dict[int, asyncio.Future[pb.PutRecordResponse]] = {}
        self.next_id = REFUSAL
        self.failure: grpc.aio.AioRpcError | None = None
        # The node's refusal of the connection (id 0): its answer to any request here.
        self.refusal: grpc.aio.AioRpcError | None = None
        self.last_received = time.monotonic()
        # Set when the node accepted the connection (or failed with its refusal).
        self.accepted: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def closed(self) -> bool:
        return self.failure is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        tune_socket(transport.get_extra_info("socket"))
        self.transport.write(PREAMBLE)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(
            rpc_error(
                grpc.StatusCode.UNAVAILABLE,
                f"connection to {self.address} lost ({exc or 'closed by the node'})",
                ((MAYBE_APPLIED_KEY, "1"),),
            )
        )

    def data_received(self, data: bytes) -> None:
        self.last_received = time.monotonic()
        self.buffer += data
        buffer = self.buffer
        offset = 0
        while len(buffer) - offset >= HEADER.size and self.failure is None:
            size, answer_id = HEADER.unpack_from(buffer, offset)
            if size > MAX_ANSWER_BYTES:
                self._broken(f"an answer of {size} bytes (at most {MAX_ANSWER_BYTES} expected)")
                return
            end = offset + HEADER.size + size
            if len(buffer) < end:
                break
            try:
                answer = pb.NativeResponse.FromString(bytes(buffer[offset + HEADER.size : end]))
            except DecodeError:
                self._broken("an answer that is not a NativeResponse")
                return
            offset = end
            self._answer(answer_id, answer)
        del buffer[:offset]

    def _answer(self, answer_id: int, answer: pb.NativeResponse) -> None:
        body = answer.WhichOneof("body")
        if answer_id == REFUSAL and body is None and not self.accepted.done():
            self.accepted.set_result(None)
            return
        if answer_id == REFUSAL:
            # Every request the node read was answered before this: the rest never were.
            self.refusal = (
                _error_of(answer.error)
                if body == "error"
                else rpc_error(grpc.StatusCode.UNKNOWN, f"{self.address} closed the connection")
            )
            self._fail(self.refusal)
            return
        future = self.waiting.pop(answer_id, None)
        if future is None or future.done():
            return  # the caller gave up (its deadline) before the answer came
        if body == "put_record":
            future.set_result(answer.put_record)
        elif body == "error":
            future.set_exception(_error_of(answer.error))
        else:
            future.set_exception(
                rpc_error(grpc.StatusCode.UNKNOWN, f"{self.address} sent an empty answer")
            )

    def _broken(self, what: str) -> None:
        self._fail(
            rpc_error(
                grpc.StatusCode.UNAVAILABLE,
                f"{self.address} sent {what}; connection closed",
                ((MAYBE_APPLIED_KEY, "1"),),
            )
        )

    def _fail(self, error: grpc.aio.AioRpcError) -> None:
        if self.failure is None:
            self.failure = error
        if not self.accepted.done():
            self.accepted.set_exception(error)
        waiting, self.waiting = self.waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(error)
        if self.transport is not None:
            self.transport.abort()

    async def put_record(
        self, request: pb.PutRecordRequest, timeout: float
    ) -> pb.PutRecordResponse:
        """Send one put and wait for its answer, at most `timeout` seconds."""
        transport = self.transport
        if self.refusal is not None:
            raise self.refusal
        if self.failure is not None or transport is None or transport.is_closing():
            # Not written: nothing of it can have been applied.
            raise rpc_error(
                grpc.StatusCode.UNAVAILABLE,
                f"connection to {self.address} closed"
                + (f" ({self.failure.details()})" if self.failure is not None else ""),
            )
        if timeout <= 0:
            raise rpc_error(
                grpc.StatusCode.DEADLINE_EXCEEDED, f"no time left for a put to {self.address}"
            )
        self.next_id += 1
        request_id = self.next_id
        timeout_ms = max(1, int(min(timeout, MAX_TIMEOUT_S) * 1000))
        body = pb.NativeRequest(timeout_ms=timeout_ms, put_record=request).SerializeToString()
        future: asyncio.Future[pb.PutRecordResponse] = asyncio.get_running_loop().create_future()
        self.waiting[request_id] = future
        written = time.monotonic()
        transport.write(HEADER.pack(len(body), request_id) + body)
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            if timeout >= SILENCE_S and self.last_received < written:
                self._fail(
                    rpc_error(
                        grpc.StatusCode.UNAVAILABLE,
                        f"{self.address} sent nothing for {timeout:g}s; connection closed",
                        ((MAYBE_APPLIED_KEY, "1"),),
                    )
                )
            raise rpc_error(
                grpc.StatusCode.DEADLINE_EXCEEDED, f"no answer from {self.address} in time"
            ) from None
        finally:
            self.waiting.pop(request_id, None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def ssl_context(tls: ClientTls) -> ssl.SSLContext:
    """Mutual TLS as the gRPC channel does it: the cluster CA, the node's host name checked."""
    context = ssl.create_default_context(cadata=tls.ca_pem.decode())
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert_pem is not None and tls.key_pem is not None:
        # `ssl` loads a certificate and key from files only: private ones, gone at once.
        with tempfile.TemporaryDirectory(prefix="railyard-tls-") as directory:
            cert, key = Path(directory, "cert.pem"), Path(directory, "key.pem")
            cert.write_bytes(tls.cert_pem)
            key.touch(mode=0o600)
            key.write_bytes(tls.key_pem)
            context.load_cert_chain(cert, key)
    return context


class HandshakeFailed(Exception):
    """The TLS handshake with a node's native port failed (as gRPC's would)."""


async def connect_native(
    address: str, context: ssl.SSLContext | None, timeout: float
) -> NativeConnection:
    """A connection to `address` the node accepted, within `timeout`.

    Raises `HandshakeFailed` when TLS refuses (the node's refusal of a
    certificate shows only as the connection closing before it accepted),
    the node's refusal as `AioRpcError`, OSError or TimeoutError when no
    connection can be made.
    """
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    loop = asyncio.get_running_loop()
    limit = min(timeout, CONNECT_TIMEOUT_S)
    try:
        async with asyncio.timeout(limit):
            _, connection = await loop.create_connection(
                lambda: NativeConnection(address),
                host,
                int(port),
                ssl=context,
                server_hostname=host if context is not None else None,
            )
    except ssl.SSLError as exc:
        raise HandshakeFailed(f"{address}: handshake failed ({exc.reason or exc})") from None
    try:
        async with asyncio.timeout(limit):
            await connection.accepted
    except grpc.aio.AioRpcError as exc:
        connection.close()
        if exc is connection.refusal:
            raise
        raise HandshakeFailed(
            f"{address}: the node closed the connection before accepting it (is this "
            "client's certificate one the cluster's CA signed?)"
        ) from None
    except BaseException:
        connection.close()
        raise
    return connection
