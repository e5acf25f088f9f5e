"""The durable Raft log: one SQLite database per node.

Durability: the database runs in WAL mode with `synchronous=FULL`, and every
`save` is a single transaction, so one call costs one fsync of the WAL and a
crash leaves either all of a save or none of it. A torn tail (a partly
written frame after a crash or power loss) fails SQLite's WAL frame
checksums and is discarded on the next open; only un-committed, hence
never-acknowledged, data can be lost that way.

Identity: the `meta` table records the cluster name and node id the store was
created for; opening it for another cluster or node raises `StoreMismatch`
naming both, because replaying another node's log would silently corrupt the
cluster. A new store is built under a temporary name and renamed into
place, so an existing file without an identity is never mistaken for a new
store: it is damaged (cut short, overwritten) and is refused. On open the
file also passes `PRAGMA quick_check`, and every row read back is checked
against its CRC-32 (`checksums.py`); a failure raises `CorruptStore` naming
the file. So does a WAL holding acknowledged commits that SQLite would skip
because an earlier frame is damaged (`wal.py`), and so does a log that no
longer reaches where its last completed save left it, e.g. after its WAL was
cut short (the tail marker beside the database, `tail_marker.py`). Other
SQLite failures (disk full, I/O errors) raise `StoreIOError` naming the file.

The compaction record keeps the snapshot's configuration in its `voters`
column: a JSON list of voter ids as stores always wrote it when the snapshot
carries no `membership`, otherwise the configuration's JSON object
(`membership_to_record`). Both read back, so a data directory written before
configurations were logged opens unchanged (its snapshot stands for its voters
alone, and the node's cluster file supplies the rest: `RaftConfig.bootstrap`).

The indexes, the hard state and the compaction metadata are cached in memory
after open: the store is the only writer (the data-directory lock makes sure
of that), so the cache is exact and reads of them cost no query.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

from railyard.raft import (
    NO_INDEX,
    NO_TERM,
    Entry,
    EntryKind,
    HardState,
    Index,
    NodeId,
    SnapshotMeta,
    Term,
    membership_from_record,
    membership_to_record,
)
from railyard.storage.checksums import entry_crc, fields_crc
from railyard.storage.errors import (
    CorruptStore,
    LogCompacted,
    LogGap,
    StoreIOError,
    StoreMismatch,
)
from railyard.storage.log import entries_to_write
from railyard.storage.tail_marker import REMEDY, Tail, TailMarker, marker_path, shortfall
from railyard.storage.wal import commit_frames, lost_commits

# Bumped when the schema changes incompatibly; an unknown version is refused.
FORMAT_VERSION = 2

# Time to wait for a lock held by another connection before failing; only a
# tool reading a live store (never the node itself) should ever hold one.
BUSY_TIMEOUT_S = 5.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    idx INTEGER PRIMARY KEY,
    term INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    data BLOB NOT NULL,
    crc INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS hard_state (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    current_term INTEGER NOT NULL,
    voted_for TEXT,
    commit_index INTEGER NOT NULL,
    crc INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS compaction (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    idx INTEGER NOT NULL,
    term INTEGER NOT NULL,
    voters TEXT NOT NULL,
    crc INTEGER NOT NULL
);
"""


def connect(path: Path, synchronous: str) -> sqlite3.Connection:
    """A checked connection in WAL mode with explicit transactions (`BEGIN` ... `COMMIT`)."""
    try:
        conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S
        )
    except sqlite3.Error as exc:
        raise _named_error(path, exc) from exc
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise CorruptStore(path, f"cannot switch to WAL journal mode (got {mode!r})")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise CorruptStore(path, "; ".join(problems[:5]))
    except sqlite3.Error as exc:
        conn.close()
        raise _named_error(path, exc) from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _named_error(path: Path, exc: sqlite3.Error) -> StoreIOError | CorruptStore:
    """SQLite's error as ours, naming the file: I/O trouble, or a damaged database."""
    if isinstance(exc, sqlite3.OperationalError):
        return StoreIOError(path, str(exc))
    return CorruptStore(path, str(exc))


@contextlib.contextmanager
def _sqlite_errors_named(path: Path) -> Iterator[None]:
    """Raise SQLite's exceptions as errors naming the file."""
    try:
        yield
    except sqlite3.Error as exc:
        raise _named_error(path, exc) from exc


def _create(path: Path, cluster: str, node_id: str) -> None:
    """Build a new, empty store under a temporary name and rename it into place."""
    temp = path.with_name(path.name + ".creating")
    for leftover in (temp, *(temp.with_name(temp.name + s) for s in ("-wal", "-shm"))):
        leftover.unlink(missing_ok=True)
    conn = connect(temp, "FULL")
    try:
        conn.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)",
            [("format", str(FORMAT_VERSION)), ("cluster", cluster), ("node_id", node_id)],
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()  # the last connection: checkpoints and removes the WAL
    fd = os.open(temp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _exists(path: Path) -> bool:
    """Whether anything of a store is on disk (even a damaged or cut-short file)."""
    wal = path.with_name(path.name + "-wal")
    return path.exists() or (wal.exists() and wal.stat().st_size > 0)


class SqliteLogStore:
    """A `LogStore` in one SQLite file. Create with `SqliteLogStore.open`."""

    def __init__(
        self, path: Path, conn: sqlite3.Connection, marker: TailMarker | None = None
    ) -> None:
        self.path = path
        self._conn = conn
        self._marker = marker if marker is not None else TailMarker(marker_path(path))
        self._hard_state = HardState()
        self._snapshot: SnapshotMeta | None = None
        self._last = NO_INDEX
        self._last_term = NO_TERM
        self._load()

    @classmethod
    def open(cls, path: Path, *, cluster: str, node_id: str) -> SqliteLogStore:
        """Create the store, or verify the identity and integrity of an existing one."""
        path = Path(path)
        marker = TailMarker(marker_path(path))
        try:
            saved = marker.read()
            if not _exists(path):
                _refuse_lost_store(path, marker.path, saved)
                _create(path, cluster, node_id)
            wal = path.with_name(path.name + "-wal")
            named = wal if wal.exists() and wal.stat().st_size > 0 else path
            commits = commit_frames(path)  # before SQLite may reset the WAL
            conn = connect(path, "FULL")
        except BaseException:
            marker.close()
            raise
        try:
            _check_wal(conn, path, commits)
            _check_identity(conn, path, cluster, node_id)
            store = cls(path, conn, marker)
        except sqlite3.Error as exc:
            conn.close()
            marker.close()
            raise _named_error(path, exc) from exc
        except BaseException:
            conn.close()
            marker.close()
            raise
        try:
            store._check_reaches(saved, named)
        except BaseException:
            store.close()
            raise
        return store

    def _check_reaches(self, saved: Tail | None, named: Path) -> None:
        """Refuse a log that ends before its last completed save did (a WAL cut short)."""
        if saved is None:
            return
        with _sqlite_errors_named(self.path):
            term_at = self.term(saved.last_index)
            problem = shortfall(
                saved, self._last, self._snapshot_index(), term_at, self._hard_state
            )
        if problem is not None:
            raise CorruptStore(
                named,
                f"{problem} (recorded in {self._marker.path.name}): the write-ahead log was "
                f"cut short or rolled back and committed entries are lost; {REMEDY}",
            )

    def _load(self) -> None:
        row = self._conn.execute(
            "SELECT current_term, voted_for, commit_index, crc FROM hard_state"
        ).fetchone()
        if row is not None:
            if fields_crc(*row[:3]) != row[3]:
                raise CorruptStore(self.path, "the hard state fails its checksum")
            voted_for = NodeId(row[1]) if row[1] is not None else None
            self._hard_state = HardState(Term(row[0]), voted_for, Index(row[2]))
        row = self._conn.execute("SELECT idx, term, voters, crc FROM compaction").fetchone()
        if row is not None:
            if fields_crc(*row[:3]) != row[3]:
                raise CorruptStore(self.path, "the compaction record fails its checksum")
            self._snapshot = _snapshot_meta(self.path, Index(row[0]), Term(row[1]), row[2])
        first, last, count = self._conn.execute(
            "SELECT min(idx), max(idx), count(*) FROM entries"
        ).fetchone()
        self._last = Index(last) if last is not None else self._snapshot_index()
        if first is not None and first != self._snapshot_index() + 1:
            raise CorruptStore(
                self.path, f"log starts at {first} but was compacted up to {self._snapshot_index()}"
            )
        if first is not None and count != self._last - first + 1:
            raise CorruptStore(self.path, f"log {first}..{self._last} has {count} entries")
        self._last_term = self._term_of_last()

    def _snapshot_index(self) -> Index:
        return self._snapshot.index if self._snapshot else NO_INDEX

    def _term_of_last(self) -> Term:
        term = self.term(self._last)
        if term is None:
            raise CorruptStore(self.path, f"entry {self._last} is missing")
        return term

    def _tail(self) -> Tail:
        return Tail.of(self._last, self._last_term, self._hard_state)

    def _lower_marker(self, keep: Index) -> None:
        """Before cutting the log after `keep`: a marker that holds before and after the cut."""
        term = self.term(keep)
        assert term is not None, f"the log keeps index {keep} but has no term for it"
        self._marker.lower(Tail.of(keep, term, self._hard_state))

    def save(self, hard_state: HardState | None, entries: Sequence[Entry]) -> None:
        """Cut the log at `entries[0].index`, append `entries`, store `hard_state`: one fsync."""
        with _sqlite_errors_named(self.path):
            rest = entries_to_write(entries, self._snapshot_index(), self._last)
            if not rest and hard_state is None:
                return
            if rest and rest[0].index <= self._last:
                self._lower_marker(Index(rest[0].index - 1))
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                if rest:
                    if rest[0].index <= self._last:
                        conn.execute("DELETE FROM entries WHERE idx >= ?", (rest[0].index,))
                    conn.executemany(
                        "INSERT INTO entries (idx, term, kind, data, crc) VALUES (?, ?, ?, ?, ?)",
                        [
                            (
                                e.index,
                                e.term,
                                int(e.kind),
                                e.data,
                                entry_crc(e.term, e.index, e.kind, e.data),
                            )
                            for e in rest
                        ],
                    )
                if hard_state is not None:
                    fields = (
                        hard_state.current_term,
                        hard_state.voted_for,
                        hard_state.commit_index,
                    )
                    conn.execute(
                        "INSERT OR REPLACE INTO hard_state VALUES (0, ?, ?, ?, ?)",
                        (*fields, fields_crc(*fields)),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            if rest:
                self._last, self._last_term = rest[-1].index, rest[-1].term
            if hard_state is not None:
                self._hard_state = hard_state
            self._marker.record(self._tail())

    def entries(self, lo: Index, hi: Index, max_bytes: int | None = None) -> list[Entry]:
        """Entries `[lo, hi)`, at most `max_bytes` of data but at least one if any."""
        first = self.first_index()
        if lo < first:
            raise LogCompacted(lo, first)
        hi = Index(min(hi, self._last + 1))
        if lo >= hi:
            return []
        with _sqlite_errors_named(self.path):
            return self._read_entries(lo, hi, max_bytes)

    def _read_entries(self, lo: Index, hi: Index, max_bytes: int | None) -> list[Entry]:
        cursor = self._conn.execute(
            "SELECT term, idx, kind, data, crc FROM entries WHERE idx >= ? AND idx < ? "
            "ORDER BY idx",
            (lo, hi),
        )
        chosen: list[Entry] = []
        total = 0
        for row in cursor:
            total += len(row[3])
            if chosen and max_bytes is not None and total > max_bytes:
                break
            if row[1] != lo + len(chosen):
                raise CorruptStore(self.path, f"entry {lo + len(chosen)} is missing")
            chosen.append(self._entry(row))
        else:
            if len(chosen) < hi - lo:
                raise CorruptStore(self.path, f"entry {lo + len(chosen)} is missing")
        cursor.close()
        return chosen

    def _entry(self, row: tuple[int, int, int, bytes, int]) -> Entry:
        term, index, kind, data, crc = row
        if entry_crc(term, index, kind, data) != crc:
            raise CorruptStore(self.path, f"entry {index} fails its checksum")
        try:
            return Entry(Term(term), Index(index), EntryKind(kind), data)
        except ValueError as exc:
            raise CorruptStore(self.path, f"entry {index}: {exc}") from exc

    def term(self, index: Index) -> Term | None:
        with _sqlite_errors_named(self.path):
            snapshot_index = self._snapshot_index()
            if index == snapshot_index:
                return self._snapshot.term if self._snapshot else NO_TERM
            if not snapshot_index < index <= self._last:
                return None
            row = self._conn.execute(
                "SELECT term, idx, kind, data, crc FROM entries WHERE idx = ?", (index,)
            ).fetchone()
            if row is None:
                raise CorruptStore(self.path, f"entry {index} is missing")
            return self._entry(row).term

    def first_index(self) -> Index:
        return Index(self._snapshot_index() + 1)

    def last_index(self) -> Index:
        return self._last

    def truncate_suffix(self, from_index: Index) -> None:
        """Drop entries at and after `from_index` (one transaction)."""
        with _sqlite_errors_named(self.path):
            if from_index <= self._snapshot_index():
                raise LogGap(
                    f"cannot truncate at {from_index}: compacted up to {self._snapshot_index()}"
                )
            if from_index > self._last:
                return
            self._lower_marker(Index(from_index - 1))
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DELETE FROM entries WHERE idx >= ?", (from_index,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self._last = Index(from_index - 1)
            self._last_term = self._term_of_last()
            self._marker.record(self._tail())

    def compact(self, meta: SnapshotMeta) -> None:
        """Drop entries up to `meta.index` and remember `meta` (Raft §7), in one transaction."""
        with _sqlite_errors_named(self.path):
            if meta.index <= self._snapshot_index():
                return
            keep_tail = self.term(meta.index) == meta.term
            if not keep_tail and meta.index <= self._last:
                # The log is discarded down to the old snapshot, which both
                # states (before and after) still reach.
                self._lower_marker(self._snapshot_index())
            fields = (meta.index, meta.term, _configuration_text(meta))
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                if keep_tail:
                    conn.execute("DELETE FROM entries WHERE idx <= ?", (meta.index,))
                else:
                    conn.execute("DELETE FROM entries")
                conn.execute(
                    "INSERT OR REPLACE INTO compaction VALUES (0, ?, ?, ?, ?)",
                    (*fields, fields_crc(*fields)),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self._snapshot = meta
            if not keep_tail:
                self._last, self._last_term = meta.index, meta.term
                self._marker.record(self._tail())

    def snapshot_meta(self) -> SnapshotMeta | None:
        return self._snapshot

    def hard_state(self) -> HardState:
        return self._hard_state

    def close(self) -> None:
        self._conn.close()
        self._marker.close()


def _check_wal(conn: sqlite3.Connection, path: Path, commits: list[int]) -> None:
    """Refuse a store whose WAL holds acknowledged commits SQLite did not replay (see wal.py)."""
    if not commits:
        return
    # A passive checkpoint reports how many WAL frames SQLite accepted; it only
    # copies those into the database, as SQLite would anyway, and leaves the WAL.
    _, accepted, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    lost = lost_commits(commits, accepted)
    if lost:
        raise CorruptStore(
            path.with_name(path.name + "-wal"),
            f"frame {accepted + 1} is damaged: {len(lost)} committed transactions after it "
            "(frames " + ", ".join(map(str, lost[:5])) + ") would be silently dropped",
        )


def _refuse_lost_store(path: Path, marker: Path, saved: Tail | None) -> None:
    """Refuse to create a store afresh where the marker says one held a log or a term."""
    if saved is not None and not saved.is_empty():
        raise CorruptStore(
            path,
            f"the database is missing, but {marker.name} records a saved log up to index "
            f"{saved.last_index} (term {saved.last_term}) in term {saved.current_term}; "
            f"starting afresh would forget it: {REMEDY}",
        )


def _check_identity(conn: sqlite3.Connection, path: Path, cluster: str, node_id: str) -> None:
    """Refuse a file that is not a log store, or is another cluster's or node's."""
    try:
        stored = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.OperationalError as exc:  # no meta table: not (or no longer) a log store
        raise CorruptStore(path, f"not a railyard log store ({exc})") from exc
    if stored.get("format") != str(FORMAT_VERSION):
        raise CorruptStore(
            path, f"format version {stored.get('format')!r}, this build reads {FORMAT_VERSION}"
        )
    found = (stored.get("cluster", "?"), stored.get("node_id", "?"))
    if found != (cluster, node_id):
        raise StoreMismatch(path, found, (cluster, node_id))


def _configuration_text(meta: SnapshotMeta) -> str:
    """The `voters` column of a compaction record (see the module docstring)."""
    if meta.membership is None:
        return json.dumps(list(meta.voters))
    return json.dumps(membership_to_record(meta.membership), sort_keys=True)


def _snapshot_meta(path: Path, index: Index, term: Term, text: str) -> SnapshotMeta:
    try:
        record = json.loads(text)
        if isinstance(record, list):
            return SnapshotMeta(index, term, tuple(NodeId(str(v)) for v in record))
        membership = membership_from_record(record)
    except ValueError as exc:
        raise CorruptStore(
            path, f"the compaction record's configuration is malformed: {exc}"
        ) from exc
    return SnapshotMeta.of(index, term, membership)
