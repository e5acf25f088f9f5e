"""The dialling side of the peer TCP wire (`tcp.py` describes the protocol).

`connect` opens the one connection a link sends its envelopes on
(`PeerConnection`), `probe` opens one and closes it, `send_snapshot` sends a
snapshot on a connection of its own and waits for the listener's answer.

Outbound connections honour the proxy settings gRPC honours through HTTP
CONNECT (`proxy.py`), so peer traffic takes the same route whichever
transport carries it. With TLS the connection is TLS inside the proxy's
tunnel, and the listener must present the certificate of the node dialled.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable

from railyard.node.peers.proxy import MAX_PROXY_HEADER_BYTES, Proxy, open_tunnel
from railyard.node.peers.tcp_frames import (
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
from railyard.sockets import tune_socket

# Connecting (and the proxy's answer) on a LAN takes milliseconds.
CONNECT_TIMEOUT_S = 2.0
# Bytes queued in the socket's user-space buffer before a sender waits for
# the peer to read: a few large appends; a peer that does not drain them
# within the write stall limit is torn down by the caller.
WRITE_BUFFER_HIGH_BYTES = 4 << 20


class PeerRefused(Exception):
    """The listener refused us (wrong cluster, unknown node, bad frame), with its reason."""


class PeerClosed(Exception):
    """The listener closed the connection without saying why (it stopped or restarted)."""


async def _start_tls(
    writer: asyncio.StreamWriter,
    tls: ssl.SSLContext,
    host: str,
    address: str,
    node_id: str | None,
) -> None:
    """Upgrade a dialled connection to TLS; PeerRefused unless it is node `node_id`."""
    try:
        await writer.start_tls(
            tls, server_hostname=host, ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT_S
        )
        presented, who = peer_node_id(writer.get_extra_info("peercert"))
    except ssl.SSLError as exc:
        writer.transport.abort()
        raise PeerRefused(f"TLS handshake with {address} failed ({tls_failure(exc)})") from None
    except BaseException:
        writer.transport.abort()
        raise
    if presented != node_id:
        writer.transport.abort()
        raise PeerRefused(f"{address} presented {who}, not node {node_id}'s certificate")


class PeerConnection:
    """One outbound connection: frames go out, a refusal or the end comes back.

    `on_end` is called once, from the loop, when the listener closes the
    connection or it breaks; `ended` then holds why (`PeerRefused`,
    `PeerClosed` or the OSError), and `send` raises it. The task watching
    for that belongs to the connection: `abort`, which its owner always
    calls, cancels it.
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
            (size,) = FRAME_SIZE.unpack(await self._reader.readexactly(FRAME_SIZE.size))
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


async def _open(
    address: str, proxy: Proxy | None, tls: ssl.SSLContext | None, node_id: str | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, _, port_text = address.rpartition(":")
    async with asyncio.timeout(CONNECT_TIMEOUT_S):
        if proxy is None:
            reader, writer = await asyncio.open_connection(host.strip("[]"), int(port_text))
        else:
            reader, writer = await asyncio.open_connection(
                proxy.host, proxy.port, limit=MAX_PROXY_HEADER_BYTES
            )
            try:
                await open_tunnel(reader, writer, address, proxy)
            except BaseException:
                writer.transport.abort()
                raise
        tune_socket(writer.get_extra_info("socket"))
        if tls is not None:
            await _start_tls(writer, tls, host.strip("[]"), address, node_id)
    return reader, writer


async def connect(
    address: str,
    on_end: Callable[[], None],
    proxy: Proxy | None,
    tls: ssl.SSLContext | None = None,
    node_id: str | None = None,
) -> PeerConnection:
    """Open a connection to a peer's `peer_address`, through `proxy` if given.

    With `tls`, the connection is TLS (inside the proxy's tunnel) and the
    peer must present the certificate of node `node_id`.
    """
    reader, writer = await _open(address, proxy, tls, node_id)
    writer.write(PREAMBLE)
    return PeerConnection(reader, writer, on_end)


async def probe(
    address: str,
    proxy: Proxy | None,
    tls: ssl.SSLContext | None = None,
    node_id: str | None = None,
) -> None:
    """Open a connection to a peer's `peer_address` and close it; raises as `connect` does.

    Nothing is sent: the listener closes a connection that ends before its
    preamble without a word.
    """
    _, writer = await _open(address, proxy, tls, node_id)
    writer.transport.abort()


async def send_snapshot(
    address: str,
    chunks: AsyncIterator[bytes],
    proxy: Proxy | None,
    tls: ssl.SSLContext | None = None,
    node_id: str | None = None,
) -> None:
    """Send a snapshot's serialized chunks on a connection of its own; wait for the answer.

    At most WRITE_BUFFER_HIGH_BYTES wait in our buffer (each chunk is
    drained before the next is read from disk). Raises `PeerRefused` with the
    listener's reason, `PeerClosed` if it closed without one; the caller
    bounds the whole transfer in time.
    """
    reader, writer = await _open(address, proxy, tls, node_id)
    try:
        writer.transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH_BYTES)
        writer.write(SNAPSHOT_PREAMBLE)
        try:
            async for payload in chunks:
                writer.write(frame(payload))
                await writer.drain()
        except OSError:
            # Refused midway (the listener closed): its reason may be waiting.
            async with asyncio.timeout(REFUSAL_LINGER_S):
                await _snapshot_answer(reader)
            raise
        await _snapshot_answer(reader)
    finally:
        writer.transport.abort()


async def _snapshot_answer(reader: asyncio.StreamReader) -> None:
    try:
        (size,) = FRAME_SIZE.unpack(await reader.readexactly(FRAME_SIZE.size))
        text = await reader.readexactly(min(size, MAX_REFUSAL_BYTES))
    except asyncio.IncompleteReadError:
        raise PeerClosed("the peer closed the connection before answering") from None
    if size:
        raise PeerRefused(text.decode(errors="replace"))
