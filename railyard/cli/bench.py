"""`railyard bench put|get`: load a cluster and report throughput and latency.

The load itself is `railyard.client.load` (`load_put`, `load_get`; the
modes and figures are described there); this command parses the flags,
draws a progress bar on stderr while the load runs, and prints the result
(a table, or one JSON object with `-o json`) on stdout. A run is bounded by
`--duration` or `--count`.
"""

from __future__ import annotations

import asyncio
import enum
import signal
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Annotated, Any

import typer

from railyard.cli.common import (
    DEFAULT_CONNECTION,
    Connection,
    Output,
    OutputOption,
    connection_options,
    eprint,
    examples,
    fail,
    print_json,
    print_table,
    run,
)
from railyard.cli.units import parse_duration_ms, parse_size
from railyard.client import NotFound
from railyard.client.load import Budget, EmptyStream, Stats, load_get, load_put, use_stream
from railyard.client.producer import MAX_WINDOW

DEFAULT_STREAM = "bench"
DEFAULT_DURATION = "10s"
DEFAULT_SIZE = "100"
# Progress bar refreshes; the bar is for people, so a few times a second is plenty.
PROGRESS_INTERVAL_S = 0.2
# GetRecords page for `bench get` (records); the server also caps bytes.
DEFAULT_GET_PAGE = 1000

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


class Transport(enum.StrEnum):
    """How `--no-coalesce` puts travel (`RailyardClient`'s `transport`)."""

    grpc = "grpc"
    native = "native"


def print_result(result: dict[str, Any], output: Output) -> None:
    if output is Output.json:
        print_json(result)
        return
    rows = []
    if "path" in result:
        path = result["path"]
        if "records_per_message" in result:
            path += f" ({result['records_per_message']:.1f} records per message)"
        if "transport" in result:
            path += f" over {result['transport']}"
        rows.append(["path", path])
    rows += [
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
    if result.get("partial"):
        rows.append(["partial", "yes: interrupted with Ctrl-C"])
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


class _Interrupt:
    """Whether Ctrl-C ended the run early: its figures are then partial."""

    def __init__(self) -> None:
        self.happened = False


async def _with_progress(
    label: str,
    work: Callable[[], Awaitable[None]],
    stats: Stats,
    budget: Budget,
    interrupt: _Interrupt | None = None,
) -> float:
    """Run `work()` under a progress bar on stderr; returns the elapsed seconds.

    Ctrl-C (SIGINT) stops the work and returns normally, noting it in
    `interrupt`, so the caller reports what was measured until then.
    """
    # rich is loaded for the bar only, not by every command of the program.
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    interrupt = interrupt or _Interrupt()
    loop = asyncio.get_running_loop()
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

        def stop() -> None:
            interrupt.happened = True
            job.cancel()

        loop.add_signal_handler(signal.SIGINT, stop)
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
            if not interrupt.happened:
                await job
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            job.cancel()
    return time.monotonic() - started


# ------------------------------------------------------------------ put


@bench_app.command(
    "put",
    epilog=examples(
        "railyard bench put --duration 10s",
        "railyard bench put --in-flight 64 --size 100",
        "railyard bench put --in-flight 64 --no-coalesce",
        "railyard bench put --batch 500 --in-flight 16 --count 1000000 -o json",
    ),
)
@connection_options
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
    no_coalesce: Annotated[
        bool,
        typer.Option(
            "--no-coalesce",
            help="With --batch 1 (unary): one PutRecord call per put instead of the "
            "client's coalescing of concurrent puts into shared messages.",
        ),
    ] = False,
    transport: Annotated[
        Transport,
        typer.Option(
            "--transport",
            help="With --no-coalesce and --batch 1: grpc (a PutRecord call per put) or native "
            "(each put a frame on the node's native_address, a fraction of a gRPC call's CPU; "
            "nodes without one, or whose native port is unreachable or full, are called over "
            "gRPC, and the result's path says so). E.g. `railyard bench put --in-flight 64 "
            "--no-coalesce --transport native`.",
        ),
    ] = Transport.grpc,
    connection: Connection = DEFAULT_CONNECTION,
    output: OutputOption = Output.table,
) -> None:
    """Append records as fast as the cluster takes them; report rates and latency."""
    if transport is not Transport.grpc:
        if batch != 1 or mode == "stream":
            raise typer.BadParameter(
                "--transport native sends single puts, each its own request: use --batch 1 "
                f"and --mode unary or auto (got --batch {batch}, --mode {mode})",
                param_hint="--transport",
            )
        if not no_coalesce:
            raise typer.BadParameter(
                "--transport native sends each put as its own request: add --no-coalesce "
                "(without it concurrent puts share coalesced messages over gRPC)",
                param_hint="--transport",
            )
    budget = _budget(duration, count)
    try:
        streaming = use_stream(mode, batch)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--mode") from None
    if streaming and in_flight > MAX_WINDOW:
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

    interrupt = _Interrupt()

    async def go() -> None:
        target = connection.target()
        result = await load_put(
            target.endpoints,
            stream=stream,
            clients=clients,
            in_flight=in_flight,
            size=record_size,
            batch=batch,
            budget=budget,
            mode=mode,
            coalesce=not no_coalesce,
            watch=partial(_with_progress, interrupt=interrupt),
            tls=target.tls,
            transport=transport.value,
        )
        _finish(result, output, interrupt)

    run(go())


def _finish(result: dict[str, Any], output: Output, interrupt: _Interrupt) -> None:
    result["partial"] = interrupt.happened
    if interrupt.happened:
        eprint("interrupted: the figures below are partial, for the time the run lasted")
    print_result(result, output)
    if result["requests"] == 0:
        fail(f"no request succeeded ({result['errors']} errors; last: {result['last_error']})")


@bench_app.command(
    "get",
    epilog=examples(
        "railyard bench get                       # read the bench stream once",
        "railyard bench get --clients 4 --duration 10s -o json",
        "railyard bench get --stream orders --stale",
    ),
)
@connection_options
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
    connection: Connection = DEFAULT_CONNECTION,
    output: OutputOption = Output.table,
) -> None:
    """Read a stream from its oldest record as fast as possible; report rates and latency."""
    budget = Budget(None, None) if duration is None and count is None else _budget(duration, count)
    interrupt = _Interrupt()

    async def go() -> None:
        target = connection.target()
        try:
            result = await load_get(
                target.endpoints,
                stream=stream,
                clients=clients,
                page=page,
                stale=stale,
                budget=budget,
                watch=partial(_with_progress, interrupt=interrupt),
                tls=target.tls,
            )
        except EmptyStream:
            fail(f"stream {stream!r} is empty; fill it first with `railyard bench put`")
        except NotFound:
            fail(
                f"no stream {stream!r}; fill one first with `railyard bench put --stream {stream}`"
            )
        _finish(result, output, interrupt)

    run(go())
