"""An in-memory `Backend`: railyard streams as lists, with producer deduplication."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field

from railyard.kinesis import (
    AFTER_SEQUENCE,
    AT_SEQUENCE,
    AT_TIMESTAMP,
    LATEST,
    TRIM_HORIZON,
    AppendResult,
    ReadBatch,
    StoredRecord,
    StreamConflict,
    StreamMissing,
    StreamState,
)


@dataclass
class MemoryStream:
    name: str
    created_ms: int
    max_age_ms: int
    records: list[StoredRecord] = field(default_factory=list)

    def state(self) -> StreamState:
        first = self.records[0].sequence if self.records else 1
        last = self.records[-1].sequence if self.records else 0
        return StreamState(self.name, first, last, self.created_ms, self.max_age_ms)


class MemoryBackend:
    def __init__(self, clock_ms: int = 1_700_000_000_000) -> None:
        self.clock_ms = clock_ms
        self.streams: dict[str, MemoryStream] = {}
        self.producers: dict[tuple[str, int], AppendResult] = {}
        self.appends = 0

    @property
    def max_name_chars(self) -> int:
        return 128

    def _get(self, name: str) -> MemoryStream:
        if name not in self.streams:
            raise StreamMissing(name)
        return self.streams[name]

    async def list_streams(self) -> list[StreamState]:
        return [s.state() for _, s in sorted(self.streams.items())]

    async def describe(self, name: str) -> StreamState:
        return self._get(name).state()

    async def create_stream(self, name: str, max_age_ms: int) -> StreamState:
        existing = self.streams.get(name)
        if existing is not None:
            if existing.max_age_ms != max_age_ms:
                raise StreamConflict(name)
            return existing.state()
        self.streams[name] = MemoryStream(name, self.clock_ms, max_age_ms)
        return self.streams[name].state()

    async def delete_stream(self, name: str) -> None:
        self._get(name)
        del self.streams[name]

    async def set_retention(self, name: str, max_age_ms: int) -> StreamState:
        stream = self._get(name)
        stream.max_age_ms = max_age_ms
        return stream.state()

    async def append(
        self,
        name: str,
        records: Sequence[tuple[bytes, bytes]],
        producer_id: str,
        producer_sequence: int,
    ) -> AppendResult:
        stream = self._get(name)
        if producer_id and (producer_id, producer_sequence) in self.producers:
            return self.producers[(producer_id, producer_sequence)]
        self.clock_ms += 1
        first = stream.state().last_sequence + 1
        for offset, (data, key) in enumerate(records):
            stream.records.append(StoredRecord(first + offset, data, key, self.clock_ms))
        self.appends += 1
        result = AppendResult(first, len(records), self.clock_ms)
        if producer_id:
            self.producers[(producer_id, producer_sequence)] = result
        return result

    async def resolve(self, name: str, position: str, sequence: int, timestamp_ms: int) -> int:
        state = self._get(name).state()
        if position == TRIM_HORIZON:
            return state.first_sequence
        if position == LATEST:
            return state.last_sequence + 1
        if position == AT_SEQUENCE:
            return max(sequence, state.first_sequence)
        if position == AFTER_SEQUENCE:
            return max(sequence + 1, state.first_sequence)
        assert position == AT_TIMESTAMP
        records = self.streams[name].records
        at = bisect.bisect_left([r.timestamp_ms for r in records], timestamp_ms)
        return records[at].sequence if at < len(records) else state.last_sequence + 1

    async def read(self, name: str, from_sequence: int, limit: int, max_bytes: int) -> ReadBatch:
        stream = self._get(name)
        out: list[StoredRecord] = []
        size = 0
        for r in stream.records:
            if r.sequence < from_sequence:
                continue
            if len(out) >= limit or (out and size + len(r.data) > max_bytes):
                break
            out.append(r)
            size += len(r.data) + len(r.key or b"")
        last = stream.state().last_sequence
        next_sequence = (
            out[-1].sequence + 1 if out else max(from_sequence, stream.state().first_sequence)
        )
        return ReadBatch(out, next_sequence, max(0, last - next_sequence + 1))
