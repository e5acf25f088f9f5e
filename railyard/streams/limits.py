"""Input limits and the stateless validation shared by the node and `apply`.

The node calls `validate` before proposing, so bad input is refused without
a trip through the log; `apply` runs the same checks again because a command
in the log is only bytes, and every replica must reach the same verdict. The
limits are cluster-wide settings: replicas with different limits would
diverge.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from railyard.proto import commands_pb2
from railyard.streams.results import (
    ApplyResult,
    BatchTooLarge,
    InvalidArgument,
    RecordTooLarge,
)

# One record (data + key) up to 1 MiB: large enough for documents and
# images, small enough that a batch stays far below gRPC's message limit.
DEFAULT_MAX_RECORD_BYTES = 1 << 20
# A batch up to 500 records and 5 MiB, Kinesis PutRecords' limits: one
# Raft entry stays small enough to replicate without stalling heartbeats.
DEFAULT_MAX_BATCH_RECORDS = 500
DEFAULT_MAX_BATCH_BYTES = 5 << 20
# Producers remembered for exactly-once appends; beyond this the least
# recently used is forgotten (its retries may then append twice).
DEFAULT_MAX_PRODUCERS = 10_000
# Results remembered per producer: its last this-many producer sequences. A
# pipelined producer resends every unacknowledged batch after a leader
# change, and a resend may be overtaken by up to (its window - 1) later
# batches; at least the largest producer window in use (the client's
# `MAX_WINDOW`, 64) gets every resend its original sequences back.
DEFAULT_PRODUCER_WINDOW = 64
DEFAULT_MAX_STREAM_NAME_LEN = 128
# Producer ids are client-chosen strings; bound them like stream names.
MAX_PRODUCER_ID_LEN = 128
# Producer sequences travel as uint64 but are stored as SQLite INTEGERs
# (signed 64-bit): a larger one would fail every replica's apply, the same
# way, forever.
MAX_PRODUCER_SEQUENCE = (1 << 63) - 1

STREAM_NAME_CHARS = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True, slots=True)
class Limits:
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    max_batch_records: int = DEFAULT_MAX_BATCH_RECORDS
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    max_producers: int = DEFAULT_MAX_PRODUCERS
    producer_window: int = DEFAULT_PRODUCER_WINDOW
    max_stream_name_len: int = DEFAULT_MAX_STREAM_NAME_LEN


DEFAULT_LIMITS = Limits()


def record_size(record: commands_pb2.Record) -> int:
    """Bytes a record counts for in limits, stream sizes and read budgets: data + key."""
    return len(record.data) + len(record.key)


def validate_name(name: str, field: str, limits: Limits) -> InvalidArgument | None:
    if not 1 <= len(name) <= limits.max_stream_name_len:
        return InvalidArgument(field, f"must be 1 to {limits.max_stream_name_len} characters")
    if not STREAM_NAME_CHARS.fullmatch(name):
        return InvalidArgument(field, "may contain only letters, digits, '_', '.' and '-'")
    return None


def validate_create(
    cmd: commands_pb2.CreateStreamCommand | commands_pb2.SetRetentionCommand, limits: Limits
) -> ApplyResult | None:
    """Also judges a SetRetentionCommand: the same name and retention rules."""
    invalid = validate_name(cmd.name, "name", limits)
    if invalid:
        return invalid
    retention = cmd.retention
    for field in ("max_age_ms", "max_records", "max_bytes"):
        if getattr(retention, field) < 0:
            return InvalidArgument(f"retention.{field}", "must be 0 (no limit) or positive")
    return None


def validate_delete(cmd: commands_pb2.DeleteStreamCommand, limits: Limits) -> ApplyResult | None:
    return validate_name(cmd.name, "name", limits)


def validate_append(cmd: commands_pb2.AppendRecordsCommand, limits: Limits) -> ApplyResult | None:
    invalid = validate_name(cmd.stream, "stream", limits)
    if invalid:
        return invalid
    if len(cmd.producer_id) > MAX_PRODUCER_ID_LEN:
        return InvalidArgument("producer_id", f"must be at most {MAX_PRODUCER_ID_LEN} characters")
    if cmd.producer_sequence > MAX_PRODUCER_SEQUENCE:
        return InvalidArgument("producer_sequence", f"must be at most {MAX_PRODUCER_SEQUENCE}")
    count = len(cmd.records)
    if count == 0:
        return InvalidArgument("records", "at least one record is required")
    # Fast path, one C call instead of a Python step per record: the encoded
    # command is larger than the sum of its records' data and keys, so when
    # even that is within both byte limits, no record and not the batch can
    # exceed them (the verdict is the same as the loop's).
    encoded = cmd.ByteSize()
    if (
        count <= limits.max_batch_records
        and encoded <= limits.max_record_bytes
        and encoded <= limits.max_batch_bytes
    ):
        return None
    total = 0
    for position, record in enumerate(cmd.records):
        size = record_size(record)
        if size > limits.max_record_bytes:
            return RecordTooLarge(position, size, limits.max_record_bytes)
        total += size
    if count > limits.max_batch_records or total > limits.max_batch_bytes:
        return BatchTooLarge(count, total, limits.max_batch_records, limits.max_batch_bytes)
    return None


def validate(command: commands_pb2.Command, limits: Limits = DEFAULT_LIMITS) -> ApplyResult | None:
    """The stateless verdict on a command: None if `apply` may accept it."""
    kind = command.WhichOneof("command")
    if kind == "create_stream":
        return validate_create(command.create_stream, limits)
    if kind == "delete_stream":
        return validate_delete(command.delete_stream, limits)
    if kind == "append_records":
        return validate_append(command.append_records, limits)
    if kind == "set_retention":
        return validate_create(command.set_retention, limits)
    return InvalidArgument("command", "no command set")
