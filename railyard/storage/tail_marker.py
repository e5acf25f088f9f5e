"""The tail marker: where the log ended after its last completed save, kept beside the database.

SQLite cannot tell a WAL cut short (a file system that lost the end of the
file, a bad copy) from one that was never longer: it replays the shorter WAL
and the store opens without the commits after the cut, which Raft had
acknowledged. The marker is the reference outside the WAL that `wal.py`
lacks: a fixed-size record with a CRC, in `<database>.tail`, holding the
log's last (index, term) and the hard state's term and vote as of the last
completed save. On open the store must still reach it, or it is refused.

Invariants:
- The marker never runs ahead of durable data. It is updated (one `pwrite`
  at offset 0, no fsync) only after the save it describes committed, and
  with `synchronous=FULL` that commit fsync'd the WAL. After a power loss
  it can only be stale.
- A stale marker still holds for the store: saves extend the log, a
  compaction drops only a prefix (a marker inside the compacted prefix is
  not checked against entries), and the term and vote only move forward
  (Raft §5.1, §5.2). Only an operation that cuts or rewrites the tail of the
  log (a conflict's suffix truncation, Raft §5.3; a snapshot that discards
  the log, Raft §7) could turn an old marker into a false refusal. Before
  such a transaction the marker is lowered to the prefix it keeps, which
  holds both before and after it, and *fsync'd*: without that the disk
  could keep the transaction but not the lowered marker.
- The file is created whole (written under a temporary name, fsync'd,
  renamed into place), and later writes replace its few bytes at offset 0,
  inside one disk sector. So a marker of another size or with a bad CRC is
  damage: refused, naming the file. NB: this takes a one-sector write to be
  atomic on power loss, as is usual; a disk that tore one would get a
  refusal it did not deserve, never a silent loss.
- No marker (a store written before markers existed, or one that crashed
  before its first save completed) means no check.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from railyard.raft import NO_INDEX, NO_TERM, HardState, Index, NodeId, Term
from railyard.storage.errors import CorruptStore, StoreIOError

# Appended to the database's name; the temporary name is used while creating it.
SUFFIX = ".tail"
_CREATING_SUFFIX = ".new"

# magic, last index, last term, current term, has a vote, CRC-32 of the vote; then a CRC-32.
_BODY = struct.Struct(">4sQQQ?I")
_CRC = struct.Struct(">I")
SIZE = _BODY.size + _CRC.size
# Names the record's layout; another value is a file this build cannot read.
_MAGIC = b"RYT1"

# What to do about a store that no longer reaches its marker.
REMEDY = (
    "restore this data directory from a backup, or delete it and let the node rejoin "
    "the cluster by snapshot"
)


def marker_path(db: Path) -> Path:
    return db.with_name(db.name + SUFFIX)


def _vote_crc(voted_for: NodeId | None) -> int:
    return zlib.crc32(voted_for.encode()) if voted_for is not None else 0


@dataclass(frozen=True)
class Tail:
    """The log's last entry and the term and vote, as of a completed save."""

    last_index: Index
    last_term: Term
    current_term: Term
    has_vote: bool
    vote_crc: int

    @classmethod
    def of(cls, last_index: Index, last_term: Term, hard_state: HardState) -> Tail:
        return cls(
            last_index,
            last_term,
            hard_state.current_term,
            hard_state.voted_for is not None,
            _vote_crc(hard_state.voted_for),
        )

    def is_empty(self) -> bool:
        """Nothing was ever saved: such a marker can refuse nothing."""
        return self.last_index == NO_INDEX and self.current_term == NO_TERM

    def encode(self) -> bytes:
        body = _BODY.pack(
            _MAGIC,
            self.last_index,
            self.last_term,
            self.current_term,
            self.has_vote,
            self.vote_crc,
        )
        return body + _CRC.pack(zlib.crc32(body))


def decode(path: Path, raw: bytes) -> Tail:
    """The marker in `raw`, or `CorruptStore` naming `path` if it is damaged."""
    if len(raw) != SIZE:
        raise CorruptStore(path, f"the tail marker is {len(raw)} bytes, not {SIZE}; {_DAMAGED}")
    body, (crc,) = raw[: _BODY.size], _CRC.unpack(raw[_BODY.size :])
    magic, last_index, last_term, current_term, has_vote, vote_crc = _BODY.unpack(body)
    if zlib.crc32(body) != crc or magic != _MAGIC:
        raise CorruptStore(path, f"the tail marker fails its checksum; {_DAMAGED}")
    return Tail(Index(last_index), Term(last_term), Term(current_term), has_vote, vote_crc)


_DAMAGED = (
    "it records where the raft log ended after its last save, so the log cannot be "
    f"checked against it: {REMEDY} (deleting only this file skips the check)"
)


def shortfall(
    tail: Tail,
    last_index: Index,
    snapshot_index: Index,
    term_at: Term | None,
    hard_state: HardState,
) -> str | None:
    """How a log falls short of the marker of its last completed save, if it does.

    `term_at` is the log's term at `tail.last_index` (`None` if the log does
    not reach it); it is not compared when that index was compacted away.
    """
    if last_index < tail.last_index:
        return (
            f"the log ends at index {last_index} but index {tail.last_index} "
            f"(term {tail.last_term}) was saved"
        )
    if tail.last_index >= snapshot_index and term_at != tail.last_term:
        return (
            f"entry {tail.last_index} has term {term_at} but an entry of term "
            f"{tail.last_term} was saved there"
        )
    if hard_state.current_term < tail.current_term:
        return (
            f"the stored term is {hard_state.current_term} but term {tail.current_term} was saved"
        )
    if (
        hard_state.current_term == tail.current_term
        and tail.has_vote
        and _vote_crc(hard_state.voted_for) != tail.vote_crc
    ):
        return f"the vote cast in term {tail.current_term} was lost"
    return None


class TailMarker:
    """The marker file of one store; its descriptor stays open so that an update is one write."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._written: Tail | None = None

    def read(self) -> Tail | None:
        """The marker on disk (kept open for updates), or `None` if there is none."""
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreIOError(self.path, str(exc)) from exc
        try:
            tail = decode(self.path, os.pread(fd, SIZE + 1, 0))
        except OSError as exc:
            os.close(fd)
            raise StoreIOError(self.path, str(exc)) from exc
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._written = fd, tail
        return tail

    def record(self, tail: Tail) -> None:
        """After a save committed: the marker now describes it (no fsync, see the module doc)."""
        if tail == self._written:
            return
        try:
            if self._fd is None:
                self._create(tail)
            else:
                self._write(tail)
        except OSError as exc:
            raise StoreIOError(self.path, str(exc)) from exc
        self._written = tail

    def lower(self, tail: Tail) -> None:
        """Before a transaction that cuts the log back to `tail`: lower the marker, durably."""
        if self._fd is None:
            return  # no marker, no check: nothing can refuse the store after a crash
        try:
            self._write(tail)
            os.fdatasync(self._fd)
        except OSError as exc:
            raise StoreIOError(self.path, str(exc)) from exc
        self._written = tail

    def _write(self, tail: Tail) -> None:
        assert self._fd is not None
        raw = tail.encode()
        if os.pwrite(self._fd, raw, 0) != len(raw):
            raise OSError(f"short write of the tail marker {self.path}")

    def _create(self, tail: Tail) -> None:
        """Write the first marker whole under a temporary name, then rename it into place.

        The directory is not fsync'd: if the rename is lost, the store has no
        marker, which only skips the check.
        """
        temp = self.path.with_name(self.path.name + _CREATING_SUFFIX)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, tail.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, self.path)
        self._fd = os.open(self.path, os.O_RDWR)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
