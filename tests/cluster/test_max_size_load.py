"""Load of maximum-size records must not make the cluster change leaders (issue 14).

Eight writers keep a PutRecords of five 1 MiB records (the record and the
batch byte limits) in flight each, for 30 s, against a 3-node cluster with
the production timings. Before per-follower flow control by bytes
(`node/peers/flow.py`, `raft/progress.py`) the leader queued hundreds of
MiB of appends to a follower, its heartbeats waited behind them, and the
followers elected a new leader several times a run. The run is bounded in
time and in count; every acknowledged batch must be readable afterwards.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from railyard.config import DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_RECORD_BYTES
from railyard.proto import commands_pb2 as cmd
from railyard.proto import railyard_pb2 as pb
from railyard.proto import railyard_pb2_grpc as pb_grpc
from tests.cluster.helpers import create_stream
from tests.support.cluster import LocalCluster

WRITERS = 8
RUN_S = 30.0
# A bound on the count too: at most this many batches per writer.
MAX_BATCHES_PER_WRITER = 200
RECORDS_PER_BATCH = DEFAULT_MAX_BATCH_BYTES // DEFAULT_MAX_RECORD_BYTES
# Records carry a header naming them, then padding up to the record limit.
HEADER_BYTES = 32
PUT_DEADLINE_S = 30.0
READ_DEADLINE_S = 10.0
SAMPLE_INTERVAL_S = 0.5
# Streams read back at once afterwards.
READERS = 4


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    # The production timings (config.py's defaults), not the tests' short ones.
    running = LocalCluster(tmp_path, heartbeat_interval_ms=100, election_timeout_ms=1000)
    try:
        running.start()
        running.wait_for_leader(timeout_s=30)
        yield running
    finally:
        running.stop()


def record(writer: int, batch: int, position: int) -> bytes:
    header = f"w{writer} b{batch} r{position}".encode().ljust(HEADER_BYTES)
    return header + b"x" * (DEFAULT_MAX_RECORD_BYTES - HEADER_BYTES)


class Writer(threading.Thread):
    """Puts batches of maximum-size records to one stream until told to stop."""

    def __init__(self, cluster: LocalCluster, leader: str, index: int, stop_at: float) -> None:
        super().__init__(name=f"writer-{index}", daemon=True)
        self.channel = grpc.insecure_channel(cluster.addresses[leader])
        self.stub = pb_grpc.StreamsStub(self.channel)
        self.index = index
        self.stream = f"load-{index}"
        self.stop_at = stop_at
        # (first sequence, batch number) of every acknowledged batch.
        self.acknowledged: list[tuple[int, int]] = []
        self.failures: list[str] = []

    def run(self) -> None:
        try:
            for batch in range(MAX_BATCHES_PER_WRITER):
                if time.monotonic() >= self.stop_at:
                    return
                request = pb.PutRecordsRequest(
                    stream=self.stream,
                    records=[
                        cmd.Record(data=record(self.index, batch, position))
                        for position in range(RECORDS_PER_BATCH)
                    ],
                    producer_id=f"writer-{self.index}",
                    producer_sequence=batch + 1,
                )
                try:
                    response = self.stub.PutRecords(request, timeout=PUT_DEADLINE_S)
                except grpc.RpcError as exc:
                    self.failures.append(f"batch {batch}: {exc.code().name}: {exc.details()}")
                    continue
                self.acknowledged.append((int(response.sequences[0]), batch))
        finally:
            self.channel.close()


def read_headers(cluster: LocalCluster, node: str, stream: str) -> dict[int, bytes]:
    """sequence -> the record's header, for every record of `stream` on `node`."""
    found: dict[int, bytes] = {}
    next_sequence = 1
    stub = cluster.streams_stub(node)
    while True:
        response = stub.GetRecords(
            pb.GetRecordsRequest(stream=stream, from_sequence=next_sequence),
            timeout=READ_DEADLINE_S,
        )
        if not response.records:
            return found
        for r in response.records:
            found[r.sequence] = r.data[:HEADER_BYTES]
            assert len(r.data) == DEFAULT_MAX_RECORD_BYTES
        next_sequence = response.next_sequence


def test_maximum_size_load_changes_no_leader(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader(timeout_s=30)
    term = cluster.status(leader).term  # type: ignore[union-attr]
    for index in range(WRITERS):
        create_stream(cluster, leader, f"load-{index}")
    writers = [Writer(cluster, leader, index, time.monotonic() + RUN_S) for index in range(WRITERS)]
    for w in writers:
        w.start()
    seen: set[tuple[str, int]] = set()
    while any(w.is_alive() for w in writers):
        for st in cluster.statuses().values():
            if st is not None and st.leader_id:
                seen.add((st.leader_id, st.term))
        time.sleep(SAMPLE_INTERVAL_S)
    for w in writers:
        w.join()
    after = cluster.status(leader)
    assert after is not None
    assert (after.role, after.term) == (pb.ROLE_LEADER, term), cluster.logs()[-6000:]
    assert seen == {(leader, term)}, f"leaders seen during the load: {sorted(seen)}"
    acknowledged = sum(len(w.acknowledged) for w in writers)
    failures = [f for w in writers for f in w.failures]
    assert not failures, failures[:5]
    assert acknowledged >= WRITERS, "the load never got going"
    # One reader per stream at once: the node serves one while the test parses another.
    with ThreadPoolExecutor(max_workers=READERS) as pool:
        read = pool.map(lambda w: read_headers(cluster, leader, w.stream), writers)
        stored = dict(zip((w.stream for w in writers), read, strict=True))
    for w in writers:
        headers = stored[w.stream]
        for first, batch in w.acknowledged:
            for position in range(RECORDS_PER_BATCH):
                expected = record(w.index, batch, position)[:HEADER_BYTES]
                assert headers.get(first + position) == expected, (w.stream, first + position)
