"""Stream rows in the database, checksummed (shared by apply, retention and queries)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from railyard.streams.checksums import fields_crc
from railyard.streams.errors import CorruptState
from railyard.streams.results import Retention, StreamInfo
from railyard.streams.schema import database_path

STREAM_COLUMNS = (
    "id, name, max_age_ms, max_records, max_bytes, created_ms, first_seq, last_seq, bytes"
)


@dataclass(slots=True)
class StreamRow:
    """A stream's row, mutable while one command is applied.

    `first_seq` is the first sequence still held; `last_seq + 1` when the
    stream holds nothing. Sequences are dense, so the count is derived.
    """

    id: int
    name: str
    retention: Retention
    created_ms: int
    first_seq: int
    last_seq: int
    bytes: int

    @property
    def record_count(self) -> int:
        return self.last_seq - self.first_seq + 1

    def info(self) -> StreamInfo:
        count = self.record_count
        return StreamInfo(
            name=self.name,
            retention=self.retention,
            first_sequence=self.first_seq if count else 0,
            last_sequence=self.last_seq,
            record_count=count,
            bytes=self.bytes,
            created_ms=self.created_ms,
        )


def _fields(row: StreamRow) -> tuple[int, str, int, int, int, int, int, int, int]:
    r = row.retention
    return (
        row.id,
        row.name,
        r.max_age_ms,
        r.max_records,
        r.max_bytes,
        row.created_ms,
        row.first_seq,
        row.last_seq,
        row.bytes,
    )


def _row(
    conn: sqlite3.Connection, values: tuple[int, str, int, int, int, int, int, int, int, int]
) -> StreamRow:
    *fields, crc = values
    if fields_crc(*fields) != crc:
        raise CorruptState(database_path(conn), f"stream row {values[1]!r} fails its checksum")
    sid, name, max_age_ms, max_records, max_bytes, created_ms, first, last, size = values[:9]
    return StreamRow(
        sid, name, Retention(max_age_ms, max_records, max_bytes), created_ms, first, last, size
    )


def load_stream(conn: sqlite3.Connection, name: str) -> StreamRow | None:
    values = conn.execute(
        f"SELECT {STREAM_COLUMNS}, crc FROM streams WHERE name = ?", (name,)
    ).fetchone()
    return _row(conn, values) if values is not None else None


def load_stream_from(conn: sqlite3.Connection, stream_id: int) -> StreamRow | None:
    """The stream with the lowest id at or above `stream_id`, if any (streams in id order)."""
    values = conn.execute(
        f"SELECT {STREAM_COLUMNS}, crc FROM streams WHERE id >= ? ORDER BY id LIMIT 1",
        (stream_id,),
    ).fetchone()
    return _row(conn, values) if values is not None else None


def load_streams(conn: sqlite3.Connection, where: str = "") -> list[StreamRow]:
    """All streams (optionally filtered by a constant SQL condition), by name."""
    sql = f"SELECT {STREAM_COLUMNS}, crc FROM streams {where} ORDER BY name"
    return [_row(conn, values) for values in conn.execute(sql)]


def insert_stream(conn: sqlite3.Connection, row: StreamRow) -> None:
    fields = _fields(row)
    conn.execute(
        "INSERT INTO streams VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (*fields, fields_crc(*fields))
    )


def store_retention(conn: sqlite3.Connection, row: StreamRow) -> None:
    """Write a changed retention now: `store_stream`, which writes the rest, checksums it."""
    r = row.retention
    conn.execute(
        "UPDATE streams SET max_age_ms = ?, max_records = ?, max_bytes = ?, crc = ? WHERE id = ?",
        (r.max_age_ms, r.max_records, r.max_bytes, fields_crc(*_fields(row)), row.id),
    )


def store_stream(conn: sqlite3.Connection, row: StreamRow) -> None:
    conn.execute(
        "UPDATE streams SET first_seq = ?, last_seq = ?, bytes = ?, crc = ? WHERE id = ?",
        (row.first_seq, row.last_seq, row.bytes, fields_crc(*_fields(row)), row.id),
    )
