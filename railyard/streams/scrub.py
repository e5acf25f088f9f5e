"""Checking the whole state database a bounded step at a time, and what a start can afford.

A start checks only what is bounded by the number of streams, not of
records (`check_ends`): every stream row's checksum, and the first and last
record of every stream; with the state row checked at open, that refuses a
wrong or cut-short file at once. The rest, every record, the producer
tables and SQLite's own `quick_check`, is the scrub: `scrub_step` checks
the next few thousand rows from a `ScrubPosition` and returns where to go
on, so a caller can spread a pass over time (the node does, on a thread of
its own; see `node/driver/scrubbing.py`).

Each step runs inside one read transaction of its caller and is complete
in itself: the rows it compares (a stream's row and its records) are read
in that one transaction, so applies in between (appends, trims, deletes)
cannot make an intact state look damaged. A pass checks what every step
saw: every record of every stream, dense from the stream's first sequence
to its last and matching its checksum, no record outside a stream's range
(strays), every producer row and result against its checksum, and the
B-trees (`PRAGMA quick_check`). A damage found raises `CorruptState` naming
the file and the row.

NB: `quick_check` is one statement, not a bounded step: SQLite reads every
page in it (it releases the GIL while it does).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from railyard.streams.checksums import fields_crc
from railyard.streams.errors import CorruptState
from railyard.streams.queries import scan_records
from railyard.streams.rows import load_stream_from, load_streams
from railyard.streams.schema import SEQUENCE_BITS, database_path, record_id

RECORDS = "records"
PRODUCERS = "producers"
RESULTS = "producer_results"
STRUCTURE = "structure"


@dataclass(frozen=True, slots=True)
class ScrubPosition:
    """Where a scrub pass goes on: a phase, then the next row's key in it.

    records: the first stream with an id >= `stream_id`, from `sequence`
    (0: from its first record); producers and results: rows after
    (`producer_id`, `producer_sequence`); structure: `quick_check`.
    `generation` is the state file's (`StreamsMachine.generation`): a
    position of an older file starts the pass over.
    """

    generation: int = 0
    phase: str = RECORDS
    stream_id: int = 0
    sequence: int = 0
    producer_id: str = ""
    producer_sequence: int = -1


@dataclass(frozen=True, slots=True)
class ScrubStep:
    """What one step checked, and where the pass goes on (None: the pass is complete)."""

    checked: int
    next: ScrubPosition | None


def _ignore(sequence: int, data: bytes, key: bytes | None, ts: int) -> None:
    """A record sink that keeps nothing: the scan checks each record before handing it."""


def check_ends(conn: sqlite3.Connection) -> None:
    """Every stream row, and the first and last record of every stream (`CorruptState`)."""
    for row in load_streams(conn):
        if row.record_count > 0:
            scan_records(conn, row, row.first_seq, 1, 0, _ignore)
            scan_records(conn, row, row.last_seq, 1, 0, _ignore)


def scrub_step(conn: sqlite3.Connection, position: ScrubPosition, limit: int) -> ScrubStep:
    """Check up to about `limit` rows from `position`; see the module docstring."""
    if position.phase == RECORDS:
        return _records_step(conn, position, limit)
    if position.phase == PRODUCERS:
        return _producers_step(conn, position, limit)
    if position.phase == RESULTS:
        return _results_step(conn, position, limit)
    problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
    if problems != ["ok"]:
        raise CorruptState(database_path(conn), "; ".join(problems[:5]))
    return ScrubStep(0, None)


def _records_step(conn: sqlite3.Connection, position: ScrubPosition, limit: int) -> ScrubStep:
    """Records of one stream or more, until about `limit` were checked."""
    checked = 0
    stream_id, sequence = position.stream_id, position.sequence
    while checked < limit:
        row = load_stream_from(conn, stream_id)
        if row is None:
            _no_strays(conn, record_id(stream_id, 0), None)
            return ScrubStep(checked, ScrubPosition(position.generation, PRODUCERS))
        if row.id != stream_id or sequence == 0:
            # A stream begun: nothing stored below its first record, down to
            # the end of the stream checked before it (deleted streams' ids too).
            _no_strays(conn, record_id(stream_id, 0), record_id(row.id, row.first_seq))
            start = row.first_seq
        else:
            start = max(sequence, row.first_seq)  # trimmed since the last step
        next_sequence, _ = scan_records(conn, row, start, limit - checked, 0, _ignore)
        checked += next_sequence - start
        if next_sequence <= row.last_seq:
            stream_id, sequence = row.id, next_sequence
            break
        _no_strays(conn, record_id(row.id, row.last_seq + 1), record_id(row.id + 1, 0))
        stream_id, sequence = row.id + 1, 0
    return ScrubStep(checked, ScrubPosition(position.generation, RECORDS, stream_id, sequence))


def _no_strays(conn: sqlite3.Connection, lo: int, hi: int | None) -> None:
    """Raise if a record is stored with an id in [lo, hi) (hi None: no upper end)."""
    if hi is None:
        found = conn.execute("SELECT id FROM records WHERE id >= ? LIMIT 1", (lo,)).fetchone()
    else:
        found = conn.execute(
            "SELECT id FROM records WHERE id >= ? AND id < ? LIMIT 1", (lo, hi)
        ).fetchone()
    if found is not None:
        rid = found[0]
        stream_id, sequence = rid >> SEQUENCE_BITS, rid & ((1 << SEQUENCE_BITS) - 1)
        raise CorruptState(
            database_path(conn),
            f"record {sequence} of stream id {stream_id} is stored but no stream holds it",
        )


def _producers_step(conn: sqlite3.Connection, position: ScrubPosition, limit: int) -> ScrubStep:
    rows = conn.execute(
        "SELECT producer_id, last_sequence, last_used_index, crc FROM producers "
        "WHERE producer_id > ? ORDER BY producer_id LIMIT ?",
        (position.producer_id, limit),
    ).fetchall()
    for *fields, crc in rows:
        _check_producer_crc(conn, fields, crc)
    if len(rows) < limit:
        return ScrubStep(len(rows), ScrubPosition(position.generation, RESULTS))
    after = ScrubPosition(position.generation, PRODUCERS, producer_id=rows[-1][0])
    return ScrubStep(len(rows), after)


def _results_step(conn: sqlite3.Connection, position: ScrubPosition, limit: int) -> ScrubStep:
    rows = conn.execute(
        "SELECT producer_id, producer_sequence, stream, first_seq, count, timestamp_ms, crc"
        " FROM producer_results WHERE (producer_id, producer_sequence) > (?, ?)"
        " ORDER BY producer_id, producer_sequence LIMIT ?",
        (position.producer_id, position.producer_sequence, limit),
    ).fetchall()
    for *fields, crc in rows:
        _check_producer_crc(conn, fields, crc)
    if len(rows) < limit:
        return ScrubStep(len(rows), ScrubPosition(position.generation, STRUCTURE))
    last_id, last_sequence = rows[-1][0], rows[-1][1]
    return ScrubStep(
        len(rows),
        ScrubPosition(
            position.generation,
            RESULTS,
            producer_id=last_id,
            producer_sequence=last_sequence,
        ),
    )


def _check_producer_crc(conn: sqlite3.Connection, fields: list[object], crc: int) -> None:
    if fields_crc(*fields) != crc:
        raise CorruptState(database_path(conn), f"producer {fields[0]!r} fails its checksum")


__all__ = ["ScrubPosition", "ScrubStep", "check_ends", "scrub_step"]
