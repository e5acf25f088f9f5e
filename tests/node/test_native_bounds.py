"""The native port's bookkeeping in one process: what a connection holds is given back.

A `_Connection` is driven through a recording transport, with a node whose
puts wait until the test lets them go: the node-wide count of bytes held
must return to zero however a connection ends, and reading must stop while
the count is over its budget and start again once answers free room.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from types import SimpleNamespace
from typing import Any

import pytest

from railyard.config import LimitsConfig
from railyard.node.api import native
from railyard.node.api.admission import Admission
from railyard.proto import railyard_pb2 as pb
from railyard.streams import Appended, Limits

HEADER = struct.Struct(">IQ")


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.reading = True
        self.closing = False
        self.protocol: asyncio.Protocol | None = None

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closing

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def close(self) -> None:
        self.abort()

    def abort(self) -> None:
        if not self.closing:
            self.closing = True
            assert self.protocol is not None
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)


class HeldPuts:
    """A Streams service whose puts wait for `release`."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.started = 0

    async def propose_append(self, batch: Any, timeout_s: float) -> Appended:
        self.started += 1
        await self.gate.wait()
        return Appended(stream="s", sequences=range(1, 2), timestamp_ms=1)


def server(streams: HeldPuts) -> native.NativeServer:
    limits = LimitsConfig()
    node = SimpleNamespace(
        limits=Limits(),
        resource_limits=limits,
        admission=Admission(limits, "n1"),
        node_id="n1",
        addresses={"n1": "127.0.0.1:1"},
        is_leader=lambda: True,
        leader=lambda: "n1",
    )
    return native.NativeServer(
        "127.0.0.1:0",
        node,  # type: ignore[arg-type]
        streams,  # type: ignore[arg-type]
        log=logging.getLogger("test"),
    )


def puts(count: int, size: int = 100) -> bytes:
    out = []
    for i in range(1, count + 1):
        body = pb.NativeRequest(
            put_record=pb.PutRecordRequest(stream="s", data=bytes(size), producer_sequence=i)
        ).SerializeToString()
        out.append(HEADER.pack(len(body), i) + body)
    return b"".join(out)


def connect(srv: native.NativeServer) -> tuple[Any, RecordingTransport]:
    connection = native._Connection(srv)
    transport = RecordingTransport()
    transport.protocol = connection
    connection.connection_made(transport)
    return connection, transport


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_connection_lost_with_puts_not_yet_started_gives_every_byte_back() -> None:
    srv = server(HeldPuts())
    connection, transport = connect(srv)
    connection.data_received(native.PREAMBLE + puts(200) + HEADER.pack(5000, 999) + b"partial")
    assert srv.held_bytes > 0
    # Lost before the put tasks ever ran: they are cancelled unstarted.
    transport.abort()
    await settle()
    assert srv.held_bytes == 0
    assert srv.connections == set()
    assert srv.established == 0


async def test_reading_stops_over_the_budget_and_starts_again_when_answers_free_room(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(native, "MAX_HELD_BYTES", 10_000)
    monkeypatch.setattr(native, "RESUME_HELD_BYTES", 5_000)
    streams = HeldPuts()
    srv = server(streams)
    connection, transport = connect(srv)
    connection.data_received(native.PREAMBLE + puts(60, size=200))
    await settle()
    assert streams.started == 60
    assert srv.held_bytes > 10_000
    assert not transport.reading
    streams.gate.set()
    await settle()
    assert srv.held_bytes == 0
    assert transport.reading
    answers = [
        pb.NativeResponse.FromString(w[HEADER.size :])
        for w in transport.written
        if HEADER.unpack_from(w)[1] != 0
    ]
    assert len(answers) == 60
    assert all(a.HasField("put_record") for a in answers)


async def test_a_claimed_size_holds_nothing_until_its_bytes_arrive() -> None:
    srv = server(HeldPuts())
    connections = [connect(srv)[0] for _ in range(50)]
    for connection in connections:
        connection.data_received(native.PREAMBLE + HEADER.pack(1 << 20, 1))
    assert srv.held_bytes == 0
    for connection in connections:
        connection.abort()
    await settle()
    assert srv.held_bytes == 0
