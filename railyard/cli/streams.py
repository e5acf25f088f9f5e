"""`railyard stream create|update|list|describe|delete`."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
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
    print_json,
    print_table,
    run,
)
from railyard.cli.units import format_bytes, format_duration_ms, parse_duration_ms, parse_size
from railyard.proto import railyard_pb2 as pb

stream_app = typer.Typer(
    name="stream",
    help="Create, update, list, describe and delete streams.",
    no_args_is_help=True,
)
# `stream update --max-age none` (or 0) removes a limit.
NO_LIMIT_WORDS = ("none", "0")

NameArgument = Annotated[str, typer.Argument(help="Stream name.", show_default=False)]


def stream_json(info: pb.StreamInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "retention": {
            "max_age_ms": info.retention.max_age_ms,
            "max_records": info.retention.max_records,
            "max_bytes": info.retention.max_bytes,
        },
        "first_sequence": info.first_sequence,
        "last_sequence": info.last_sequence,
        "record_count": info.record_count,
        "bytes": info.bytes,
        "created": iso_ms(info.created_ms),
    }


def iso_ms(ms: int) -> str | None:
    if ms <= 0:
        return None
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def retention_text(info: pb.StreamInfo) -> str:
    parts = []
    if info.retention.max_age_ms:
        parts.append(f"age {format_duration_ms(info.retention.max_age_ms)}")
    if info.retention.max_records:
        parts.append(f"{info.retention.max_records} records")
    if info.retention.max_bytes:
        parts.append(format_bytes(info.retention.max_bytes))
    return ", ".join(parts) or "forever"


def print_streams(infos: list[pb.StreamInfo], output: Output) -> None:
    if output is Output.json:
        print_json([stream_json(i) for i in infos])
        return
    print_table(
        ["stream", "records", "bytes", "first", "last", "retention", "created"],
        [
            [
                i.name,
                i.record_count,
                format_bytes(i.bytes),
                i.first_sequence,
                i.last_sequence,
                retention_text(i),
                iso_ms(i.created_ms),
            ]
            for i in infos
        ],
    )


def _print_stream(info: pb.StreamInfo, output: Output) -> None:
    if output is Output.json:
        print_json(stream_json(info))
    else:
        print_streams([info], output)


def _option_value(parse: Any, text: str | None, name: str) -> int:
    if text is None:
        return 0
    try:
        value: int = parse(text)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint=name) from None
    return value


@stream_app.command(
    "create",
    epilog=examples(
        "railyard stream create orders",
        "railyard stream create clicks --max-age 24h --max-bytes 10GiB",
        "railyard stream create audit --max-records 1000000",
    ),
)
@connection_options
def create(
    name: NameArgument,
    max_age: Annotated[
        str | None,
        typer.Option(help="Drop records older than this (e.g. 90m, 24h, 7d).", show_default=False),
    ] = None,
    max_records: Annotated[
        int | None,
        typer.Option(help="Keep at most this many records.", min=1, show_default=False),
    ] = None,
    max_bytes: Annotated[
        str | None,
        typer.Option(help="Keep at most this many bytes (e.g. 500MB, 10GiB).", show_default=False),
    ] = None,
    connection: Connection = DEFAULT_CONNECTION,
    output: OutputOption = Output.table,
) -> None:
    """Create a stream, optionally with retention limits (default: keep everything)."""
    age_ms = _option_value(parse_duration_ms, max_age, "--max-age")
    size = _option_value(parse_size, max_bytes, "--max-bytes")

    async def go() -> None:
        target = connection.target()
        async with target.client() as client:
            info = await client.create_stream(
                name, max_age_ms=age_ms, max_records=max_records or 0, max_bytes=size
            )
        _print_stream(info, output)

    run(go())


@stream_app.command(
    "update",
    epilog=examples(
        "railyard stream update clicks --max-age 7d",
        "railyard stream update audit --max-records none",
    ),
)
@connection_options
def update(
    name: NameArgument,
    max_age: Annotated[
        str | None,
        typer.Option(
            help="Drop records older than this (e.g. 24h; none: no limit).", show_default=False
        ),
    ] = None,
    max_records: Annotated[
        str | None,
        typer.Option(help="Keep at most this many records (none: no limit).", show_default=False),
    ] = None,
    max_bytes: Annotated[
        str | None,
        typer.Option(
            help="Keep at most this many bytes (e.g. 10GiB; none: no limit).", show_default=False
        ),
    ] = None,
    connection: Connection = DEFAULT_CONNECTION,
    output: OutputOption = Output.table,
) -> None:
    """Change a stream's retention; limits not given stay as they are.

    Records beyond a tighter limit are dropped at once, on every node.
    """
    if max_age is None and max_records is None and max_bytes is None:
        raise typer.BadParameter(
            "give at least one of --max-age, --max-records, --max-bytes", param_hint="NAME"
        )
    age_ms = _limit_value(parse_duration_ms, max_age, "--max-age")
    records = _limit_value(_parse_count, max_records, "--max-records")
    size = _limit_value(parse_size, max_bytes, "--max-bytes")

    async def go() -> None:
        target = connection.target()
        async with target.client() as client:
            # NB: read, then replace: an update racing this one may be lost.
            now = (await client.describe_stream(name)).retention
            info = await client.update_stream(
                name,
                max_age_ms=now.max_age_ms if age_ms is None else age_ms,
                max_records=now.max_records if records is None else records,
                max_bytes=now.max_bytes if size is None else size,
            )
        _print_stream(info, output)

    run(go())


def _limit_value(parse: Any, text: str | None, name: str) -> int | None:
    """None when not given, 0 for "none", else the parsed positive value."""
    if text is None:
        return None
    if text.strip().lower() in NO_LIMIT_WORDS:
        return 0
    value = _option_value(parse, text, name)
    if value <= 0:
        raise typer.BadParameter(
            f"expected a positive limit or none (got {text!r})", param_hint=name
        )
    return value


def _parse_count(text: str) -> int:
    if not text.strip().isdigit():
        raise ValueError(f"expected a whole number of records or none (got {text!r})")
    return int(text)


@stream_app.command("list", epilog=examples("railyard stream list -o json"))
@connection_options
def list_(
    connection: Connection = DEFAULT_CONNECTION,
    output: OutputOption = Output.table,
) -> None:
    """List every stream with its size and retention."""

    async def go() -> None:
        target = connection.target()
        async with target.client() as client:
            infos = await client.list_streams()
        print_streams(sorted(infos, key=lambda i: i.name), output)

    run(go())


@stream_app.command("describe", epilog=examples("railyard stream describe orders"))
@connection_options
def describe(
    name: NameArgument,
    connection: Connection = DEFAULT_CONNECTION,
    output: OutputOption = Output.table,
) -> None:
    """Show one stream: records, bytes, first and last sequence, retention."""

    async def go() -> None:
        target = connection.target()
        async with target.client() as client:
            info = await client.describe_stream(name)
        _print_stream(info, output)

    run(go())


@stream_app.command(
    "delete",
    epilog=examples("railyard stream delete orders", "railyard stream delete orders --yes"),
)
@connection_options
def delete(
    name: NameArgument,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask (asked only on a terminal).")
    ] = False,
    connection: Connection = DEFAULT_CONNECTION,
    output: OutputOption = Output.table,
) -> None:
    """Delete a stream and all its records (asks first on a terminal, unless --yes)."""
    if (
        not yes
        and sys.stdin.isatty()
        and not typer.confirm(
            f"Delete stream {name!r} and all its records?", default=False, err=True
        )
    ):
        eprint(f"not deleted: {name}")
        raise typer.Exit(1)

    async def go() -> None:
        target = connection.target()
        async with target.client() as client:
            await client.delete_stream(name)
        if output is Output.json:
            print_json({"stream": name, "deleted": True})
        else:
            print(f"deleted {name}", flush=True)

    run(go())
