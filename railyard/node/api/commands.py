"""Client requests as log commands: append-bytes splicing and protobuf mapping.

A put becomes an `AppendRecordsCommand` by concatenating bytes (see
`append_command_bytes`); a stream's description maps to its protobuf here.
"""

from __future__ import annotations

import time
from typing import Any

from railyard.proto import commands_pb2 as cmd
from railyard.proto import railyard_pb2 as pb
from railyard.streams import StreamInfo


def now_ms() -> int:
    return int(time.time() * 1000)


def _field_shape(f: Any) -> tuple[Any, ...]:
    return (f.number, f.type, f.is_repeated, f.message_type and f.message_type.full_name)


def _shares_append_fields() -> bool:
    """Do PutRecordsRequest's fields have AppendRecordsCommand's numbers and types?"""
    request = pb.PutRecordsRequest.DESCRIPTOR.fields_by_name
    command = cmd.AppendRecordsCommand.DESCRIPTOR.fields_by_name
    return all(
        name in command and _field_shape(f) == _field_shape(command[name])
        for name, f in request.items()
    )


# PutRecordsRequest is field for field the start of AppendRecordsCommand
# (stream, records, producer_id, producer_sequence), so the request's bytes
# are the command's first fields: the command is built by concatenation, one
# C-level serialization instead of a Python copy of every record (the
# leader's largest per-record cost). Checked here, never assumed.
_APPEND_BY_CONCATENATION = _shares_append_fields()
# Command.append_records: field 3, length-delimited.
_APPEND_RECORDS_TAG = bytes(
    [(cmd.Command.DESCRIPTOR.fields_by_name["append_records"].number << 3) | 2]
)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def append_command_bytes(
    request: pb.PutRecordsRequest, timestamp_ms: int, create_if_missing: bool, max_streams: int = 0
) -> bytes:
    """The serialized `Command` appending `request`'s records, stamped by the leader.

    The leader's fields come last: on the wire the last value of a field
    wins, so nothing in the request can override them; fields unknown to
    this version are dropped first. `max_streams` (0: none) bounds the
    streams a missing stream may be created beside.
    """
    stamp = cmd.AppendRecordsCommand(
        timestamp_ms=timestamp_ms,
        create_if_missing=create_if_missing,
        max_streams=max_streams if create_if_missing else 0,
    ).SerializeToString()
    if not _APPEND_BY_CONCATENATION:
        command = cmd.Command(
            append_records=cmd.AppendRecordsCommand(
                stream=request.stream,
                records=list(request.records),
                producer_id=request.producer_id,
                producer_sequence=request.producer_sequence,
            )
        )
        command.append_records.MergeFromString(stamp)
        return command.SerializeToString()
    request.DiscardUnknownFields()
    body = request.SerializeToString() + stamp
    return _APPEND_RECORDS_TAG + _varint(len(body)) + body


def create_stream_command(
    name: str, retention: cmd.Retention, timestamp_ms: int, max_streams: int
) -> cmd.Command:
    """A CreateStream as the leader proposes it: stamped with its time and the stream limit."""
    return cmd.Command(
        create_stream=cmd.CreateStreamCommand(
            name=name, retention=retention, timestamp_ms=timestamp_ms, max_streams=max_streams
        )
    )


def stream_info_to_pb(info: StreamInfo) -> pb.StreamInfo:
    return pb.StreamInfo(
        name=info.name,
        retention=cmd.Retention(
            max_age_ms=info.retention.max_age_ms,
            max_records=info.retention.max_records,
            max_bytes=info.retention.max_bytes,
        ),
        first_sequence=info.first_sequence,
        last_sequence=info.last_sequence,
        record_count=info.record_count,
        bytes=info.bytes,
        created_ms=info.created_ms,
    )
