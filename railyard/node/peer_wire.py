"""Raft messages between nodes over plain TCP: the peers' fast path.

A gRPC stream message costs tens of microseconds of CPU on each side here
(HTTP/2 framing, a `write()` per message, the aio machinery); a frame on an
asyncio TCP stream costs a few. So a node with a `peer_address` takes its
peers' Raft messages there, as length-prefixed `RaftEnvelope`s::

    connection := PREAMBLE frame*
    frame      := size (4 bytes, big-endian) RaftEnvelope (protobuf, `size` bytes)

A connection carries one direction, like the gRPC `Pipe`: the dialler
sends, the listener only reads, and the listener's answers travel over its
own connection to the dialler. The listener writes back at most one frame,
a refusal (UTF-8 text naming what is wrong), just before it closes the
connection. Every envelope names its sender; the first is checked like a
gRPC call's (cluster and membership), the later ones must name the same
sender. The first bad frame ends the connection; nothing after it is
delivered.

Outbound connections honour the proxy settings gRPC honours (`grpc_proxy`,
`https_proxy`, `http_proxy`; `no_grpc_proxy`, `no_proxy`) through HTTP
CONNECT, so peer traffic takes the same route whichever transport carries it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from google.protobuf.message import DecodeError

from railyard.node.codec import envelope_sender
from railyard.proto import railyard_pb2 as pb

# Names the protocol and its version: anything else that connects (a gRPC
# client pointed at the wrong port, a port scanner) is refused at once.
PREAMBLE = b"RAILYARD-PEER/1\n"
_SIZE = struct.Struct(">I")
# An envelope holds at most 16 MiB of entries (transport.py); the limit
# leaves room for the rest and refuses garbage lengths before reading them.
MAX_FRAME_BYTES = 64 << 20
# A refusal is a sentence.
MAX_REFUSAL_BYTES = 4096
# Connecting (and the proxy's answer) on a LAN takes milliseconds.
CONNECT_TIMEOUT_S = 2.0
# The longest proxy answer header accepted.
MAX_PROXY_HEADER_BYTES = 8192
# Bytes queued in the socket's user-space buffer before a sender waits for
# the peer to read: a few large appends; a peer that does not drain them
# within the write stall limit is torn down by the caller.
WRITE_BUFFER_HIGH_BYTES = 4 << 20
# Dead-connection detection without traffic of our own: TCP keepalive
# probes after 1 s idle, every 1 s, 3 unanswered close the connection; and
# data unacknowledged for 5 s closes it too (a vanished host, a pulled cable).
KEEPALIVE_IDLE_S = 1
KEEPALIVE_INTERVAL_S = 1
KEEPALIVE_PROBES = 3
USER_TIMEOUT_MS = 5000


class PeerRefused(Exception):
    """The listener refused us (wrong cluster, unknown node, bad frame), with its reason."""


class PeerClosed(Exception):
    """The listener closed the connection without saying why (it stopped or restarted)."""


class EnvelopeSink(Protocol):
    """Where a listener hands what it reads (`RaftService`)."""

    def refusal(self, sender: pb.Peer) -> str | None: ...

    def deliver(
        self, sender: pb.Peer, messages: Sequence[pb.RaftMessage]
    ) -> Awaitable[str | None]: ...

    def pipe_ended(self, node_id: str) -> None: ...


def frame(payload: bytes) -> bytes:
    return _SIZE.pack(len(payload)) + payload


def _tune(sock: socket.socket | None) -> None:
    if sock is None:
        return
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE_S),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
        ("TCP_KEEPCNT", KEEPALIVE_PROBES),
        ("TCP_USER_TIMEOUT", USER_TIMEOUT_MS),
    ):
        if hasattr(socket, option):  # Linux; elsewhere the defaults apply
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


# ---------------------------------------------------------------- listening


class PeerListener:
    """Accepts peers' connections on `address` and feeds their envelopes to `sink`."""

    def __init__(self, *, address: str, sink: EnvelopeSink, log: logging.Logger) -> None:
        self.address = address
        self.sink = sink
        self.log = log
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._serving: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Bind (raising OSError if the address is taken) and start accepting."""
        host, _, port = self.address.rpartition(":")
        # No SO_REUSEPORT: a second process must fail to bind, not share the port.
        self._server = await asyncio.start_server(
            self._serve, host.strip("[]"), int(port), reuse_port=False
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._connections):
            writer.transport.abort()
        # Each connection's task ends on its own once its transport is gone;
        # left for asyncio.run to cancel, Python 3.11's stream code would
        # log a traceback for each.
        await asyncio.gather(*self._serving, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _tune(writer.get_extra_info("socket"))
        task = asyncio.current_task()
        assert task is not None
        self._serving.add(task)
        task.add_done_callback(self._serving.discard)
        self._connections.add(writer)
        accepted: list[pb.Peer] = []  # the sender, once its first envelope passed
        refusal: str | None = None
        try:
            refusal = await self._read(reader, accepted)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the dialler closed, rotated or died
        finally:
            self._connections.discard(writer)
            if refusal is None:
                writer.transport.abort()
            else:
                with contextlib.suppress(Exception):
                    writer.write(frame(refusal.encode()[:MAX_REFUSAL_BYTES]))
                    writer.close()  # sends the refusal, then closes
            if accepted:
                self.sink.pipe_ended(accepted[0].node_id)

    async def _read(self, reader: asyncio.StreamReader, accepted: list[pb.Peer]) -> str:
        """Deliver frames until one is bad; what is wrong with it.

        The sender goes into `accepted` once its first envelope passed the checks.
        """
        if await reader.readexactly(len(PREAMBLE)) != PREAMBLE:
            return f"expected the railyard peer protocol ({PREAMBLE!r})"
        while True:
            (size,) = _SIZE.unpack(await reader.readexactly(_SIZE.size))
            if size > MAX_FRAME_BYTES:
                return f"frame of {size} bytes; at most {MAX_FRAME_BYTES}"
            body = await reader.readexactly(size)
            try:
                env = pb.RaftEnvelope.FromString(body)
            except DecodeError as exc:
                return f"malformed envelope: {exc}"
            sender = envelope_sender(env)
            if not accepted:
                reason = self.sink.refusal(sender)
                if reason is not None:
                    return reason
                accepted.append(sender)
            elif sender.node_id != accepted[0].node_id or sender.cluster != accepted[0].cluster:
                return (
                    f"envelope from {sender.node_id!r} on the connection of {accepted[0].node_id!r}"
                )
            problem = await self.sink.deliver(sender, env.messages)
            if problem is not None:
                return problem


# ---------------------------------------------------------------- dialling


class PeerConnection:
    """One outbound connection: frames go out, a refusal or the end comes back.

    `on_end` is called once, from the loop, when the listener closes the
    connection or it breaks; `ended` then holds why (`PeerRefused`,
    `PeerClosed` or the OSError), and `send` raises it.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_end: Callable[[], None],
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._on_end = on_end
        self.ended: BaseException | None = None
        writer.transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH_BYTES)
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        try:
            (size,) = _SIZE.unpack(await self._reader.readexactly(_SIZE.size))
            text = await self._reader.readexactly(min(size, MAX_REFUSAL_BYTES))
            self.ended = PeerRefused(text.decode(errors="replace"))
        except asyncio.IncompleteReadError:
            self.ended = PeerClosed("the peer closed the connection")
        except OSError as exc:
            self.ended = exc
        self._on_end()

    def send(self, payload: bytes) -> None:
        """Queue one frame without waiting; then see `backed_up`."""
        if self.ended is not None:
            raise self.ended
        self._writer.write(frame(payload))

    @property
    def backed_up(self) -> bool:
        """The peer is not reading fast enough: wait with `drain` (bounded by the caller)."""
        return self._writer.transport.get_write_buffer_size() > WRITE_BUFFER_HIGH_BYTES

    async def drain(self) -> None:
        await self._writer.drain()

    def abort(self) -> None:
        self._watcher.cancel()
        self._writer.transport.abort()


async def connect(address: str, on_end: Callable[[], None]) -> PeerConnection:
    """Open a connection to a peer's `peer_address` (through the proxy, if one is set)."""
    host, _, port_text = address.rpartition(":")
    host = host.strip("[]")
    port = int(port_text)
    proxy = proxy_for(host)
    async with asyncio.timeout(CONNECT_TIMEOUT_S):
        if proxy is None:
            reader, writer = await asyncio.open_connection(host, port)
        else:
            reader, writer = await asyncio.open_connection(*proxy)
            try:
                await _proxy_connect(reader, writer, address)
            except BaseException:
                writer.transport.abort()
                raise
    _tune(writer.get_extra_info("socket"))
    writer.write(PREAMBLE)
    return PeerConnection(reader, writer, on_end)


async def _proxy_connect(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: str
) -> None:
    writer.write(f"CONNECT {address} HTTP/1.1\r\nHost: {address}\r\n\r\n".encode())
    try:
        header = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise ConnectionError(f"the proxy closed the connection to {address}") from exc
    if len(header) > MAX_PROXY_HEADER_BYTES:
        raise ConnectionError(f"the proxy's answer for {address} is too long")
    status = header.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status.split()
    if len(parts) < 2 or parts[1] != "200":
        raise ConnectionError(f"the proxy refused a connection to {address}: {status}")


def proxy_for(host: str, environ: dict[str, str] | None = None) -> tuple[str, int] | None:
    """The HTTP proxy (host, port) to reach `host` through, as gRPC chooses it.

    gRPC takes the first set of grpc_proxy, https_proxy and http_proxy, and
    skips it for hosts listed in no_grpc_proxy or no_proxy (comma-separated
    names, each matching the host or a domain suffix; "*" matches all).
    """
    env = os.environ if environ is None else environ
    url = next((env[k] for k in ("grpc_proxy", "https_proxy", "http_proxy") if env.get(k)), None)
    if url is None:
        return None
    exclusions = next((env[k] for k in ("no_grpc_proxy", "no_proxy") if env.get(k)), "")
    for name in (n.strip().lower() for n in exclusions.split(",")):
        if name and (
            name == "*" or host.lower() == name or host.lower().endswith("." + name.lstrip("."))
        ):
            return None
    hostport = url.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
    proxy_host, sep, proxy_port = hostport.rpartition(":")
    if not sep:
        return hostport, 80
    return proxy_host.strip("[]"), int(proxy_port)
