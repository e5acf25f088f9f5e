"""Backup files: a snapshot of the streams state taken out of the cluster, with its header.

A backup file (`railyard snapshot save FILE`) is one file:

- the line ``railyard-backup 1`` (the format and its version);
- one line of JSON, the header: the applied ``index`` the state is at, the
  ``term`` of that entry, how many ``streams`` and ``records`` it holds, the
  size (``bytes``) and ``sha256`` of the state database that follows, the
  ``cluster`` and ``node_id`` it was taken from;
- the state database itself, ``bytes`` long.

`BackupWriter` writes one to ``FILE.tmp``, checks the bytes against the
header, fsyncs, then renames it to ``FILE`` and fsyncs the directory: ``FILE``
is either absent or whole and verified. `read_backup` checks a file's
structure and checksum before anything is taken from it (`extract_state`).
It knows nothing of what the state database holds: the caller runs the
validators for that (`sqlite_problem`, `streams.snapshot_problem`).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from railyard.storage.errors import CorruptSnapshot
from railyard.storage.snapshots import HASH_READ_BYTES, fsync_directory

MAGIC = b"railyard-backup 1\n"
# A header is a few hundred bytes; a longer first line is not a backup's.
MAX_HEADER_BYTES = 64 << 10
TEMP_SUFFIX = ".tmp"


@dataclass(frozen=True)
class BackupHeader:
    """What a backup holds and how to check it; see the module docstring."""

    index: int
    term: int
    streams: int
    records: int
    size: int  # "bytes" in the file
    sha256: str
    cluster: str = ""
    node_id: str = ""

    def to_line(self) -> bytes:
        record = asdict(self)
        record["bytes"] = record.pop("size")
        return json.dumps(record, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_line(cls, path: Path, line: bytes) -> BackupHeader:
        try:
            record = json.loads(line)
            header = cls(
                index=int(record["index"]),
                term=int(record["term"]),
                streams=int(record["streams"]),
                records=int(record["records"]),
                size=int(record["bytes"]),
                sha256=str(record["sha256"]),
                cluster=str(record.get("cluster", "")),
                node_id=str(record.get("node_id", "")),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CorruptSnapshot(path, f"unreadable backup header ({exc})") from None
        if min(header.index, header.term, header.streams, header.records, header.size) < 0:
            raise CorruptSnapshot(path, "backup header has a negative figure")
        return header


class BackupWriter:
    """Writes a backup to ``<path>.tmp`` and renames it into place once verified.

    `start(header)` may be called again (a retried download): the temporary
    file starts over. Use as a context manager: leaving it without `finish`
    removes the temporary file.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.temp = self.path.with_name(self.path.name + TEMP_SUFFIX)
        self.header: BackupHeader | None = None
        self.bytes_written = 0
        self._file: BinaryIO | None = None
        self._digest = hashlib.sha256()

    def __enter__(self) -> BackupWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()

    def start(self, header: BackupHeader) -> None:
        self._close()
        self.header = header
        self.bytes_written = 0
        self._digest = hashlib.sha256()
        self._file = self.temp.open("wb")
        self._file.write(MAGIC)
        self._file.write(header.to_line())

    def write(self, chunk: bytes) -> None:
        if self._file is None or self.header is None:
            raise CorruptSnapshot(self.temp, "data arrived before the backup header")
        if self.bytes_written + len(chunk) > self.header.size:
            raise CorruptSnapshot(
                self.temp, f"more than the {self.header.size} bytes the header announced"
            )
        self._file.write(chunk)
        self._digest.update(chunk)
        self.bytes_written += len(chunk)

    def finish(self) -> BackupHeader:
        """Check, fsync, rename to the final name, fsync the directory; the header."""
        if self._file is None or self.header is None:
            raise CorruptSnapshot(self.temp, "no backup header arrived")
        header = self.header
        if self.bytes_written != header.size:
            raise CorruptSnapshot(
                self.temp,
                f"{self.bytes_written} bytes arrived, the header announced {header.size}",
            )
        actual = self._digest.hexdigest()
        if actual != header.sha256:
            raise CorruptSnapshot(
                self.temp, f"sha256 of the bytes is {actual}, the header says {header.sha256}"
            )
        f, self._file = self._file, None
        try:
            f.flush()
            os.fsync(f.fileno())
        finally:
            f.close()
        # What is on disk, not what passed through this process.
        read_backup(self.temp)
        os.replace(self.temp, self.path)
        fsync_directory(self.path.parent)
        return header

    def abort(self) -> None:
        self._close()
        self.temp.unlink(missing_ok=True)

    def _close(self) -> None:
        if self._file is not None:
            f, self._file = self._file, None
            f.close()


def _read_head(path: Path, f: BinaryIO) -> BackupHeader:
    if f.read(len(MAGIC)) != MAGIC:
        raise CorruptSnapshot(
            path, "not a railyard backup (expected `railyard snapshot save`'s file)"
        )
    line = f.readline(MAX_HEADER_BYTES)
    if not line.endswith(b"\n"):
        raise CorruptSnapshot(path, "backup header is cut short")
    return BackupHeader.from_line(path, line)


def read_backup(path: Path) -> BackupHeader:
    """The header of the backup at `path` once its bytes match it; else `CorruptSnapshot`."""
    path = Path(path)
    with path.open("rb") as f:
        header = _read_head(path, f)
        digest = hashlib.sha256()
        size = 0
        while block := f.read(HASH_READ_BYTES):
            digest.update(block)
            size += len(block)
    if size != header.size:
        raise CorruptSnapshot(
            path, f"holds {size} bytes of state, its header says {header.size} (cut short?)"
        )
    if digest.hexdigest() != header.sha256:
        raise CorruptSnapshot(
            path, f"sha256 of the state is {digest.hexdigest()}, its header says {header.sha256}"
        )
    return header


def extract_state(path: Path, dest: Path) -> BackupHeader:
    """Copy the state database of the backup at `path` to `dest` (fsync'd), checking it again."""
    path = Path(path)
    with path.open("rb") as f, Path(dest).open("wb") as out:
        header = _read_head(path, f)
        digest = hashlib.sha256()
        while block := f.read(HASH_READ_BYTES):
            digest.update(block)
            out.write(block)
        out.flush()
        os.fsync(out.fileno())
    if digest.hexdigest() != header.sha256:
        raise CorruptSnapshot(path, "changed while it was read")
    return header
