"""Network faults between node processes, controlled by the test.

Two tools, both running an asyncio loop on a background thread so that
synchronous tests can drive them:

- `TcpProxy`: one listening port forwarding to one target address. Modes:
  "pass" (forward), "drop" (close connections, refuse new ones) and
  "blackhole" (accept and hold connections, swallow every byte: the peer
  sees a silent network, its calls hang until their deadlines).
- `LinkProxy`: faults per directed link between nodes. gRPC honours the
  `grpc_proxy` environment variable (HTTP CONNECT), so every node gets its
  own proxy port through its environment (`env_for(node)`), and the
  CONNECT line names the destination: each connection belongs to exactly
  one link (source node -> destination node). A node's `peer_address`
  (Raft over plain TCP, dialled through the same proxy variables) belongs
  to that node too, so both of its ports share the fate of the link. The
  cluster file stays unchanged. `isolate`, `partition` and `heal` set many
  links at once.

A connection that swallowed bytes in "blackhole" mode is closed when the
link passes again (its HTTP/2 or frame state is garbage); the client
reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from typing import Literal

Mode = Literal["pass", "drop", "blackhole"]
HOST = "127.0.0.1"
READ_BYTES = 1 << 16
# Longest CONNECT request header accepted (it is a couple of lines).
MAX_HEADER_BYTES = 8192
START_TIMEOUT_S = 5.0


class _Link:
    """One direction of traffic and the connections currently carrying it."""

    def __init__(self) -> None:
        self.mode: Mode = "pass"
        self.conns: set[_Conn] = set()


class _Conn:
    def __init__(self, writers: list[asyncio.StreamWriter]) -> None:
        self.writers = writers
        self.tainted = False  # swallowed bytes in blackhole mode

    def close(self) -> None:
        for w in self.writers:
            with contextlib.suppress(Exception):
                w.transport.abort()


class _LoopThread:
    """An asyncio loop on a daemon thread; `run(coro)` waits for a result."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coro: object, timeout: float = START_TIMEOUT_S) -> object:
        fut: Future[object] = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        return fut.result(timeout)

    def call(self, fn: object, *args: object) -> None:
        """Run `fn(*args)` on the loop and wait for it: a mode set is in effect on return."""

        async def invoke() -> None:
            fn(*args)  # type: ignore[operator]

        self.run(invoke())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(START_TIMEOUT_S)
        if not self.thread.is_alive():
            self.loop.close()


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link, conn: _Conn
) -> None:
    try:
        while data := await reader.read(READ_BYTES):
            if link.mode == "pass" and not conn.tainted:
                writer.write(data)
                await writer.drain()
            else:
                conn.tainted = True
    except (ConnectionError, OSError):
        pass
    finally:
        conn.close()


def _set_mode(link: _Link, mode: Mode) -> None:
    previous, link.mode = link.mode, mode
    if mode == previous:
        return
    for conn in list(link.conns):
        # "drop" cuts every connection; "pass" cuts the ones that lost bytes;
        # "blackhole" keeps them open and silent.
        if mode == "drop" or (mode == "pass" and conn.tainted):
            conn.close()


async def _hold(reader: asyncio.StreamReader, conn: _Conn, link: _Link) -> None:
    """A blackholed connection: read and discard until closed or the link changes."""
    conn.tainted = True
    try:
        while await reader.read(READ_BYTES):
            pass
    except (ConnectionError, OSError):
        pass
    finally:
        conn.close()


async def _splice(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    target: tuple[str, int],
    link: _Link,
    prefix: bytes = b"",
    on_connected: bytes = b"",
) -> None:
    conn = _Conn([writer])
    link.conns.add(conn)
    try:
        if link.mode == "drop":
            return
        if link.mode == "blackhole":
            if on_connected:
                writer.write(on_connected)
            await _hold(reader, conn, link)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*target)
        except OSError:
            return
        conn.writers.append(up_writer)
        if on_connected:
            writer.write(on_connected)
        if prefix:
            up_writer.write(prefix)
        await asyncio.gather(
            _pump(reader, up_writer, link, conn), _pump(up_reader, writer, link, conn)
        )
    finally:
        link.conns.discard(conn)
        conn.close()


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


class TcpProxy:
    """Listen on a free port of 127.0.0.1 and forward to `target` ("host:port")."""

    def __init__(self, target: str) -> None:
        self.target = _split(target)
        self.link = _Link()
        self._thread = _LoopThread(f"tcp-proxy-{target}")
        self._server: asyncio.base_events.Server | None = None
        self.port = int(self._thread.run(self._start()))  # type: ignore[call-overload]

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    async def _start(self) -> int:
        self._server = await asyncio.start_server(self._handle, HOST, 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _splice(reader, writer, self.target, self.link)

    def set_mode(self, mode: Mode) -> None:
        self._thread.call(_set_mode, self.link, mode)

    def close(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for conn in list(self.link.conns):
                conn.close()

        with contextlib.suppress(Exception):
            self._thread.run(shutdown())
        self._thread.close()


class LinkProxy:
    """Per-link faults between nodes via gRPC's HTTP CONNECT proxy support.

    `addresses` maps node id -> "host:port" as in the cluster file, and
    `peer_addresses` node id -> its peer_address (nodes without one are left
    out). Start the node `src` with `env_for(src)` in its environment; then
    `set(src, dst, mode)` controls the traffic src -> dst on either port of
    dst (its answers travel on the same connection, so "blackhole" silences
    both directions of that connection).
    """

    def __init__(
        self, addresses: Mapping[str, str], peer_addresses: Mapping[str, str] | None = None
    ) -> None:
        self.addresses = dict(addresses)
        self.peer_addresses = dict(peer_addresses or {})
        self._by_address = {
            _split(a): nid
            for table in (self.addresses, self.peer_addresses)
            for nid, a in table.items()
        }
        self.links: dict[tuple[str, str], _Link] = {
            (a, b): _Link() for a in self.addresses for b in self.addresses if a != b
        }
        self._thread = _LoopThread("link-proxy")
        self._servers: list[asyncio.base_events.Server] = []
        self.ports: dict[str, int] = {}
        for nid in self.addresses:
            self.ports[nid] = int(self._thread.run(self._listen(nid)))  # type: ignore[call-overload]

    def env_for(self, src: str) -> dict[str, str]:
        """Environment variables that route node `src`'s outgoing gRPC through the proxy."""
        return {"grpc_proxy": f"http://{HOST}:{self.ports[src]}", "no_proxy": "", "NO_PROXY": ""}

    async def _listen(self, src: str) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._handle(src, reader, writer)

        server = await asyncio.start_server(handle, HOST, 0)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def _handle(
        self, src: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            header = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        request_line = header.split(b"\r\n", 1)[0].decode("latin-1").split()
        if len(request_line) < 2 or request_line[0] != "CONNECT" or len(header) > MAX_HEADER_BYTES:
            writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            writer.close()
            return
        target = _split(request_line[1])
        dst = self._by_address.get(target)
        if dst is None or dst == src:
            # Not node-to-node traffic: pass it through untouched.
            await _splice(reader, writer, target, _Link(), on_connected=b"HTTP/1.1 200 OK\r\n\r\n")
            return
        await _splice(
            reader, writer, target, self.links[(src, dst)], on_connected=b"HTTP/1.1 200 OK\r\n\r\n"
        )

    # ------------------------------------------------------------ control

    def set(self, src: str, dst: str, mode: Mode) -> None:
        self._thread.call(_set_mode, self.links[(src, dst)], mode)

    def set_both(self, a: str, b: str, mode: Mode) -> None:
        self.set(a, b, mode)
        self.set(b, a, mode)

    def isolate(self, node: str, mode: Mode = "blackhole") -> None:
        """Cut `node` off from every other node, both directions."""
        for other in self.addresses:
            if other != node:
                self.set_both(node, other, mode)

    def partition(self, *groups: Iterable[str], mode: Mode = "blackhole") -> None:
        """Nodes in different groups cannot talk; within a group they can."""
        group_of = {n: i for i, g in enumerate(groups) for n in g}
        for (a, b), _link in self.links.items():
            if group_of.get(a) != group_of.get(b):
                self.set(a, b, mode)

    def heal(self) -> None:
        for a, b in self.links:
            self.set(a, b, "pass")

    def close(self) -> None:
        async def shutdown() -> None:
            for server in self._servers:
                server.close()
            for link in self.links.values():
                for conn in list(link.conns):
                    conn.close()

        with contextlib.suppress(Exception):
            self._thread.run(shutdown())
        self._thread.close()
