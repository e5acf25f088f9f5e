"""The streaming producer on a real 3-node cluster: ordered, exactly-once across a leader kill."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from railyard.client import RailyardClient
from railyard.client.producer import MAX_WINDOW, StreamProducer, _add_records
from railyard.proto import commands_pb2 as cmd_pb
from railyard.proto import railyard_pb2 as pb
from railyard.streams.limits import DEFAULT_PRODUCER_WINDOW
from tests.support.cluster import LocalCluster

BATCHES = 40
RECORDS_PER_BATCH = 5
KILL_AFTER_BATCHES = 15
WINDOW = 8
# Bounds every wait of the test: an election with the test timings takes well under this.
TIMEOUT_S = 30.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path, name="producer")
    try:
        c.start()
        c.wait_for_leader()
        yield c
    finally:
        c.stop()


def _record(batch: int, i: int) -> bytes:
    return f"b{batch:03d}-r{i}".encode()


async def _read_all(client: RailyardClient, stream: str) -> list[pb.StoredRecord]:
    out: list[pb.StoredRecord] = []
    position = await client.get_iterator_index(stream, "TRIM_HORIZON")
    for _ in range(BATCHES * RECORDS_PER_BATCH):
        page = await client.get_records(stream, position, limit=1000)
        out.extend(page.records)
        position = page.next_sequence
        if not page.records or page.behind_latest == 0:
            break
    return out


async def test_ordered_exactly_once_across_leader_kill(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader()
    acks: list[asyncio.Future[list[int]]] = []
    async with asyncio.timeout(TIMEOUT_S):
        async with StreamProducer(
            cluster.endpoints, "orders", window=WINDOW, timeout_s=TIMEOUT_S
        ) as producer:
            for b in range(BATCHES):
                if b == KILL_AFTER_BATCHES:
                    # Batches are still in flight: the kill lands mid-stream.
                    await asyncio.to_thread(cluster.kill, leader, signal.SIGKILL)
                records = [(_record(b, i), None) for i in range(RECORDS_PER_BATCH)]
                acks.append(await producer.send(records))
            await producer.flush()
        assert producer.stats.reconnects >= 1
        results = [a.result() for a in acks]

        async with RailyardClient(cluster.endpoints, timeout_s=TIMEOUT_S) as client:
            stored = await _read_all(client, "orders")

    expected = [_record(b, i) for b in range(BATCHES) for i in range(RECORDS_PER_BATCH)]
    assert [r.data for r in stored] == expected  # every record once, in order
    by_sequence = {r.sequence: r.data for r in stored}
    for b, sequences in enumerate(results):
        # Every ack names its batch's records, also for a resent batch that
        # later ones overtook: the cluster remembers a window of results.
        assert [by_sequence[s] for s in sequences] == [
            _record(b, i) for i in range(RECORDS_PER_BATCH)
        ]


def test_window_is_capped_at_what_the_cluster_remembers() -> None:
    assert StreamProducer(["localhost:1"], "s", window=MAX_WINDOW + 100).window == MAX_WINDOW
    assert MAX_WINDOW <= DEFAULT_PRODUCER_WINDOW  # resends stay within the remembered results


def test_records_are_added_as_the_wire_spells_them() -> None:
    """No key, an empty key and a key each reach the request as a `Record` list would put them."""
    records = [(b"a", None), (b"b", b""), (b"c", b"k")]
    request = pb.PutRecordsRequest(stream="s")
    _add_records(request, records)
    assert request == pb.PutRecordsRequest(
        stream="s",
        records=[
            cmd_pb.Record(data=b"a"),
            cmd_pb.Record(data=b"b", has_key=True),
            cmd_pb.Record(data=b"c", key=b"k", has_key=True),
        ],
    )
