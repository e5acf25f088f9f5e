"""Client requests as log commands (node/api/commands.py)."""

from __future__ import annotations

from railyard.node.api.commands import append_command_bytes
from railyard.proto import commands_pb2 as cmd
from railyard.proto import railyard_pb2 as pb


def test_append_command_bytes_is_the_command() -> None:
    """The leader builds an append's entry from the request's bytes: same command, same fields."""
    request = pb.PutRecordsRequest(
        stream="s",
        records=[cmd.Record(data=b"x", key=b"k", has_key=True), cmd.Record(data=b"y")],
        producer_id="p",
        producer_sequence=7,
    )
    built = cmd.Command.FromString(append_command_bytes(request, 1234, True))
    assert built == cmd.Command(
        append_records=cmd.AppendRecordsCommand(
            stream="s",
            records=list(request.records),
            producer_id="p",
            producer_sequence=7,
            timestamp_ms=1234,
            create_if_missing=True,
        )
    )
