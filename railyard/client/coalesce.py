"""Coalescing puts: concurrent `RailyardClient.put` calls share one streaming producer.

Each `put` queues its record and waits for its own acknowledgement. One
PutRecordStream call to the leader carries the queued records: while
`in_flight` messages are unacknowledged, new records wait in the queue, and
whatever queued up meanwhile goes out together as the next message (one
PutRecordsRequest per stream, up to the cluster's batch limits) -- Kafka's
`linger.ms=0` behaviour. Under load one message, one Raft entry and one
state machine transaction serve many callers; at one caller in flight
nothing waits for company.

Invariants:
- Exactly-once (Raft dissertation §6.3): every message carries the
  coalescer's producer id and the next producer sequence, fixed before its
  first attempt. When the call breaks (leader change, lost connection, no
  acknowledgement within the client's attempt timeout) the coalescer
  reconnects -- to the leader named in the answer if any -- and resends
  every unacknowledged message with its original sequence; the cluster
  applies each once and answers a repeat with the original sequences (it
  remembers a producer's last 64 results; `in_flight` stays below that).
- Order: records of one stream are appended in the order `put` was called.
  A caller that awaits each put sees its records in order whatever happens.
  The one exception concerns puts issued without awaiting: a message the
  cluster refused as a whole (INVALID_ARGUMENT) is retried record by
  record, after the messages that were already in flight behind it.
- A failure fails exactly the records it concerns: a refused message that
  holds more than one record is split and its records are sent one per
  message, so a bad record fails alone; other refusals (the stream does
  not exist, the disk is full) concern the message's stream and fail its
  records. When several messages were outstanding as the call failed, the
  unacknowledged ones are resent one at a time until the refused one is
  known (repeats of applied ones are answered from the cluster's memory).
- Bounded: at most `max_queued` records are queued or unacknowledged; a
  `put` beyond that waits for room (backpressure, not unbounded memory).
- A put is not withdrawn when its caller is cancelled: once queued, the
  record is sent and may be applied.
- No progress for the client's `timeout_s` (or every node refusing
  connections for `REFUSED_GIVE_UP_S`) fails what is queued and in flight:
  `DeadlineExceeded` for a record that went out (it may have been applied),
  `Unavailable` for one that never did.

Talks to nodes over gRPC only, like `RailyardClient`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import grpc

from railyard.client.errors import (
    AlreadyApplied,
    DeadlineExceeded,
    NoQuorum,
    RailyardError,
    Unavailable,
    error_from_rpc,
)
from railyard.proto import commands_pb2 as cmd_pb
from railyard.proto import railyard_pb2 as pb
from railyard.proto import railyard_pb2_grpc as pb_grpc

__all__ = [
    "DEFAULT_IN_FLIGHT",
    "DEFAULT_MAX_QUEUED",
    "MAX_IN_FLIGHT",
    "Coalescer",
    "CoalescerStats",
]

# Records queued or unacknowledged per client before `put` waits: enough for
# thousands of concurrent callers, little memory at 100-byte records.
DEFAULT_MAX_QUEUED = 10_000
# Messages unacknowledged at a time. One keeps each message as full as the
# round trip allows; the second lets the next message be proposed while the
# first commits, so the leader's rounds never wait for the client.
DEFAULT_IN_FLIGHT = 2
# The cluster remembers a producer's last 64 results; a resend overtaken by
# fewer later messages than that still gets its sequences back.
MAX_IN_FLIGHT = 64
# A message stays within the cluster's default batch limits (500 records,
# 5 MiB) with room for framing; a single larger record goes alone and the
# cluster judges it.
MESSAGE_RECORDS = 500
MESSAGE_BYTES = 1 << 20
# A call lives at most this long (every call has a deadline); the coalescer
# then reconnects and resends what is unacknowledged, which is safe.
CALL_DEADLINE_S = 600.0
# How often the watchdog looks at the oldest unacknowledged message.
WATCHDOG_INTERVAL_S = 0.1
# Pause before reconnecting after a failure, doubling up to the cap; short,
# because the usual cause is an election and every pause adds to failover.
BACKOFF_INITIAL_S = 0.02
BACKOFF_MAX_S = 0.2
# Every node refusing connections for this long means no cluster is running
# there: fail fast, as `RailyardClient` does.
REFUSED_GIVE_UP_S = 2.0

# Stalled this long, the coalescer asks every node whether a majority is
# there at all, as a single call does after failing this long.
QUORUM_CHECK_AFTER_S = 3.0
# What `read()` returns at the end of a call (missing from grpc's type stubs).
_EOF: Any = cast(Any, grpc.aio).EOF


class Host(Protocol):
    """What the coalescer uses of its `RailyardClient`: endpoints, channels, leader tracking."""

    endpoints: list[str]
    timeout_s: float

    def _channel(self, endpoint: str) -> grpc.aio.Channel: ...

    def _pick_endpoint(self) -> str: ...

    def _note_failure(self, endpoint: str, error: grpc.aio.AioRpcError | None) -> bool: ...

    def _unavailable(
        self,
        what: str,
        last: Unavailable | None,
        refused: set[str],
        turned_away: dict[str, str] | None = None,
    ) -> Unavailable: ...

    def _handshake_of(self, error: grpc.aio.AioRpcError) -> str | None: ...

    async def _raise_if_no_quorum(self) -> None: ...


@dataclass(slots=True, eq=False)
class _Put:
    stream: str
    record: cmd_pb.Record
    done: asyncio.Future[int]
    # Sent in a message of its own: its earlier message was refused as a whole.
    solo: bool = False


@dataclass(slots=True, eq=False)
class _Message:
    request: pb.PutRecordsRequest
    puts: list[_Put]
    sent_at: float = 0.0
    # Written to a call at least once: the cluster may have applied it.
    went_out: bool = False


@dataclass
class CoalescerStats:
    """What the coalescer did, for benchmarks and status lines."""

    messages_acked: int = 0
    records_acked: int = 0
    reconnects: int = 0
    splits: int = 0
    last_error: str = ""

    @property
    def records_per_message(self) -> float:
        return self.records_acked / self.messages_acked if self.messages_acked else 0.0


class _CallBroken(Exception):
    """The current call cannot go on; reconnect (carries what the server said, if anything)."""

    def __init__(self, error: grpc.aio.AioRpcError | None, reason: str) -> None:
        super().__init__(reason)
        self.error = error


class Coalescer:
    """One producer id streaming every caller's records; see the module docstring."""

    def __init__(
        self,
        host: Host,
        producer_id: str,
        *,
        max_queued: int = DEFAULT_MAX_QUEUED,
        in_flight: int = DEFAULT_IN_FLIGHT,
        attempt_timeout_s: float,
    ) -> None:
        if max_queued < 1:
            raise ValueError(f"max_queued must be at least 1 (got {max_queued})")
        if not 1 <= in_flight <= MAX_IN_FLIGHT:
            raise ValueError(f"in_flight must be 1 to {MAX_IN_FLIGHT} (got {in_flight})")
        self.producer_id = producer_id
        self.max_queued = max_queued
        self.in_flight = in_flight
        self.stats = CoalescerStats()
        self._host = host
        self._attempt_timeout_s = attempt_timeout_s
        self._room = asyncio.Semaphore(max_queued)
        self._held = 0  # records holding room
        self._queue: deque[_Put] = deque()
        self._unacked: deque[_Message] = deque()
        self._sent = 0  # how many of `_unacked` went out on the current call
        # Unacknowledged messages to resend one at a time, to learn which one
        # a refusal concerned.
        self._probing = 0
        self._next_sequence = 1
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._progress_at = time.monotonic()
        self._closed = False
        self._rng = random.Random()

    @property
    def queued(self) -> int:
        """Records queued or unacknowledged."""
        return self._held

    async def put(self, stream: str, data: bytes, key: bytes | None) -> int:
        """Queue one record (waiting for room) and return its sequence once acknowledged."""
        if self._closed:
            raise Unavailable(f"put to {stream!r}: the client is closed")
        await self._room.acquire()
        self._held += 1
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        done.add_done_callback(self._release)
        if not self._queue and not self._unacked:
            self._progress_at = time.monotonic()
        record = cmd_pb.Record(data=data, key=key or b"", has_key=key is not None)
        self._queue.append(_Put(stream, record, done))
        self._wake.set()
        if self._runner is None or self._runner.done():
            self._runner = asyncio.ensure_future(self._run())
            self._runner.add_done_callback(self._stopped)
        # A cancelled caller does not withdraw a record that may already be on its way.
        return await asyncio.shield(done)

    async def close(self) -> None:
        """Stop; what is queued or unacknowledged fails with Unavailable."""
        self._closed = True
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._runner
            self._runner = None
        self._fail_all(
            lambda stream, _went_out: Unavailable(
                f"put to {stream!r}: the client was closed before the acknowledgement"
            )
        )

    def _release(self, _done: asyncio.Future[int]) -> None:
        self._held -= 1
        self._room.release()

    def _stopped(self, runner: asyncio.Task[None]) -> None:
        if runner.cancelled() or runner.exception() is None:
            return
        stop = RailyardError(f"the put loop stopped: {runner.exception()!r}")
        self._fail_all(lambda _stream, _went_out: stop)

    # ------------------------------------------------------------ connection loop

    async def _run(self) -> None:
        backoff_s = BACKOFF_INITIAL_S
        refused: set[str] = set()
        turned_away: dict[str, str] = {}  # endpoint -> how its TLS handshake failed
        quorum_checked = False
        last: Unavailable | None = None
        while True:
            if not self._queue and not self._unacked:
                self._wake.clear()
                await self._wake.wait()
                continue
            endpoint = self._host._pick_endpoint()
            try:
                await self._serve_call(endpoint)
            except _CallBroken as broken:
                self.stats.last_error = str(broken)
                error = broken.error
                if error is not None and not _retryable(error):
                    refused.clear()
                    self._refused(error, endpoint)
                    continue
                self.stats.reconnects += 1
                follow = self._host._note_failure(endpoint, error)
                if error is not None:
                    answer = error_from_rpc(error, endpoint)
                    last = answer if isinstance(answer, Unavailable) else last
                    handshake = self._host._handshake_of(error)
                    if handshake is not None:
                        turned_away[endpoint] = handshake
                        refused.add(endpoint)
                    elif _is_refused(error):
                        turned_away.pop(endpoint, None)
                        refused.add(endpoint)
                    else:
                        turned_away.pop(endpoint, None)
                        refused.discard(endpoint)
                stalled_s = time.monotonic() - self._progress_at
                if refused >= set(self._host.endpoints) and stalled_s >= REFUSED_GIVE_UP_S:
                    self._give_up(last, refused, turned_away)
                    refused.clear()
                elif stalled_s > self._host.timeout_s:
                    self._give_up(last, refused, turned_away)
                elif not quorum_checked and stalled_s >= QUORUM_CHECK_AFTER_S:
                    quorum_checked = True
                    await self._fail_without_quorum()
                if not follow:
                    await asyncio.sleep(backoff_s * (0.5 + self._rng.random()))
                    backoff_s = min(backoff_s * 2, BACKOFF_MAX_S)
                continue
            backoff_s = BACKOFF_INITIAL_S
            quorum_checked = False

    async def _serve_call(self, endpoint: str) -> None:
        """Open a call to `endpoint`, resend what is unacknowledged, stream until it breaks."""
        stub = pb_grpc.StreamsStub(self._host._channel(endpoint))
        call = cast(Any, stub).PutRecordStream(timeout=CALL_DEADLINE_S)
        self._sent = 0
        tasks = [
            asyncio.ensure_future(self._write(call)),
            asyncio.ensure_future(self._read(call, endpoint)),
            asyncio.ensure_future(self._watchdog()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            call.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _write(self, call: Any) -> None:
        while True:
            window = 1 if self._probing else self.in_flight
            if self._sent < len(self._unacked) and self._sent < window:
                message = self._unacked[self._sent]
                message.sent_at = time.monotonic()
                self._sent += 1
                try:
                    await call.write(message.request)
                except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                    # The call ended; the reader reports its status once it
                    # has taken every acknowledgement that came before it.
                    await asyncio.Future()
                message.went_out = True
            elif self._queue and len(self._unacked) < window:
                self._unacked.append(self._next_message())
            else:
                self._wake.clear()
                await self._wake.wait()

    def _next_message(self) -> _Message:
        """The oldest queued record's stream: its queued records, up to the message limits."""
        first = self._queue.popleft()
        puts = [first]
        if not first.solo:
            size = len(first.record.data) + len(first.record.key)
            others: list[_Put] = []
            while self._queue and len(puts) < MESSAGE_RECORDS:
                put = self._queue[0]
                if put.solo:
                    break  # it and what follows go after it, in order
                if put.stream != first.stream:
                    others.append(self._queue.popleft())
                    continue
                size += len(put.record.data) + len(put.record.key)
                if size > MESSAGE_BYTES:
                    break
                puts.append(self._queue.popleft())
            self._queue.extendleft(reversed(others))
        request = pb.PutRecordsRequest(
            stream=first.stream,
            records=[p.record for p in puts],
            producer_id=self.producer_id,
            producer_sequence=self._next_sequence,
        )
        self._next_sequence += 1
        return _Message(request, puts)

    async def _read(self, call: Any, endpoint: str) -> None:
        while True:
            try:
                response = await call.read()
            except grpc.aio.AioRpcError as e:
                raise _CallBroken(e, f"{endpoint}: {e.code().name}: {e.details()}") from None
            if response is _EOF:
                raise _CallBroken(None, f"{endpoint}: the server ended the call")
            self._acknowledge(response, endpoint)

    def _acknowledge(self, response: pb.PutRecordsResponse, endpoint: str) -> None:
        if not self._sent:
            raise _CallBroken(None, f"{endpoint}: an acknowledgement for a message not sent")
        message = self._unacked[0]
        if response.producer_sequence != message.request.producer_sequence:
            raise _CallBroken(
                None,
                f"{endpoint}: acknowledgement for sequence {response.producer_sequence}, "
                f"expected {message.request.producer_sequence}",
            )
        self._unacked.popleft()
        self._sent -= 1
        self._probing = max(0, self._probing - 1)
        self._progress_at = time.monotonic()
        self.stats.messages_acked += 1
        self.stats.records_acked += len(message.puts)
        self._wake.set()
        sequences = response.sequences
        stream = message.request.stream
        if len(sequences) == len(message.puts):
            for put, sequence in zip(message.puts, sequences, strict=True):
                if not put.done.done():
                    put.done.set_result(sequence)
            return
        if not sequences:
            # Applied so long ago that the cluster forgot the result: another
            # client shares this producer id.
            error: RailyardError = AlreadyApplied(
                f"put to {stream!r}: applied by an earlier attempt (producer "
                f"{self.producer_id!r} sequence {message.request.producer_sequence}), but its "
                "sequence numbers are no longer known: the cluster has since applied many "
                "later puts of this producer id"
            )
        else:
            error = RailyardError(
                f"put to {stream!r}: the cluster acknowledged {len(sequences)} of "
                f"{len(message.puts)} records"
            )
        _fail_puts(message.puts, error)

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(WATCHDOG_INTERVAL_S)
            if self._sent and time.monotonic() - self._unacked[0].sent_at > self._attempt_timeout_s:
                raise _CallBroken(None, f"no acknowledgement within {self._attempt_timeout_s:g}s")

    # ------------------------------------------------------------ failures

    def _refused(self, error: grpc.aio.AioRpcError, endpoint: str) -> None:
        """A non-retryable answer: fail the message it concerns, or find out which that is."""
        refusal = error_from_rpc(error, endpoint)
        if self._sent == 0:
            # Refused before any message: the call itself (e.g. another cluster).
            self._fail_all(lambda _stream, _went_out: refusal)
            return
        if self._sent > 1:
            # Several messages were outstanding (the status may have cut their
            # acknowledgements short): resend them one at a time; the refusal
            # comes again, for one message.
            self._probing = len(self._unacked)
            return
        message = self._unacked.popleft()
        self._probing = 0
        if error.code() == grpc.StatusCode.INVALID_ARGUMENT and len(message.puts) > 1:
            self.stats.splits += 1
            for put in reversed(message.puts):
                put.solo = True
                self._queue.appendleft(put)
            return
        _fail_puts(message.puts, error_from_rpc(error, endpoint))

    async def _fail_without_quorum(self) -> None:
        """Fail what is queued and unacknowledged with `NoQuorum` when a majority is gone."""
        try:
            await self._host._raise_if_no_quorum()
        except NoQuorum as e:
            no_quorum = e
            self._fail_all(lambda _stream, _went_out: no_quorum)

    def _give_up(
        self,
        last: Unavailable | None,
        refused: set[str],
        turned_away: dict[str, str] | None = None,
    ) -> None:
        """No progress in time: fail what is queued and unacknowledged."""

        def error(stream: str, went_out: bool) -> RailyardError:
            what = f"put to {stream!r}"
            if went_out:
                return DeadlineExceeded(
                    f"{what}: no acknowledgement within {self._host.timeout_s:g}s; "
                    "it may or may not have been applied"
                )
            return self._host._unavailable(what, last, refused, turned_away)

        self._fail_all(error)

    def _fail_all(self, error: Callable[[str, bool], RailyardError]) -> None:
        """Fail every queued and unacknowledged record with `error(stream, went_out)`."""
        for message in self._unacked:
            _fail_puts(message.puts, error(message.request.stream, message.went_out))
        for put in self._queue:
            _fail_puts([put], error(put.stream, False))
        self._unacked.clear()
        self._queue.clear()
        self._sent = 0
        self._probing = 0


def _fail_puts(puts: Sequence[_Put], error: RailyardError) -> None:
    for put in puts:
        if not put.done.done():
            put.done.set_exception(error)
            put.done.exception()  # a caller that was cancelled is not warned


def _retryable(error: grpc.aio.AioRpcError) -> bool:
    return error.code() in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    )


def _is_refused(error: grpc.aio.AioRpcError) -> bool:
    details = (error.details() or "").lower()
    return "connection refused" in details or "failed to connect" in details
