"""The client against misbehaving nodes (in-process fakes): a hung node, stale producer
sequences, a full disk. Findings F5 and the stale-sequence handling of docs/FINDINGS.md."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from railyard.client import (
    AlreadyApplied,
    RailyardClient,
    ResourceExhausted,
)
from railyard.client.client import ATTEMPT_TIMEOUT_S
from railyard.client.errors import LAST_PRODUCER_SEQUENCE_KEY
from railyard.proto import railyard_pb2 as pb
from railyard.proto import railyard_pb2_grpc as pb_grpc

# Far longer than an attempt: a client that waits for it is stuck behind the hung node.
CLIENT_TIMEOUT_S = 20.0
# How long the hung node holds a call at most (it is released at teardown anyway).
HANG_S = 30.0


@dataclass
class Node(pb_grpc.StreamsServicer):
    """A Streams service with a script: hang, name a leader, refuse, or apply with dedup."""

    hang: bool = False
    leader_address: str | None = None
    resource_exhausted: bool = False
    # The exactly-once table of one producer id: (last sequence, first record sequence).
    last: dict[str, tuple[int, int]] = field(default_factory=dict)
    records: int = 0
    seen: list[tuple[str, int, float | None]] = field(default_factory=list)
    stale_after_hang: bool = False

    async def PutRecord(
        self, request: pb.PutRecordRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.PutRecordResponse:
        self.seen.append((request.producer_id, request.producer_sequence, context.time_remaining()))
        if self.hang:
            await asyncio.sleep(HANG_S)
        if self.leader_address is not None:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                "not the leader",
                trailing_metadata=(
                    ("railyard-leader", "n1"),
                    ("railyard-leader-address", self.leader_address),
                ),
            )
        if self.resource_exhausted:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "node n1: data dir x: full")
        last = self.last.get(request.producer_id)
        if last is not None and request.producer_sequence < last[0]:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "producer_sequence: stale",
                trailing_metadata=((LAST_PRODUCER_SEQUENCE_KEY, str(last[0])),),
            )
        if last is not None and request.producer_sequence == last[0]:
            return pb.PutRecordResponse(sequence=last[1])
        self.records += 1
        self.last[request.producer_id] = (request.producer_sequence, self.records)
        return pb.PutRecordResponse(sequence=self.records)


@pytest.fixture
async def nodes() -> AsyncIterator[tuple[list[Node], list[str]]]:
    servers = []
    fakes = [Node(), Node()]  # type: ignore[abstract]
    addresses = []
    for fake in fakes:
        server = grpc.aio.server()
        pb_grpc.add_StreamsServicer_to_server(fake, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        addresses.append(f"127.0.0.1:{port}")
    try:
        yield fakes, addresses
    finally:
        for server in servers:
            await server.stop(None)


async def test_a_hung_node_costs_one_attempt_not_the_whole_deadline(
    nodes: tuple[list[Node], list[str]],
) -> None:
    """F5: the attempt to a hung node ends at the attempt deadline, the put goes on elsewhere
    with the same producer id and sequence, and the hung node is not asked again."""
    (hung, healthy), addresses = nodes
    hung.hang = True
    async with RailyardClient(addresses, timeout_s=CLIENT_TIMEOUT_S) as client:
        assert await client.put("s", b"a") == 1
        assert await client.put("s", b"b") == 2
    assert len(hung.seen) == 1, hung.seen
    producer, sequence, remaining = hung.seen[0]
    assert remaining is not None and remaining <= ATTEMPT_TIMEOUT_S + 0.1, remaining
    assert healthy.seen[0][:2] == (producer, sequence)


async def test_a_leader_that_timed_out_is_forgotten(nodes: tuple[list[Node], list[str]]) -> None:
    """F5: after an attempt to the cached leader timed out, the client does not go back to it."""
    (healthy, hung), addresses = nodes
    healthy.leader_address = addresses[1]  # names the hung node as leader
    hung.hang = True
    async with RailyardClient(addresses, timeout_s=CLIENT_TIMEOUT_S) as client:
        put = asyncio.create_task(client.put("s", b"a"))
        for _ in range(200):  # until the hung node holds the attempt (bounded)
            if hung.seen:
                break
            await asyncio.sleep(0.01)
        assert hung.seen, "the client did not follow the leader hint"
        healthy.leader_address = None  # the election is over: the first node leads now
        assert await put == 1
        assert client.leader_address != addresses[1]
    assert len(hung.seen) == 1


async def test_stale_sequence_on_a_first_attempt_moves_the_producer_on(
    nodes: tuple[list[Node], list[str]],
) -> None:
    """Another client with the same producer id got ahead: nothing of this put was applied,
    so it is sent again with the next free sequence, and applied once."""
    (node, _), addresses = nodes
    node.last["p"] = (7, 99)
    node.records = 99
    async with RailyardClient(addresses[:1], timeout_s=CLIENT_TIMEOUT_S, producer_id="p") as c:
        assert await c.put("s", b"a") == 100
        assert await c.put("s", b"b") == 101
    assert [(p, s) for p, s, _ in node.seen] == [("p", 1), ("p", 8), ("p", 9)]


async def test_stale_sequence_after_a_lost_attempt_is_already_applied(
    nodes: tuple[list[Node], list[str]],
) -> None:
    """A retry refused as stale after an attempt that may have been applied: AlreadyApplied,
    not a retry with a new sequence (which would append the record twice)."""
    (hung, other), addresses = nodes
    hung.hang = True
    other.last["p"] = (5, 1)  # the hung attempt (sequence 1) was applied, then later ones
    async with RailyardClient(addresses, timeout_s=CLIENT_TIMEOUT_S, producer_id="p") as c:
        with pytest.raises(AlreadyApplied):
            await c.put("s", b"a")
    assert [(p, s) for p, s, _ in other.seen] == [("p", 1)]


async def test_full_disk_is_a_typed_error_not_retried(nodes: tuple[list[Node], list[str]]) -> None:
    (node, _), addresses = nodes
    node.resource_exhausted = True
    async with RailyardClient(addresses[:1], timeout_s=CLIENT_TIMEOUT_S) as client:
        with pytest.raises(ResourceExhausted, match="full"):
            await client.put("s", b"a")
    assert len(node.seen) == 1
