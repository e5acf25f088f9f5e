"""Retention: trimming the oldest records of a stream, decided by replicated state only.

Trimming always removes a prefix, so sequences stay dense from the trim
horizon (`first_seq`) to the last. A record goes when any limit is exceeded:

- max records: more than `max_records` records are held;
- max bytes: the held records' sizes (data + key) sum to more than `max_bytes`;
- max age: its timestamp is older than `clock_ms - max_age_ms`.

`clock_ms` is retention's clock, computed from the leader timestamps of the
applied commands only, never a local clock, so every replica trims
identically. It is corroborated (`corroborated_clock`): a command moves it
only as far as the timestamps before it reached, so a single timestamp far
in the future (a leader's clock that jumped, a forged entry) cannot make age
retention trim every record; it lags the machine's clock by one command at
most. Record timestamps never decrease within a stream (they are the
machine's clock, which is never behind retention's), so age-trimming a
prefix is the same as trimming every expired record.

NB: commands that keep arriving with far-future timestamps (a leader whose
clock stays wrong) do move it; no replicated rule can tell that from real
time, and records stamped by them escape age retention until then.
"""

from __future__ import annotations

import sqlite3

from railyard.streams.results import Retention
from railyard.streams.rows import StreamRow
from railyard.streams.schema import record_id

NO_RETENTION = Retention()


def corroborated_clock(retention_clock_ms: int, clock_ms: int, timestamp_ms: int) -> int:
    """Retention's clock after a command stamped `timestamp_ms`: as far as both it and
    the machine's clock before it (the largest earlier timestamp) reached, never back."""
    return max(retention_clock_ms, min(timestamp_ms, clock_ms))


def _over_limits(
    retention: Retention, count: int, size_bytes: int, first_ts: int, cutoff_ms: int
) -> bool:
    """Whether the oldest of `count` records (`size_bytes` in all) must go."""
    return (
        (retention.max_records > 0 and count > retention.max_records)
        or (retention.max_bytes > 0 and size_bytes > retention.max_bytes)
        or (retention.max_age_ms > 0 and first_ts < cutoff_ms)
    )


def _first_ts(conn: sqlite3.Connection, row: StreamRow) -> int | None:
    found = conn.execute(
        "SELECT ts FROM records WHERE id = ?", (record_id(row.id, row.first_seq),)
    ).fetchone()
    return int(found[0]) if found is not None else None


def trim(conn: sqlite3.Connection, row: StreamRow, clock_ms: int) -> None:
    """Drop the oldest records of `row` while any retention limit is exceeded.

    Updates `row` in memory; the caller writes it back.
    """
    if row.record_count == 0 or row.retention == NO_RETENTION:
        return
    cutoff_ms = clock_ms - row.retention.max_age_ms
    first_ts = _first_ts(conn, row)
    retention = row.retention
    if first_ts is None or not _over_limits(
        retention, row.record_count, row.bytes, first_ts, cutoff_ms
    ):
        return
    base = record_id(row.id, 0)
    cursor = conn.execute(
        "SELECT id - ?, ts, length(data) + coalesce(length(key), 0) FROM records "
        "WHERE id >= ? AND id <= ? ORDER BY id",
        (base, base + row.first_seq, base + row.last_seq),
    )
    new_first = row.last_seq + 1
    removed_bytes = 0
    for seq, ts, size in cursor:
        count = row.last_seq - seq + 1
        if not _over_limits(retention, count, row.bytes - removed_bytes, ts, cutoff_ms):
            new_first = seq
            break
        removed_bytes += size
    cursor.close()
    conn.execute(
        "DELETE FROM records WHERE id >= ? AND id < ?",
        (base + row.first_seq, base + new_first),
    )
    row.first_seq = new_first
    row.bytes -= removed_bytes
