"""Snapshots over the TCP peer transport (`tcp.send_snapshot`, `PeerListener`).

A real listener feeds a sink that records the chunks it is handed; every
chunk is checked like an envelope, and the dialler learns the outcome.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence

import pytest

from railyard.node.peers import tcp
from railyard.proto import railyard_pb2 as pb
from tests.support.cluster import HOST, free_ports

LOG = logging.getLogger("test")
N1 = pb.Peer(cluster="c", node_id="n1")
N3 = pb.Peer(cluster="c", node_id="n3")
WAIT_S = 10.0


class SnapshotSink:
    """Accepts n1's snapshots (unless told to refuse) and records their chunks."""

    def __init__(self) -> None:
        self.refuse: str | None = None
        self.problem: str | None = None
        self.received: list[bytes] = []

    def refusal(self, sender: pb.Peer) -> str | None:
        return self.refuse

    async def deliver(self, sender: pb.Peer, messages: Sequence[pb.RaftMessage]) -> str | None:
        raise AssertionError("no envelope is expected")

    def pipe_ended(self, node_id: str) -> None:
        raise AssertionError("a snapshot connection is not a pipe")

    async def receive_snapshot(self, chunks: AsyncIterator[pb.SnapshotChunk]) -> str | None:
        async for chunk in chunks:
            self.received.append(chunk.data)
        return self.problem


def chunk(data: bytes, *, last: bool = False, sender: pb.Peer = N1) -> bytes:
    return pb.SnapshotChunk(data=data, last=last, **{"from": sender}).SerializeToString()


async def chunks(*payloads: bytes) -> AsyncIterator[bytes]:
    for p in payloads:
        yield p


@pytest.fixture
async def listener() -> AsyncIterator[tcp.PeerListener]:
    listener = tcp.PeerListener(address=f"{HOST}:{free_ports(1)[0]}", sink=SnapshotSink(), log=LOG)
    await listener.start()
    try:
        yield listener
    finally:
        await listener.close()


def sink_of(listener: tcp.PeerListener) -> SnapshotSink:
    assert isinstance(listener.sink, SnapshotSink)
    return listener.sink


async def send(listener: tcp.PeerListener, *payloads: bytes) -> None:
    async with asyncio.timeout(WAIT_S):
        await tcp.send_snapshot(listener.address, chunks(*payloads), proxy=None)


async def test_a_snapshot_arrives_chunk_by_chunk_and_is_acknowledged(
    listener: tcp.PeerListener,
) -> None:
    big = b"s" * (1 << 20)
    await send(listener, chunk(big), chunk(big), chunk(b"end", last=True))
    assert sink_of(listener).received == [big, big, b"end"]


async def test_a_refused_sender_is_told_why_and_nothing_is_received(
    listener: tcp.PeerListener,
) -> None:
    sink_of(listener).refuse = "node n2 of cluster 'c' refuses unknown node 'n1'"
    with pytest.raises(tcp.PeerRefused, match="refuses unknown node"):
        await send(listener, chunk(b"a"), chunk(b"b", last=True))
    assert sink_of(listener).received == []


async def test_a_chunk_from_another_sender_ends_the_snapshot(listener: tcp.PeerListener) -> None:
    with pytest.raises(tcp.PeerRefused, match="snapshot chunk from 'n3' on the connection of 'n1'"):
        await send(listener, chunk(b"a"), chunk(b"b", sender=N3), chunk(b"c", last=True))
    assert sink_of(listener).received == [b"a"]


async def test_the_receivers_verdict_reaches_the_sender(listener: tcp.PeerListener) -> None:
    sink_of(listener).problem = "snapshot: checksum mismatch"
    with pytest.raises(tcp.PeerRefused, match="checksum mismatch"):
        await send(listener, chunk(b"a", last=True))


async def test_garbage_instead_of_a_chunk_is_refused(listener: tcp.PeerListener) -> None:
    with pytest.raises(tcp.PeerRefused, match="malformed snapshot chunk"):
        await send(listener, b"\xff\xff\xff")
