"""`railyard put` and `railyard get`: records in and out.

`put STREAM -` keeps one producer's order and exactly-once delivery while
still moving many records per request: a reader thread keeps reading stdin
into a bounded queue, and a streaming producer (`client/producer.py`, one
PutRecordStream call) keeps up to `PUT_WINDOW_BATCHES` batches in flight;
each batch is whatever arrived meanwhile (up to the batch limits). Batches
carry increasing producer sequences, so on a leader change the producer
resends the unacknowledged ones and the cluster applies each once, answering
a resend that was applied before with its original sequences: every record
is appended and printed once, in order.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Annotated, Any

import typer

from railyard.cli.common import (
    ConfigOption,
    EndpointsOption,
    Output,
    OutputOption,
    Target,
    errors_end_cleanly,
    examples,
    fail,
    print_json,
    resolve_target,
    run,
)
from railyard.cli.streams import iso_ms
from railyard.cli.units import parse_time_ms
from railyard.client import RailyardClient
from railyard.client.producer import StreamProducer
from railyard.config import DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_BATCH_RECORDS
from railyard.config import DEFAULT_MAX_RECORD_BYTES as CONFIG_MAX_RECORD_BYTES
from railyard.proto import railyard_pb2 as pb

# Stdin is read in chunks of this size (a thread call per line would cost more than the put).
READ_CHUNK_BYTES = 1 << 16
# Chunks read ahead of the sender; bounds memory when stdin is faster than the cluster.
READ_AHEAD_CHUNKS = 64
# Stay under the cluster's batch byte limit with room for per-record framing.
BATCH_BYTES_HEADROOM = 64 << 10
# Batches of `put -` unacknowledged at a time: the next batches are proposed
# while earlier ones commit (the streaming producer keeps them in order).
# Below the cluster's per-producer window of remembered results (64), so a
# batch resent after a leader change always gets its sequences back.
PUT_WINDOW_BATCHES = 8
# `get` pages: records per GetRecords call.
GET_PAGE_RECORDS = 1000
# `get --follow` polls an idle stream with backoff between these bounds.
FOLLOW_POLL_MIN_S = 0.05
FOLLOW_POLL_MAX_S = 1.0


# ------------------------------------------------------------------ put


def put(
    stream: Annotated[str, typer.Argument(help="Stream to append to.", show_default=False)],
    data: Annotated[
        str,
        typer.Argument(
            help="The record, or - to read records from stdin, one per line.",
            show_default=False,
        ),
    ],
    key: Annotated[
        str | None,
        typer.Option("--key", "-k", help="Record key (single record only).", show_default=False),
    ] = None,
    config: ConfigOption = None,
    endpoints: EndpointsOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Append a record (or stdin's lines, with -) and print each sequence number.

    Each acknowledged record prints one line as soon as the cluster has it:
    the sequence number, or {"stream", "sequence"} with -o json. Empty lines
    of stdin are skipped.
    """
    target = _target_or_exit(config, endpoints)
    if data == "-":
        if key is not None:
            raise typer.BadParameter("--key applies to a single record, not to stdin")
        run(_put_stdin(target, stream, output))
    else:
        run(_put_one(target, stream, data.encode(), key, output))


PUT_EPILOG = examples(
    "railyard put orders 'order 17 shipped'",
    "railyard put orders hello --key customer-9 -o json",
    "tail -f app.log | railyard put logs -",
)


def _target_or_exit(config: Path | None, endpoints: str | None) -> Target:
    with errors_end_cleanly():
        return resolve_target(config, endpoints)


def _print_ack(stream: str, sequence: int, output: Output) -> None:
    if output is Output.json:
        print_json({"stream": stream, "sequence": sequence})
    else:
        print(sequence, flush=True)


def _record_limit(target: Target) -> int:
    return target.config.max_record_bytes if target.config else CONFIG_MAX_RECORD_BYTES


async def _put_one(
    target: Target, stream: str, data: bytes, key: str | None, output: Output
) -> None:
    limit = _record_limit(target)
    if len(data) > limit:
        fail(
            f"record of {len(data)} bytes is larger than the cluster's limit of {limit} bytes; "
            "split it or raise max_record_bytes in the cluster file"
        )
    async with RailyardClient(target.endpoints) as client:
        sequence = await client.put(stream, data, key.encode() if key is not None else None)
    _print_ack(stream, sequence, output)


def _start_stdin_reader(chunks: asyncio.Queue[bytes]) -> None:
    """Read stdin in a daemon thread; b"" marks the end.

    A thread, not asyncio.to_thread: a read blocked on a terminal must not
    keep the process alive after the command ended (on an error, say).
    Blocking on the full queue gives backpressure.
    """
    loop = asyncio.get_running_loop()
    source = sys.stdin.buffer
    # read1: whatever is available (at most one system call), so lines typed
    # at a terminal or trickling from `tail -f` go out without waiting for more.
    read_chunk = getattr(source, "read1", source.read)

    def read() -> None:
        while True:
            try:
                chunk = read_chunk(READ_CHUNK_BYTES)
            except (OSError, ValueError):
                chunk = b""
            try:
                asyncio.run_coroutine_threadsafe(chunks.put(chunk), loop).result()
            except (RuntimeError, concurrent.futures.CancelledError):
                return  # the loop is gone: the command ended
            if not chunk:
                return

    threading.Thread(target=read, name="stdin-reader", daemon=True).start()


class StdinBatches:
    """Stdin's lines as batches of whatever is ready, waiting only for the first line."""

    def __init__(self, chunks: asyncio.Queue[bytes], max_records: int, max_bytes: int) -> None:
        self.chunks = chunks
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.lines: deque[bytes] = deque()
        self.pending = b""
        self.eof = False
        self.line_number = 0

    def _feed(self, chunk: bytes) -> None:
        if not chunk:
            self.eof = True
            if self.pending:
                self.lines.append(self.pending.removesuffix(b"\r"))
                self.pending = b""
            return
        parts = (self.pending + chunk).split(b"\n")
        self.pending = parts.pop()
        self.lines.extend(p.removesuffix(b"\r") for p in parts)

    async def next(self, max_record: int) -> list[bytes] | None:
        """The next batch; None at the end of stdin."""
        while not self.lines and not self.eof:
            self._feed(await self.chunks.get())
        while not self.chunks.empty() and len(self.lines) < self.max_records:
            self._feed(self.chunks.get_nowait())
        batch: list[bytes] = []
        size = 0
        while self.lines and len(batch) < self.max_records:
            line = self.lines[0]
            if batch and size + len(line) > self.max_bytes:
                break
            if len(line) > max_record:
                if batch:
                    return batch  # send what precedes it, fail on the next call
                fail(
                    f"stdin line {self.line_number + 1}: record of {len(line)} bytes is larger "
                    f"than the cluster's limit of {max_record} bytes; the lines before it "
                    "were appended"
                )
            self.lines.popleft()
            self.line_number += 1
            if line:
                batch.append(line)
                size += len(line)
        if not batch and self.eof and not self.lines:
            return None
        return batch


async def _put_stdin(target: Target, stream: str, output: Output) -> None:
    config = target.config
    max_records = config.max_batch_records if config else DEFAULT_MAX_BATCH_RECORDS
    max_bytes = (config.max_batch_bytes if config else DEFAULT_MAX_BATCH_BYTES) - (
        BATCH_BYTES_HEADROOM
    )
    chunks: asyncio.Queue[bytes] = asyncio.Queue(READ_AHEAD_CHUNKS)
    _start_stdin_reader(chunks)
    batches = StdinBatches(chunks, max_records, max_bytes)
    acks: asyncio.Queue[tuple[asyncio.Future[list[int]], int] | None] = asyncio.Queue()
    async with StreamProducer(target.endpoints, stream, window=PUT_WINDOW_BATCHES) as producer:
        printer = asyncio.ensure_future(_print_acks(acks, stream, output))
        try:
            while (batch := await batches.next(_record_limit(target))) is not None:
                if batch:
                    ack = await producer.send([(line, None) for line in batch])
                    acks.put_nowait((ack, len(batch)))
                if printer.done():
                    break  # it failed: its error is raised below
            acks.put_nowait(None)
            await printer
        finally:
            printer.cancel()


async def _print_acks(
    acks: asyncio.Queue[tuple[asyncio.Future[list[int]], int] | None],
    stream: str,
    output: Output,
) -> None:
    """Print each batch's sequences in order, as its acknowledgement arrives."""
    while (item := await acks.get()) is not None:
        ack, count = item
        sequences = await ack
        if len(sequences) != count:
            # Applied so long before that the cluster forgot its result (more
            # than its window of later batches under our producer id; cannot
            # happen with PUT_WINDOW_BATCHES below it): in the stream once,
            # positions unknown.
            print(
                f"note: {count} records were appended earlier; their sequences are unknown",
                file=sys.stderr,
            )
        for sequence in sequences:
            _print_ack(stream, sequence, output)


# ------------------------------------------------------------------ get


def get(
    stream: Annotated[str, typer.Argument(help="Stream to read.", show_default=False)],
    from_start: Annotated[
        bool, typer.Option("--from-start", help="From the oldest record kept (the default).")
    ] = False,
    from_seq: Annotated[
        int | None,
        typer.Option("--from", help="From this sequence number.", min=0, show_default=False),
    ] = None,
    after_seq: Annotated[
        int | None,
        typer.Option("--after", help="After this sequence number.", min=0, show_default=False),
    ] = None,
    latest: Annotated[
        bool, typer.Option("--latest", help="Only records appended from now on (with --follow).")
    ] = False,
    since: Annotated[
        str | None,
        typer.Option(
            help="From this time: ISO-8601 (2026-01-31T12:00:00Z) or how long ago (5m, 2h).",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option("--limit", "-n", help="Print at most this many records.", min=1),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new records until Ctrl-C.")
    ] = False,
    stale: Annotated[
        bool,
        typer.Option("--stale", help="Serve from the node's local state (faster, may lag)."),
    ] = False,
    config: ConfigOption = None,
    endpoints: EndpointsOption = None,
    output: OutputOption = Output.table,
) -> None:
    """Print records as SEQ<TAB>DATA lines, oldest first.

    With -o json, one object per record: sequence, data (data_base64 when it is
    not UTF-8), key (null when none), timestamp (ISO-8601, UTC).
    """
    chosen = [
        name
        for name, on in (
            ("--from-start", from_start),
            ("--from", from_seq is not None),
            ("--after", after_seq is not None),
            ("--latest", latest),
            ("--since", since is not None),
        )
        if on
    ]
    if len(chosen) > 1:
        raise typer.BadParameter(f"choose one start position, not {' and '.join(chosen)}")
    if since is not None:
        try:
            since_ms = parse_time_ms(since, int(time.time() * 1000))
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--since") from None
    if from_seq is not None:
        position: tuple[str, int, int] = ("AT_SEQUENCE", from_seq, 0)
    elif after_seq is not None:
        position = ("AFTER_SEQUENCE", after_seq, 0)
    elif latest:
        position = ("LATEST", 0, 0)
    elif since is not None:
        position = ("AT_TIMESTAMP", 0, since_ms)
    else:
        position = ("TRIM_HORIZON", 0, 0)
    target = _target_or_exit(config, endpoints)
    try:
        run(_get(target, stream, position, limit, follow, stale, output))
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


GET_EPILOG = examples(
    "railyard get orders --from-start",
    "railyard get orders --since 5m --follow",
    "railyard get orders --after 1041 --limit 10 -o json",
)


def record_json(record: pb.StoredRecord) -> dict[str, Any]:
    obj: dict[str, Any] = {"sequence": record.sequence}
    _put_bytes(obj, "data", record.data)
    if record.has_key:
        _put_bytes(obj, "key", record.key)
    else:
        obj["key"] = None
    obj["timestamp"] = iso_ms(record.timestamp_ms)
    return obj


def _put_bytes(obj: dict[str, Any], name: str, value: bytes) -> None:
    try:
        obj[name] = value.decode("utf-8")
    except UnicodeDecodeError:
        obj[f"{name}_base64"] = base64.b64encode(value).decode("ascii")


def _print_record(record: pb.StoredRecord, output: Output) -> None:
    if output is Output.json:
        print_json(record_json(record))
    else:
        text = record.data.decode("utf-8", errors="backslashreplace")
        print(f"{record.sequence}\t{text}", flush=True)


async def _get(
    target: Target,
    stream: str,
    position: tuple[str, int, int],
    limit: int | None,
    follow: bool,
    stale: bool,
    output: Output,
) -> None:
    kind, sequence, timestamp_ms = position
    printed = 0
    idle_s = FOLLOW_POLL_MIN_S
    async with RailyardClient(target.endpoints) as client:
        next_sequence = await client.get_iterator_index(stream, kind, sequence, timestamp_ms)
        while limit is None or printed < limit:
            page = GET_PAGE_RECORDS if limit is None else min(GET_PAGE_RECORDS, limit - printed)
            response = await client.get_records(stream, next_sequence, limit=page, stale=stale)
            for record in response.records:
                _print_record(record, output)
            printed += len(response.records)
            progressed = response.next_sequence != next_sequence or bool(response.records)
            next_sequence = max(next_sequence, response.next_sequence)
            if response.records:
                idle_s = FOLLOW_POLL_MIN_S
                continue
            if not follow and (response.behind_latest == 0 or not progressed):
                break
            if follow and not progressed:
                await asyncio.sleep(idle_s)
                idle_s = min(idle_s * 2, FOLLOW_POLL_MAX_S)
