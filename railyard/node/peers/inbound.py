"""Inbound Raft RPCs: check the sender, hand its messages to the driver.

`RaftService` checks that every request names this cluster and a member of
the configuration in force (`set_members`; a node joining with no
configuration yet takes any node of its cluster, as it waits to be contacted
by a leader it cannot know) (else PERMISSION_DENIED, logged at most every
few seconds per sender) and
hands the messages to the driver. `Pipe` is the gRPC fast path: one
long-lived stream per peer, read until the peer closes it; peers with a
`peer_address` send over TCP instead, and `tcp.PeerListener` hands
their envelopes to the same checks (`refusal`, `deliver`, `pipe_ended`). The unary RPCs
(RequestVote, AppendEntries, TimeoutNow) step their messages and reply with
an empty envelope: the answers travel over our own pipe to the sender, like
all others. `InstallSnapshot` (and `receive_snapshot`, the same over peer
TCP, `tcp.PeerListener`) writes the chunks through a `SnapshotReceiver`,
checks the checksum, stages the file and hands it with the SNAPSHOT message
to the driver, which installs it only if the core accepts the message.
Malformed input is refused with INVALID_ARGUMENT.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import grpc

from railyard.node.driver import Driver
from railyard.node.observability import NodeMetrics, event
from railyard.node.observability.refusals import RefusalLog
from railyard.node.peers.codec import envelope, envelope_sender, message_from_pb
from railyard.node.security import identity_of
from railyard.proto import railyard_pb2 as pb
from railyard.proto import railyard_pb2_grpc as pb_grpc
from railyard.raft import Index, Message, MessageType, NodeId
from railyard.storage import CorruptSnapshot, SnapshotReceiver, SnapshotStore, sqlite_problem
from railyard.streams import snapshot_problem

# Refusals of a foreign peer are logged at most this often (it retries a lot),
# and all of them together at most as often as `RefusalLog` allows.
REFUSAL_LOG_INTERVAL_S = 5.0
# Senders whose last refusal time is kept; past it the table starts afresh.
MAX_REMEMBERED_SENDERS = 1024


def _validator(index: Index) -> Callable[[Path], str | None]:
    """What a received snapshot of `index` must pass before it is staged."""
    return lambda path: sqlite_problem(path) or snapshot_problem(path, index)


class RaftService(pb_grpc.RaftServicer):
    """Inbound Raft RPCs: check the sender, hand its messages to the driver."""

    def __init__(
        self,
        *,
        cluster: str,
        node_id: NodeId,
        peers: Sequence[NodeId],
        driver: Driver,
        snapshots: SnapshotStore,
        log: logging.Logger,
        last_heard: dict[str, float] | None = None,
        on_pipe_ended: Callable[[NodeId], None] | None = None,
        tls: bool = False,
        metrics: NodeMetrics | None = None,
    ) -> None:
        self.cluster = cluster
        # With TLS, a call's sender must be the node its certificate names.
        self.tls = tls
        self.metrics = metrics or NodeMetrics(peers=peers, enabled=False)
        # A peer's pipe to us ended (its process may be gone): probe it.
        self.on_pipe_ended = on_pipe_ended
        self.last_heard = last_heard if last_heard is not None else {}
        self.node_id = node_id
        self.peers = frozenset(peers)
        self.joining = False
        # A joining node was sent messages by a node it has no link to: its
        # addresses (from the envelope) let the node answer it.
        self.on_new_sender: Callable[[pb.Peer], None] | None = None
        self.local = pb.Peer(cluster=cluster, node_id=node_id)
        self.driver = driver
        self.snapshots = snapshots
        self.log = log
        self._refusals_logged: dict[tuple[str, str], float] = {}
        self.refusal_log = RefusalLog(log)

    def _refusal(self, sender: pb.Peer) -> str | None:
        if sender.cluster != self.cluster:
            return (
                f"node {self.node_id} of cluster {self.cluster!r} refuses node "
                f"{sender.node_id!r} of cluster {sender.cluster!r}"
            )
        if sender.node_id not in self.peers and not self.joining:
            return (
                f"node {self.node_id} of cluster {self.cluster!r} refuses unknown node "
                f"{sender.node_id!r}"
            )
        return None

    def set_members(self, peers: Sequence[NodeId], joining: bool) -> None:
        """Take messages from `peers` only; `joining`: from any node of the cluster."""
        self.peers = frozenset(peers)
        self.joining = joining

    def refusal(self, sender: pb.Peer) -> str | None:
        """Why messages from `sender` are refused (logged now and then), or None."""
        reason = self._refusal(sender)
        if reason is None:
            return None
        key = (sender.cluster, sender.node_id)
        now = time.monotonic()
        if now - self._refusals_logged.get(key, -REFUSAL_LOG_INTERVAL_S) >= REFUSAL_LOG_INTERVAL_S:
            if len(self._refusals_logged) >= MAX_REMEMBERED_SENDERS:
                self._refusals_logged.clear()  # names a forger made up: forget them
            self._refusals_logged[key] = now
            self.refusal_log.warning(
                "unknown sender",
                "refused peer %r of cluster %r",
                sender.node_id,
                sender.cluster,
                extra=event(
                    "connection_refused",
                    peer=sender.node_id,
                    cluster=sender.cluster,
                    by="this node",
                    reason=reason,
                ),
            )
        return reason

    async def _check(self, sender: pb.Peer, context: grpc.aio.ServicerContext) -> None:  # type: ignore[type-arg]
        reason = self.refusal(sender) or self._impersonation(sender, context)
        if reason is not None:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, reason)

    def _impersonation(
        self,
        sender: pb.Peer,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> str | None:
        """Why a TLS call's certificate does not name its sender, or None."""
        if not self.tls:
            return None
        identity = identity_of(context)
        if identity is not None and identity.node and identity.name == sender.node_id:
            return None
        who = identity.describe() if identity is not None else "no certificate"
        reason = f"envelope from {sender.node_id!r} on a call authenticated as {who}"
        self.refusal_log.warning(
            "impersonation", "refused a Raft call from %s: %s", context.peer(), reason
        )
        return reason

    async def deliver(self, sender: pb.Peer, messages: Sequence[pb.RaftMessage]) -> str | None:
        """Hand an accepted sender's messages to the driver, in order.

        Returns what is wrong with the first malformed one (nothing from it
        on is delivered), or None.
        """
        self.last_heard[sender.node_id] = time.monotonic()
        if self.joining and sender.node_id not in self.peers and self.on_new_sender is not None:
            self.on_new_sender(sender)
        for m in messages:
            try:
                msg = message_from_pb(m)
            except ValueError as exc:
                return f"messages: {exc}"
            if msg.to != self.node_id or msg.sender != sender.node_id:
                return (
                    f"messages: from {msg.sender!r} to {msg.to!r} on a link from "
                    f"{sender.node_id!r} to {self.node_id!r}"
                )
            await self.driver.deliver(msg)
        return None

    def received(self, node_id: str, size: int) -> None:
        """Count `size` bytes received from peer `node_id` (an accepted sender)."""
        self.metrics.peer(node_id).received_bytes.inc(size)

    def pipe_ended(self, node_id: str) -> None:
        # A rotated pipe (or a peer's TCP connection that broke) ends the
        # same way as one of a killed process; a probe tells them apart
        # (cheap: once per rotation or reconnect).
        if self.on_pipe_ended is not None:
            self.on_pipe_ended(NodeId(node_id))

    async def _deliver(
        self,
        sender: pb.Peer,
        messages: Sequence[pb.RaftMessage],
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> None:
        problem = await self.deliver(sender, messages)
        if problem is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)

    async def _unary(
        self,
        request: pb.RaftEnvelope,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> pb.RaftEnvelope:
        sender = envelope_sender(request)
        await self._check(sender, context)
        if self.metrics.enabled:
            self.received(sender.node_id, request.ByteSize())
        await self._deliver(sender, request.messages, context)
        return envelope(self.local, [])

    async def RequestVote(
        self,
        request: pb.RaftEnvelope,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> pb.RaftEnvelope:
        return await self._unary(request, context)

    async def AppendEntries(
        self,
        request: pb.RaftEnvelope,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> pb.RaftEnvelope:
        return await self._unary(request, context)

    async def TimeoutNow(
        self,
        request: pb.RaftEnvelope,
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> pb.RaftEnvelope:
        return await self._unary(request, context)

    async def Pipe(  # type: ignore[override]  # one-way: never answers on the stream
        self,
        request_iterator: AsyncIterator[pb.RaftEnvelope],
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> None:
        sender: pb.Peer | None = None
        try:
            async for env in request_iterator:
                if sender is None:
                    sender = envelope_sender(env)
                    await self._check(sender, context)
                elif (later := envelope_sender(env)) != sender:
                    await context.abort(
                        grpc.StatusCode.PERMISSION_DENIED,
                        f"envelope from {later.node_id!r} on the pipe of {sender.node_id!r}",
                    )
                if self.metrics.enabled:
                    self.received(sender.node_id, env.ByteSize())
                await self._deliver(sender, env.messages, context)
        finally:
            if sender is not None:
                self.pipe_ended(sender.node_id)

    async def InstallSnapshot(
        self,
        request_iterator: AsyncIterator[pb.SnapshotChunk],
        context: grpc.aio.ServicerContext,  # type: ignore[type-arg]
    ) -> pb.RaftEnvelope:
        """Receive a leader's snapshot; malformed input is INVALID_ARGUMENT, never UNKNOWN."""

        async def check(sender: pb.Peer) -> None:
            await self._check(sender, context)

        try:
            await self._receive_snapshot(request_iterator, check)
        except SnapshotRefused as exc:
            await context.abort(exc.code, exc.reason)
        return envelope(self.local, [])

    async def receive_snapshot(self, chunks: AsyncIterator[pb.SnapshotChunk]) -> str | None:
        """A snapshot over peer TCP, every chunk's sender checked: why not, or None."""

        async def checked(sender: pb.Peer) -> None:
            pass

        try:
            await self._receive_snapshot(chunks, checked)
        except SnapshotRefused as exc:
            return exc.reason
        return None

    def _snapshot_room(self, declared: int) -> int | None:
        """The bytes a snapshot may take here (None: unbounded); refuses a larger declared size."""
        room = self.driver.disk.snapshot_room()
        if room is not None and declared > room:
            reason = (
                f"node {self.node_id}: a snapshot of {declared} bytes does not fit: its disk "
                f"has room for {room} (free space less the reserve, for the file and the "
                "state restored from it)"
            )
            self.driver.disk.warn_disk_full(reason)
            raise SnapshotRefused(grpc.StatusCode.RESOURCE_EXHAUSTED, reason)
        return room

    async def _receive_snapshot(
        self,
        chunks: AsyncIterator[pb.SnapshotChunk],
        check: Callable[[pb.Peer], Awaitable[None]],
    ) -> None:
        """Write the chunks through a `SnapshotReceiver`, stage, hand to the driver.

        The bytes are staged (their checksum, SQLite's integrity check and the
        state they hold against the metadata verified, fsync'd under a
        temporary name: garbage with a right checksum is refused here),
        not installed: the driver makes them the node's latest snapshot only
        if the core accepts the SNAPSHOT message, and deletes them otherwise
        (a stale or forged message must not replace the node's own snapshot).
        `check` refuses the first chunk's sender (by raising). Raises
        `SnapshotRefused` for anything wrong, after discarding what was written.
        """
        receiver: SnapshotReceiver | None = None
        message: Message | None = None
        try:
            async for chunk in chunks:
                if receiver is None:
                    sender = envelope_sender(chunk)
                    await check(sender)
                    message = _snapshot_message(chunk, sender, self.node_id)
                    assert message.snapshot is not None
                    room = self._snapshot_room(chunk.total_bytes)
                    receiver = await asyncio.to_thread(
                        self.snapshots.receiver, message.snapshot, room
                    )
                self.received(sender.node_id, len(chunk.data))
                try:
                    await asyncio.to_thread(receiver.write, chunk.data)
                except CorruptSnapshot as exc:  # past the room it was given
                    raise SnapshotRefused(
                        grpc.StatusCode.RESOURCE_EXHAUSTED, f"node {self.node_id}: {exc}"
                    ) from None
                if chunk.last:
                    assert message is not None and message.snapshot is not None
                    try:
                        await asyncio.to_thread(
                            receiver.stage, chunk.checksum, _validator(message.snapshot.index)
                        )
                    except CorruptSnapshot as exc:
                        self.log.warning("refused a snapshot from %s: %s", message.sender, exc)
                        raise SnapshotRefused(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
                    staged, receiver = receiver, None
                    await self.driver.deliver_snapshot(message, staged)
                    self.log.info(
                        "received snapshot index=%d term=%d from %s",
                        message.snapshot.index,
                        message.snapshot.term,
                        message.sender,
                    )
                    return
        except OSError as exc:  # this node's disk, not the sender's fault
            code = (
                grpc.StatusCode.RESOURCE_EXHAUSTED
                if exc.errno == errno.ENOSPC
                else grpc.StatusCode.INTERNAL
            )
            raise SnapshotRefused(
                code, f"node {self.node_id} cannot store the snapshot: {exc}"
            ) from None
        finally:
            if receiver is not None:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(receiver.abort)
        raise SnapshotRefused(
            grpc.StatusCode.INVALID_ARGUMENT, "snapshot ended without a last chunk"
        )


class SnapshotRefused(Exception):
    """A received snapshot is refused: the status a gRPC call ends with, and why."""

    def __init__(self, code: grpc.StatusCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _snapshot_message(chunk: pb.SnapshotChunk, sender: pb.Peer, node_id: str) -> Message:
    """The first chunk's SNAPSHOT message, checked; `SnapshotRefused` otherwise."""

    def refused(reason: str) -> SnapshotRefused:
        return SnapshotRefused(grpc.StatusCode.INVALID_ARGUMENT, reason)

    if not chunk.HasField("message"):
        raise refused("message: missing")
    try:
        message = message_from_pb(chunk.message)
    except ValueError as exc:
        raise refused(f"message: {exc}") from None
    if message.type is not MessageType.SNAPSHOT or message.snapshot is None:
        raise refused("message: expected a SNAPSHOT")
    if message.to != node_id or message.sender != sender.node_id:
        raise refused(
            f"message: from {message.sender!r} to {message.to!r} on a link from "
            f"{sender.node_id!r} to {node_id!r}"
        )
    return message
