"""A check of SQLite's write-ahead log for committed transactions it would drop.

SQLite replays its WAL up to the first frame whose checksum fails and
silently ignores everything after it. After a crash that is right for a
torn tail: with `synchronous=FULL` every commit is fsync'd before the next
begins, so only the last transaction can be partly written. But damage to
an earlier frame (a bad sector, a stray write) would make SQLite drop
transactions that were acknowledged, and a Raft node would forget entries
and votes it promised to keep.

`lost_commits` compares the commit frames present in the WAL (frames whose
salts match the WAL header, i.e. written since the WAL was last reset) with
the frames SQLite accepted. More than one commit frame past what SQLite
accepted means an acknowledged transaction was dropped: the store must be
refused, not opened without it. (A WAL cut short cannot be told from one
that was never longer; the tail marker beside the database,
`tail_marker.py`, is the reference outside this file that tells.)

File format: https://www.sqlite.org/fileformat2.html#walformat
"""

from __future__ import annotations

import struct
from pathlib import Path

_WAL_HEADER = struct.Struct(
    ">8I"
)  # magic, version, page size, ckpt seq, salt1, salt2, cksum1, cksum2
_FRAME_HEADER = struct.Struct(">6I")  # page, commit size, salt1, salt2, cksum1, cksum2
_MAGICS = {0x377F0682: "<", 0x377F0683: ">"}  # the checksum's word byte order
_WAL_VERSION = 3007000
_DB_PAGE_SIZE_OFFSET = 16
_MASK = 0xFFFFFFFF


def _checksum(data: bytes, order: str) -> tuple[int, int]:
    words = struct.unpack(f"{order}{len(data) // 4}I", data)
    s0 = s1 = 0
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & _MASK
        s1 = (s1 + words[i + 1] + s0) & _MASK
    return s0, s1


def _page_size(db: Path) -> int | None:
    """The page size recorded in the database file's header (1 means 65536)."""
    try:
        with db.open("rb") as f:
            f.seek(_DB_PAGE_SIZE_OFFSET)
            raw = f.read(2)
    except OSError:
        return None
    if len(raw) < 2:
        return None
    size = int.from_bytes(raw, "big")
    size = 65536 if size == 1 else size
    return size if size >= 512 and size & (size - 1) == 0 else None


def commit_frames(db: Path) -> list[int]:
    """Numbers (from 1) of the WAL's commit frames written since its last reset."""
    wal = db.with_name(db.name + "-wal")
    page_size = _page_size(db)
    try:
        data = wal.read_bytes()
    except FileNotFoundError:
        return []
    if page_size is None or len(data) < _WAL_HEADER.size + _FRAME_HEADER.size:
        return []
    magic, version, _, _, salt1, salt2, c1, c2 = _WAL_HEADER.unpack_from(data)
    order = _MAGICS.get(magic)
    header_ok = (
        order is not None and version == _WAL_VERSION and _checksum(data[:24], order) == (c1, c2)
    )
    if not header_ok:
        # SQLite ignores a WAL with a bad header; the frames tell the salts it had.
        salt1, salt2 = _FRAME_HEADER.unpack_from(data, _WAL_HEADER.size)[2:4]
    commits = []
    frame_bytes = _FRAME_HEADER.size + page_size
    offset, number = _WAL_HEADER.size, 1
    while offset + frame_bytes <= len(data):
        _, commit_size, s1, s2, _, _ = _FRAME_HEADER.unpack_from(data, offset)
        if commit_size and (s1, s2) == (salt1, salt2):
            commits.append(number)
        offset += frame_bytes
        number += 1
    return commits


def lost_commits(commits: list[int], accepted_frames: int) -> list[int]:
    """Commit frames past the `accepted_frames` SQLite replayed, if more than a torn last one."""
    beyond = [c for c in commits if c > accepted_frames]
    return beyond if len(beyond) > 1 else []
