"""Snapshot files of the state machine, written atomically, kept latest-only.

A snapshot is two files in the snapshot directory:

- `snapshot-<index>-<term>.db`: the bytes (a copy of the state database);
- `snapshot-<index>-<term>.json`: its metadata (index, term, voters and, when
  known, the whole configuration under "membership") with the SHA-256 and
  size of the bytes. A file without "membership" (written before
  configurations were logged) stands for its voters alone.

Both are written to a temporary name, fsync'd and renamed into place, the
data before the metadata, then the directory is fsync'd: the metadata file
is the commit point, so a crash at any moment leaves either the previous
snapshot or the new one, never a half-written file under a final name.
Temporary files left by a crash are removed when the store is opened.

Only the newest snapshot (highest index) is kept; the one just installed
is also spared so a caller always gets back a path that exists.

Incoming snapshots (InstallSnapshot) arrive in chunks through a
`SnapshotReceiver`, which hashes as it writes and refuses to install bytes
whose SHA-256 differs from the sender's. A checksum proves only that the
bytes arrived as sent: a peer can send garbage with its right checksum, and
a node that installed it could not restart. So the receiver also refuses
more than `max_bytes` (the caller's disk-space bound) while receiving, and
`stage` runs the caller's `validate` (`sqlite_problem` for what any SQLite
file must pass, plus what the caller knows of the contents) before the
bytes can become the latest snapshot.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from railyard.raft import (
    Index,
    NodeId,
    SnapshotMeta,
    Term,
    membership_from_record,
    membership_to_record,
)
from railyard.storage.errors import CorruptSnapshot

# Chunks of 1 MiB keep a gRPC message well under the default 4 MiB limit
# while amortising per-message overhead.
DEFAULT_CHUNK_BYTES = 1 << 20

# Read size when hashing a file; large enough to make hashing disk-bound.
HASH_READ_BYTES = 1 << 20

_PREFIX = "snapshot-"
_TEMP_PREFIX = ".tmp-"
_DATA_SUFFIX = ".db"
_META_SUFFIX = ".json"


def fsync_directory(directory: Path) -> None:
    """Make renames and unlinks in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    with path.open("rb+") as f:
        os.fsync(f.fileno())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(HASH_READ_BYTES):
            digest.update(block)
    return digest.hexdigest()


def _stem(meta: SnapshotMeta) -> str:
    # Zero-padded so names sort in index order.
    return f"{_PREFIX}{meta.index:020d}-{meta.term:020d}"


class SnapshotStore:
    """The snapshot directory of one node."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._temp_names = itertools.count()
        for leftover in self.directory.glob(f"{_TEMP_PREFIX}*"):
            leftover.unlink(missing_ok=True)

    def create(self, meta: SnapshotMeta, write: Callable[[Path], None]) -> Path:
        """`write(path)` fills a temporary file; it becomes the latest snapshot."""
        temp = self._temp_path()
        try:
            write(temp)
            fsync_file(temp)
            checksum = sha256_file(temp)
            return self._install(temp, meta, checksum)
        finally:
            temp.unlink(missing_ok=True)

    def receiver(self, meta: SnapshotMeta, max_bytes: int | None = None) -> SnapshotReceiver:
        """Accept an incoming snapshot chunk by chunk; see `SnapshotReceiver`."""
        return SnapshotReceiver(self, meta, self._temp_path(), max_bytes)

    def latest(self) -> tuple[SnapshotMeta, Path] | None:
        """The newest complete snapshot, or None."""
        found = self._complete()
        if not found:
            return None
        meta, data, _ = found[-1]
        return meta, data

    def chunks(self, path: Path, chunk_size: int = DEFAULT_CHUNK_BYTES) -> Iterator[bytes]:
        """The bytes of a snapshot file in chunks of at most `chunk_size`."""
        with Path(path).open("rb") as f:
            while chunk := f.read(chunk_size):
                yield chunk

    def checksum(self, path: Path) -> str:
        """SHA-256 of a file, as hex (what a receiver's `commit` expects)."""
        return sha256_file(Path(path))

    def verify(self, path: Path) -> None:
        """Raise `CorruptSnapshot` if the file no longer matches its recorded checksum."""
        path = Path(path)
        meta_path = path.with_suffix(_META_SUFFIX)
        try:
            recorded = json.loads(meta_path.read_text())["sha256"]
        except (OSError, ValueError, KeyError) as exc:
            raise CorruptSnapshot(path, f"unreadable metadata {meta_path.name}: {exc}") from exc
        actual = sha256_file(path)
        if actual != recorded:
            raise CorruptSnapshot(path, f"sha256 {actual} but {recorded} was recorded")

    def scratch_path(self) -> Path:
        """A new temporary name in this directory, for a copy the caller deletes
        (one a crash leaves behind is removed when the store is next opened)."""
        return self._temp_path()

    def _temp_path(self) -> Path:
        return self.directory / f"{_TEMP_PREFIX}{os.getpid()}-{next(self._temp_names)}"

    def _install(self, temp: Path, meta: SnapshotMeta, checksum: str) -> Path:
        """Rename an fsync'd temporary file into place with its metadata; prune older ones."""
        stem = _stem(meta)
        data = self.directory / f"{stem}{_DATA_SUFFIX}"
        os.replace(temp, data)
        record: dict[str, object] = {
            "index": meta.index,
            "term": meta.term,
            "voters": list(meta.voters),
            "sha256": checksum,
            "size": data.stat().st_size,
        }
        if meta.membership is not None:
            record["membership"] = membership_to_record(meta.membership)
        meta_temp = self._temp_path()
        meta_temp.write_text(json.dumps(record, sort_keys=True))
        fsync_file(meta_temp)
        os.replace(meta_temp, self.directory / f"{stem}{_META_SUFFIX}")
        fsync_directory(self.directory)
        self._prune(keep=stem)
        return data

    def _complete(self) -> list[tuple[SnapshotMeta, Path, Path]]:
        """Snapshots whose metadata and data files both exist, oldest first."""
        found = []
        for meta_path in sorted(self.directory.glob(f"{_PREFIX}*{_META_SUFFIX}")):
            data = meta_path.with_suffix(_DATA_SUFFIX)
            try:
                record = json.loads(meta_path.read_text())
                membership = record.get("membership")
                meta = SnapshotMeta(
                    Index(int(record["index"])),
                    Term(int(record["term"])),
                    tuple(NodeId(v) for v in record["voters"]),
                    membership_from_record(membership) if membership is not None else None,
                )
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                continue  # a metadata file that never committed is not a snapshot
            if data.exists():
                found.append((meta, data, meta_path))
        return found

    def _prune(self, keep: str) -> None:
        """Delete every snapshot but the newest and `keep`."""
        complete = self._complete()
        newest = _stem(complete[-1][0]) if complete else keep
        removed = False
        for path in self.directory.glob(f"{_PREFIX}*"):
            if path.stem not in (newest, keep):
                path.unlink(missing_ok=True)
                removed = True
        if removed:
            fsync_directory(self.directory)


class SnapshotReceiver:
    """Writes an incoming snapshot to a temporary file, hashing as it goes.

    Either `commit(checksum)` at once, or in two steps: `stage(checksum)`
    verifies and fsyncs the bytes without making them the latest snapshot,
    so the node can let the Raft core decide; then `install()` if the core
    accepted the snapshot, or `abort()` if it refused it (a stale term must
    not replace, or prune, the node's own snapshot).
    """

    def __init__(
        self, store: SnapshotStore, meta: SnapshotMeta, temp: Path, max_bytes: int | None = None
    ) -> None:
        self.meta = meta
        self.max_bytes = max_bytes
        self._store = store
        self._temp = temp
        self._digest = hashlib.sha256()
        self._file: BinaryIO | None = temp.open("wb")
        self._staged: str | None = None  # the verified checksum once staged
        self.bytes_received = 0

    def write(self, chunk: bytes) -> None:
        if self._file is None:
            raise CorruptSnapshot(self._temp, "write after the last chunk")
        if self.max_bytes is not None and self.bytes_received + len(chunk) > self.max_bytes:
            self.abort()
            raise CorruptSnapshot(
                self._temp, f"more than {self.max_bytes} bytes, the most this node accepts"
            )
        self._file.write(chunk)
        self._digest.update(chunk)
        self.bytes_received += len(chunk)

    def stage(self, checksum: str, validate: Callable[[Path], str | None] | None = None) -> Path:
        """Verify the checksum, then `validate` (it names a problem, or None), else
        `CorruptSnapshot` with nothing kept; fsync the bytes; not installed yet."""
        if self._file is None:
            raise CorruptSnapshot(self._temp, "stage after the last chunk")
        actual = self._digest.hexdigest()
        if actual != checksum.lower():
            self.abort()
            raise CorruptSnapshot(
                self._temp,
                f"received {self.bytes_received} bytes with sha256 {actual}, "
                f"sender said {checksum}",
            )
        f, self._file = self._file, None
        try:
            f.flush()
            os.fsync(f.fileno())
        finally:
            f.close()
        problem = validate(self._temp) if validate is not None else None
        if problem is not None:
            self.abort()
            raise CorruptSnapshot(self._temp, problem)
        self._staged = actual
        return self._temp

    def install(self) -> Path:
        """Make the staged snapshot the latest (pruning older ones); its final path."""
        if self._staged is None:
            raise CorruptSnapshot(self._temp, "install before stage")
        try:
            return self._store._install(self._temp, self.meta, self._staged)
        finally:
            self._staged = None
            self._temp.unlink(missing_ok=True)

    def commit(self, checksum: str) -> Path:
        """Install the received bytes if their SHA-256 is `checksum`; else `CorruptSnapshot`."""
        self.stage(checksum)
        return self.install()

    def abort(self) -> None:
        """Discard what was received (staged or not); safe to call more than once."""
        if self._file is not None:
            f, self._file = self._file, None
            with contextlib.suppress(OSError):
                f.close()
        self._staged = None
        self._temp.unlink(missing_ok=True)


def sqlite_problem(path: Path) -> str | None:
    """What is wrong with `path` as an SQLite database (it does not open, or fails
    `PRAGMA integrity_check`), or None. Opens it read-only and changes nothing."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    except sqlite3.Error as exc:
        return f"does not open as SQLite: {exc}"
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.Error as exc:
        return f"is not a valid SQLite database: {exc}"
    finally:
        conn.close()
    if rows != [("ok",)]:
        return "fails SQLite's integrity check: " + "; ".join(str(row[0]) for row in rows[:3])
    return None
