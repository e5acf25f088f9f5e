"""The replicated state machine: streams of records, applied from committed entries.

Deterministic: the state after applying entries 1..n depends only on those
entries' bytes, not on how they were batched into `apply` calls, the local
clock, or the process's history. Time comes from the leader's timestamps in
the commands: the machine's clock (`clock_ms`) is the largest one applied
so far, and it stamps records, so record timestamps never go backwards even
when a new leader's clock is behind its predecessor's. Retention runs on a
clock of its own that one far-future timestamp cannot move (`retention`).

Exactly-once: `apply` writes `last_applied` in the same SQLite transaction
as the effects of the entries, one transaction per call, and skips entries
at or below it; replaying the log after a crash therefore never applies an
entry twice. Appends carrying a producer id are deduplicated (Raft
dissertation §6.3, see `producers.py`): a repeat of any of a producer's
last `Limits.producer_window` sequences gets its original result back.
Deleting a stream does not forget its producers.

Retention (see `retention.py`) is enforced on the appended stream after
every append, and on every age-limited stream whenever the clock has moved
`AGE_SWEEP_INTERVAL_MS` past the last sweep, so idle streams also expire.

Bad commands are result values (see `results.py`); an exception in `apply`
means a broken invariant or a damaged database (`CorruptState`,
`StateIOError`, naming the file), and the node must stop.

Threads: `apply`, `restore_from` and the checks use the writer connection,
one caller at a time. Queries (`read`, `scan`, `describe`, ...) use a
second connection, each inside one read transaction, so they may run on
another thread while entries are applied: a query sees every `apply` that
returned before it began, and never half of one (SQLite WAL readers see
committed transactions only). `freeze` pins the state as of the last
`apply` in a read transaction of its own, so a snapshot can be copied from
it on any thread while applying goes on. `scrub` checks the whole state a
step at a time on a connection of its own (`scrub.py`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import sqlite3
import threading
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from google.protobuf.message import DecodeError

from railyard.proto import commands_pb2
from railyard.streams import queries, scrub
from railyard.streams.checksums import RECORD_HEADER, fields_crc, record_crc
from railyard.streams.errors import ApplyOrderError, CorruptState, StreamsError
from railyard.streams.limits import (
    DEFAULT_LIMITS,
    Limits,
    validate_append,
    validate_create,
    validate_delete,
    validate_new_name,
    validate_update,
)
from railyard.streams.producers import ProducerTable
from railyard.streams.results import (
    Appended,
    ApplyResult,
    InvalidArgument,
    ReadResult,
    Retention,
    StreamCreated,
    StreamDeleted,
    StreamExists,
    StreamInfo,
    StreamNotFound,
    StreamUpdated,
    TooManyStreams,
)
from railyard.streams.retention import corroborated_clock, trim
from railyard.streams.rows import (
    StreamRow,
    insert_stream,
    load_stream,
    load_streams,
    store_retention,
    store_stream,
)
from railyard.streams.schema import (
    FORMAT_VERSION,
    MAX_STREAM_ID,
    connect,
    connect_reader,
    fsync_path,
    record_id,
    remove_database_files,
    remove_wal_files,
    sqlite_errors_named,
)
from railyard.streams.scrub import ScrubPosition, ScrubStep

# Idle age-limited streams are trimmed at most once per second of leader
# time: often enough for retention measured in minutes or more, rarely
# enough that a busy cluster with many streams does not sweep per entry.
AGE_SWEEP_INTERVAL_MS = 1000

_RESTORE_SUFFIX = ".restore"

# Records inserted by one statement (`_insert_records`): a statement of many
# rows binds them in one call of the sqlite3 module where `executemany` makes
# a step per row. 100 rows are at most 500 variables, under the 999 of the
# oldest SQLite builds, and whole batches reuse one cached statement.
INSERT_ROWS = 100
# Rows per scrub step when `verify` checks the whole state in one go.
VERIFY_STEP_ROWS = 100_000


class StreamsMachine:
    """The streams state over one SQLite database. Create with `StreamsMachine.open`."""

    def __init__(self, path: Path, conn: sqlite3.Connection, limits: Limits) -> None:
        self.path = path
        self.limits = limits
        self._conn = conn
        self._reader = connect_reader(path)
        # `checkpoint` and `scrub` run on threads of their own; the lock keeps
        # them off a connection that `restore_from` or `close` is closing.
        self._checkpointer: sqlite3.Connection | None = None
        self._checkpoint_lock = threading.Lock()
        self._scrubber: sqlite3.Connection | None = None
        # Raised by each `restore_from`: a scrub position of an older file starts over.
        self._generation = 0
        self._last_applied = 0
        self._clock_ms = 0
        self._retention_clock_ms = 0
        self._last_sweep_ms = 0
        self._next_stream_id = 1
        self._stream_count = 0
        # Stream rows read or changed by the current `apply`, written back before it commits.
        self._rows: dict[str, StreamRow] = {}
        self._producers: ProducerTable
        with sqlite_errors_named(path):
            self._load()

    @classmethod
    def open(
        cls, path: Path, limits: Limits = DEFAULT_LIMITS, *, quick_check: bool = True
    ) -> StreamsMachine:
        """Create the database, or open and check an existing one (`CorruptState` names it).

        The check reads the state row; with `quick_check` also every page
        of the file (SQLite's `quick_check`, a cost proportional to the
        state): a node opens without it and has `scrub` do it in the
        background.
        """
        path = Path(path)
        remove_database_files(path.with_name(path.name + _RESTORE_SUFFIX))
        conn = connect(path, quick_check=quick_check)
        try:
            return cls(path, conn, limits)
        except BaseException:
            conn.close()
            raise

    def _load(self) -> None:
        *fields, crc = self._conn.execute(
            "SELECT format, last_applied, clock_ms, retention_clock_ms, last_sweep_ms,"
            " next_stream_id, crc FROM state"
        ).fetchone()
        if fields_crc(*fields) != crc:
            raise CorruptState(self.path, "the state row fails its checksum")
        (
            _,
            self._last_applied,
            self._clock_ms,
            self._retention_clock_ms,
            self._last_sweep_ms,
            self._next_stream_id,
        ) = fields
        self._producers = ProducerTable(self._conn, self.limits.producer_window)
        (self._stream_count,) = self._conn.execute("SELECT COUNT(*) FROM streams").fetchone()

    def _state_fields(self) -> tuple[int, int, int, int, int, int]:
        return (
            FORMAT_VERSION,
            self._last_applied,
            self._clock_ms,
            self._retention_clock_ms,
            self._last_sweep_ms,
            self._next_stream_id,
        )

    @property
    def last_applied(self) -> int:
        return self._last_applied

    @property
    def stream_count(self) -> int:
        """Streams held as of the last `apply` (an int read: safe from any thread)."""
        return self._stream_count

    @property
    def clock_ms(self) -> int:
        """The largest leader timestamp applied so far."""
        return self._clock_ms

    @property
    def retention_clock_ms(self) -> int:
        """The clock age retention trims by (`retention.corroborated_clock`)."""
        return self._retention_clock_ms

    # ------------------------------------------------------------ apply

    def apply(self, entries: Sequence[tuple[int, bytes | None]]) -> list[ApplyResult | None]:
        """Apply committed entries `(index, data)` in one transaction.

        Entries at or below `last_applied` are skipped (result None); the
        others must follow it without a gap. `data` None or empty is an
        entry without a command (a leader's no-op): it only advances
        `last_applied`.
        """
        with sqlite_errors_named(self.path):
            return self._apply(entries)

    def _apply(self, entries: Sequence[tuple[int, bytes | None]]) -> list[ApplyResult | None]:
        results: list[ApplyResult | None] = []
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for index, data in entries:
                if index <= self._last_applied:
                    results.append(None)
                    continue
                if index != self._last_applied + 1:
                    raise ApplyOrderError(index, self._last_applied)
                results.append(self._apply_entry(index, data) if data else None)
                self._last_applied = index
            self._flush_rows()
            fields = self._state_fields()
            conn.execute(
                "UPDATE state SET format = ?, last_applied = ?, clock_ms = ?, "
                "retention_clock_ms = ?, last_sweep_ms = ?, next_stream_id = ?, crc = ?",
                (*fields, fields_crc(*fields)),
            )
            conn.execute("COMMIT")
        except BaseException:
            self._rows.clear()
            conn.execute("ROLLBACK")
            self._load()
            raise
        return results

    def _stream(self, name: str) -> StreamRow | None:
        """A stream's row for the current `apply`; changes to it are written by `_flush_rows`."""
        row = self._rows.get(name)
        if row is None:
            row = load_stream(self._conn, name)
            if row is not None:
                self._rows[name] = row
        return row

    def _flush_rows(self) -> None:
        for row in self._rows.values():
            store_stream(self._conn, row)
        self._rows.clear()

    def _apply_entry(self, index: int, data: bytes) -> ApplyResult:
        command = commands_pb2.Command()
        try:
            command.ParseFromString(data)
        except DecodeError:
            return InvalidArgument("command", "entry data is not a Command message")
        kind = command.WhichOneof("command")
        if kind == "create_stream":
            return self._create(command.create_stream)
        if kind == "delete_stream":
            return self._delete(command.delete_stream)
        if kind == "append_records":
            return self._append(index, command.append_records)
        if kind == "update_stream":
            return self._update(command.update_stream)
        return InvalidArgument("command", "no command set")

    def _advance_clock(self, timestamp_ms: int) -> None:
        """Move both clocks by a command's timestamp (never back); sweep if it is time."""
        retention_ms = corroborated_clock(self._retention_clock_ms, self._clock_ms, timestamp_ms)
        self._clock_ms = max(self._clock_ms, timestamp_ms)
        if retention_ms == self._retention_clock_ms:
            return
        self._retention_clock_ms = retention_ms
        if retention_ms - self._last_sweep_ms >= AGE_SWEEP_INTERVAL_MS:
            self._last_sweep_ms = retention_ms
            self._flush_rows()
            for row in load_streams(self._conn, "WHERE max_age_ms > 0"):
                trim(self._conn, row, retention_ms)
                store_stream(self._conn, row)

    def _create(self, cmd: commands_pb2.CreateStreamCommand) -> ApplyResult:
        self._advance_clock(cmd.timestamp_ms)
        invalid = validate_create(cmd, self.limits)
        if invalid:
            return invalid
        retention = Retention(
            cmd.retention.max_age_ms, cmd.retention.max_records, cmd.retention.max_bytes
        )
        existing = self._stream(cmd.name)
        if existing is not None:
            if existing.retention != retention:
                return StreamExists(cmd.name)
            return StreamCreated(existing.info())
        if 0 < cmd.max_streams <= self._stream_count:
            return TooManyStreams(cmd.name, cmd.max_streams)
        return StreamCreated(self._insert_stream(cmd.name, retention).info())

    def _insert_stream(self, name: str, retention: Retention) -> StreamRow:
        if self._next_stream_id > MAX_STREAM_ID:
            raise StreamsError(f"stream ids exhausted ({MAX_STREAM_ID} streams created)")
        row = StreamRow(self._next_stream_id, name, retention, self._clock_ms, 1, 0, 0)
        self._next_stream_id += 1
        self._stream_count += 1
        insert_stream(self._conn, row)
        self._rows[name] = row
        return row

    def _update(self, cmd: commands_pb2.UpdateStreamCommand) -> ApplyResult:
        self._advance_clock(cmd.timestamp_ms)
        invalid = validate_update(cmd, self.limits)
        if invalid:
            return invalid
        row = self._stream(cmd.name)
        if row is None:
            return StreamNotFound(cmd.name)
        row.retention = Retention(
            cmd.retention.max_age_ms, cmd.retention.max_records, cmd.retention.max_bytes
        )
        store_retention(self._conn, row)
        trim(self._conn, row, self._clock_ms)
        return StreamUpdated(row.info())

    def _delete(self, cmd: commands_pb2.DeleteStreamCommand) -> ApplyResult:
        invalid = validate_delete(cmd, self.limits)
        if invalid:
            return invalid
        row = self._stream(cmd.name)
        if row is None:
            return StreamNotFound(cmd.name)
        del self._rows[cmd.name]
        self._conn.execute(
            "DELETE FROM records WHERE id >= ? AND id < ?",
            (record_id(row.id, 0), record_id(row.id + 1, 0)),
        )
        self._conn.execute("DELETE FROM streams WHERE id = ?", (row.id,))
        self._stream_count -= 1
        return StreamDeleted(cmd.name)

    def _append(self, index: int, cmd: commands_pb2.AppendRecordsCommand) -> ApplyResult:
        self._advance_clock(cmd.timestamp_ms)
        invalid = validate_append(cmd, self.limits)
        if invalid:
            return invalid
        last_sequence = None
        if cmd.producer_id:
            last_sequence = self._producers.last_sequence(cmd.producer_id)
            repeat = self._producers.check(
                index, cmd.producer_id, cmd.producer_sequence, last_sequence
            )
            if repeat is not None:
                return repeat
        row = self._stream(cmd.stream)
        if row is None:
            if not cmd.create_if_missing:
                return StreamNotFound(cmd.stream)
            invalid = validate_new_name(cmd.stream, "stream", self.limits)
            if invalid:
                return invalid
            if 0 < cmd.max_streams <= self._stream_count:
                return TooManyStreams(cmd.stream, cmd.max_streams)
            row = self._insert_stream(cmd.stream, Retention())
        first = row.last_seq + 1
        base = record_id(row.id, 0)
        ts = self._clock_ms
        values, keyed, size = _record_values(cmd.records, base + first, ts)
        count = len(cmd.records)
        _insert_records(self._conn, values, keyed)
        row.last_seq += count
        row.bytes += size
        trim(self._conn, row, self._retention_clock_ms)
        result = Appended(row.name, range(first, row.last_seq + 1), ts)
        if cmd.producer_id:
            self._producers.remember(
                index,
                cmd.producer_id,
                cmd.producer_sequence,
                result,
                self.limits.max_producers,
                last_sequence,
            )
        return result

    # ------------------------------------------------------------ queries

    def list_streams(self) -> list[StreamInfo]:
        """Every stream, by name."""
        with self._reading() as conn:
            return [row.info() for row in load_streams(conn)]

    def describe(self, name: str) -> StreamInfo | StreamNotFound:
        with self._reading() as conn:
            row = load_stream(conn, name)
        return row.info() if row is not None else StreamNotFound(name)

    def read(
        self, name: str, from_sequence: int, limit: int, max_bytes: int
    ) -> ReadResult | StreamNotFound:
        """See `queries.read_records`. `limit` < 1 reads one; `max_bytes` <= 0: no byte limit."""
        with self._reading() as conn:
            row = load_stream(conn, name)
            if row is None:
                return StreamNotFound(name)
            return queries.read_records(conn, row, from_sequence, limit, max_bytes)

    def scan(
        self, name: str, from_sequence: int, limit: int, max_bytes: int, sink: queries.RecordSink
    ) -> tuple[int, int] | StreamNotFound:
        """`read`, handing each record to `sink`; returns (next_sequence, behind_latest)."""
        with self._reading() as conn:
            row = load_stream(conn, name)
            if row is None:
                return StreamNotFound(name)
            return queries.scan_records(conn, row, from_sequence, limit, max_bytes, sink)

    def resolve_position(
        self, name: str, position: str, sequence: int = 0, timestamp_ms: int = 0
    ) -> int | StreamNotFound | InvalidArgument:
        """See `queries.resolve_position`; LATEST is the sequence after the last one."""
        with self._reading() as conn:
            row = load_stream(conn, name)
            if row is None:
                return StreamNotFound(name)
            return queries.resolve_position(conn, row, position, sequence, timestamp_ms)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """One read transaction on the reader connection: a consistent view of one state."""
        conn = self._reader
        with sqlite_errors_named(self.path):
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    def verify(self) -> None:
        """Check the whole state at once: one scrub pass (`scrub.scrub_step`) in one
        read transaction; `CorruptState` names the file.

        Reads check the records they return; this checks everything, at a
        cost proportional to the size of the state (a node's start checks
        `verify_ends` and scrubs the rest in the background, step by step).
        """
        with sqlite_errors_named(self.path):
            self._load()
            conn = self._conn
            conn.execute("BEGIN")
            try:
                position: ScrubPosition | None = ScrubPosition(self._generation)
                while position is not None:
                    position = scrub.scrub_step(conn, position, VERIFY_STEP_ROWS).next
            finally:
                conn.execute("COMMIT")

    def verify_ends(self) -> None:
        """The checks a start can afford (`scrub.check_ends`): the state row, every
        stream row, the first and last record of every stream; `CorruptState`
        names the file. Costs a few reads per stream, whatever the records."""
        with sqlite_errors_named(self.path):
            self._load()
            scrub.check_ends(self._conn)

    @property
    def generation(self) -> int:
        """How many times `restore_from` replaced the state file (an int read: any thread)."""
        return self._generation

    def scrub(self, position: ScrubPosition, limit: int) -> ScrubStep:
        """The next step of a whole-state check (`scrub.scrub_step`), from `position`.

        Safe on a thread of its own while entries are applied: its own
        connection, one read transaction per step (it never blocks an
        apply). A position of a file `restore_from` has since replaced
        starts the pass over. `CorruptState` names the file and the row.
        """
        with self._checkpoint_lock, sqlite_errors_named(self.path):
            if position.generation != self._generation:
                position = ScrubPosition(self._generation)
            if self._scrubber is None:
                self._scrubber = connect_reader(self.path)
            conn = self._scrubber
            conn.execute("BEGIN")
            try:
                return scrub.scrub_step(conn, position, limit)
            finally:
                conn.execute("COMMIT")

    def producer_count(self) -> int:
        return self._producers.count

    def producer_result_count(self) -> int:
        """Append results remembered for exactly-once, over all producers."""
        with sqlite_errors_named(self.path):
            return self._producers.result_count()

    def dump_sql(self) -> list[str]:
        """The whole state as SQL text (`iterdump`): equal on replicas at equal `last_applied`."""
        with sqlite_errors_named(self.path):
            return list(self._conn.iterdump())

    # ------------------------------------------------------------ snapshots

    def snapshot_to(self, path: Path) -> None:
        """Write a consistent copy of the state, at `last_applied`, to `path` (backup API)."""
        frozen = self.freeze()
        try:
            frozen.write_to(path)
        finally:
            frozen.close()

    def freeze(self) -> FrozenState:
        """The state as of the last `apply`, held in a read transaction until closed.

        Cheap (a connection and a read); call it between applies. The copy
        (`FrozenState.write_to`) may then run on another thread while
        entries are applied.
        """
        conn = connect_reader(self.path)
        try:
            with sqlite_errors_named(self.path):
                conn.execute("BEGIN")
                (applied,) = conn.execute("SELECT last_applied FROM state").fetchone()
        except BaseException:
            conn.close()
            raise
        if applied != self._last_applied:
            conn.close()
            raise StreamsError(f"froze the state at {applied}, expected {self._last_applied}")
        return FrozenState(self.path, conn, applied)

    def restore_from(self, path: Path) -> None:
        """Replace the whole state with a snapshot file, atomically.

        The snapshot is copied beside the database and checked; then the
        database is closed (which checkpoints its WAL), its WAL files are
        removed so they cannot be replayed onto the new file, and the copy
        is renamed over it. A crash leaves the old state or the new one.
        """
        temp = self.path.with_name(self.path.name + _RESTORE_SUFFIX)
        remove_database_files(temp)
        shutil.copyfile(path, temp)
        try:
            StreamsMachine.open(temp, self.limits).close()  # raises CorruptState naming it
            fsync_path(temp)
        except BaseException:
            remove_database_files(temp)
            raise
        with self._checkpoint_lock:
            self._close_checkpointer()
            self._close_scrubber()
            self._generation += 1
            self._conn.close()
            self._reader.close()
            remove_wal_files(self.path)  # never the database itself: a crash must find one
            os.replace(temp, self.path)
            fsync_path(self.path.parent)
            self._conn = connect(self.path)
            self._reader = connect_reader(self.path)
        self._rows.clear()
        with sqlite_errors_named(self.path):
            self._load()

    def checkpoint(self) -> None:
        """Copy what the WAL holds into the database.

        Safe on another thread while entries are applied (its own connection;
        PASSIVE waits for nobody). Frames committed meanwhile stay in the WAL
        for the next call; once one copies everything, the writer starts the
        WAL over.
        """
        with self._checkpoint_lock, sqlite_errors_named(self.path):
            if self._checkpointer is None:
                self._checkpointer = connect_reader(self.path)
            # fetchall finishes the statement now, not when the cursor is
            # collected: an unfinished one holds a read lock, which keeps the
            # writer from starting the WAL over.
            self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _close_checkpointer(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None

    def _close_scrubber(self) -> None:
        if self._scrubber is not None:
            self._scrubber.close()
            self._scrubber = None

    def close(self) -> None:
        with self._checkpoint_lock:
            self._close_checkpointer()
            self._close_scrubber()
        self._reader.close()
        self._conn.close()  # the last connection: checkpoints and removes the WAL


class FrozenState:
    """A state pinned by `StreamsMachine.freeze`: copy it with `write_to`, then `close`."""

    def __init__(self, path: Path, conn: sqlite3.Connection, applied: int) -> None:
        self.path = path
        self.applied = applied
        self._conn = conn

    def write_to(self, path: Path) -> None:
        """Copy the pinned state to a new database file at `path` (backup API)."""
        path = Path(path)
        remove_database_files(path)
        with sqlite_errors_named(path):
            dest = sqlite3.connect(path)
            try:
                # The backup reads inside this connection's open read transaction:
                # the pinned state, whatever was applied since.
                self._conn.backup(dest)
            finally:
                dest.close()

    def close(self) -> None:
        self._conn.close()


def _record_values(
    records: Sequence[commands_pb2.Record], first_id: int, ts: int
) -> tuple[list[int | bytearray | None], bool, int]:
    """The appended records' column values in one flat list, whether it has a
    key column, and the records' size in bytes.

    A batch without keys leaves out the key column (`_insert_sql` writes
    NULL); one with keys has (id, ts, key, data, crc) per record. Blobs are
    handed over as `bytearray`s: the sqlite3 module binds those at once,
    where for `bytes` and None it first looks for an adapter and builds and
    drops an AttributeError, about 0.5 us per value here (CPython 3.11).

    The hot loop of ingest: each field of a record is read once, and an
    unkeyed record's checksum is computed inline (as `record_crc` would).
    """
    values: list[int | bytearray | None] = []
    extend = values.extend
    size = 0
    crc32 = zlib.crc32
    unkeyed_header = RECORD_HEADER.pack
    for rid, r in enumerate(records, start=first_id):
        if r.has_key:
            return _keyed_record_values(records, first_id, ts)
        data = bytearray(r.data)
        extend((rid, ts, data, crc32(data, crc32(unkeyed_header(rid, ts, -1)))))
        size += len(data) + len(r.key)
    return values, False, size


def _keyed_record_values(
    records: Sequence[commands_pb2.Record], first_id: int, ts: int
) -> tuple[list[int | bytearray | None], bool, int]:
    """`_record_values` of a batch where some record has a key."""
    values: list[int | bytearray | None] = []
    extend = values.extend
    size = 0
    for rid, r in enumerate(records, start=first_id):
        data = r.data
        key = r.key
        size += len(data) + len(key)
        if r.has_key:
            extend((rid, ts, bytearray(key), bytearray(data), record_crc(rid, ts, key, data)))
        else:
            extend((rid, ts, None, bytearray(data), record_crc(rid, ts, None, data)))
    return values, True, size


@functools.lru_cache(maxsize=2 * INSERT_ROWS)
def _insert_sql(rows: int, keyed: bool) -> str:
    row = "(?, ?, ?, ?, ?)" if keyed else "(?, ?, NULL, ?, ?)"
    return "INSERT INTO records VALUES " + ", ".join([row] * rows)


def _insert_records(
    conn: sqlite3.Connection, values: list[int | bytearray | None], keyed: bool
) -> None:
    """Insert records from `_record_values`' flat list, `INSERT_ROWS` a statement."""
    columns = 5 if keyed else 4
    step = INSERT_ROWS * columns
    for start in range(0, len(values), step):
        chunk = values[start : start + step]
        conn.execute(_insert_sql(len(chunk) // columns, keyed), chunk)


def snapshot_problem(path: Path, index: int) -> str | None:
    """What makes `path` unfit as this machine's state at `index` (a received
    snapshot, checked before it replaces anything), or None: the format this
    build reads, a state row that passes its checksum, `last_applied == index`.
    Opens it read-only; run `storage.sqlite_problem` for the file itself."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    except sqlite3.Error as exc:
        return f"does not open as SQLite: {exc}"
    try:
        found = conn.execute(
            "SELECT format, last_applied, clock_ms, retention_clock_ms, last_sweep_ms,"
            " next_stream_id, crc FROM state"
        ).fetchall()
    except sqlite3.Error as exc:
        return f"has no readable state row: {exc}"
    finally:
        conn.close()
    if len(found) != 1:
        return f"has {len(found)} state rows, expected 1"
    *fields, crc = found[0]
    if fields[0] != FORMAT_VERSION:
        return f"is format version {fields[0]}, this build reads {FORMAT_VERSION}"
    if fields_crc(*fields) != crc:
        return "has a state row that fails its checksum"
    if fields[1] != index:
        return f"holds the state applied to {fields[1]}, its metadata says {index}"
    return None


def state_summary(path: Path) -> tuple[int, int]:
    """How many streams and records the state database at `path` holds (read-only)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        (streams,) = conn.execute("SELECT COUNT(*) FROM streams").fetchone()
        (records,) = conn.execute("SELECT COUNT(*) FROM records").fetchone()
    finally:
        conn.close()
    return int(streams), int(records)


__all__ = [
    "AGE_SWEEP_INTERVAL_MS",
    "CorruptState",
    "FrozenState",
    "StreamsMachine",
    "snapshot_problem",
    "state_summary",
]
