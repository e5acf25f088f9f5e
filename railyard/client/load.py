"""Load generation: many clients putting or reading as fast as a cluster takes them.

`load_put` runs `clients` clients (each with its own channels), each with
`in_flight` requests outstanding. Mode "unary" sends PutRecord per record
with `batch` 1, else PutRecords of `batch` records; "stream" runs one
streaming producer per client (PutRecordStream) with `in_flight` batches
unacknowledged; "auto" streams when `batch` > 1. With `batch` 1 in unary
mode the `in_flight` puts of a client are concurrent callers of one
`RailyardClient`: they coalesce into shared messages (`client/coalesce.py`)
unless `coalesce=False`, which sends each as its own PutRecord call. The
result's "path" names which: "coalesced", "per-call" or "stream"; a per-call
run's "transport" says whether its puts went over gRPC or a node's native
put port (`transport="native"`; "grpc+native" when some nodes had none). Every put
is an exactly-once put (producer id and sequence), as a real producer's would be.
`load_get` runs `clients` readers, each reading the stream from its oldest
record in GetRecords pages as fast as it can.

A run is bounded by a `Budget` (a duration or a number of records). The
result is one dict of figures: rates use MB = 10^6 bytes; latencies are per
request, in ms. `railyard bench` parses flags, calls these and renders.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from railyard.client.client import TRANSPORTS, RailyardClient
from railyard.client.errors import AlreadyExists, RailyardError
from railyard.client.producer import StreamProducer
from railyard.client.tls import ClientTls
from railyard.proto import railyard_pb2 as pb

# After a failed request a worker pauses this long, so a cluster that is down
# yields a count of errors rather than a busy loop.
ERROR_PAUSE_S = 0.05
BYTES_PER_MB = 1_000_000
# How `load_put` sends: see the module docstring.
MODES = ("auto", "unary", "stream")


class EmptyStream(Exception):
    """`load_get` was asked to read a stream that holds no record."""


@dataclass
class Stats:
    """What the workers of one run measured."""

    records: int = 0
    requests: int = 0
    bytes: int = 0
    errors: int = 0
    last_error: str = ""
    latencies_s: list[float] = field(default_factory=list)

    def ok(self, records: int, nbytes: int, latency_s: float) -> None:
        self.records += records
        self.requests += 1
        self.bytes += nbytes
        self.latencies_s.append(latency_s)

    def failed(self, error: Exception) -> None:
        self.errors += 1
        self.last_error = " ".join(str(error).split())


@dataclass
class Budget:
    """The run's bound: a duration (from `begin()`), or a number of records to hand out."""

    duration_s: float | None
    remaining: int | None
    deadline: float | None = None

    def begin(self) -> None:
        if self.duration_s is not None:
            self.deadline = time.monotonic() + self.duration_s

    def claim(self, want: int) -> int:
        """How many records the next request may carry (0: stop)."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return 0
        if self.remaining is None:
            return want
        n = min(want, self.remaining)
        self.remaining -= n
        return n


def percentile_ms(sorted_s: list[float], q: float) -> float | None:
    if not sorted_s:
        return None
    k = min(len(sorted_s) - 1, max(0, round(q * (len(sorted_s) - 1))))
    return round(sorted_s[k] * 1000, 3)


def summarize(stats: Stats, elapsed_s: float, settings: dict[str, Any]) -> dict[str, Any]:
    lat = sorted(stats.latencies_s)
    elapsed_s = max(elapsed_s, 1e-9)
    return {
        **settings,
        "duration_s": round(elapsed_s, 3),
        "records": stats.records,
        "requests": stats.requests,
        "bytes": stats.bytes,
        "records_per_sec": round(stats.records / elapsed_s, 1),
        "requests_per_sec": round(stats.requests / elapsed_s, 1),
        "mb_per_sec": round(stats.bytes / elapsed_s / BYTES_PER_MB, 3),
        "p50_ms": percentile_ms(lat, 0.50),
        "p90_ms": percentile_ms(lat, 0.90),
        "p99_ms": percentile_ms(lat, 0.99),
        "max_ms": percentile_ms(lat, 1.0),
        "errors": stats.errors,
        "last_error": stats.last_error or None,
    }


Watch = Callable[[str, Callable[[], Awaitable[None]], "Stats", Budget], Awaitable[float]]


async def timed(
    label: str, work: Callable[[], Awaitable[None]], stats: Stats, budget: Budget
) -> float:
    """Run `work()` from the budget's start; returns the elapsed seconds (a quiet `Watch`)."""
    budget.begin()
    started = time.monotonic()
    await work()
    return time.monotonic() - started


def use_stream(mode: str, batch: int) -> bool:
    """Does `mode` with `batch` records per request stream? ValueError names a bad mode."""
    if mode not in MODES:
        raise ValueError(f"expected one of {', '.join(MODES)}")
    return mode == "stream" or (mode == "auto" and batch > 1)


# ------------------------------------------------------------------ put


async def _put_worker(
    client: RailyardClient, stream: str, batch: int, payload: bytes, budget: Budget, stats: Stats
) -> None:
    records = [(payload, None)] * batch
    while (n := budget.claim(batch)) > 0:
        started = time.perf_counter()
        try:
            if batch == 1:
                await client.put(stream, payload)
            else:
                await client.put_records(stream, records[:n])
        except RailyardError as e:
            stats.failed(e)
            await asyncio.sleep(ERROR_PAUSE_S)
            continue
        stats.ok(n, n * len(payload), time.perf_counter() - started)


async def _stream_worker(
    producer: StreamProducer, batch: int, payload: bytes, budget: Budget, stats: Stats
) -> None:
    """Keep the producer's window full until the budget is spent, then wait for the acks."""
    records = [(payload, None)] * batch

    def acked(n: int, started: float) -> Callable[[asyncio.Future[list[int]]], None]:
        def done(ack: asyncio.Future[list[int]]) -> None:
            if ack.cancelled():
                return
            error = ack.exception()
            if error is None:
                stats.ok(n, n * len(payload), time.perf_counter() - started)
            elif isinstance(error, Exception):
                stats.failed(error)

        return done

    while (n := budget.claim(batch)) > 0:
        started = time.perf_counter()
        try:
            ack = await producer.send(records[:n])
        except RailyardError as e:
            stats.failed(e)
            return
        ack.add_done_callback(acked(n, started))
    with contextlib.suppress(RailyardError):
        await producer.flush()


async def leader_first(endpoints: list[str], tls: ClientTls | None = None) -> list[str]:
    """The endpoints with the current leader's first, so puts go straight to it.

    A follower forwards writes, which costs a second gRPC hop per request;
    a benchmark measures the cluster, not that hop (etcd's clients, too,
    are pointed at the leader by the peers' benchmark).
    """
    async with RailyardClient(endpoints, tls=tls) as probe:
        statuses = await probe.cluster_status()
    leaders = [e for e, st in statuses if st is not None and st.role == pb.ROLE_LEADER]
    return leaders[:1] + [e for e in endpoints if e not in leaders[:1]]


async def ensure_stream(client: RailyardClient, stream: str) -> None:
    with contextlib.suppress(AlreadyExists):
        await client.create_stream(stream)


async def load_put(
    endpoints: list[str],
    *,
    stream: str,
    clients: int,
    in_flight: int,
    size: int,
    batch: int,
    budget: Budget,
    mode: str = "auto",
    coalesce: bool = True,
    watch: Watch | None = None,
    tls: ClientTls | None = None,
    transport: str = "grpc",
) -> dict[str, Any]:
    """Put records until `budget` is spent; the run's figures (see `summarize`).

    `clients` clients each keep `in_flight` puts of `batch` records of `size`
    bytes outstanding (`mode` as `use_stream` reads it); `watch` runs the
    work (e.g. under a progress bar) and returns the elapsed seconds.
    """
    stats = Stats()
    payload = os.urandom(size)
    streaming = use_stream(mode, batch)
    endpoints = await leader_first(endpoints, tls)
    opened = [
        RailyardClient(endpoints, tls=tls, coalesce=coalesce, transport=transport)
        for _ in range(clients)
    ]
    producers = [
        StreamProducer(endpoints, stream, window=in_flight, tls=tls)
        for _ in range(clients if streaming else 0)
    ]
    try:
        await ensure_stream(opened[0], stream)

        async def work() -> None:
            async with asyncio.TaskGroup() as tg:
                for producer in producers:
                    tg.create_task(_stream_worker(producer, batch, payload, budget, stats))
                for client in opened if not streaming else []:
                    for _ in range(in_flight):
                        tg.create_task(_put_worker(client, stream, batch, payload, budget, stats))

        elapsed = await (watch or timed)("put", work, stats, budget)
    finally:
        for producer in producers:
            await producer.close()
        for client in opened:
            await client.close()
    settings = {
        "operation": "put",
        "stream": stream,
        "clients": clients,
        "in_flight": in_flight,
        "size": size,
        "batch": batch,
        "mode": "stream" if streaming else "unary",
        "path": put_path(streaming, batch, coalesce),
    }
    if settings["path"] == "per-call" and batch == 1:
        # What carried the puts: a node without a native port is called over gRPC.
        used = {t: sum(c.puts_by_transport[t] for c in opened) for t in TRANSPORTS}
        settings["transport"] = "+".join(t for t in TRANSPORTS if used[t]) or transport
    coalescers = [c.coalescer for c in opened if c.coalescer is not None]
    if settings["path"] == "coalesced" and coalescers:
        messages = sum(c.stats.messages_acked for c in coalescers)
        records = sum(c.stats.records_acked for c in coalescers)
        settings["records_per_message"] = round(records / messages, 2) if messages else 0.0
    return summarize(stats, elapsed, settings)


def put_path(streaming: bool, batch: int, coalesce: bool) -> str:
    """How a load's puts travel: "stream", "coalesced" or "per-call"."""
    if streaming:
        return "stream"
    return "coalesced" if batch == 1 and coalesce else "per-call"


# ------------------------------------------------------------------ get


async def _get_worker(
    client: RailyardClient,
    stream: str,
    page: int,
    stale: bool,
    budget: Budget,
    stats: Stats,
    start: Callable[[], Awaitable[int]],
) -> None:
    """Read from the oldest record to the end, again and again, until the budget is spent."""
    position = await start()
    while (n := budget.claim(page)) > 0:
        started = time.perf_counter()
        try:
            response = await client.get_records(stream, position, limit=n, stale=stale)
        except RailyardError as e:
            stats.failed(e)
            await asyncio.sleep(ERROR_PAUSE_S)
            continue
        got = len(response.records)
        stats.ok(got, sum(len(r.data) for r in response.records), time.perf_counter() - started)
        if budget.remaining is not None:
            budget.remaining += n - got  # hand back what this page did not carry
        position = response.next_sequence
        if got == 0 or response.behind_latest == 0:
            position = await start()


async def load_get(
    endpoints: list[str],
    *,
    stream: str,
    clients: int,
    page: int,
    stale: bool,
    budget: Budget,
    watch: Watch | None = None,
    tls: ClientTls | None = None,
) -> dict[str, Any]:
    """Read `stream` from its oldest record, `clients` readers in `page`-record requests.

    Without a bound in `budget` each reader reads the stream once. Raises
    NotFound for a missing stream, EmptyStream for an empty one.
    """
    stats = Stats()
    opened = [RailyardClient(endpoints, tls=tls) for _ in range(clients)]
    try:
        info = await opened[0].describe_stream(stream)
        if info.record_count == 0:
            raise EmptyStream(f"stream {stream!r} is empty")
        if budget.remaining is None and budget.duration_s is None:
            budget.remaining = info.record_count * clients

        async def work() -> None:
            async with asyncio.TaskGroup() as tg:
                for client in opened:

                    async def start(c: RailyardClient = client) -> int:
                        return await c.get_iterator_index(stream, "TRIM_HORIZON")

                    tg.create_task(_get_worker(client, stream, page, stale, budget, stats, start))

        elapsed = await (watch or timed)("get", work, stats, budget)
    finally:
        for client in opened:
            await client.close()
    settings = {"operation": "get", "stream": stream, "clients": clients, "page": page}
    return summarize(stats, elapsed, {**settings, "stale": stale})
