"""A controllable network between real node processes: TCP proxies per directed peer link.

Role: the network half of the nemesis. Node `a` reaches node `b` through
the proxies of link (a, b), one per port of b it dials (its gRPC `address`
and its Raft `peer_address`); every byte on those proxies' connections
travels either from a to b (a's requests) or from b to a (b's answers).
Faults are stated per *direction between nodes*, whichever proxy and
connection carries the bytes, so `cut("n1", "n2")` silences n1 -> n2 on n1's connections to n2 and
on n2's connections to n1 alike: a true one-way link.

Faults:
- cut (blackhole): bytes in that direction are discarded. TCP stays up,
  so the sender learns nothing until its deadlines expire (like a dropped
  route). Discarding breaks HTTP/2 and length-prefixed framing alike, so a
  connection that lost bytes is reset when its direction heals.
- delay: every chunk is held for `delay_ms` (+ uniform jitter), order kept.
- reset: every open connection of a link is closed with an RST now.
- loss: each chunk resets its connection with probability `p` (flaky links).

The proxies run on one asyncio loop in a background thread, so tests may
drive them from blocking code and from their own event loop alike.
Invariant: no fault outlives `heal()` (all directions clean, poisoned
connections reset) and `close()` stops every socket this module opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

HOST = "127.0.0.1"
# Read size per chunk; large enough that a busy link is a few syscalls per batch.
CHUNK_BYTES = 64 * 1024
# Upper bound for thread handoffs to the proxy loop; loopback setup is instant.
CONTROL_TIMEOUT_S = 10.0
# How long to wait for the upstream node when a proxied connection opens.
CONNECT_TIMEOUT_S = 2.0

Direction = tuple[str, str]
T = TypeVar("T")


@dataclass
class _Shaping:
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0


@dataclass(eq=False)
class _Conn:
    """One proxied TCP connection: client side dialled by `src`, server side to `dst`."""

    src: str
    dst: str
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    poisoned: set[Direction] = field(default_factory=set)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def reset(self) -> None:
        for w in (self.client, self.server):
            sock = w.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            w.transport.abort()


class Network:
    """The proxies of one cluster and the faults currently applied to them."""

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)
        self._cuts: set[Direction] = set()
        self._shaping: dict[Direction, _Shaping] = {}
        self._conns: set[_Conn] = set()
        # Several proxies may serve one direction (one per port of the destination).
        self._servers: list[asyncio.Server] = []
        self.bytes_dropped = 0
        self.resets = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="netem", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ setup

    def add_link(self, src: str, dst: str, target: str) -> str:
        """Start a proxy `src` uses to reach `dst` (served at `target`); returns its address.

        Call it once per address of `dst`: every proxy of (src, dst) shares
        that link's faults.
        """
        return self._run(self._add_link(src, dst, target))

    async def _add_link(self, src: str, dst: str, target: str) -> str:
        host, port = target.rsplit(":", 1)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._serve(src, dst, host, int(port), reader, writer)

        server = await asyncio.start_server(handle, HOST, 0)
        self._servers.append(server)
        bound = server.sockets[0].getsockname()
        return f"{bound[0]}:{bound[1]}"

    def close(self) -> None:
        """Stop every proxy and connection, then the loop thread."""
        if not self._loop.is_running():
            return
        self._run(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(CONTROL_TIMEOUT_S)
        self._loop.close()

    async def _close(self) -> None:
        for server in self._servers:
            server.close()
        for conn in list(self._conns):
            conn.reset()
            for t in conn.tasks:
                t.cancel()
        self._conns.clear()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(CONTROL_TIMEOUT_S)

    # ------------------------------------------------------------ faults

    def cut(self, src: str, dst: str) -> None:
        """Blackhole everything `src` sends to `dst` (one direction)."""
        self._cuts.add((src, dst))

    def cut_both(self, a: str, b: str) -> None:
        self.cut(a, b)
        self.cut(b, a)

    def partition(self, groups: Iterable[Iterable[str]]) -> None:
        """Cut every direction between nodes of different groups."""
        sets = [set(g) for g in groups]
        for i, g in enumerate(sets):
            for h in sets[i + 1 :]:
                for a in g:
                    for b in h:
                        self.cut_both(a, b)

    def isolate(self, node: str, others: Iterable[str]) -> None:
        self.partition([[node], [o for o in others if o != node]])

    def shape(
        self, src: str, dst: str, *, delay_ms: float = 0, jitter_ms: float = 0, loss: float = 0
    ) -> None:
        """Delay (ms, + uniform jitter) and/or lose (reset with probability) src -> dst."""
        self._shaping[(src, dst)] = _Shaping(delay_ms, jitter_ms, loss)

    def reset(self, a: str, b: str) -> None:
        """RST every open connection between a and b, either way."""
        self._loop.call_soon_threadsafe(self._reset_where, {(a, b), (b, a)})

    def heal(self) -> None:
        """Remove every fault; connections that lost bytes are reset."""
        self._cuts.clear()
        self._shaping.clear()
        self._loop.call_soon_threadsafe(self._reset_poisoned)

    def uncut(self, src: str, dst: str) -> None:
        self._cuts.discard((src, dst))
        self._loop.call_soon_threadsafe(self._reset_poisoned)

    @property
    def cuts(self) -> frozenset[Direction]:
        return frozenset(self._cuts)

    def _reset_where(self, links: set[Direction]) -> None:
        for conn in list(self._conns):
            if (conn.src, conn.dst) in links:
                self._drop(conn)

    def _reset_poisoned(self) -> None:
        for conn in list(self._conns):
            if any(d not in self._cuts for d in conn.poisoned):
                self._drop(conn)

    def _drop(self, conn: _Conn) -> None:
        self.resets += 1
        conn.reset()
        self._conns.discard(conn)

    # ------------------------------------------------------------ data path

    async def _serve(
        self,
        src: str,
        dst: str,
        host: str,
        port: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), CONNECT_TIMEOUT_S
            )
        except (OSError, TimeoutError):
            writer.transport.abort()
            return
        conn = _Conn(src, dst, writer, up_writer)
        self._conns.add(conn)
        conn.tasks = [
            asyncio.create_task(self._pump(conn, reader, up_writer, (src, dst))),
            asyncio.create_task(self._pump(conn, up_reader, writer, (dst, src))),
        ]
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*conn.tasks, return_exceptions=True)
        self._conns.discard(conn)
        conn.reset()

    async def _pump(
        self,
        conn: _Conn,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        direction: Direction,
    ) -> None:
        """Copy one direction of one connection, applying that direction's faults."""
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        sender = asyncio.create_task(self._send(queue, writer))
        last_due = 0.0
        try:
            while True:
                data = await reader.read(CHUNK_BYTES)
                if not data:
                    break
                if direction in self._cuts:
                    conn.poisoned.add(direction)
                    self.bytes_dropped += len(data)
                    continue
                shaping = self._shaping.get(direction)
                due = self._loop.time()
                if shaping is not None:
                    if shaping.loss and self._rng.random() < shaping.loss:
                        break
                    due += (shaping.delay_ms + self._rng.uniform(0, shaping.jitter_ms)) / 1000
                last_due = max(last_due, due)
                queue.put_nowait((last_due, data))
        except (OSError, ConnectionError):
            pass
        finally:
            queue.put_nowait(None)
            with contextlib.suppress(Exception):
                await sender
            conn.reset()

    async def _send(
        self, queue: asyncio.Queue[tuple[float, bytes] | None], writer: asyncio.StreamWriter
    ) -> None:
        while True:
            item = await queue.get()
            if item is None:
                return
            due, data = item
            wait = due - self._loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
