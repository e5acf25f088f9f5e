"""A plain in-memory model of the streams machine: a dict of lists.

It restates the rules of `railyard.streams` as directly as possible, with no
SQL and no packing tricks, so property tests can compare the real machine
against it. Stateless validation is shared (`validate`, tested on its own);
everything with state is re-implemented here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from railyard.proto import commands_pb2 as pb
from railyard.streams import (
    AGE_SWEEP_INTERVAL_MS,
    Appended,
    ApplyResult,
    InvalidArgument,
    Limits,
    ReadResult,
    Retention,
    StaleProducerSequence,
    StoredRecord,
    StreamCreated,
    StreamDeleted,
    StreamExists,
    StreamInfo,
    StreamNotFound,
    validate,
)


@dataclass
class ModelStream:
    name: str
    retention: Retention
    created_ms: int
    records: list[StoredRecord] = field(default_factory=list)
    last_seq: int = 0

    @property
    def first_seq(self) -> int:
        return self.records[0].sequence if self.records else self.last_seq + 1

    @property
    def bytes(self) -> int:
        return sum(len(r.data) + len(r.key or b"") for r in self.records)

    def info(self) -> StreamInfo:
        return StreamInfo(
            self.name,
            self.retention,
            self.records[0].sequence if self.records else 0,
            self.last_seq,
            len(self.records),
            self.bytes,
            self.created_ms,
        )


@dataclass
class ModelProducer:
    sequence: int  # the highest applied
    results: dict[int, Appended]  # applied sequences in (sequence - window, sequence]
    last_used_index: int


class Model:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.streams: dict[str, ModelStream] = {}
        self.producers: dict[str, ModelProducer] = {}
        self.clock_ms = 0
        self.retention_clock_ms = 0
        self.last_sweep_ms = 0

    def apply(self, index: int, data: bytes) -> ApplyResult | None:
        if not data:
            return None
        command = pb.Command()
        command.ParseFromString(data)
        kind = command.WhichOneof("command")
        if kind == "create_stream":
            self.advance_clock(command.create_stream.timestamp_ms)
        elif kind == "append_records":
            self.advance_clock(command.append_records.timestamp_ms)
        verdict = validate(command, self.limits)
        if verdict is not None:
            return verdict
        if kind == "create_stream":
            return self.create(command.create_stream)
        if kind == "delete_stream":
            return self.delete(command.delete_stream.name)
        return self.append(index, command.append_records)

    def advance_clock(self, ts: int) -> None:
        # Retention's clock: the second largest of all timestamps so far, never back.
        retention = max(self.retention_clock_ms, min(ts, self.clock_ms))
        self.clock_ms = max(self.clock_ms, ts)
        if retention == self.retention_clock_ms:
            return
        self.retention_clock_ms = retention
        if retention - self.last_sweep_ms >= AGE_SWEEP_INTERVAL_MS:
            self.last_sweep_ms = retention
            for stream in self.streams.values():
                if stream.retention.max_age_ms > 0:
                    self.trim(stream)

    def trim(self, s: ModelStream) -> None:
        r = s.retention
        while s.records and (
            (r.max_records and len(s.records) > r.max_records)
            or (r.max_bytes and s.bytes > r.max_bytes)
            or (r.max_age_ms and s.records[0].timestamp_ms < self.retention_clock_ms - r.max_age_ms)
        ):
            s.records.pop(0)

    def create(self, cmd: pb.CreateStreamCommand) -> ApplyResult:
        retention = Retention(
            cmd.retention.max_age_ms, cmd.retention.max_records, cmd.retention.max_bytes
        )
        existing = self.streams.get(cmd.name)
        if existing is not None:
            if existing.retention != retention:
                return StreamExists(cmd.name)
            return StreamCreated(existing.info())
        stream = ModelStream(cmd.name, retention, self.clock_ms)
        self.streams[cmd.name] = stream
        return StreamCreated(stream.info())

    def delete(self, name: str) -> ApplyResult:
        if self.streams.pop(name, None) is None:
            return StreamNotFound(name)
        return StreamDeleted(name)

    def append(self, index: int, cmd: pb.AppendRecordsCommand) -> ApplyResult:
        producer = self.producers.get(cmd.producer_id) if cmd.producer_id else None
        if producer is not None and cmd.producer_sequence <= producer.sequence:
            if cmd.producer_sequence <= producer.sequence - self.limits.producer_window:
                return StaleProducerSequence(
                    cmd.producer_id, cmd.producer_sequence, producer.sequence
                )
            done = producer.results.get(cmd.producer_sequence)
            if done is not None:
                producer.last_used_index = index
                return Appended(done.stream, done.sequences, done.timestamp_ms, duplicate=True)
        stream = self.streams.get(cmd.stream)
        if stream is None:
            if not cmd.create_if_missing:
                return StreamNotFound(cmd.stream)
            stream = ModelStream(cmd.stream, Retention(), self.clock_ms)
            self.streams[cmd.stream] = stream
        first = stream.last_seq + 1
        for r in cmd.records:
            stream.last_seq += 1
            key = r.key if r.has_key else None
            stream.records.append(StoredRecord(stream.last_seq, r.data, key, self.clock_ms))
        self.trim(stream)
        result = Appended(stream.name, range(first, stream.last_seq + 1), self.clock_ms)
        if cmd.producer_id:
            self.remember(index, cmd.producer_id, cmd.producer_sequence, result)
        return result

    def remember(self, index: int, producer_id: str, sequence: int, result: Appended) -> None:
        producer = self.producers.get(producer_id)
        if producer is None:
            if len(self.producers) >= self.limits.max_producers:
                oldest = min(self.producers, key=lambda p: self.producers[p].last_used_index)
                del self.producers[oldest]
            producer = self.producers[producer_id] = ModelProducer(sequence, {}, index)
        producer.sequence = max(producer.sequence, sequence)
        producer.last_used_index = index
        producer.results[sequence] = result
        horizon = producer.sequence - self.limits.producer_window
        producer.results = {s: r for s, r in producer.results.items() if s > horizon}

    # queries

    def read(
        self, name: str, start: int, limit: int, max_bytes: int
    ) -> ReadResult | StreamNotFound:
        s = self.streams.get(name)
        if s is None:
            return StreamNotFound(name)
        start = max(start, s.first_seq)
        out: list[StoredRecord] = []
        total = 0
        for r in s.records:
            if r.sequence < start or len(out) >= max(limit, 1):
                continue
            total += len(r.data) + len(r.key or b"")
            if out and max_bytes > 0 and total > max_bytes:
                break
            out.append(r)
        nxt = out[-1].sequence + 1 if out else start
        return ReadResult(out, nxt, max(0, s.last_seq - nxt + 1))

    def resolve(
        self, name: str, position: str, sequence: int, ts: int
    ) -> int | StreamNotFound | InvalidArgument:
        s = self.streams.get(name)
        if s is None:
            return StreamNotFound(name)
        if position == "TRIM_HORIZON":
            return s.first_seq
        if position == "LATEST":
            return s.last_seq + 1
        if position == "AT_SEQUENCE":
            return max(sequence, s.first_seq)
        if position == "AFTER_SEQUENCE":
            return max(sequence + 1, s.first_seq)
        for r in s.records:
            if r.timestamp_ms >= ts:
                return r.sequence
        return s.last_seq + 1
