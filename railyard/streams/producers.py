"""Exactly-once appends: the bounded table of producers' recent results (Raft dissertation §6.3).

Per producer id the machine remembers the highest producer sequence it
applied (`last_sequence`) and the results of the sequences in the window
`(last_sequence - window, last_sequence]` that it applied. A pipelined
producer keeps several batches in flight and, after a leader change,
resends every unacknowledged one; a resend may land after later batches of
the same producer. So:

- a sequence above `last_sequence` is new: it is applied and remembered;
- a sequence in the window with a remembered result is a repeat: the
  original result comes back, marked `duplicate`, and nothing is appended;
- a sequence in the window without a result was never applied (its append
  failed, which had no effect, or it never reached the log): it is applied
  now, so a batch that lost its place is not lost;
- a sequence at or below `last_sequence - window` gets
  `StaleProducerSequence`: it may have been applied, but its result is
  forgotten.

Only successful appends are remembered: a failed one had no effect, so
re-evaluating its retry cannot append twice.

Bounds: at most `max_producers` producers, each with at most `window`
results. Each producer row records the log index of its last use
(`last_used_index`, unique since one entry carries one command); a new
producer beyond the bound evicts the one with the lowest, with its results,
deterministically on every replica. An evicted producer's retry is applied
again: the price of a bounded table.

Every row carries a checksum of its fields, checked when it is read.
"""

from __future__ import annotations

import sqlite3

from railyard.streams.checksums import fields_crc
from railyard.streams.errors import CorruptState
from railyard.streams.results import Appended, ApplyResult, StaleProducerSequence
from railyard.streams.schema import database_path

_PRODUCER_COLUMNS = "producer_id, last_sequence, last_used_index"
_RESULT_COLUMNS = "producer_id, producer_sequence, stream, first_seq, count, timestamp_ms"


class ProducerTable:
    def __init__(self, conn: sqlite3.Connection, window: int) -> None:
        if window < 1:
            raise ValueError(f"producer window must be at least 1, not {window}")
        self._conn = conn
        self.window = window
        self.count: int = conn.execute("SELECT count(*) FROM producers").fetchone()[0]

    def result_count(self) -> int:
        count: int = self._conn.execute("SELECT count(*) FROM producer_results").fetchone()[0]
        return count

    def check(
        self, index: int, producer_id: str, producer_sequence: int, last_sequence: int | None
    ) -> ApplyResult | None:
        """The answer to a repeated or stale producer sequence; None for one to apply.

        `last_sequence` is `last_sequence(producer_id)`, read once per append:
        `remember` takes it too.
        """
        if last_sequence is None or producer_sequence > last_sequence:
            return None
        if producer_sequence <= last_sequence - self.window:
            return StaleProducerSequence(producer_id, producer_sequence, last_sequence)
        found = self._conn.execute(
            f"SELECT {_RESULT_COLUMNS}, crc FROM producer_results "
            "WHERE producer_id = ? AND producer_sequence = ?",
            (producer_id, producer_sequence),
        ).fetchone()
        if found is None:
            return None  # in the window but never applied: apply it now
        *fields, crc = found
        self._check_crc(fields, crc)
        _, _, stream, first, count, ts = fields
        # A repeat counts as a use: it keeps the producer from eviction.
        self._write_producer("UPDATE", producer_id, last_sequence, index)
        return Appended(stream, range(first, first + count), ts, duplicate=True)

    def remember(
        self,
        index: int,
        producer_id: str,
        producer_sequence: int,
        result: Appended,
        max_producers: int,
        last_sequence: int | None,
    ) -> None:
        """Record a producer's applied append, evicting the least recently used if full.

        Called only for a sequence `check` let through, with the same
        `last_sequence`, so no result is remembered for it yet and it is
        above `last_sequence - window`.
        """
        if last_sequence is None:
            if self.count >= max_producers:
                self._evict_least_recently_used()
            self._write_producer("INSERT", producer_id, producer_sequence, index)
            self.count += 1
        elif producer_sequence > last_sequence:
            self._write_producer("UPDATE", producer_id, producer_sequence, index)
            self._conn.execute(
                "DELETE FROM producer_results WHERE producer_id = ? AND producer_sequence <= ?",
                (producer_id, producer_sequence - self.window),
            )
        else:
            self._write_producer("UPDATE", producer_id, last_sequence, index)
        fields = (
            producer_id,
            producer_sequence,
            result.stream,
            result.sequences.start,
            len(result.sequences),
            result.timestamp_ms,
        )
        self._conn.execute(
            "INSERT INTO producer_results VALUES (?, ?, ?, ?, ?, ?, ?)",
            (*fields, fields_crc(*fields)),
        )

    def last_sequence(self, producer_id: str) -> int | None:
        """The highest sequence applied for `producer_id`; None for a producer not remembered."""
        found = self._conn.execute(
            f"SELECT {_PRODUCER_COLUMNS}, crc FROM producers WHERE producer_id = ?",
            (producer_id,),
        ).fetchone()
        if found is None:
            return None
        *fields, crc = found
        self._check_crc(fields, crc)
        last_sequence: int = fields[1]
        return last_sequence

    def _evict_least_recently_used(self) -> None:
        (oldest,) = self._conn.execute(
            "SELECT producer_id FROM producers ORDER BY last_used_index LIMIT 1"
        ).fetchone()
        self._conn.execute("DELETE FROM producer_results WHERE producer_id = ?", (oldest,))
        self._conn.execute("DELETE FROM producers WHERE producer_id = ?", (oldest,))
        self.count -= 1

    def _write_producer(
        self, verb: str, producer_id: str, last_sequence: int, last_used_index: int
    ) -> None:
        crc = fields_crc(producer_id, last_sequence, last_used_index)
        if verb == "INSERT":
            sql = "INSERT INTO producers VALUES (?, ?, ?, ?)"
            self._conn.execute(sql, (producer_id, last_sequence, last_used_index, crc))
            return
        sql = (
            "UPDATE producers SET last_sequence = ?, last_used_index = ?, crc = ? "
            "WHERE producer_id = ?"
        )
        self._conn.execute(sql, (last_sequence, last_used_index, crc, producer_id))

    def _check_crc(self, fields: list[object], crc: int) -> None:
        if fields_crc(*fields) != crc:
            raise CorruptState(
                database_path(self._conn), f"producer {fields[0]!r} fails its checksum"
            )
