"""Exactly-once appends: the bounded table of producers' last sequences (Raft dissertation §6.3).

Per producer id the machine remembers the last producer sequence it applied
and that append's result. A repeat of the last sequence gets the original
result back (the records are not appended again); an older sequence gets
`StaleProducerSequence`; a newer one is applied and remembered. Only
successful appends are remembered: a failed one had no effect, so
re-evaluating its retry cannot append twice.

The table holds at most `max_producers` rows. Each row records the log index
of its producer's last append (`last_used_index`, unique since one entry
carries one command); a new producer beyond the bound evicts the row with
the lowest, deterministically on every replica. An evicted producer's retry
is applied again: the price of a bounded table.
"""

from __future__ import annotations

import sqlite3

from railyard.streams.checksums import fields_crc
from railyard.streams.errors import CorruptState
from railyard.streams.results import Appended, ApplyResult, StaleProducerSequence
from railyard.streams.schema import database_path

_COLUMNS = "producer_id, producer_sequence, stream, first_seq, count, timestamp_ms, last_used_index"


class ProducerTable:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.count: int = conn.execute("SELECT count(*) FROM producers").fetchone()[0]

    def verify(self) -> None:
        """Check every row against its checksum."""
        for *fields, crc in self._conn.execute(f"SELECT {_COLUMNS}, crc FROM producers"):
            if fields_crc(*fields) != crc:
                raise CorruptState(
                    database_path(self._conn), f"producer {fields[0]!r} fails its checksum"
                )

    def check(self, index: int, producer_id: str, producer_sequence: int) -> ApplyResult | None:
        """The answer to a repeated or stale producer sequence; None for a new one."""
        found = self._conn.execute(
            f"SELECT {_COLUMNS}, crc FROM producers WHERE producer_id = ?", (producer_id,)
        ).fetchone()
        if found is None:
            return None
        *fields, crc = found
        if fields_crc(*fields) != crc:
            raise CorruptState(
                database_path(self._conn), f"producer {producer_id!r} fails its checksum"
            )
        _, last_sequence, stream, first, count, ts, _ = fields
        if producer_sequence > last_sequence:
            return None
        if producer_sequence < last_sequence:
            return StaleProducerSequence(producer_id, producer_sequence, last_sequence)
        fields[-1] = index  # a repeat counts as a use: it keeps the producer from eviction
        self._write("UPDATE", fields)
        return Appended(stream, range(first, first + count), ts, duplicate=True)

    def remember(
        self,
        index: int,
        producer_id: str,
        producer_sequence: int,
        result: Appended,
        max_producers: int,
    ) -> None:
        """Record a producer's applied append, evicting the least recently used if full."""
        fields = [
            producer_id,
            producer_sequence,
            result.stream,
            result.sequences.start,
            len(result.sequences),
            result.timestamp_ms,
            index,
        ]
        if self._write("UPDATE", fields):
            return
        if self.count >= max_producers:
            self._conn.execute(
                "DELETE FROM producers WHERE last_used_index = "
                "(SELECT min(last_used_index) FROM producers)"
            )
            self.count -= 1
        self._write("INSERT", fields)
        self.count += 1

    def _write(self, verb: str, fields: list[object]) -> int:
        crc = fields_crc(*fields)
        if verb == "INSERT":
            sql = "INSERT INTO producers VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            return self._conn.execute(sql, (*fields, crc)).rowcount
        sql = (
            "UPDATE producers SET producer_sequence = ?, stream = ?, first_seq = ?, count = ?, "
            "timestamp_ms = ?, last_used_index = ?, crc = ? WHERE producer_id = ?"
        )
        return self._conn.execute(sql, (*fields[1:], crc, fields[0])).rowcount
