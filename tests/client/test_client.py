"""RailyardClient against in-process fake nodes: leader discovery, retries, exactly-once ids."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from railyard.client import InvalidArgument, NotFound, RailyardClient, Unavailable
from railyard.proto import railyard_pb2 as pb
from railyard.proto import railyard_pb2_grpc as pb_grpc


@dataclass
class FakeNode(pb_grpc.StreamsServicer):
    """A Streams service that follows a script: redirect, fail, or append."""

    leader_address: str | None = None  # set: answer UNAVAILABLE naming this leader
    fail_next: int = 0  # answer UNAVAILABLE (no hint) this many times first
    seen: list[tuple[str, int]] = field(default_factory=list)
    applied: dict[tuple[str, int], int] = field(default_factory=dict)
    streams: set[str] = field(default_factory=lambda: {"s"})
    # The next delete is applied but answered UNAVAILABLE with these trailing metadata.
    lose_delete_answer: tuple[tuple[str, str], ...] | None = None

    async def PutRecord(
        self, request: pb.PutRecordRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.PutRecordResponse:
        self.seen.append((request.producer_id, request.producer_sequence))
        if self.leader_address is not None:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                "not the leader",
                trailing_metadata=(
                    ("railyard-leader", "n2"),
                    ("railyard-leader-address", self.leader_address),
                ),
            )
        key = (request.producer_id, request.producer_sequence)
        sequence = self.applied.setdefault(key, len(self.applied) + 1)
        if self.fail_next:
            self.fail_next -= 1  # applied, but the answer is "lost"
            await context.abort(grpc.StatusCode.UNAVAILABLE, "leader changed")
        return pb.PutRecordResponse(sequence=sequence)

    async def DescribeStream(
        self, request: pb.DescribeStreamRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DescribeStreamResponse:
        await context.abort(grpc.StatusCode.NOT_FOUND, f"stream {request.name!r} does not exist")
        raise AssertionError("unreachable")

    async def DeleteStream(
        self, request: pb.DeleteStreamRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DeleteStreamResponse:
        if request.name not in self.streams:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no stream {request.name!r}")
        self.streams.discard(request.name)
        if self.lose_delete_answer is not None:
            trailing, self.lose_delete_answer = self.lose_delete_answer, None
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                "leadership changed before the request was applied",
                trailing_metadata=trailing,
            )
        return pb.DeleteStreamResponse()

    async def CreateStream(
        self, request: pb.CreateStreamRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CreateStreamResponse:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "name: bad")
        raise AssertionError("unreachable")


@pytest.fixture
async def two_nodes() -> AsyncIterator[tuple[FakeNode, FakeNode, list[str]]]:
    servers = []
    # The .pyi marks every servicer method abstract; the runtime base answers UNIMPLEMENTED.
    nodes = [FakeNode(), FakeNode()]  # type: ignore[abstract]
    addresses = []
    for node in nodes:
        server = grpc.aio.server()
        pb_grpc.add_StreamsServicer_to_server(node, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        addresses.append(f"127.0.0.1:{port}")
    try:
        yield nodes[0], nodes[1], addresses
    finally:
        for server in servers:
            await server.stop(None)


async def test_follows_the_leader_hint_and_retries_with_the_same_producer_sequence(
    two_nodes: tuple[FakeNode, FakeNode, list[str]],
) -> None:
    follower, leader, (a, b) = two_nodes
    follower.leader_address = b
    leader.fail_next = 1
    async with RailyardClient([a, b], timeout_s=5, producer_id="p", coalesce=False) as client:
        assert await client.put("s", b"x") == 1
        assert client.leader_address == b
        # Redirected to the leader, whose lost answer was retried (via the
        # follower's hint again) under the same producer sequence: applied once.
        assert set(follower.seen) == {("p", 1)}
        assert leader.seen == [("p", 1), ("p", 1)]
        assert leader.applied == {("p", 1): 1}
        redirects = len(follower.seen)
        assert await client.put("s", b"y") == 2
        assert leader.seen[-1] == ("p", 2)
        assert len(follower.seen) == redirects  # the leader is remembered


async def test_concurrent_puts_use_one_producer_id_each(
    two_nodes: tuple[FakeNode, FakeNode, list[str]],
) -> None:
    _, leader, (_, b) = two_nodes
    async with RailyardClient([b], producer_id="p", coalesce=False) as client:
        await asyncio.gather(*(client.put("s", b"x") for _ in range(4)))
        await client.put("s", b"x")
    producers = {pid for pid, _ in leader.seen[:4]}
    assert len(producers) == 4  # never two outstanding puts under one id
    assert len(leader.applied) == 5


async def test_a_closed_client_used_again_calls_on_a_new_channel(
    two_nodes: tuple[FakeNode, FakeNode, list[str]],
) -> None:
    # Stubs are kept per endpoint: one bound to the closed channel must not be reused.
    _, leader, (_, b) = two_nodes
    client = RailyardClient([b], producer_id="p", coalesce=False)
    assert await client.put("s", b"x") == 1
    await client.close()
    try:
        assert await client.put("s", b"y") == 2
    finally:
        await client.close()
    assert len(leader.applied) == 2


async def test_errors_are_typed(two_nodes: tuple[FakeNode, FakeNode, list[str]]) -> None:
    _, _, (a, _) = two_nodes
    async with RailyardClient([a]) as client:
        with pytest.raises(NotFound, match="'nope' does not exist"):
            await client.describe_stream("nope")
        with pytest.raises(InvalidArgument, match="name: bad"):
            await client.create_stream("bad name")


@pytest.mark.parametrize("coalesce", [True, False])
async def test_nothing_listening_fails_fast_with_a_hint(coalesce: bool) -> None:
    from tests.support.cluster import free_ports

    endpoints = [f"127.0.0.1:{p}" for p in free_ports(2)]
    async with RailyardClient(endpoints, timeout_s=30, coalesce=coalesce) as client:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(Unavailable, match="railyard node start"):
            await client.put("s", b"x")
        assert loop.time() - started < 15  # well before the 30 s deadline


async def test_cluster_status_marks_unreachable_nodes_none() -> None:
    from tests.support.cluster import free_ports

    endpoint = f"127.0.0.1:{free_ports(1)[0]}"
    async with RailyardClient([endpoint]) as client:
        assert await client.cluster_status() == [(endpoint, None)]


@pytest.mark.parametrize("maybe", [True, False])
async def test_a_retry_after_a_maybe_applied_answer_takes_not_found_as_done(
    two_nodes: tuple[FakeNode, FakeNode, list[str]], maybe: bool
) -> None:
    """The node's railyard-maybe-applied key, not the text of its message, says "maybe"."""
    _, leader, (_, b) = two_nodes
    leader.lose_delete_answer = (("railyard-maybe-applied", "1"),) if maybe else ()
    async with RailyardClient([b], timeout_s=5) as client:
        if maybe:
            await client.delete_stream("s")  # the retry's NOT_FOUND is the first attempt's work
        else:
            with pytest.raises(NotFound):
                await client.delete_stream("s")
    assert "s" not in leader.streams


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"transport": "native"}, "pass coalesce=False too"),
        ({"transport": "tcp", "coalesce": False}, "expected one of grpc, native"),
    ],
)
def test_a_transport_that_would_be_ignored_or_is_unknown_is_refused(
    kwargs: dict[str, Any], says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        RailyardClient(["127.0.0.1:1"], **kwargs)
