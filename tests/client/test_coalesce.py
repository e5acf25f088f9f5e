"""Coalescing puts: shared messages, own sequences, backpressure, isolated failures, failover."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from railyard.client import InvalidArgument, RailyardClient
from railyard.proto import railyard_pb2 as pb
from railyard.proto import railyard_pb2_grpc as pb_grpc
from tests.support.cluster import LocalCluster

BAD = b"bad"
# Bounds every wait of these tests.
TIMEOUT_S = 30.0


@dataclass
class StreamNode(pb_grpc.StreamsServicer):
    """A leader's PutRecordStream: dedup by (producer id, sequence), refuses records b"bad"."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    # The first call answers only once it holds this many messages, and a
    # refusal then comes without the acknowledgements before it.
    first_call_holds: int = 1
    messages: list[list[bytes]] = field(default_factory=list)
    applied: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    log: list[bytes] = field(default_factory=list)
    calls: int = 0

    async def PutRecordStream(
        self,
        requests: AsyncIterator[pb.PutRecordsRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.PutRecordsResponse]:
        self.calls += 1
        holds = self.first_call_holds if self.calls == 1 else 1
        pending: list[pb.PutRecordsRequest] = []
        async for request in requests:
            self.messages.append([r.data for r in request.records])
            pending.append(request)
            if len(pending) < holds:
                continue
            await self.gate.wait()
            if any(r.data == BAD for p in pending for r in p.records):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "records: bad record")
            for p in pending:
                yield self._apply(p)
            pending.clear()

    def _apply(self, request: pb.PutRecordsRequest) -> pb.PutRecordsResponse:
        key = (request.producer_id, request.producer_sequence)
        if key not in self.applied:
            first = len(self.log) + 1
            self.log.extend(r.data for r in request.records)
            self.applied[key] = list(range(first, len(self.log) + 1))
        return pb.PutRecordsResponse(
            sequences=self.applied[key], producer_sequence=request.producer_sequence
        )


@pytest.fixture
async def node() -> AsyncIterator[tuple[StreamNode, str]]:
    # The .pyi marks every servicer method abstract; the runtime base answers UNIMPLEMENTED.
    fake = StreamNode()  # type: ignore[abstract]
    server = grpc.aio.server()
    pb_grpc.add_StreamsServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield fake, f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def test_concurrent_puts_share_messages_and_get_their_own_sequences(
    node: tuple[StreamNode, str],
) -> None:
    fake, address = node
    fake.gate.set()
    async with asyncio.timeout(TIMEOUT_S), RailyardClient([address]) as client:
        data = [f"r{i}".encode() for i in range(200)]
        sequences = await asyncio.gather(*(client.put("s", d) for d in data))
        stats = client.coalescer.stats if client.coalescer else None
    assert len(fake.messages) < len(data)  # coalesced
    assert stats is not None and stats.records_per_message > 1
    assert fake.log == data  # in the order put was called
    assert [fake.log[s - 1] for s in sequences] == data  # each its own sequence


async def test_a_full_queue_holds_callers_back(node: tuple[StreamNode, str]) -> None:
    fake, address = node
    async with asyncio.timeout(TIMEOUT_S), RailyardClient([address], max_queued_puts=4) as client:
        coalescer = client.coalescer
        assert coalescer is not None
        puts = [asyncio.ensure_future(client.put("s", f"r{i}".encode())) for i in range(10)]
        while len(fake.messages) < 1:  # the node holds its answers
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert coalescer.queued == 4
        assert sum(len(m) for m in fake.messages) <= 4
        assert not any(p.done() for p in puts)
        fake.gate.set()
        sequences = await asyncio.gather(*puts)
    assert sorted(sequences) == list(range(1, 11))
    assert coalescer.queued == 0


@pytest.mark.parametrize("holds", [1, 2], ids=["refusal-after-acks", "refusal-cuts-acks"])
async def test_one_bad_record_fails_only_itself(node: tuple[StreamNode, str], holds: int) -> None:
    fake, address = node
    fake.first_call_holds = holds
    data = [BAD if i == 7 else f"r{i}".encode() for i in range(20)]
    async with asyncio.timeout(TIMEOUT_S), RailyardClient([address]) as client:
        first = asyncio.ensure_future(client.put("s", b"first"))
        while not fake.messages:
            await asyncio.sleep(0.01)
        # Queued while the first message is unanswered: they travel together.
        puts = [asyncio.ensure_future(client.put("s", d)) for d in data]
        await asyncio.sleep(0.05)
        fake.gate.set()
        outcomes = await asyncio.gather(first, *puts, return_exceptions=True)
        stats = client.coalescer.stats if client.coalescer else None
    assert any(BAD in m and len(m) > 1 for m in fake.messages)  # the bad one was in company
    assert isinstance(outcomes[8], InvalidArgument)
    good = [o for i, o in enumerate(outcomes) if i != 8]
    assert all(isinstance(o, int) for o in good)
    assert fake.log == [b"first", *(d for d in data if d != BAD)]  # each once, in order
    assert stats is not None and stats.splits == 1


# ------------------------------------------------------------ a real cluster

CALLERS = 16
PUTS_PER_CALLER = 40
KILL_AFTER_ACKS = 150


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path, name="coalesce")
    try:
        c.start()
        c.wait_for_leader()
        yield c
    finally:
        c.stop()


async def test_order_per_caller_and_exactly_once_across_a_leader_kill(
    cluster: LocalCluster,
) -> None:
    leader = cluster.wait_for_leader()
    acked: dict[bytes, int] = {}
    enough = asyncio.Event()

    async def caller(client: RailyardClient, c: int) -> None:
        for i in range(PUTS_PER_CALLER):
            data = f"c{c:02d}-{i:03d}".encode()
            acked[data] = await client.put("orders", data)
            if len(acked) >= KILL_AFTER_ACKS:
                enough.set()

    async def killer() -> None:
        await enough.wait()
        await asyncio.to_thread(cluster.kill, leader, signal.SIGKILL)

    async with asyncio.timeout(TIMEOUT_S):
        async with RailyardClient(cluster.endpoints, timeout_s=TIMEOUT_S) as client:
            await asyncio.gather(killer(), *(caller(client, c) for c in range(CALLERS)))
            stats = client.coalescer.stats if client.coalescer else None
            stored: list[pb.StoredRecord] = []
            position = await client.get_iterator_index("orders", "TRIM_HORIZON")
            while True:
                page = await client.get_records("orders", position, limit=1000)
                stored.extend(page.records)
                position = page.next_sequence
                if not page.records or page.behind_latest == 0:
                    break

    assert stats is not None and stats.reconnects >= 1  # the kill landed mid-stream
    assert stats.records_per_message > 1
    datas = [r.data for r in stored]
    assert sorted(datas) == sorted(acked)  # every record once
    assert {r.sequence: r.data for r in stored} == {s: d for d, s in acked.items()}
    for c in range(CALLERS):
        mine = [d for d in datas if d.startswith(f"c{c:02d}-".encode())]
        assert mine == sorted(mine)  # each caller's records in its order
