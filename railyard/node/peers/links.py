"""Node-to-node transport: Raft messages over plain TCP or gRPC.

Outbound, each peer has one `PeerLink`: one long-lived channel, a bounded
send queue and a sender task that sends the queued messages, many per
envelope, over one long-lived connection: a plain TCP connection to the
peer's `peer_address` if it has one (`tcp.py`, a fraction of gRPC's
per-message cost), else a gRPC `Pipe` stream. Either is used one way:
replies come back over the peer's own connection to us. A slow or dead peer
never blocks the driver: when its queue is full, or a call fails or
stalls, messages are dropped and the core is told the peer is unreachable
(etcd's ReportUnreachable); Raft retransmits what matters.

SNAPSHOT messages travel beside the pipe: the link streams the snapshot
file in chunks on a TCP connection of its own (`tcp.send_snapshot`) to a
peer with a `peer_address`, else with gRPC `InstallSnapshot`, then tells the
core how it went.

The inbound side is `inbound.py`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import grpc

from railyard.node.grpc_options import CHANNEL_OPTIONS
from railyard.node.observability import NodeMetrics, event
from railyard.node.peers import tcp
from railyard.node.peers.codec import envelope, message_to_pb
from railyard.node.peers.flow import SendQueue
from railyard.node.peers.proxy import Proxy, proxy_for
from railyard.node.security import NodeTls
from railyard.proto import railyard_pb2 as pb
from railyard.proto import railyard_pb2_grpc as pb_grpc
from railyard.raft import Message, MessageType, NodeId
from railyard.storage import SnapshotStore

# Messages queued per peer and lane (`flow.py`) before new ones are dropped: a
# few heartbeat rounds of a busy leader; beyond that the peer is not keeping up.
SEND_QUEUE_SIZE = 4096
# Messages and entry bytes per envelope: amortises gRPC's per-message cost
# while keeping one envelope well under the message size limit.
MAX_MESSAGES_PER_ENVELOPE = 256
MAX_ENVELOPE_BYTES = 16 << 20
# A pipe is replaced after this long (every gRPC call has a deadline; the
# replacement is opened before the old one ends, so nothing stalls).
PIPE_ROTATE_S = 30.0
PIPE_DEADLINE_S = 2 * PIPE_ROTATE_S
# A write that cannot complete in this long means the peer is not reading
# (partitioned, overloaded): the pipe is torn down and reopened.
WRITE_STALL_S = 2.0
# After a failed pipe, wait this long before reconnecting, doubling while it
# keeps failing up to the cap (the channel has its own backoff too, capped
# low so a restarted peer is found quickly).
RECONNECT_DELAY_S = 0.05
MAX_RECONNECT_DELAY_S = 1.0
# A probe of a peer whose pipe to us broke: loopback or LAN answers fast.
PROBE_TIMEOUT_S = 0.5
PROBE_ATTEMPTS = 3
PROBE_RETRY_S = 0.02
# A snapshot transfer gets this long in all.
SNAPSHOT_DEADLINE_S = 120.0


class PipeClosed(Exception):
    """The peer ended our pipe (e.g. PERMISSION_DENIED, or it is stopping)."""

    def __init__(self, code: grpc.StatusCode, details: str | None) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details or ""


class PeerLink:
    """The way to one peer: a channel, a queue, a pipe sender and a snapshot sender."""

    def __init__(
        self,
        *,
        local: pb.Peer,
        peer_id: NodeId,
        address: str,
        snapshots: SnapshotStore,
        on_unreachable: Callable[[NodeId], None],
        on_snapshot_done: Callable[[NodeId, bool], None],
        log: logging.Logger,
        on_refused: Callable[[NodeId], None] | None = None,
        peer_address: str | None = None,
        tls: NodeTls | None = None,
        metrics: NodeMetrics | None = None,
    ) -> None:
        self.local = local
        self.tls = tls
        self.on_refused = on_refused
        self.peer_id = peer_id
        self.metrics = metrics or NodeMetrics(peers=[peer_id], enabled=False)
        self.instruments = self.metrics.peer(peer_id)
        self.address = address
        self.peer_address = peer_address
        self.proxy: Proxy | None = None
        if peer_address is not None:
            try:
                self.proxy = proxy_for(peer_address.rpartition(":")[0].strip("[]"))
            except ValueError as exc:
                # gRPC, given the same setting, goes direct too.
                log.error("%s; peer traffic to %s goes direct", exc, peer_id)
        # The last way connecting failed, logged once until it changes.
        self._failure: str | None = None
        self.snapshots = snapshots
        self.on_unreachable = on_unreachable
        self.on_snapshot_done = on_snapshot_done
        self.log = log
        self.channel = (
            grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            if tls is None
            else grpc.aio.secure_channel(
                address, tls.channel_credentials(), options=CHANNEL_OPTIONS
            )
        )
        self.stub = pb_grpc.RaftStub(self.channel)
        # Control messages before appends; a wake-up (None) tells a waiting
        # sender its connection ended.
        self.queue = SendQueue(SEND_QUEUE_SIZE)
        self._snapshot_request: Message | None = None
        self._snapshot_wanted = asyncio.Event()
        self._reported_at = 0.0
        self._probe_wanted = asyncio.Event()
        self.connected = False
        # The TCP connection while its sender task waits for messages: `send_all`
        # writes to it directly.
        self._idle: tcp.PeerConnection | None = None

    def send(self, message: Message) -> None:
        self.send_all((message,))

    def send_all(self, messages: Sequence[Message]) -> None:
        """Queue `messages` for this peer, then write them at once if the connection
        is idle: a wake-up of the sender task costs more than the write. Otherwise
        (connecting, busy, backed up) the sender task takes them."""
        direct = self._idle is not None
        for message in messages:
            if message.type is MessageType.SNAPSHOT:
                self._snapshot_request = message
                self._snapshot_wanted.set()
                continue
            if message.type is MessageType.HEARTBEAT:
                self.metrics.heartbeat_sent(self.peer_id, time.monotonic())
            if not self.queue.put(message_to_pb(message), notify=not direct):
                self.instruments.send_failures.inc()
                self._unreachable()
        if direct:
            self._flush()

    def _flush(self) -> None:
        conn = self._idle
        if conn is None:
            return
        while self.queue and conn.ended is None and not conn.backed_up:
            first = self.queue.pop()
            assert first is not None
            self._write(conn, first)
        if self.queue:  # the sender task waits for room, or learns the connection ended
            self.queue.notify()

    def _unreachable(self) -> None:
        # Once per reconnect delay is enough for the core to pause the peer.
        now = time.monotonic()
        if now - self._reported_at >= RECONNECT_DELAY_S:
            self._reported_at = now
            self.on_unreachable(self.peer_id)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._run_pipe())
            tg.create_task(self._run_snapshots())
            tg.create_task(self._run_probes())

    def probe(self) -> None:
        """Check soon whether the peer still accepts connections (see `on_refused`)."""
        self._probe_wanted.set()

    async def _run_probes(self) -> None:
        while True:
            await self._probe_wanted.wait()
            self._probe_wanted.clear()
            await self._probe()

    async def _probe(self) -> None:
        """Try to reach the peer; report a refused connection.

        The first attempt may still go out on the connection that just broke
        (it fails as "socket closed", not "refused"); the next ones open a
        new connection, which a dead process refuses.
        """
        for _ in range(PROBE_ATTEMPTS):
            try:
                if self.peer_address is not None:
                    # Its client address serves no Raft: open a connection and close it.
                    async with asyncio.timeout(PROBE_TIMEOUT_S):
                        await tcp.probe(
                            self.peer_address,
                            self.proxy,
                            tls=self.tls.client_context() if self.tls is not None else None,
                            node_id=self.peer_id,
                        )
                    return  # alive
                # An empty envelope: a no-op for the peer, a connection attempt for us.
                await self.stub.AppendEntries(envelope(self.local, []), timeout=PROBE_TIMEOUT_S)
                return  # alive
            except (OSError, TimeoutError, tcp.PeerRefused) as exc:
                self.log.debug("probe of %s: %s", self.peer_id, brief(exc))
                if _refused(exc):
                    if self.on_refused is not None:
                        self.on_refused(self.peer_id)
                    return
                if not isinstance(exc, OSError):
                    return  # it answered (refused us), or it is slow: not gone
            except grpc.aio.AioRpcError as exc:
                self.log.debug("probe of %s: %s", self.peer_id, brief(exc))
                if _refused(exc):
                    if self.on_refused is not None:
                        self.on_refused(self.peer_id)
                    return
                if exc.code() is not grpc.StatusCode.UNAVAILABLE:
                    return  # it answered, or it is slow: not gone
            await asyncio.sleep(PROBE_RETRY_S)

    async def close(self) -> None:
        await self.channel.close(grace=None)

    # ------------------------------------------------------------ pipe

    async def _run_pipe(self) -> None:
        delay_s = RECONNECT_DELAY_S
        while True:
            opened_at = time.monotonic()
            try:
                if self.peer_address is None:
                    await self._pipe_once()
                else:
                    await self._tcp_once(self.peer_address)
            except (
                grpc.RpcError,
                TimeoutError,
                PipeClosed,
                OSError,
                tcp.PeerRefused,
                tcp.PeerClosed,
            ) as exc:
                if isinstance(exc, PipeClosed) and exc.code is grpc.StatusCode.PERMISSION_DENIED:
                    self._log_refusal(exc.details)
                elif isinstance(exc, tcp.PeerRefused):
                    self._log_refusal(str(exc))
                elif self.connected:
                    where = self.peer_address or self.address
                    self.log.info("lost %s at %s: %s", self.peer_id, where, brief(exc))
                elif self.peer_address is not None and brief(exc) != self._failure:
                    # Never connected: a wrong peer_address, or the peer is not up yet.
                    self._failure = brief(exc)
                    self.log.info(
                        "cannot reach %s at %s: %s", self.peer_id, self.peer_address, self._failure
                    )
                self.connected = False
                if self.on_refused is not None and _refused(exc):
                    self.on_refused(self.peer_id)
                self._drop_queued()
                if time.monotonic() - opened_at > MAX_RECONNECT_DELAY_S:
                    delay_s = RECONNECT_DELAY_S  # the pipe worked for a while
                await asyncio.sleep(delay_s)
                # A peer that keeps failing is retried less often, up to a cap.
                delay_s = min(2 * delay_s, MAX_RECONNECT_DELAY_S)

    def _log_refusal(self, reason: str) -> None:
        self.log.warning(
            "%s refuses us: %s",
            self.peer_id,
            reason,
            extra=event("connection_refused", peer=self.peer_id, by="peer", reason=reason),
        )

    async def _pipe_once(self) -> None:
        """Stream queued messages until the pipe is due for rotation or fails.

        The pipe is opened when there is something to send (a pipe opened
        long before its first message may have failed in the meantime and
        would lose that message), and waits for the channel to connect, up
        to the write stall limit.
        """
        first = await self._next()
        # No request iterator: the call is written to with `write()`.
        call = cast(Any, self.stub).Pipe(timeout=PIPE_DEADLINE_S, wait_for_ready=True)
        rotate_at = time.monotonic() + PIPE_ROTATE_S
        try:
            while True:
                outgoing = envelope(self.local, self._drain(first))
                async with asyncio.timeout(WRITE_STALL_S):
                    await call.write(outgoing)
                if self.metrics.enabled:
                    self.instruments.sent_bytes.inc(outgoing.ByteSize())
                if not self.connected:
                    self.connected = True
                    self.log.info("connected to %s at %s", self.peer_id, self.address)
                remaining = rotate_at - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining):
                        first = await self._next()
                except TimeoutError:
                    break
            async with asyncio.timeout(WRITE_STALL_S):
                await call.done_writing()
        except asyncio.InvalidStateError:
            # The peer ended the call; its status says why.
            raise PipeClosed(await call.code(), await call.details()) from None
        except BaseException:
            call.cancel()
            raise

    async def _tcp_once(self, address: str) -> None:
        """Send queued messages over one TCP connection until it fails.

        Opened when there is something to send, for the same reason as a
        pipe. A connection needs no rotation: nothing on it has a deadline.
        """
        first = await self._next()
        conn = await tcp.connect(
            address,
            on_end=self._wake,
            proxy=self.proxy,
            tls=self.tls.client_context() if self.tls is not None else None,
            node_id=self.peer_id,
        )
        try:
            while True:
                self._write(conn, first)
                if conn.backed_up:
                    async with asyncio.timeout(WRITE_STALL_S):
                        await conn.drain()
                if not self.connected:
                    self.connected = True
                    self._failure = None
                    self.log.info("connected to %s at %s (tcp)", self.peer_id, address)
                self._idle = conn
                try:
                    first = await self._next_on(conn)
                finally:
                    self._idle = None
        finally:
            conn.abort()

    def _write(self, conn: tcp.PeerConnection, first: pb.RaftMessage) -> None:
        payload = envelope(self.local, self._drain(first)).SerializeToString()
        conn.send(payload)
        self.instruments.sent_bytes.inc(len(payload) + tcp.FRAME_HEADER_BYTES)

    async def _next(self) -> pb.RaftMessage:
        """The next queued message, skipping wake-ups meant for an earlier connection."""
        while True:
            m = await self.queue.get()
            if m is not None:
                return m

    async def _next_on(self, conn: tcp.PeerConnection) -> pb.RaftMessage:
        """The next queued message, or why `conn` ended if it did meanwhile."""
        while True:
            m = await self.queue.get()
            if conn.ended is not None:
                raise conn.ended
            if m is not None:
                return m

    def _wake(self) -> None:
        self.queue.wake()

    def _drain(self, first: pb.RaftMessage) -> list[pb.RaftMessage]:
        return self.queue.take(first, MAX_MESSAGES_PER_ENVELOPE, MAX_ENVELOPE_BYTES)

    def _drop_queued(self) -> None:
        dropped = self.queue.clear()
        if dropped:
            self.instruments.send_failures.inc(dropped)
            self._unreachable()

    # ------------------------------------------------------------ snapshots

    async def _run_snapshots(self) -> None:
        while True:
            await self._snapshot_wanted.wait()
            self._snapshot_wanted.clear()
            request, self._snapshot_request = self._snapshot_request, None
            if request is None:
                continue
            ok = await self._send_snapshot(request)
            self.on_snapshot_done(self.peer_id, ok)

    async def _send_snapshot(self, request: Message) -> bool:
        assert request.snapshot is not None
        latest = await asyncio.to_thread(self.snapshots.latest)
        if latest is None or latest[0].index != request.snapshot.index:
            self.log.warning(
                "snapshot %d for %s is not on disk; will retry",
                request.snapshot.index,
                self.peer_id,
            )
            return False
        meta, path = latest
        self.log.info("sending snapshot index=%d to %s", meta.index, self.peer_id)
        try:
            if self.peer_address is None:
                await self.stub.InstallSnapshot(
                    self._chunks(request, path), timeout=SNAPSHOT_DEADLINE_S
                )
            else:
                async with asyncio.timeout(SNAPSHOT_DEADLINE_S):
                    await tcp.send_snapshot(
                        self.peer_address,
                        (c.SerializeToString() async for c in self._chunks(request, path)),
                        proxy=self.proxy,
                        tls=self.tls.client_context() if self.tls is not None else None,
                        node_id=self.peer_id,
                    )
        except (
            grpc.RpcError,
            OSError,
            TimeoutError,
            tcp.PeerRefused,
            tcp.PeerClosed,
        ) as exc:
            self.instruments.send_failures.inc()
            self.log.warning("snapshot to %s failed: %s", self.peer_id, brief(exc))
            return False
        self.log.info("sent snapshot index=%d to %s", meta.index, self.peer_id)
        return True

    async def _chunks(self, request: Message, path: Path) -> AsyncIterator[pb.SnapshotChunk]:
        checksum = await asyncio.to_thread(self.snapshots.checksum, path)
        size = (await asyncio.to_thread(path.stat)).st_size
        chunks = self.snapshots.chunks(path)
        data = await asyncio.to_thread(next, chunks, None)
        first = True
        while True:
            following = await asyncio.to_thread(next, chunks, None) if data is not None else None
            last = following is None
            chunk = pb.SnapshotChunk(data=data or b"", last=last)
            getattr(chunk, "from").CopyFrom(self.local)
            if first:
                chunk.message.CopyFrom(message_to_pb(request))
                chunk.total_bytes = size
                first = False
            if last:
                chunk.checksum = checksum
            self.instruments.sent_bytes.inc(len(chunk.data))
            yield chunk
            if last:
                return
            data = following


class Transport:
    """All outbound links; the driver's outbox.

    The configuration decides the links (`set_members`): a member added
    gets a link at once, one removed (or moved to other addresses) has its
    link stopped and closed.
    """

    def __init__(
        self,
        links: Sequence[PeerLink],
        make_link: Callable[[NodeId, str, str | None], PeerLink] | None = None,
    ) -> None:
        self.links = {link.peer_id: link for link in links}
        self.make_link = make_link
        self._tasks: dict[NodeId, asyncio.Task[None]] = {}
        self._tg: asyncio.TaskGroup | None = None

    def send(self, messages: Sequence[Message]) -> None:
        # Grouped by peer: a peer's messages of one Ready share envelopes.
        by_peer: dict[NodeId, list[Message]] = {}
        for m in messages:
            by_peer.setdefault(m.to, []).append(m)
        for peer_id, batch in by_peer.items():
            link = self.links.get(peer_id)
            if link is not None:
                link.send_all(batch)

    def set_members(self, wanted: Mapping[NodeId, tuple[str, str | None]]) -> None:
        """Link exactly the peers of `wanted` (id -> address, peer_address)."""
        for peer_id, link in list(self.links.items()):
            if wanted.get(peer_id) != (link.address, link.peer_address):
                self._drop(peer_id)
        for peer_id, (address, peer_address) in wanted.items():
            if peer_id in self.links or self.make_link is None:
                continue
            link = self.make_link(peer_id, address, peer_address)
            self.links[peer_id] = link
            if self._tg is not None:
                self._tasks[peer_id] = self._tg.create_task(link.run())

    def _drop(self, peer_id: NodeId) -> None:
        link = self.links.pop(peer_id)
        task = self._tasks.pop(peer_id, None)
        if task is not None:
            task.cancel()
        if self._tg is not None:
            self._tg.create_task(link.close())

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            for peer_id, link in self.links.items():
                self._tasks[peer_id] = tg.create_task(link.run())
            try:
                # Links come and go with the configuration: the group lives on.
                await asyncio.Event().wait()
            finally:
                self._tg = None

    async def close(self) -> None:
        for link in self.links.values():
            await link.close()


def _refused(exc: BaseException) -> bool:
    """Did the peer's host refuse the connection (no process listening)?"""
    if isinstance(exc, ConnectionRefusedError):
        return True
    return isinstance(exc, grpc.aio.AioRpcError) and "Connection refused" in (exc.details() or "")


def brief(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"
