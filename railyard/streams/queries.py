"""Read-only queries over the streams database: reads and start positions.

A read returns records in sequence order from the requested sequence (or
from the trim horizon if that sequence was trimmed), bounded by a record
count and a byte budget; it returns at least one record whenever one is
available, even one larger than the budget, so a reader always progresses.
Every record read is checked against its CRC-32; a damaged or missing one
raises `CorruptState` naming the file.
"""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import Callable

from railyard.streams.checksums import RECORD_HEADER, record_crc
from railyard.streams.errors import CorruptState
from railyard.streams.results import InvalidArgument, ReadResult, StoredRecord
from railyard.streams.rows import StreamRow
from railyard.streams.schema import database_path, record_id

TRIM_HORIZON = "TRIM_HORIZON"
LATEST = "LATEST"
AT_SEQUENCE = "AT_SEQUENCE"
AFTER_SEQUENCE = "AFTER_SEQUENCE"
AT_TIMESTAMP = "AT_TIMESTAMP"
POSITIONS = (TRIM_HORIZON, LATEST, AT_SEQUENCE, AFTER_SEQUENCE, AT_TIMESTAMP)


# Called once per record a read returns: (sequence, data, key or None, timestamp_ms).
RecordSink = Callable[[int, bytes, bytes | None, int], object]


def read_records(
    conn: sqlite3.Connection, row: StreamRow, from_sequence: int, limit: int, max_bytes: int
) -> ReadResult:
    """Up to `limit` records (at least 1) within `max_bytes` (<= 0: no byte limit)."""
    records: list[StoredRecord] = []
    append = records.append

    def keep(sequence: int, data: bytes, key: bytes | None, ts: int) -> None:
        append(StoredRecord(sequence, data, key, ts))

    next_sequence, behind = scan_records(conn, row, from_sequence, limit, max_bytes, keep)
    return ReadResult(records, next_sequence, behind)


def scan_records(
    conn: sqlite3.Connection,
    row: StreamRow,
    from_sequence: int,
    limit: int,
    max_bytes: int,
    sink: RecordSink,
) -> tuple[int, int]:
    """`read_records`, handing each record to `sink` instead of building a list.

    Returns (next_sequence, behind_latest). The read path's hot loop: a
    caller that encodes records straight into its answer (the node's
    GetRecords) makes no Python object per record of its own.
    """
    start = max(from_sequence, row.first_seq)
    end = min(row.last_seq, start + max(limit, 1) - 1)
    next_sequence = start
    if start <= end:
        base = record_id(row.id, 0)
        cursor = conn.execute(
            "SELECT id, data, key, ts, crc FROM records WHERE id >= ? AND id <= ? ORDER BY id",
            (base + start, base + end),
        )
        budget = max_bytes if max_bytes > 0 else None
        total = 0
        expected = base + start
        crc32 = zlib.crc32
        unkeyed_header = RECORD_HEADER.pack
        for rid, data, key, ts, crc in cursor:
            if rid != expected:
                raise _damaged(conn, row, expected)
            if key is None:
                if crc32(data, crc32(unkeyed_header(rid, ts, -1))) != crc:
                    raise _damaged(conn, row, expected)
            elif record_crc(rid, ts, key, data) != crc:
                raise _damaged(conn, row, expected)
            if budget is not None:
                total += len(data) + (len(key) if key is not None else 0)
                if expected > base + start and total > budget:
                    break
            sink(rid - base, data, key, ts)
            expected += 1
        else:
            if expected != base + end + 1:
                raise _damaged(conn, row, expected)
        cursor.close()
        next_sequence = expected - base
    return next_sequence, max(0, row.last_seq - next_sequence + 1)


def resolve_position(
    conn: sqlite3.Connection, row: StreamRow, position: str, sequence: int, timestamp_ms: int
) -> int | InvalidArgument:
    """The sequence a reader starting at `position` reads first.

    - TRIM_HORIZON: the oldest record held (`LATEST` if none is held).
    - LATEST: the sequence after the last one: where a reader that waits for
      new records starts. Nothing is there yet.
    - AT_SEQUENCE n: n, or the trim horizon if n was trimmed away.
    - AFTER_SEQUENCE n: n + 1, or the trim horizon if that was trimmed away.
    - AT_TIMESTAMP t: the first record with timestamp >= t, else `LATEST`.
    """
    if position == TRIM_HORIZON:
        return row.first_seq
    if position == LATEST:
        return row.last_seq + 1
    if position == AT_SEQUENCE:
        return max(sequence, row.first_seq)
    if position == AFTER_SEQUENCE:
        return max(sequence + 1, row.first_seq)
    if position == AT_TIMESTAMP:
        return _first_at_or_after(conn, row, timestamp_ms)
    return InvalidArgument("position", f"must be one of {', '.join(POSITIONS)}")


def _damaged(conn: sqlite3.Connection, row: StreamRow, rid: int) -> CorruptState:
    sequence = rid - record_id(row.id, 0)
    return CorruptState(
        database_path(conn), f"record {sequence} of {row.name!r} is missing or fails its checksum"
    )


def _first_at_or_after(conn: sqlite3.Connection, row: StreamRow, timestamp_ms: int) -> int:
    """Binary search: record timestamps never decrease along a stream's sequences."""
    lo, hi = row.first_seq, row.last_seq + 1  # answer in [lo, hi]
    while lo < hi:
        mid = (lo + hi) // 2
        rid = record_id(row.id, mid)
        found = conn.execute(
            "SELECT data, key, ts, crc FROM records WHERE id = ?", (rid,)
        ).fetchone()
        if found is None or record_crc(rid, found[2], found[1], found[0]) != found[3]:
            raise _damaged(conn, row, rid)
        ts = found[2]
        if ts >= timestamp_ms:
            hi = mid
        else:
            lo = mid + 1
    return lo
