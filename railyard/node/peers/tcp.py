"""Raft messages between nodes over plain TCP: the peers' fast path.

A gRPC stream message costs tens of microseconds of CPU on each side here
(HTTP/2 framing, a `write()` per message, the aio machinery); a frame on an
asyncio TCP stream costs a few. So a node with a `peer_address` takes its
peers' Raft messages there, as length-prefixed `RaftEnvelope`s::

    connection := PREAMBLE frame* | SNAPSHOT_PREAMBLE chunk* answer
    frame      := size (4 bytes, big-endian) RaftEnvelope (protobuf, `size` bytes)
    chunk      := size (4 bytes, big-endian) SnapshotChunk (protobuf, `size` bytes)

A connection carries one direction, like the gRPC `Pipe`: the dialler
sends, the listener only reads, and the listener's answers travel over its
own connection to the dialler. The listener writes back at most one frame,
a refusal (UTF-8 text naming what is wrong), just before it closes the
connection. Every envelope names its sender; the first is checked like a
gRPC call's (cluster and membership), the later ones must name the same
sender. The first bad frame ends the connection; nothing after it is
delivered.

A snapshot travels on a connection of its own, beside the envelopes (as
the gRPC `InstallSnapshot` stream does beside the `Pipe`): its chunks are
frames, checked one by one like envelopes (the sender of each, against the
certificate with TLS), read one at a time within the same frame size and
receiving budget, and written to disk before the next is read, so a
snapshot of any size holds one chunk in memory. The listener answers with
one frame: empty when the snapshot was validated and handed to the driver,
else the refusal.

The listener is here; the format both sides share is in `tcp_frames.py`, the
dialling side in `tcp_dial.py`. This module names them all, so the links and
the process use one module for the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol

from google.protobuf.message import DecodeError

from railyard.node.observability.refusals import RefusalLog
from railyard.node.peers.codec import envelope_sender
from railyard.node.peers.tcp_dial import (
    PeerClosed,
    PeerConnection,
    PeerRefused,
    connect,
    probe,
    send_snapshot,
)
from railyard.node.peers.tcp_frames import (
    FRAME_HEADER_BYTES,
    FRAME_SIZE,
    MAX_REFUSAL_BYTES,
    PREAMBLE,
    REFUSAL_LINGER_S,
    SNAPSHOT_PREAMBLE,
    TLS_HANDSHAKE_TIMEOUT_S,
    frame,
    tls_failure,
)
from railyard.node.security import peer_node_id
from railyard.proto import railyard_pb2 as pb
from railyard.sockets import tune_socket

# The wire as the links and the process use it, the dialler's names included.
__all__ = [
    "CLOSE_WAIT_S",
    "CONNECTIONS_PER_MEMBER",
    "FRAME_HEADER_BYTES",
    "FRAME_TIMEOUT_S",
    "MAX_FRAME_BYTES",
    "MAX_RECEIVING_BYTES",
    "PREAMBLE",
    "SNAPSHOT_PREAMBLE",
    "SPARE_CONNECTIONS",
    "EnvelopeSink",
    "PeerClosed",
    "PeerConnection",
    "PeerListener",
    "PeerRefused",
    "connect",
    "frame",
    "probe",
    "send_snapshot",
]

# An envelope holds at most 16 MiB of entries (links.py); the limit
# leaves room for the rest and refuses garbage lengths before reading them.
MAX_FRAME_BYTES = 64 << 20
# Frames being received on all connections together hold at most this much:
# a real peer has one or two frames in flight, while without a budget 24
# connections each sending a 64 MiB frame short of its last byte took a node
# from 61 MiB to 1.6 GiB (issue 14). Past it a frame is refused; its sender
# reconnects.
MAX_RECEIVING_BYTES = 128 << 20
# A connection must send its preamble and a first envelope that names a
# member within this long, and every frame it starts must arrive whole
# within it: a half-sent or silent connection is closed instead of held.
# A 64 MiB frame takes well under a second on a LAN.
FRAME_TIMEOUT_S = 10.0
READ_CHUNK_BYTES = 1 << 16
# Closing waits this long for connections busy handing messages to a driver.
CLOSE_WAIT_S = 1.0
# Connections held at once, beyond which a new one is closed at once: a
# node's peers hold one each for messages, now and then one for a snapshot
# and a probe; a forger opening hundreds must not hold a node's memory and
# file descriptors (issue 14). `process.py` passes 4 per member + this.
DEFAULT_MAX_CONNECTIONS = 64
CONNECTIONS_PER_MEMBER = 4
SPARE_CONNECTIONS = 8


class _Refused(Exception):
    """A frame the listener refuses; the text is said to the dialler."""


class _ConnectionLost(Exception):
    """The dialler's connection broke in the middle of a snapshot."""


class EnvelopeSink(Protocol):
    """Where a listener hands what it reads (`RaftService`)."""

    def refusal(self, sender: pb.Peer) -> str | None: ...

    def deliver(
        self, sender: pb.Peer, messages: Sequence[pb.RaftMessage]
    ) -> Awaitable[str | None]: ...

    def pipe_ended(self, node_id: str) -> None: ...

    def receive_snapshot(
        self, chunks: AsyncIterator[pb.SnapshotChunk]
    ) -> Awaitable[str | None]: ...


def _remote(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "?"


# ---------------------------------------------------------------- listening


class PeerListener:
    """Accepts peers' connections on `address` and feeds their envelopes to `sink`."""

    def __init__(
        self,
        *,
        address: str,
        sink: EnvelopeSink,
        log: logging.Logger,
        tls: Callable[[], ssl.SSLContext] | None = None,
        on_received: Callable[[str, int], None] | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        self.address = address
        self.sink = sink
        self.log = log
        # The current context for each new connection (files may be reloaded).
        self.tls = tls
        self.refusals = RefusalLog(log)
        self.max_connections = max_connections
        # Told (sender, bytes) for each frame of an accepted sender.
        self.on_received = on_received
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._serving: set[asyncio.Task[None]] = set()
        self._closing = False
        self._receiving_bytes = 0  # declared sizes of the frames being read now

    async def start(self) -> None:
        """Bind (raising OSError if the address is taken) and start accepting."""
        host, _, port = self.address.rpartition(":")
        # No SO_REUSEPORT: a second process must fail to bind, not share the port.
        self._server = await asyncio.start_server(
            self._serve, host.strip("[]"), int(port), reuse_port=False
        )

    async def close(self) -> None:
        """Stop accepting and end every connection; returns within CLOSE_WAIT_S."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for writer in list(self._connections):
            writer.transport.abort()
        # A connection's task ends once its transport is gone, unless it waits
        # on a driver that stopped (a full inbox): those are cancelled.
        if self._serving:
            _, pending = await asyncio.wait(set(self._serving), timeout=CLOSE_WAIT_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closing:  # accepted while closing
            writer.transport.abort()
            return
        if len(self._connections) >= self.max_connections:
            writer.transport.abort()
            self._log_refusal(
                "connection cap",
                _remote(writer),
                f"{self.max_connections} peer connections are open already",
            )
            return
        task = asyncio.current_task()
        assert task is not None
        self._serving.add(task)
        task.add_done_callback(self._serving.discard)
        self._connections.add(writer)
        accepted: list[pb.Peer] = []  # the sender, once its first envelope passed
        try:
            tune_socket(writer.get_extra_info("socket"))
            node_id: str | None = None
            if self.tls is not None:
                authenticated = await self._authenticate(writer)
                if authenticated is None:
                    return
                node_id, refusal = authenticated
                if refusal is not None:
                    await _say_and_close(reader, writer, refusal)
                    return
            await _say_and_close(reader, writer, await self._read(reader, accepted, node_id))
        except (asyncio.IncompleteReadError, OSError, _ConnectionLost):
            pass  # the dialler closed or died, or its host vanished (ETIMEDOUT)
        except asyncio.CancelledError:
            # Only `close` cancels, and it waits for this task. Ending
            # normally matters: Python 3.11's stream code logs a traceback
            # for a connection task that ends cancelled.
            pass
        finally:
            self._connections.discard(writer)
            writer.transport.abort()
            if accepted:
                self.sink.pipe_ended(accepted[0].node_id)

    async def _authenticate(self, writer: asyncio.StreamWriter) -> tuple[str, str | None] | None:
        """TLS handshake; (the node id its certificate names, a refusal or None).

        None when the handshake failed (nothing can be said to the dialler).
        A certificate signed by the cluster CA that names no node (a
        client's) is refused: a client certificate never acts as a peer.
        """
        assert self.tls is not None
        where = _remote(writer)
        try:
            await writer.start_tls(self.tls(), ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT_S)
        except (ssl.SSLError, ConnectionError, TimeoutError) as exc:
            self._log_refusal("TLS handshake", where, f"TLS handshake failed ({tls_failure(exc)})")
            return None
        node_id, who = peer_node_id(writer.get_extra_info("peercert"))
        if node_id is None:
            refusal = f"{who} is not a node's: only cluster nodes may connect to the peer port"
            self._log_refusal("client certificate", where, refusal)
            return "", refusal
        return node_id, None

    def _log_refusal(self, kind: str, where: str, reason: str) -> None:
        self.refusals.warning(kind, "refused peer connection from %s: %s", where, reason)

    async def _read(
        self, reader: asyncio.StreamReader, accepted: list[pb.Peer], node_id: str | None
    ) -> str:
        """Deliver frames until one is bad; what is wrong with it.

        The sender goes into `accepted` once its first envelope passed the
        checks. With TLS, `node_id` is the node the connection authenticated
        as: every envelope must name it as its sender.
        """
        try:
            async with asyncio.timeout(FRAME_TIMEOUT_S):
                preamble = await reader.readexactly(len(PREAMBLE))
        except TimeoutError:
            return f"no preamble within {FRAME_TIMEOUT_S} s"
        if preamble == SNAPSHOT_PREAMBLE:
            return await self._read_snapshot(reader, node_id)
        if preamble != PREAMBLE:
            return f"expected the railyard peer protocol ({PREAMBLE!r})"
        while True:
            try:  # an identified peer's link may be idle for long; a stranger's not
                body = await self._read_frame(
                    reader, None if accepted else FRAME_TIMEOUT_S, "envelope"
                )
            except _Refused as exc:
                return str(exc)
            size = len(body)
            try:
                env = pb.RaftEnvelope.FromString(body)
            except DecodeError as exc:
                return f"malformed envelope: {exc}"
            sender = envelope_sender(env)
            if node_id is not None and sender.node_id != node_id:
                refusal = (
                    f"envelope from {sender.node_id!r} on a connection authenticated "
                    f"as node {node_id!r}"
                )
                self._log_refusal("impersonation", f"node {node_id}", refusal)
                return refusal
            if not accepted:
                reason = self.sink.refusal(sender)
                if reason is not None:
                    return reason
                accepted.append(sender)
            elif sender.node_id != accepted[0].node_id or sender.cluster != accepted[0].cluster:
                return (
                    f"envelope from {sender.node_id!r} on the connection of {accepted[0].node_id!r}"
                )
            if self.on_received is not None:
                self.on_received(sender.node_id, FRAME_HEADER_BYTES + size)
            problem = await self.sink.deliver(sender, env.messages)
            if problem is not None:
                return problem

    async def _read_frame(
        self, reader: asyncio.StreamReader, header_timeout_s: float | None, what: str
    ) -> bytes:
        """One frame's body, within the size bounds and the timeouts; else `_Refused`."""
        try:
            async with asyncio.timeout(header_timeout_s):
                (size,) = FRAME_SIZE.unpack(await reader.readexactly(FRAME_SIZE.size))
        except TimeoutError:
            raise _Refused(f"no {what} within {header_timeout_s} s") from None
        if size > MAX_FRAME_BYTES:
            raise _Refused(f"frame of {size} bytes; at most {MAX_FRAME_BYTES}")
        if self._receiving_bytes + size > MAX_RECEIVING_BYTES:
            raise _Refused(f"busy: frames of {MAX_RECEIVING_BYTES} bytes are being received")
        self._receiving_bytes += size
        try:
            async with asyncio.timeout(FRAME_TIMEOUT_S):
                return await reader.readexactly(size)
        except TimeoutError:
            raise _Refused(
                f"frame of {size} bytes not received within {FRAME_TIMEOUT_S} s"
            ) from None
        finally:
            self._receiving_bytes -= size

    async def _read_snapshot(self, reader: asyncio.StreamReader, node_id: str | None) -> str:
        """Hand the chunks to the sink as they arrive; "" once it took the snapshot, or why not."""
        try:
            problem = await self.sink.receive_snapshot(self._chunks(reader, node_id))
        except _Refused as exc:
            return str(exc)
        return "" if problem is None else problem

    async def _chunks(
        self, reader: asyncio.StreamReader, node_id: str | None
    ) -> AsyncIterator[pb.SnapshotChunk]:
        """The snapshot's chunks, each checked as an envelope is, up to the last."""
        first: pb.Peer | None = None
        while True:
            try:
                body = await self._read_frame(reader, FRAME_TIMEOUT_S, "snapshot chunk")
            except (OSError, asyncio.IncompleteReadError) as exc:
                raise _ConnectionLost(str(exc)) from exc
            try:
                chunk = pb.SnapshotChunk.FromString(body)
            except DecodeError as exc:
                raise _Refused(f"malformed snapshot chunk: {exc}") from None
            sender = envelope_sender(chunk)
            if node_id is not None and sender.node_id != node_id:
                refusal = (
                    f"snapshot chunk from {sender.node_id!r} on a connection authenticated "
                    f"as node {node_id!r}"
                )
                self._log_refusal("impersonation", f"node {node_id}", refusal)
                raise _Refused(refusal)
            if first is None:
                reason = self.sink.refusal(sender)
                if reason is not None:
                    raise _Refused(reason)
                first = sender
            elif sender.node_id != first.node_id or sender.cluster != first.cluster:
                raise _Refused(
                    f"snapshot chunk from {sender.node_id!r} on the connection of {first.node_id!r}"
                )
            if self.on_received is not None:
                self.on_received(sender.node_id, FRAME_HEADER_BYTES + len(body))
            yield chunk
            if chunk.last:
                return


async def _say_and_close(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, refusal: str
) -> None:
    """Send the refusal and end our side, then discard what the dialler still sends.

    Closing with its bytes unread would reset the connection, and a reset
    can reach the dialler before the refusal does. TLS has no half-close:
    there the refusal is flushed, and the dialler sees the end when the
    linger is over (or it closes first, as `PeerConnection` does).
    """
    writer.write(frame(refusal.encode()[:MAX_REFUSAL_BYTES]))
    if writer.can_write_eof():
        writer.write_eof()
    else:
        await writer.drain()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(REFUSAL_LINGER_S):
            while await reader.read(READ_CHUNK_BYTES):
                pass
