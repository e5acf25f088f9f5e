"""The streams database: schema, connection settings, record ids, named errors.

Records of all streams live in one table keyed by a packed integer id,
`stream_id << SEQUENCE_BITS | sequence`, which is SQLite's rowid: a read of
a sequence range is one range scan of the table's own B-tree, and an append
is an insert at its right edge, with no second index to maintain. Every row
carries a CRC-32 of its fields (`checksums.py`).

The database runs in WAL mode with `synchronous=NORMAL`: a crash of the
process loses nothing committed, and a power loss may lose the last
transactions, but `last_applied` is written in the same transaction as
their effects, so the node re-applies exactly the lost tail from its
durable Raft log.

A new database is built under a temporary name and renamed into place, so
an existing file without the schema is never mistaken for a new, empty
state: it is damaged and refused, naming the file.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from railyard.streams.checksums import fields_crc
from railyard.streams.errors import CorruptState, StateIOError

# Sequences of one stream use the low 40 bits of a record id: 10^12 records
# per stream; stream ids get the remaining 23 bits (8 million streams
# created over the life of a cluster; ids are never reused).
SEQUENCE_BITS = 40
MAX_STREAM_ID = (1 << (63 - SEQUENCE_BITS)) - 1

# 3: producers remember a window of results (`producer_results`), not only the last.
# 4: retention has a clock of its own (`retention_clock_ms`, see `retention`).
FORMAT_VERSION = 4

# The node is the only writer; a reader tool must not block it for long.
BUSY_TIMEOUT_S = 5.0
# A checkpoint (copying the WAL into the database, with an fsync) takes
# milliseconds; done by the writer inside a commit, as SQLite does every
# 1,000 pages, it stalls an apply on the node's loop every few hundred puts.
# The node checkpoints on a thread of its own (`StreamsMachine.checkpoint`).
# That copies what was committed when it started; the WAL starts over only
# once a checkpoint leaves nothing behind, which steady writes never allow,
# so the writer still checkpoints past this many pages (16 MiB): by then it
# finds most frames copied and pays little more than the fsync.
WRITER_AUTOCHECKPOINT_PAGES = 4096

SCHEMA = (
    """CREATE TABLE state (
        id INTEGER PRIMARY KEY CHECK (id = 0),
        format INTEGER NOT NULL,
        last_applied INTEGER NOT NULL,
        clock_ms INTEGER NOT NULL,
        retention_clock_ms INTEGER NOT NULL,
        last_sweep_ms INTEGER NOT NULL,
        next_stream_id INTEGER NOT NULL,
        crc INTEGER NOT NULL
    )""",
    """CREATE TABLE streams (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        max_age_ms INTEGER NOT NULL,
        max_records INTEGER NOT NULL,
        max_bytes INTEGER NOT NULL,
        created_ms INTEGER NOT NULL,
        first_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        crc INTEGER NOT NULL
    )""",
    """CREATE TABLE records (
        id INTEGER PRIMARY KEY,
        ts INTEGER NOT NULL,
        key BLOB,
        data BLOB NOT NULL,
        crc INTEGER NOT NULL
    )""",
    """CREATE TABLE producers (
        producer_id TEXT PRIMARY KEY,
        last_sequence INTEGER NOT NULL,
        last_used_index INTEGER NOT NULL UNIQUE,
        crc INTEGER NOT NULL
    )""",
    """CREATE TABLE producer_results (
        producer_id TEXT NOT NULL,
        producer_sequence INTEGER NOT NULL,
        stream TEXT NOT NULL,
        first_seq INTEGER NOT NULL,
        count INTEGER NOT NULL,
        timestamp_ms INTEGER NOT NULL,
        crc INTEGER NOT NULL,
        PRIMARY KEY (producer_id, producer_sequence)
    ) WITHOUT ROWID""",
)

# The state row of a new database: format, last_applied, clock_ms,
# retention_clock_ms, last_sweep_ms, next_stream_id.
INITIAL_STATE = (FORMAT_VERSION, 0, 0, 0, 0, 1)


def record_id(stream_id: int, sequence: int) -> int:
    return (stream_id << SEQUENCE_BITS) | sequence


def named_error(path: Path, exc: sqlite3.Error) -> StateIOError | CorruptState:
    """SQLite's error as ours, naming the file: I/O trouble, or a damaged database."""
    if isinstance(exc, sqlite3.OperationalError):
        return StateIOError(path, str(exc))
    return CorruptState(path, str(exc))


@contextlib.contextmanager
def sqlite_errors_named(path: Path) -> Iterator[None]:
    """Raise SQLite's exceptions as errors naming the file."""
    try:
        yield
    except sqlite3.Error as exc:
        raise named_error(path, exc) from exc


def database_path(conn: sqlite3.Connection) -> Path:
    """The file behind a connection, for error messages."""
    return Path(conn.execute("PRAGMA database_list").fetchone()[2])


def connect(path: Path, *, quick_check: bool = True) -> sqlite3.Connection:
    """Open a streams database, creating it if no file is there; errors name the file.

    `quick_check` reads every page of the file (SQLite's `PRAGMA quick_check`).
    """
    if not _exists(path):
        _create(path)
    with sqlite_errors_named(path):
        conn = _connect(path, quick_check=quick_check)
    try:
        with sqlite_errors_named(path):
            _check_format(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def connect_reader(path: Path) -> sqlite3.Connection:
    """Another connection to a database `connect` opened and checked: for reads and snapshots.

    No integrity check (the writer's open did it) and no journal-mode change:
    opening one costs a file open, not a pass over the database.
    """
    with sqlite_errors_named(path):
        return sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S
        )


def _connect(path: Path, *, quick_check: bool = True) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S
    )
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA wal_autocheckpoint={WRITER_AUTOCHECKPOINT_PAGES}")
        if quick_check:
            problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise CorruptState(path, "; ".join(problems[:5]))
    except BaseException:
        conn.close()
        raise
    return conn


def _exists(path: Path) -> bool:
    """Whether anything of a database is on disk (even a damaged or cut-short file)."""
    wal = path.with_name(path.name + "-wal")
    return path.exists() or (wal.exists() and wal.stat().st_size > 0)


def _create(path: Path) -> None:
    """Build a new, empty database under a temporary name and rename it into place."""
    temp = path.with_name(path.name + ".creating")
    remove_database_files(temp)
    with sqlite_errors_named(temp):
        conn = _connect(temp)
        try:
            conn.execute("BEGIN IMMEDIATE")
            for statement in SCHEMA:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO state VALUES (0, ?, ?, ?, ?, ?, ?, ?)",
                (*INITIAL_STATE, fields_crc(*INITIAL_STATE)),
            )
            conn.execute("COMMIT")
        finally:
            conn.close()  # the last connection: checkpoints and removes the WAL
    fsync_path(temp)
    os.replace(temp, path)
    fsync_path(path.parent)


def _check_format(conn: sqlite3.Connection, path: Path) -> None:
    try:
        row = conn.execute("SELECT format FROM state").fetchone()
    except sqlite3.OperationalError as exc:  # no state table: not (or no longer) ours
        raise CorruptState(path, f"not a railyard streams database ({exc})") from exc
    if row is None or row[0] != FORMAT_VERSION:
        found = row[0] if row else None
        raise CorruptState(path, f"format version {found}, this build reads {FORMAT_VERSION}")


def fsync_path(path: Path) -> None:
    """fsync a file, or a directory to make renames in it durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_wal_files(db: Path) -> None:
    """Remove a closed database's WAL and shared-memory files, if present."""
    for suffix in ("-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)


def remove_database_files(db: Path) -> None:
    """Remove a database file with its WAL and shared-memory files, if present."""
    db.unlink(missing_ok=True)
    remove_wal_files(db)
