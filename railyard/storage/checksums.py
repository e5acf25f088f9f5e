"""CRC-32 checksums of stored rows.

SQLite pages carry no checksum: a flipped bit in a payload would be served
as if it were written. Every row the storage ring reads back carries a
CRC-32 of its fields, computed when written and verified when read, so
damage becomes a `CorruptStore` naming the file instead of a silently
different log.
"""

from __future__ import annotations

import struct
import zlib

_ENTRY_HEADER = struct.Struct(">QQB")  # term, index, kind


def entry_crc(term: int, index: int, kind: int, data: bytes) -> int:
    return zlib.crc32(data, zlib.crc32(_ENTRY_HEADER.pack(term, index, kind)))


def fields_crc(*fields: object) -> int:
    """A checksum of a few scalar fields (ints, strings, None), order-sensitive."""
    return zlib.crc32("\x1f".join(repr(f) for f in fields).encode())
