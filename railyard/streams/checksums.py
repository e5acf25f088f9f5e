"""CRC-32 checksums of the state database's rows.

SQLite pages carry no checksum, so a flipped bit in a record would be served
as if it had been applied. Every row carries a CRC-32 of its fields, written
with it and verified when it is read; a mismatch raises `CorruptState`
naming the file (the node can then rebuild its state from a snapshot and
the log) instead of serving altered data.
"""

from __future__ import annotations

import struct
import zlib

RECORD_HEADER = struct.Struct(">qqi")  # record id, timestamp, key length (-1: no key)
_pack_header = RECORD_HEADER.pack
_crc32 = zlib.crc32


def record_crc(record_id: int, ts: int, key: bytes | None, data: bytes) -> int:
    if key is None:
        return _crc32(data, _crc32(_pack_header(record_id, ts, -1)))
    return _crc32(data, _crc32(_pack_header(record_id, ts, len(key)) + key))


def fields_crc(*fields: object) -> int:
    """A checksum of a few scalar fields (ints, strings, None), order-sensitive."""
    return zlib.crc32("\x1f".join(repr(f) for f in fields).encode())
