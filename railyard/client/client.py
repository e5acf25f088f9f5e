"""RailyardClient: the async Python client (grpc.aio) used by the CLI and the dashboard.

What it guarantees:

- Talks to any node of the given endpoints over one long-lived channel per
  endpoint. Requests go to the leader when one is known (learned from the
  trailing metadata of UNAVAILABLE answers), else to the endpoints in turn.
- Retries UNAVAILABLE and connection failures with exponential backoff until
  the client's deadline (`timeout_s`) runs out, then raises `Unavailable`.
  One attempt gets at most `attempt_timeout_s` (2 s): a node that holds a
  request without answering (paused, cut off) is left for the next one,
  and a leader that did not answer is forgotten.
- Concurrent `put` calls coalesce (`coalesce=True`, the default): they share
  one streaming producer to the leader, and records queued while a message
  is in flight go out together as the next one; each caller still gets its
  own sequence, exactly once (see `client/coalesce.py`). At most
  `max_queued_puts` records wait at a time; more callers wait for room.
  `coalesce=False` sends each put as its own PutRecord call, as below:
  over gRPC, or with `transport="native"` over the node's native put port
  (`client/native.py`: one TCP connection per node, a fraction of a gRPC
  call's CPU), found in the node's Status; a node without one is called
  over gRPC.
- Exactly-once puts (Raft dissertation §6.3): every put carries a producer id
  and a per-producer sequence number, fixed before the first attempt and
  reused by every retry, so a put retried after a leader crash is applied
  once. A producer id has at most one request outstanding at a time (the
  dissertation's model, which the cluster's dedup relies on): concurrent puts
  on one client each take a *lane* -- a producer id of their own
  (``<producer_id>`` for the first, ``<producer_id>/<n>`` for others) with
  its own sequence -- so one client may still pipeline many puts. A retry
  of an applied put gets its original sequences back: the cluster
  remembers the results of each producer id's last 64 sequences. Only if
  it has applied that many later puts of the same producer id since
  (FAILED_PRECONDITION, stale sequence; possible only when another client
  shares the id), the put raises `AlreadyApplied` when an earlier attempt
  may have been applied, and is sent again with the next free sequence when
  none was.
- With `tls`, every channel is TLS, presenting the client's certificate.
- Errors arrive as the typed exceptions of `railyard.client.errors`.

It imports only the generated protocol code, grpc and the standard library.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, TypeVar

import grpc

from railyard.client.coalesce import (
    DEFAULT_IN_FLIGHT,
    DEFAULT_MAX_QUEUED,
    QUORUM_CHECK_AFTER_S,
    Coalescer,
)
from railyard.client.errors import (
    AlreadyApplied,
    DeadlineExceeded,
    InvalidArgument,
    NoQuorum,
    NotFound,
    RailyardError,
    StaleProducerSequence,
    Unavailable,
    error_from_rpc,
    leader_hint,
    maybe_applied,
)
from railyard.client.native import (
    CONNECT_TIMEOUT_S,
    HandshakeFailed,
    NativeConnection,
    connect_native,
    rpc_error,
    ssl_context,
)
from railyard.client.tls import ClientTls, open_channel
from railyard.proto import commands_pb2 as cmd_pb
from railyard.proto import railyard_pb2 as pb
from railyard.proto import railyard_pb2_grpc as pb_grpc

__all__ = [
    "ATTEMPT_TIMEOUT_S",
    "DEFAULT_TIMEOUT_S",
    "START_POSITIONS",
    "TRANSPORTS",
    "RailyardClient",
]

R = TypeVar("R")

# Long enough to ride out a leader election with default timings (1-2 s) a few times.
DEFAULT_TIMEOUT_S = 10.0
# First retry pause after an UNAVAILABLE; doubles up to the cap. Both short:
# the usual cause is an election, and every millisecond slept after it ended
# adds to the failover time a producer sees. A retry costs a node little.
BACKOFF_INITIAL_S = 0.02
BACKOFF_MAX_S = 0.2
# One attempt gets at most this long, so a node that accepted a request but
# cannot finish it -- a paused process, a leader cut off from its followers --
# costs the caller this much, not its whole deadline: about twice the default
# election timeout (1 s), the time the others need to elect a new leader.
# Retrying elsewhere is safe: puts carry their producer id and sequence.
ATTEMPT_TIMEOUT_S = 2.0
# Every node refusing connections for this long means no cluster is running
# there (a leader crash leaves the others listening): fail fast.
REFUSED_GIVE_UP_S = 2.0
# Error details quoted in messages are cut to this length (gRPC's can be long).
DETAIL_CHARS = 120
# A status probe is to loopback or a LAN: a node that needs longer is "unreachable".
STATUS_TIMEOUT_S = 2.0
# GetRecords answers carry up to the server's byte limit (several MiB); the
# gRPC default of 4 MiB per message would cut large reads short.
MAX_MESSAGE_BYTES = 64 << 20
CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # Reconnect quickly when a restarted node comes back.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # A node back on a new IP under the same name is found within a second
    # (gRPC waits 30 s between DNS resolutions by default).
    ("grpc.dns_min_time_between_resolutions_ms", 1000),
)

# How `coalesce=False` puts travel: gRPC calls, or the node's native put port.
TRANSPORTS = ("grpc", "native")
# A node whose native port could not be reached (or was full) is called over
# gRPC this long before the native port is tried again.
NATIVE_RETRY_S = 10.0

# The two ways a TLS handshake fails, as `_handshake_failure` tells them.
SERVER_NOT_TRUSTED = "server not trusted"
CLIENT_REFUSED = "client refused"

START_POSITIONS: dict[str, pb.StartPosition.ValueType] = {
    "TRIM_HORIZON": pb.TRIM_HORIZON,
    "LATEST": pb.LATEST,
    "AT_SEQUENCE": pb.AT_SEQUENCE,
    "AFTER_SEQUENCE": pb.AFTER_SEQUENCE,
    "AT_TIMESTAMP": pb.AT_TIMESTAMP,
}


@dataclass
class _Lane:
    """One producer identity with at most one put outstanding."""

    producer_id: str
    next_sequence: int = 1


class BackupSink(Protocol):
    """Where `RailyardClient.save_snapshot` puts a backup as it arrives.

    `start` may come again after chunks (an attempt failed and the backup is
    taken again): what was written since the last `start` is to be dropped.
    """

    def start(self, header: pb.BackupHeader) -> None: ...

    def write(self, chunk: bytes) -> None: ...


class RailyardClient:
    """An async client for a railyard cluster; use as ``async with RailyardClient(...)``."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        producer_id: str | None = None,
        attempt_timeout_s: float = ATTEMPT_TIMEOUT_S,
        tls: ClientTls | None = None,
        coalesce: bool = True,
        max_queued_puts: int = DEFAULT_MAX_QUEUED,
        coalesce_in_flight: int = DEFAULT_IN_FLIGHT,
        transport: str = "grpc",
    ) -> None:
        if not endpoints:
            raise ValueError("RailyardClient needs at least one endpoint (host:port)")
        if transport not in TRANSPORTS:
            raise ValueError(
                f"transport: expected one of {', '.join(TRANSPORTS)} (got {transport!r})"
            )
        if transport != "grpc" and coalesce:
            raise ValueError(
                f"transport={transport!r} carries per-call puts: pass coalesce=False too "
                "(coalesced puts share messages over gRPC)"
            )
        self.endpoints: list[str] = list(dict.fromkeys(endpoints))
        self.timeout_s = timeout_s
        self.producer_id = producer_id or uuid.uuid4().hex
        self._channels: dict[str, grpc.aio.Channel] = {}
        # A stub binds each of its methods to the channel when built (ten
        # multicallables for Streams): built once per channel, not per request.
        self._stubs: dict[str, tuple[pb_grpc.StreamsAsyncStub, pb_grpc.ClusterAsyncStub]] = {}
        self._leader_address: str | None = None
        self._next_endpoint = 0
        self._free_lanes: list[_Lane] = []
        self._lane_count = itertools.count()
        self._rng = random.Random()
        self._attempt_timeout_s = attempt_timeout_s
        self._credentials = tls.credentials() if tls is not None else None
        self.transport = transport
        self._native_tls = ssl_context(tls) if tls is not None and transport == "native" else None
        # endpoint -> its native address ("": it serves none), from its Status.
        self._native_addresses: dict[str, str] = {}
        # endpoint -> when to try its native port again (after a failure to reach it).
        self._native_after: dict[str, float] = {}
        self._closed = False
        self._native: dict[str, NativeConnection] = {}
        self._native_connecting: dict[str, asyncio.Task[NativeConnection | None]] = {}
        # Per-call puts answered over each transport (a node without a native
        # port is called over gRPC): what `bench` reports.
        self.puts_by_transport: dict[str, int] = dict.fromkeys(TRANSPORTS, 0)
        self.coalesce = coalesce
        self._coalescer = (
            Coalescer(
                self,
                f"{self.producer_id}/put",
                max_queued=max_queued_puts,
                in_flight=coalesce_in_flight,
                attempt_timeout_s=attempt_timeout_s,
            )
            if coalesce
            else None
        )

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> RailyardClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def coalescer(self) -> Coalescer | None:
        """The coalescing put path (its `stats`), or None with `coalesce=False`."""
        return self._coalescer

    async def close(self) -> None:
        self._closed = True
        if self._coalescer is not None:
            await self._coalescer.close()
        for task in self._native_connecting.values():
            task.cancel()
        for connection in self._native.values():
            connection.close()
        self._native = {}
        channels, self._channels = self._channels, {}
        self._stubs = {}
        for channel in channels.values():
            await channel.close(None)

    @property
    def leader_address(self) -> str | None:
        """The leader's address as last learned, if any."""
        return self._leader_address

    def _channel(self, endpoint: str) -> grpc.aio.Channel:
        channel = self._channels.get(endpoint)
        if channel is None:
            channel = open_channel(endpoint, self._credentials, CHANNEL_OPTIONS)
            self._channels[endpoint] = channel
        return channel

    def _stubs_of(self, endpoint: str) -> tuple[pb_grpc.StreamsAsyncStub, pb_grpc.ClusterAsyncStub]:
        stubs = self._stubs.get(endpoint)
        if stubs is None:
            channel = self._channel(endpoint)
            stubs = (pb_grpc.StreamsStub(channel), pb_grpc.ClusterStub(channel))
            self._stubs[endpoint] = stubs
        return stubs

    def _streams(self, endpoint: str) -> pb_grpc.StreamsAsyncStub:
        return self._stubs_of(endpoint)[0]

    def _cluster(self, endpoint: str) -> pb_grpc.ClusterAsyncStub:
        return self._stubs_of(endpoint)[1]

    # ------------------------------------------------------------ retry loop

    def _pick_endpoint(self) -> str:
        if self._leader_address is not None:
            return self._leader_address
        endpoint = self.endpoints[self._next_endpoint % len(self.endpoints)]
        return endpoint

    def _handshake_of(self, error: grpc.aio.AioRpcError) -> str | None:
        return _handshake_failure(error)

    def _note_failure(self, endpoint: str, error: grpc.aio.AioRpcError | None) -> bool:
        """Learn from an UNAVAILABLE answer (or none); True when a new leader to try is known."""
        _, leader_address = leader_hint(error) if error is not None else (None, None)
        if leader_address and leader_address != endpoint:
            self._leader_address = leader_address
            return True
        if self._leader_address == endpoint or leader_address == endpoint:
            self._leader_address = None
        if endpoint in self.endpoints:
            self._next_endpoint = self.endpoints.index(endpoint) + 1
        else:
            self._next_endpoint += 1
        return False

    async def _call(
        self,
        what: str,
        call: Callable[[str, float], Awaitable[R]],
        *,
        attempt_timeout_s: float | None = None,
    ) -> R:
        """`call(endpoint, timeout)` against the leader (or any node) until it succeeds.

        UNAVAILABLE is retried on the hinted leader at once, else on the next
        endpoint after a backoff; an attempt that got no answer within
        `attempt_timeout_s` is retried on the next endpoint (and a leader
        that did not answer is forgotten); any other error is raised as its
        typed exception. The whole thing is bounded by `timeout_s`; when every
        endpoint has refused connections for `REFUSED_GIVE_UP_S`, sooner.
        """
        if attempt_timeout_s is None:
            attempt_timeout_s = self._attempt_timeout_s
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self.timeout_s
        backoff_s = BACKOFF_INITIAL_S
        last: Unavailable | None = None
        refused: set[str] = set()
        turned_away: dict[str, str] = {}  # endpoint -> how its TLS handshake failed
        # A fresh leader hint is followed at once, but once per backoff round:
        # two nodes naming each other in mid-election must not make a busy loop.
        followed_hint = False
        quorum_checked = False
        while (remaining := deadline - loop.time()) > 0:
            endpoint = self._pick_endpoint()
            try:
                return await call(endpoint, min(remaining, attempt_timeout_s))
            except grpc.aio.AioRpcError as e:
                code = e.code()
                if code == grpc.StatusCode.DEADLINE_EXCEEDED and deadline - loop.time() <= 0:
                    raise DeadlineExceeded(
                        f"{what}: no answer within {self.timeout_s:g}s; "
                        "it may or may not have been applied"
                    ) from None
                if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise error_from_rpc(e, endpoint) from None
                error = error_from_rpc(e, endpoint)
                last = error if isinstance(error, Unavailable) else last
                handshake = _handshake_failure(e)
                if handshake is not None:
                    turned_away[endpoint] = handshake
                    refused.add(endpoint)
                elif _is_refused(e):
                    turned_away.pop(endpoint, None)
                    refused.add(endpoint)
                else:
                    turned_away.pop(endpoint, None)
                    refused.discard(endpoint)
                if self._note_failure(endpoint, e) and not followed_hint:
                    followed_hint = True
                    continue
            if refused >= set(self.endpoints) and loop.time() - started >= REFUSED_GIVE_UP_S:
                break
            if not quorum_checked and loop.time() - started >= QUORUM_CHECK_AFTER_S:
                quorum_checked = True
                await self._raise_if_no_quorum()
            sleep_s = min(backoff_s * (0.5 + self._rng.random()), deadline - loop.time())
            if sleep_s > 0:
                await asyncio.sleep(sleep_s)
            backoff_s = min(backoff_s * 2, BACKOFF_MAX_S)
            followed_hint = False
        if not quorum_checked and not refused >= set(self.endpoints):
            await self._raise_if_no_quorum()
        raise self._unavailable(what, last, refused, turned_away)

    async def _raise_if_no_quorum(self) -> None:
        """Raise `NoQuorum` when fewer than a majority of the endpoints answer Status.

        The majority is of the endpoints given: with a cluster file, every node.
        """
        statuses = await self.cluster_status()
        reachable = [status.node_id or endpoint for endpoint, status in statuses if status]
        need = len(self.endpoints) // 2 + 1
        if len(reachable) < need:
            raise NoQuorum(
                f"no quorum: {len(reachable)} of {len(self.endpoints)} nodes reachable "
                f"({', '.join(reachable) or 'none'}); writes and linearizable reads need {need}",
                reachable=reachable,
            )

    def _unavailable(
        self,
        what: str,
        last: Unavailable | None,
        refused: set[str],
        turned_away: dict[str, str] | None = None,
    ) -> Unavailable:
        where = ", ".join(self.endpoints)
        if turned_away and refused >= set(self.endpoints):
            message = f"{what}: {self._tls_advice(where, next(iter(turned_away.values())))}"
        elif refused >= set(self.endpoints):
            message = (
                f"{what}: no node is listening at {where} (connection refused); "
                "is the cluster running? (railyard node start)"
            )
        else:
            message = (
                f"{what}: the cluster did not answer within {self.timeout_s:g}s at {where}"
                f" ({_short(last)}); check `railyard status`"
            )
        return Unavailable(
            message,
            leader=last.leader if last else None,
            leader_address=last.leader_address if last else None,
        )

    def _tls_advice(self, where: str, failure: str) -> str:
        """What a failed TLS handshake most likely means, and what to do."""
        if self._credentials is None:
            return (
                f"the nodes at {where} closed the connection: they serve TLS and this "
                "client does not (give --cacert, --cert and --key, or -c FILE with [tls])"
            )
        if failure == SERVER_NOT_TRUSTED:
            return (
                f"the TLS handshake with {where} failed: the node's certificate is not "
                "signed by the CA given (--cacert), or the node serves plaintext"
            )
        return (
            f"the nodes at {where} refused this client's certificate during the TLS "
            "handshake (none given, another CA's, or expired: check --cert and --key; "
            "the node's log says which)"
        )

    # ------------------------------------------------------------ streams

    async def create_stream(
        self, name: str, *, max_age_ms: int = 0, max_records: int = 0, max_bytes: int = 0
    ) -> pb.StreamInfo:
        request = pb.CreateStreamRequest(
            name=name,
            retention=cmd_pb.Retention(
                max_age_ms=max_age_ms, max_records=max_records, max_bytes=max_bytes
            ),
        )

        async def call(endpoint: str, timeout: float) -> pb.StreamInfo:
            response = await self._streams(endpoint).CreateStream(request, timeout=timeout)
            return response.stream

        return await self._call(f"create stream {name!r}", call)

    async def update_stream(
        self, name: str, *, max_age_ms: int = 0, max_records: int = 0, max_bytes: int = 0
    ) -> pb.StreamInfo:
        """Replace the stream's whole retention (0: no limit); returns the stream after it."""
        request = pb.UpdateStreamRequest(
            name=name,
            retention=cmd_pb.Retention(
                max_age_ms=max_age_ms, max_records=max_records, max_bytes=max_bytes
            ),
        )

        async def call(endpoint: str, timeout: float) -> pb.StreamInfo:
            response = await self._streams(endpoint).UpdateStream(request, timeout=timeout)
            return response.stream

        # Replaying the same retention is harmless: no exactly-once needed.
        return await self._call(f"update stream {name!r}", call)

    async def delete_stream(self, name: str) -> None:
        request = pb.DeleteStreamRequest(name=name)
        sent = _MaybeApplied()

        async def call(endpoint: str, timeout: float) -> None:
            await sent.watch(self._streams(endpoint).DeleteStream(request, timeout=timeout))

        try:
            await self._call(f"delete stream {name!r}", call)
        except NotFound:
            # A retry after an attempt that may have been applied: gone is done.
            if not sent.maybe:
                raise

    async def list_streams(self) -> list[pb.StreamInfo]:
        async def call(endpoint: str, timeout: float) -> list[pb.StreamInfo]:
            response = await self._streams(endpoint).ListStreams(
                pb.ListStreamsRequest(), timeout=timeout
            )
            return list(response.streams)

        return await self._call("list streams", call)

    async def describe_stream(self, name: str) -> pb.StreamInfo:
        request = pb.DescribeStreamRequest(name=name)

        async def call(endpoint: str, timeout: float) -> pb.StreamInfo:
            response = await self._streams(endpoint).DescribeStream(request, timeout=timeout)
            return response.stream

        return await self._call(f"describe stream {name!r}", call)

    # ------------------------------------------------------------ puts

    def _take_lane(self) -> _Lane:
        if self._free_lanes:
            return self._free_lanes.pop()
        n = next(self._lane_count)
        return _Lane(self.producer_id if n == 0 else f"{self.producer_id}/{n}")

    def _return_lane(self, lane: _Lane) -> None:
        # The sequence is spent whatever the outcome: the cluster may have
        # recorded it with its result, so it is never reused for other data.
        lane.next_sequence += 1
        self._free_lanes.append(lane)

    async def _put_once(
        self, what: str, lane: _Lane, call: Callable[[str, float, int], Awaitable[R]]
    ) -> R:
        """`call(endpoint, timeout, producer_sequence)` until it succeeds, exactly once.

        Every attempt carries the lane's sequence; a retry of an applied
        attempt gets the original result back. A stale-sequence refusal means
        the cluster applied so many later sequences of this producer id
        that it no longer remembers this one's result:
        - on the first attempt, another client used the id (or this one was
          restarted): nothing of this put was applied, so it is sent again
          with the next free sequence;
        - after an earlier attempt (which may have reached the leader), that
          attempt was applied: `AlreadyApplied` (its sequences are lost).
        """
        sent = _MaybeApplied()

        async def attempt(endpoint: str, timeout: float) -> R:
            return await sent.watch(call(endpoint, timeout, lane.next_sequence))

        try:
            return await self._call(what, attempt)
        except StaleProducerSequence as exc:
            if sent.maybe:
                raise AlreadyApplied(
                    f"{what}: applied by an earlier attempt (producer {lane.producer_id!r} "
                    f"sequence {lane.next_sequence}), but its sequence numbers are no longer "
                    "known: the cluster has since applied many later puts of this producer id"
                ) from None
            lane.next_sequence = exc.last_sequence + 1
            return await self._call(what, attempt)

    async def put(self, stream: str, data: bytes, key: bytes | None = None) -> int:
        """Append one record; returns its sequence number. Applied once across retries.

        Concurrent calls coalesce into shared messages unless the client was
        made with `coalesce=False`.
        """
        if self._coalescer is not None:
            return await self._coalescer.put(stream, data, key)
        lane = self._take_lane()

        async def call(endpoint: str, timeout: float, producer_sequence: int) -> int:
            request = pb.PutRecordRequest(
                stream=stream,
                data=data,
                key=key or b"",
                has_key=key is not None,
                producer_id=lane.producer_id,
                producer_sequence=producer_sequence,
            )
            if self.transport == "native":
                deadline = asyncio.get_running_loop().time() + timeout
                sequence = await self._put_native(endpoint, request, timeout)
                if sequence is not None:
                    return sequence
                timeout = max(0.0, deadline - asyncio.get_running_loop().time())
            response = await self._streams(endpoint).PutRecord(request, timeout=timeout)
            self.puts_by_transport["grpc"] += 1
            return response.sequence

        try:
            return await self._put_once(f"put to {stream!r}", lane, call)
        finally:
            self._return_lane(lane)

    async def _put_native(
        self, endpoint: str, request: pb.PutRecordRequest, timeout: float
    ) -> int | None:
        """One attempt over `endpoint`'s native port; None when it is to go over gRPC.

        The whole attempt (finding the port, connecting, the put) takes at
        most `timeout`, and fails as a gRPC call would.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            async with asyncio.timeout(timeout):
                native = await self._native_of(endpoint)
        except TimeoutError:
            # Nothing was sent: no "maybe applied" here.
            raise rpc_error(
                grpc.StatusCode.UNAVAILABLE, f"no native connection to {endpoint} in time"
            ) from None
        if native is None:
            return None
        try:
            response = await native.put_record(request, deadline - loop.time())
        except grpc.aio.AioRpcError as exc:
            if exc.code() is grpc.StatusCode.UNAVAILABLE:
                # Not the leader (any more), or the connection ended: a new one next time.
                self._drop_native(endpoint, native)
            raise
        self.puts_by_transport["native"] += 1
        return response.sequence

    def _drop_native(self, endpoint: str, connection: NativeConnection | None = None) -> None:
        """Close `endpoint`'s connection (only if it is still `connection`, when given)."""
        current = self._native.get(endpoint)
        if current is not None and (connection is None or current is connection):
            del self._native[endpoint]
            current.close()

    async def _native_of(self, endpoint: str) -> NativeConnection | None:
        """The open native connection to `endpoint`'s node, or None when it is to be
        called over gRPC (it serves no native port, it could not be reached, or
        its native connections are all taken).

        Concurrent callers share one connection attempt, bounded by its own
        timeouts (each caller bounds its wait).
        """
        connection = self._native.get(endpoint)
        if connection is not None and not connection.closed:
            return connection
        if asyncio.get_running_loop().time() < self._native_after.get(endpoint, 0.0):
            return None
        task = self._native_connecting.get(endpoint)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._connect_native(endpoint))
            self._native_connecting[endpoint] = task
            task.add_done_callback(lambda done: self._connected(endpoint, done))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self._closed and (current is None or not current.cancelling()):
                raise rpc_error(grpc.StatusCode.CANCELLED, "the client was closed") from None
            raise

    def _connected(self, endpoint: str, task: asyncio.Task[NativeConnection | None]) -> None:
        self._native_connecting.pop(endpoint, None)
        if not task.cancelled():
            task.exception()  # seen by whoever awaited it; retrieved here for those gone

    async def _connect_native(self, endpoint: str) -> NativeConnection | None:
        self._drop_native(endpoint)
        loop = asyncio.get_running_loop()
        address = self._native_addresses.get(endpoint)
        if address is None:
            status = await self._cluster(endpoint).Status(
                pb.StatusRequest(), timeout=STATUS_TIMEOUT_S
            )
            address = self._native_addresses[endpoint] = status.native_address
        if not address:
            return None
        try:
            connection = await connect_native(address, self._native_tls, CONNECT_TIMEOUT_S)
        except HandshakeFailed as exc:
            raise rpc_error(
                grpc.StatusCode.UNAVAILABLE, f"failed to connect to {address}: {exc}"
            ) from None
        except grpc.aio.AioRpcError as exc:
            if exc.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise  # the node's refusal (the client's role): as gRPC would answer
            # Its native connections are all taken: its gRPC port serves meanwhile.
            self._native_after[endpoint] = loop.time() + NATIVE_RETRY_S
            return None
        except (OSError, TimeoutError):
            # The gRPC port may still serve (a firewall, a node restarted with
            # another native port): this attempt goes there, the port is asked again.
            self._native_addresses.pop(endpoint, None)
            self._native_after[endpoint] = loop.time() + NATIVE_RETRY_S
            return None
        if self._closed:
            connection.close()
            raise rpc_error(grpc.StatusCode.CANCELLED, "the client was closed")
        self._native[endpoint] = connection
        return connection

    async def put_records(
        self, stream: str, records: Sequence[tuple[bytes, bytes | None]]
    ) -> list[int]:
        """Append a batch as one entry (all or nothing); returns the sequences in order."""
        if not records:
            return []
        lane = self._take_lane()
        batch = [
            cmd_pb.Record(data=data, key=key or b"", has_key=key is not None)
            for data, key in records
        ]

        async def call(endpoint: str, timeout: float, producer_sequence: int) -> list[int]:
            request = pb.PutRecordsRequest(
                stream=stream,
                records=batch,
                producer_id=lane.producer_id,
                producer_sequence=producer_sequence,
            )
            response = await self._streams(endpoint).PutRecords(request, timeout=timeout)
            return list(response.sequences)

        try:
            sequences = await self._put_once(
                f"put {len(records)} records to {stream!r}", lane, call
            )
        finally:
            self._return_lane(lane)
        if len(sequences) != len(records):
            raise RailyardError(
                f"put to {stream!r}: the cluster acknowledged {len(sequences)} of "
                f"{len(records)} records"
            )
        return sequences

    # ------------------------------------------------------------ reads

    async def get_iterator_index(
        self,
        stream: str,
        position: str,
        sequence: int = 0,
        timestamp_ms: int = 0,
        *,
        stale: bool = False,
    ) -> int:
        """The sequence to start reading at for `position` (a START_POSITIONS name).

        With `stale`, any node answers from its own state, leader or not.
        """
        try:
            start = START_POSITIONS[position.upper()]
        except KeyError:
            raise InvalidArgument(
                f"position: expected one of {', '.join(START_POSITIONS)} (got {position!r})"
            ) from None
        request = pb.GetIteratorIndexRequest(
            stream=stream,
            position=start,
            sequence=sequence,
            timestamp_ms=timestamp_ms,
            stale=stale,
        )

        async def call(endpoint: str, timeout: float) -> int:
            response = await self._streams(endpoint).GetIteratorIndex(request, timeout=timeout)
            return response.sequence

        return await self._call(f"position in {stream!r}", call)

    async def get_records(
        self,
        stream: str,
        from_sequence: int,
        *,
        limit: int = 1000,
        max_bytes: int = 0,
        stale: bool = False,
    ) -> pb.GetRecordsResponse:
        request = pb.GetRecordsRequest(
            stream=stream,
            from_sequence=from_sequence,
            limit=limit,
            max_bytes=max_bytes,
            stale=stale,
        )

        async def call(endpoint: str, timeout: float) -> pb.GetRecordsResponse:
            response: pb.GetRecordsResponse = await self._streams(endpoint).GetRecords(
                request, timeout=timeout
            )
            return response

        return await self._call(f"read {stream!r}", call)

    # ------------------------------------------------------------ cluster

    async def status(self, endpoint: str) -> pb.NodeStatus:
        """One node's own view; raises Unavailable when it does not answer quickly."""
        timeout = min(self.timeout_s, STATUS_TIMEOUT_S)
        try:
            status: pb.NodeStatus = await self._cluster(endpoint).Status(
                pb.StatusRequest(), timeout=timeout
            )
        except grpc.aio.AioRpcError as e:
            error = error_from_rpc(e, endpoint)
            if isinstance(error, DeadlineExceeded):
                raise Unavailable(f"{endpoint}: no answer within {timeout:g}s") from None
            raise error from None
        return status

    async def cluster_status(self) -> list[tuple[str, pb.NodeStatus | None]]:
        """Every endpoint's status, in endpoint order; None for a node that did not answer.

        The endpoints include every member of the committed configuration
        (`discover_members`), not only those the client was given.
        """
        await self.discover_members()

        async def probe(endpoint: str) -> pb.NodeStatus | None:
            try:
                return await self.status(endpoint)
            except RailyardError:
                return None

        statuses = await asyncio.gather(*(probe(e) for e in self.endpoints))
        return list(zip(self.endpoints, statuses, strict=True))

    async def watch_status(
        self, endpoint: str, interval_ms: int = 250
    ) -> AsyncIterator[pb.NodeStatus]:
        """The node's status every `interval_ms`, until the caller stops iterating.

        NB: the stream has no overall deadline (it is meant to run for as long
        as someone watches); a node that goes away ends it with Unavailable.
        """
        call = self._cluster(endpoint).WatchStatus(pb.WatchStatusRequest(interval_ms=interval_ms))
        try:
            async for status in call:
                yield status
        except grpc.aio.AioRpcError as e:
            raise error_from_rpc(e, endpoint) from None
        finally:
            call.cancel()

    async def read_log(self, endpoint: str, count: int = 50) -> list[pb.LogEntryInfo]:
        """The most recent `count` Raft log entries of one node."""
        try:
            response = await self._cluster(endpoint).ReadLog(
                pb.ReadLogRequest(count=count), timeout=min(self.timeout_s, STATUS_TIMEOUT_S)
            )
        except grpc.aio.AioRpcError as e:
            raise error_from_rpc(e, endpoint) from None
        return list(response.entries)

    async def transfer_leadership(self, to: str | None = None) -> pb.TransferLeadershipResponse:
        """Move leadership to node `to` (an id), or to the most up-to-date other node."""
        request = pb.TransferLeadershipRequest(to=to or "")

        async def call(endpoint: str, timeout: float) -> pb.TransferLeadershipResponse:
            response: pb.TransferLeadershipResponse = await self._cluster(
                endpoint
            ).TransferLeadership(request, timeout=timeout)
            return response

        # One attempt may take the whole deadline: the node answers once the
        # election it started is over, and a retry elsewhere would find the
        # new leader and report no move.
        response = await self._call("transfer leadership", call, attempt_timeout_s=self.timeout_s)
        # The leader moved: forget the old one rather than be bounced once.
        self._leader_address = None
        return response

    async def save_snapshot(self, sink: BackupSink, chunk_bytes: int = 0) -> pb.BackupHeader:
        """Take a backup of the streams state through the leader into `sink`; its header.

        One attempt may take the whole deadline (`timeout_s`): a large
        state takes a while to copy and send.
        """
        request = pb.SaveSnapshotRequest(chunk_bytes=chunk_bytes)

        async def call(endpoint: str, timeout: float) -> pb.BackupHeader:
            header: pb.BackupHeader | None = None
            async for part in self._cluster(endpoint).SaveSnapshot(request, timeout=timeout):
                if part.HasField("header"):
                    header = part.header
                    sink.start(header)
                elif header is None:
                    raise RailyardError(f"{endpoint}: backup data arrived before its header")
                else:
                    sink.write(part.chunk)
            if header is None:
                raise RailyardError(f"{endpoint}: the backup ended before its header")
            return header

        return await self._call("snapshot save", call, attempt_timeout_s=self.timeout_s)

    # ------------------------------------------------------------ membership

    async def discover_members(self) -> None:
        """Add to the endpoints every member the cluster's committed configuration names.

        Asks each known endpoint's Status (the reader role suffices) until one
        answers: a client given an old cluster file, or one live node, then
        knows the nodes added since.
        """
        for endpoint in list(self.endpoints):
            try:
                status = await self.status(endpoint)
            except RailyardError:
                continue
            for member in status.members:
                if member.address and member.address not in self.endpoints:
                    self.endpoints.append(member.address)
            return

    async def list_members(self) -> pb.ListMembersResponse:
        """The committed configuration as the leader sees it (progress included)."""

        async def call(endpoint: str, timeout: float) -> pb.ListMembersResponse:
            response: pb.ListMembersResponse = await self._cluster(endpoint).ListMembers(
                pb.ListMembersRequest(), timeout=timeout
            )
            return response

        return await self._call("list members", call)

    async def add_member(
        self, node_id: str, address: str, peer_address: str = ""
    ) -> pb.MemberChangeResponse:
        """Add `node_id` as a learner (no change if it is already there at these addresses)."""
        request = pb.AddMemberRequest(id=node_id, address=address, peer_address=peer_address)

        async def call(endpoint: str, timeout: float) -> pb.MemberChangeResponse:
            response: pb.MemberChangeResponse = await self._cluster(endpoint).AddMember(
                request, timeout=timeout
            )
            return response

        return await self._call(f"add member {node_id}", call, attempt_timeout_s=self.timeout_s)

    async def promote_member(self, node_id: str) -> pb.MemberChangeResponse:
        """Make learner `node_id` a voter; refused until it has caught up."""
        request = pb.PromoteMemberRequest(id=node_id)

        async def call(endpoint: str, timeout: float) -> pb.MemberChangeResponse:
            response: pb.MemberChangeResponse = await self._cluster(endpoint).PromoteMember(
                request, timeout=timeout
            )
            return response

        return await self._call(f"promote member {node_id}", call, attempt_timeout_s=self.timeout_s)

    async def remove_member(self, node_id: str, force: bool = False) -> pb.MemberChangeResponse:
        """Remove `node_id` (no change if it is not a member)."""
        request = pb.RemoveMemberRequest(id=node_id, force=force)

        async def call(endpoint: str, timeout: float) -> pb.MemberChangeResponse:
            response: pb.MemberChangeResponse = await self._cluster(endpoint).RemoveMember(
                request, timeout=timeout
            )
            return response

        return await self._call(f"remove member {node_id}", call, attempt_timeout_s=self.timeout_s)


class _MaybeApplied:
    """Remembers whether an attempt of a write failed in a way that may hide its success."""

    def __init__(self) -> None:
        self.maybe = False

    async def watch(self, attempt: Awaitable[R]) -> R:
        try:
            return await attempt
        except grpc.aio.AioRpcError as e:
            code = e.code()
            if code == grpc.StatusCode.DEADLINE_EXCEEDED or maybe_applied(e):
                self.maybe = True
            raise


def _handshake_failure(error: grpc.aio.AioRpcError) -> str | None:
    """How connecting failed in the TLS handshake, or None when it did not.

    A node that refuses the client's certificate (or a plaintext hello)
    closes the socket during the handshake; a client that does not trust
    the node's certificate says so itself.
    """
    details = (error.details() or "").lower()
    if "failed to connect" not in details:
        return None
    if "handshake failed" in details:
        return SERVER_NOT_TRUSTED
    if "socket closed" in details:
        return CLIENT_REFUSED
    return None


def _is_refused(error: grpc.aio.AioRpcError) -> bool:
    details = (error.details() or "").lower()
    return "connection refused" in details or "failed to connect" in details


def _short(error: Unavailable | None) -> str:
    if error is None:
        return "no answer"
    text = " ".join(str(error).split())
    if len(text) <= DETAIL_CHARS:
        return text
    # Cut between words: a detail cut mid-word reads as a different word.
    return text[:DETAIL_CHARS].rsplit(" ", 1)[0] + " ..."
