"""`railyard bench put|get`: load a cluster and report throughput and latency.

`bench put` runs `--clients` clients (each with its own channels), each
with `--in-flight` requests outstanding. `--mode unary` sends PutRecord per
record with `--batch 1`, else PutRecords of `--batch` records; `--mode
stream` runs one streaming producer per client (PutRecordStream) with
`--in-flight` batches unacknowledged; `auto` (the default) streams when
`--batch` > 1. Every put is an exactly-once put (producer id and sequence),
as a real producer's would be.
`bench get` runs `--clients` consumers, each reading the stream from its
oldest record in GetRecords pages as fast as it can.

A run is bounded by `--duration` or `--count`. A progress bar goes to stderr
while it runs; the result (a table, or one JSON object with `-o json`) to
stdout. Rates use MB = 10^6 bytes; latencies are per request, in ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from railyard.cli.common import (
    CacertOption,
    CertOption,
    ConfigOption,
    EndpointsOption,
    KeyOption,
    Output,
    OutputOption,
    Target,
    TlsFiles,
    examples,
    fail,
    print_json,
    print_table,
    resolve_target,
    run,
)
from railyard.cli.units import parse_duration_ms, parse_size
from railyard.client import AlreadyExists, NotFound, RailyardClient, RailyardError
from railyard.client.producer import MAX_WINDOW, StreamProducer
from railyard.proto import railyard_pb2 as pb

DEFAULT_STREAM = "bench"
DEFAULT_DURATION = "10s"
DEFAULT_SIZE = "100"
# Progress bar refreshes; the bar is for people, so a few times a second is plenty.
PROGRESS_INTERVAL_S = 0.2
# After a failed request a worker pauses this long, so a cluster that is down
# yields a count of errors rather than a busy loop.
ERROR_PAUSE_S = 0.05
# GetRecords page for `bench get` (records); the server also caps bytes.
DEFAULT_GET_PAGE = 1000
BYTES_PER_MB = 1_000_000
# How `bench put` sends: see the module docstring.
MODES = ("auto", "unary", "stream")

bench_app = typer.Typer(
    name="bench",
    help="Benchmark a cluster: put and get throughput and latency.",
    no_args_is_help=True,
)

ClientsOption = Annotated[int, typer.Option("--clients", help="Concurrent clients.", min=1)]
StreamOption = Annotated[str, typer.Option("--stream", help="Stream to use.")]
DurationOption = Annotated[
    str | None,
    typer.Option("--duration", help=f"Run this long (e.g. 10s, 1m). Default: {DEFAULT_DURATION}."),
]


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


def print_result(result: dict[str, Any], output: Output) -> None:
    if output is Output.json:
        print_json(result)
        return
    rows = [
        ["records/s", f"{result['records_per_sec']:,.0f}"],
        ["requests/s", f"{result['requests_per_sec']:,.0f}"],
        ["MB/s", f"{result['mb_per_sec']:.2f}"],
        ["records", f"{result['records']:,}"],
        ["requests", f"{result['requests']:,}"],
        ["duration", f"{result['duration_s']:.2f} s"],
    ]
    for name in ("p50", "p90", "p99", "max"):
        value = result[f"{name}_ms"]
        rows.append([f"latency {name}", "-" if value is None else f"{value:.2f} ms"])
    rows.append(["errors", str(result["errors"])])
    if result.get("last_error"):
        rows.append(["last error", result["last_error"]])
    print_table(["metric", "value"], rows)


def _budget(duration: str | None, count: int | None) -> Budget:
    if duration is not None and count is not None:
        raise typer.BadParameter("choose --duration or --count, not both")
    if count is not None:
        return Budget(None, count)
    try:
        seconds = parse_duration_ms(duration or DEFAULT_DURATION) / 1000
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--duration") from None
    if seconds <= 0:
        raise typer.BadParameter("expected a positive duration", param_hint="--duration")
    return Budget(seconds, None)


async def _with_progress(
    label: str,
    work: Callable[[], Awaitable[None]],
    stats: Stats,
    budget: Budget,
) -> float:
    """Run `work()` under a progress bar on stderr; returns the elapsed seconds."""
    console = Console(stderr=True)
    duration_s = budget.duration_s
    total = duration_s if duration_s is not None else float(budget.remaining or 0)
    budget.begin()
    started = time.monotonic()
    with Progress(
        TextColumn(f"{label}"),
        BarColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        # Not a terminal (piped, CI): no bar, and no stray blank line either.
        disable=not console.is_terminal,
    ) as progress:
        task = progress.add_task(label, total=total, rate="")
        job = asyncio.ensure_future(work())
        try:
            while not job.done():
                await asyncio.wait([job], timeout=PROGRESS_INTERVAL_S)
                elapsed = time.monotonic() - started
                done = elapsed if duration_s is not None else stats.records
                rate = stats.records / elapsed if elapsed > 0 else 0.0
                progress.update(
                    task,
                    completed=min(done, total),
                    rate=f"{rate:,.0f} rec/s  {stats.errors} err",
                )
            await job
        finally:
            job.cancel()
    return time.monotonic() - started


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


def _use_stream(mode: str, batch: int) -> bool:
    if mode not in MODES:
        raise typer.BadParameter(f"expected one of {', '.join(MODES)}", param_hint="--mode")
    return mode == "stream" or (mode == "auto" and batch > 1)


async def _leader_first(target: Target) -> list[str]:
    """The endpoints with the current leader's first, so puts go straight to it.

    A follower forwards writes, which costs a second gRPC hop per request;
    a benchmark measures the cluster, not that hop (etcd's clients, too,
    are pointed at the leader by the peers' benchmark).
    """
    async with target.client() as probe:
        statuses = await probe.cluster_status()
    leaders = [e for e, st in statuses if st is not None and st.role == pb.ROLE_LEADER]
    return leaders[:1] + [e for e in target.endpoints if e not in leaders[:1]]


async def _ensure_stream(client: RailyardClient, stream: str) -> None:
    with contextlib.suppress(AlreadyExists):
        await client.create_stream(stream)


async def bench_put(
    target: Target,
    *,
    stream: str,
    clients: int,
    in_flight: int,
    size: int,
    batch: int,
    budget: Budget,
    mode: str = "auto",
) -> dict[str, Any]:
    stats = Stats()
    payload = os.urandom(size)
    streaming = _use_stream(mode, batch)
    endpoints = await _leader_first(target)
    opened = [RailyardClient(endpoints, tls=target.tls) for _ in range(clients)]
    producers = [
        StreamProducer(endpoints, stream, window=in_flight, tls=target.tls)
        for _ in range(clients if streaming else 0)
    ]
    try:
        await _ensure_stream(opened[0], stream)

        async def work() -> None:
            async with asyncio.TaskGroup() as tg:
                for producer in producers:
                    tg.create_task(_stream_worker(producer, batch, payload, budget, stats))
                for client in opened if not streaming else []:
                    for _ in range(in_flight):
                        tg.create_task(_put_worker(client, stream, batch, payload, budget, stats))

        elapsed = await _with_progress("put", work, stats, budget)
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
    }
    return summarize(stats, elapsed, settings)


@bench_app.command(
    "put",
    epilog=examples(
        "railyard bench put --duration 10s",
        "railyard bench put --in-flight 64 --size 100",
        "railyard bench put --batch 500 --in-flight 16 --count 1000000 -o json",
    ),
)
def put(
    stream: StreamOption = DEFAULT_STREAM,
    clients: ClientsOption = 1,
    in_flight: Annotated[
        int, typer.Option("--in-flight", help="Requests outstanding per client.", min=1)
    ] = 1,
    size: Annotated[str, typer.Option("--size", help="Record size (e.g. 100, 1KiB).")] = (
        DEFAULT_SIZE
    ),
    batch: Annotated[
        int,
        typer.Option(
            "--batch", help="Records per request: 1 = PutRecord, more = PutRecords.", min=1
        ),
    ] = 1,
    duration: DurationOption = None,
    count: Annotated[
        int | None,
        typer.Option("--count", help="Stop after this many records.", min=1, show_default=False),
    ] = None,
    mode: Annotated[
        str,
        typer.Option(
            "--mode",
            help="unary: PutRecord/PutRecords calls; stream: a streaming producer per client "
            "(PutRecordStream); auto: stream when --batch > 1.",
        ),
    ] = "auto",
    config: ConfigOption = None,
    endpoints: EndpointsOption = None,
    cacert: CacertOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Append records as fast as the cluster takes them; report rates and latency."""
    budget = _budget(duration, count)
    if _use_stream(mode, batch) and in_flight > MAX_WINDOW:
        # The cluster remembers a producer's last MAX_WINDOW results; a deeper
        # window could not be resent exactly once, so it would not be measured.
        raise typer.BadParameter(
            f"a streaming producer keeps at most {MAX_WINDOW} batches in flight"
            " (use --clients for more concurrency, or --mode unary)",
            param_hint="--in-flight",
        )
    try:
        record_size = parse_size(size)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--size") from None

    async def go() -> None:
        target = resolve_target(config, endpoints, TlsFiles(cacert, cert, key))
        result = await bench_put(
            target,
            stream=stream,
            clients=clients,
            in_flight=in_flight,
            size=record_size,
            batch=batch,
            budget=budget,
            mode=mode,
        )
        _finish(result, output)

    run(go())


def _finish(result: dict[str, Any], output: Output) -> None:
    print_result(result, output)
    if result["requests"] == 0:
        fail(f"no request succeeded ({result['errors']} errors; last: {result['last_error']})")


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


async def bench_get(
    target: Target,
    *,
    stream: str,
    clients: int,
    page: int,
    stale: bool,
    budget: Budget,
) -> dict[str, Any]:
    stats = Stats()
    opened = [target.client() for _ in range(clients)]
    try:
        info = await opened[0].describe_stream(stream)
        if info.record_count == 0:
            fail(f"stream {stream!r} is empty; fill it first with `railyard bench put`")
        if budget.remaining is None and budget.duration_s is None:
            budget.remaining = info.record_count * clients

        async def work() -> None:
            async with asyncio.TaskGroup() as tg:
                for client in opened:

                    async def start(c: RailyardClient = client) -> int:
                        return await c.get_iterator_index(stream, "TRIM_HORIZON")

                    tg.create_task(_get_worker(client, stream, page, stale, budget, stats, start))

        elapsed = await _with_progress("get", work, stats, budget)
    finally:
        for client in opened:
            await client.close()
    settings = {"operation": "get", "stream": stream, "clients": clients, "page": page}
    return summarize(stats, elapsed, {**settings, "stale": stale})


@bench_app.command(
    "get",
    epilog=examples(
        "railyard bench get                       # read the bench stream once",
        "railyard bench get --clients 4 --duration 10s -o json",
        "railyard bench get --stream orders --stale",
    ),
)
def get(
    stream: StreamOption = DEFAULT_STREAM,
    clients: ClientsOption = 1,
    page: Annotated[
        int, typer.Option("--page", help="Records per GetRecords request.", min=1)
    ] = DEFAULT_GET_PAGE,
    stale: Annotated[
        bool, typer.Option("--stale", help="Read each node's local state (no ReadIndex round).")
    ] = False,
    duration: Annotated[
        str | None,
        typer.Option("--duration", help="Run this long. Default: read the stream once."),
    ] = None,
    count: Annotated[
        int | None,
        typer.Option("--count", help="Stop after this many records.", min=1, show_default=False),
    ] = None,
    config: ConfigOption = None,
    endpoints: EndpointsOption = None,
    cacert: CacertOption = None,
    cert: CertOption = None,
    key: KeyOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Read a stream from its oldest record as fast as possible; report rates and latency."""
    budget = Budget(None, None) if duration is None and count is None else _budget(duration, count)

    async def go() -> None:
        target = resolve_target(config, endpoints, TlsFiles(cacert, cert, key))
        try:
            result = await bench_get(
                target,
                stream=stream,
                clients=clients,
                page=page,
                stale=stale,
                budget=budget,
            )
        except NotFound:
            fail(
                f"no stream {stream!r}; fill one first with `railyard bench put --stream {stream}`"
            )
        _finish(result, output)

    run(go())
