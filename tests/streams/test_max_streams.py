"""The cluster's stream limit, as `apply` enforces it: from the command, on every replica alike."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from railyard.proto import commands_pb2 as pb
from railyard.streams import Appended, StreamCreated, StreamDeleted, StreamsMachine, TooManyStreams
from tests.streams.helpers import append_command


def create(name: str, max_streams: int) -> bytes:
    command = pb.CreateStreamCommand(name=name, timestamp_ms=1, max_streams=max_streams)
    return pb.Command(create_stream=command).SerializeToString()


def auto_append(name: str, max_streams: int) -> bytes:
    command = append_command(name, [b"x"], create_if_missing=True)
    command.max_streams = max_streams
    return pb.Command(append_records=command).SerializeToString()


def delete(name: str) -> bytes:
    return pb.Command(delete_stream=pb.DeleteStreamCommand(name=name)).SerializeToString()


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[StreamsMachine]:
    sm = StreamsMachine.open(tmp_path / "streams.db")
    yield sm
    sm.close()


def apply_all(sm: StreamsMachine, *datas: bytes) -> list[object]:
    first = sm.last_applied + 1
    return list(sm.apply([(first + i, d) for i, d in enumerate(datas)]))


def test_a_stream_beyond_the_limit_is_refused_by_create_and_by_auto_create(
    machine: StreamsMachine,
) -> None:
    results = apply_all(
        machine,
        create("a", 2),
        create("b", 2),
        create("c", 2),
        auto_append("d", 2),
        create("a", 2),  # an existing stream is no new one
        auto_append("b", 2),
    )
    assert isinstance(results[0], StreamCreated) and isinstance(results[1], StreamCreated)
    assert results[2] == TooManyStreams("c", 2)
    assert results[3] == TooManyStreams("d", 2)
    assert isinstance(results[4], StreamCreated)
    assert isinstance(results[5], Appended)
    assert [s.name for s in machine.list_streams()] == ["a", "b"]
    assert machine.stream_count == 2


def test_a_delete_makes_room_and_zero_means_no_limit(machine: StreamsMachine) -> None:
    results = apply_all(machine, create("a", 1), delete("a"), create("b", 1), create("c", 0))
    assert isinstance(results[1], StreamDeleted)
    assert isinstance(results[2], StreamCreated) and isinstance(results[3], StreamCreated)
    assert machine.stream_count == 2


def test_the_count_survives_a_reopen(tmp_path: Path) -> None:
    sm = StreamsMachine.open(tmp_path / "streams.db")
    apply_all(sm, create("a", 0), create("b", 0))
    sm.close()
    sm = StreamsMachine.open(tmp_path / "streams.db")
    try:
        assert sm.stream_count == 2
        assert apply_all(sm, create("c", 2)) == [TooManyStreams("c", 2)]
    finally:
        sm.close()
