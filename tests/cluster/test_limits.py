"""The cluster file's [limits] on real nodes: refused with RESOURCE_EXHAUSTED, others served.

Each test starts its own small cluster with the limits it exercises set low.
"""

from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import grpc
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from railyard.proto import commands_pb2 as cmd
from railyard.proto import railyard_pb2 as pb
from railyard.proto import railyard_pb2_grpc as pb_grpc
from tests.cluster.helpers import CALL_TIMEOUT_S, create_stream, with_retries
from tests.support.cluster import LocalCluster

pytestmark = pytest.mark.timeout(90)

CLI_TIMEOUT_S = 30.0
CLI = (sys.executable, "-m", "railyard")


@contextlib.contextmanager
def limited_cluster(
    tmp_path: Path, n: int = 1, *, kinesis: bool = False, **limits: int
) -> Iterator[LocalCluster]:
    """A started cluster of `n` nodes whose cluster file has `limits` as its [limits] table."""
    cluster = LocalCluster(tmp_path, n, name="limits", kinesis=kinesis)
    table = "".join(f"{key} = {value}\n" for key, value in limits.items())
    cluster.config_path.write_text(cluster.config_path.read_text() + "\n[limits]\n" + table)
    try:
        cluster.start()
        cluster.wait_for_leader(timeout_s=30)
        yield cluster
    finally:
        cluster.stop()


def stubs(address: str) -> tuple[grpc.Channel, pb_grpc.StreamsStub, pb_grpc.ClusterStub]:
    """A client of its own: one new connection to `address`."""
    channel = grpc.insecure_channel(address)
    return channel, pb_grpc.StreamsStub(channel), pb_grpc.ClusterStub(channel)


def put(stub: pb_grpc.StreamsStub, stream: str, data: bytes) -> pb.PutRecordsResponse:
    request = pb.PutRecordsRequest(stream=stream, records=[cmd.Record(data=data)])
    return stub.PutRecords(request, timeout=CALL_TIMEOUT_S)


def exhausted(error: grpc.RpcError, key: str, value: int) -> bool:
    """Is `error` the refusal of [limits] `key` = `value`, saying so?"""
    details = error.details() or ""
    return (
        error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        and f"the limit is {value}" in details
        and f"[limits] {key}" in details
    )


# ------------------------------------------------------------ max_streams


def test_a_flood_of_creations_stops_at_max_streams_while_puts_go_on(tmp_path: Path) -> None:
    with limited_cluster(tmp_path, 3, max_streams=5) as cluster:
        leader = cluster.wait_for_leader()
        create_stream(cluster, leader, "orders")
        outcomes: list[grpc.StatusCode] = []
        refusals: list[str] = []

        def flood() -> None:
            channel, streams, _ = stubs(cluster.addresses[leader])
            with channel:
                for i in range(40):
                    request = pb.CreateStreamRequest(name=f"flood-{i}")
                    try:
                        streams.CreateStream(request, timeout=CALL_TIMEOUT_S)
                        outcomes.append(grpc.StatusCode.OK)
                    except grpc.RpcError as exc:
                        outcomes.append(exc.code())
                        if exhausted(exc, "max_streams", 5):
                            refusals.append(exc.details() or "")

        flooder = threading.Thread(target=flood)
        flooder.start()
        channel, streams, _ = stubs(cluster.addresses[leader])
        with channel:
            sequences = []
            while flooder.is_alive() or len(sequences) < 20:
                sequences.append(put(streams, "orders", b"order").sequences[0])
            flooder.join()
            # A put that would create a stream is refused too: auto-create counts.
            with pytest.raises(grpc.RpcError) as auto:
                put(streams, "one-too-many", b"x")
        assert exhausted(auto.value, "max_streams", 5), auto.value
        assert sequences == list(range(1, len(sequences) + 1))
        assert outcomes.count(grpc.StatusCode.OK) == 4
        assert outcomes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 36, outcomes
        assert len(refusals) == 36
        assert "stream 'flood-4' not created" in refusals[0]

        # The replicas agree: each holds the same five streams.
        expected = {"orders", *(f"flood-{i}" for i in range(4))}
        deadline = time.monotonic() + 10
        while True:
            held = {
                node: {
                    s.name
                    for s in cluster.streams_stub(node)
                    .ListStreams(pb.ListStreamsRequest(), timeout=CALL_TIMEOUT_S)
                    .streams
                }
                for node in cluster.node_ids
            }
            if all(names == expected for names in held.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert all(names == expected for names in held.values()), held

        # The CLI says it in one line and exits 1.
        made = subprocess.run(
            [*CLI, "stream", "create", "cli-stream", "-c", str(cluster.config_path)],
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
        )
        assert made.returncode == 1, made
        lines = made.stderr.strip().splitlines()
        assert len(lines) == 1 and "max_streams" in lines[0] and "the limit is 5" in lines[0]


def test_kinesis_create_stream_beyond_max_streams_is_limit_exceeded(tmp_path: Path) -> None:
    with limited_cluster(tmp_path, kinesis=True, max_streams=2) as cluster:
        kinesis = boto3.client(
            "kinesis",
            endpoint_url=cluster.kinesis_url(cluster.node_ids[0]),
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
            # LimitExceededException is one botocore retries: answer the first.
            config=Config(retries={"max_attempts": 1}),
        )
        kinesis.create_stream(StreamName="fits", ShardCount=2)
        with pytest.raises(ClientError) as refused:
            kinesis.create_stream(StreamName="too-many", ShardCount=1)
        error = refused.value.response["Error"]
        assert error["Code"] == "LimitExceededException", error
        assert "[limits] max_streams" in error["Message"]


# ------------------------------------------------------------ GetRecords bytes


def test_a_read_asking_for_more_than_max_get_records_bytes_is_clipped(tmp_path: Path) -> None:
    with limited_cluster(tmp_path, max_get_records_bytes=4096) as cluster:
        node = cluster.node_ids[0]
        stub = cluster.streams_stub(node)
        records = [cmd.Record(data=bytes([i]) * 1000) for i in range(20)]
        with_retries(
            cluster,
            lambda n: cluster.streams_stub(n).PutRecords(
                pb.PutRecordsRequest(stream="big", records=records), timeout=CALL_TIMEOUT_S
            ),
        )
        got = stub.GetRecords(
            pb.GetRecordsRequest(stream="big", from_sequence=1, max_bytes=1 << 30),
            timeout=CALL_TIMEOUT_S,
        )
        # 4 records of 1000 bytes fit in 4096; the answer says where to go on.
        assert [r.sequence for r in got.records] == [1, 2, 3, 4]
        assert got.next_sequence == 5 and got.behind_latest == 16
        small = stub.GetRecords(
            pb.GetRecordsRequest(stream="big", from_sequence=5, max_bytes=2000),
            timeout=CALL_TIMEOUT_S,
        )
        assert [r.sequence for r in small.records] == [5, 6]


# ------------------------------------------------------------ in flight per connection


def test_puts_beyond_max_inflight_per_connection_are_refused(tmp_path: Path) -> None:
    with limited_cluster(tmp_path, max_inflight_per_connection=4) as cluster:
        address = cluster.addresses[cluster.node_ids[0]]
        with_retries(cluster, lambda n: put(cluster.streams_stub(n), "s", b"first"))
        channel, streams, _ = stubs(address)
        with channel:
            records = [cmd.Record(data=b"x" * 1000) for _ in range(50)]
            request = pb.PutRecordsRequest(stream="s", records=records)
            calls = [streams.PutRecords.future(request, timeout=10) for _ in range(64)]
            codes = []
            for call in calls:
                try:
                    call.result()
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as exc:
                    assert exhausted(exc, "max_inflight_per_connection", 4), exc
                    codes.append(exc.code())
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
        assert grpc.StatusCode.OK in codes

        # A stream's unanswered batches count the same way: a client that
        # sends without waiting for answers is stopped.
        channel, streams, _ = stubs(address)
        with channel:
            batches = (
                pb.PutRecordsRequest(
                    stream="s", records=records, producer_id="p", producer_sequence=i
                )
                for i in range(1, 41)
            )
            answered = 0
            with pytest.raises(grpc.RpcError) as ended:
                for _ in streams.PutRecordStream(batches, timeout=10):
                    answered += 1
            assert exhausted(ended.value, "max_inflight_per_connection", 4), ended.value
            assert answered < 40

        # Other connections are served meanwhile and after.
        channel, streams, _ = stubs(address)
        with channel:
            assert put(streams, "s", b"after").sequences


# ------------------------------------------------------------ client streams


class OpenStream:
    """A PutRecordStream held open: one batch answered, then the call waits for more."""

    def __init__(self, stub: pb_grpc.StreamsStub, producer: str) -> None:
        self.outbox: queue.Queue[pb.PutRecordsRequest | None] = queue.Queue()
        self.outbox.put(
            pb.PutRecordsRequest(
                stream="s",
                records=[cmd.Record(data=b"x")],
                producer_id=producer,
                producer_sequence=1,
            )
        )
        self.call = stub.PutRecordStream(iter(self.outbox.get, None), timeout=30)

    def first_answer(self) -> pb.PutRecordsResponse:
        return next(self.call)

    def close(self) -> None:
        self.outbox.put(None)
        self.call.cancel()


def test_streaming_calls_beyond_max_client_streams_are_refused(tmp_path: Path) -> None:
    with limited_cluster(tmp_path, max_client_streams=3) as cluster:
        address = cluster.addresses[cluster.node_ids[0]]
        with_retries(cluster, lambda n: put(cluster.streams_stub(n), "s", b"first"))
        channel, streams, status = stubs(address)
        with channel:
            held = [OpenStream(streams, f"p{i}") for i in range(3)]
            try:
                for stream in held:
                    assert stream.first_answer().sequences
                extra = OpenStream(streams, "extra")
                with pytest.raises(grpc.RpcError) as refused:
                    extra.first_answer()
                assert exhausted(refused.value, "max_client_streams", 3), refused.value
                with pytest.raises(grpc.RpcError) as watch:
                    next(status.WatchStatus(pb.WatchStatusRequest(), timeout=CALL_TIMEOUT_S))
                assert exhausted(watch.value, "max_client_streams", 3), watch.value
                # Unary calls are not streams: still served.
                assert put(streams, "s", b"unary").sequences
                held.pop().close()
                deadline = time.monotonic() + 10
                while True:
                    again = OpenStream(streams, f"again-{time.monotonic()}")
                    try:
                        assert again.first_answer().sequences
                        held.append(again)
                        break
                    except grpc.RpcError:
                        # The closed call is let go of as soon as the node sees it end.
                        assert time.monotonic() < deadline
                        time.sleep(0.1)
            finally:
                for stream in held:
                    stream.close()


# ------------------------------------------------------------ WatchStatus


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# Fifty stalled watchers hold at most a status each (tens of kilobytes here):
# far less than this, which a queue per watcher would pass in seconds.
RSS_GROWTH_BOUND = 64 << 20
WATCHERS = 50
STREAMS = 300
WATCH_SECONDS = 4.0
# The node's CPU while they are open, puts included, as a share of the time:
# measured 0.18 with one shared status per round, 0.69 with a status built
# for each watcher every 50 ms.
CPU_SHARE_BOUND = 0.4


def test_watchers_that_never_read_are_bounded_and_the_51st_refused(tmp_path: Path) -> None:
    with limited_cluster(tmp_path, max_watch_subscribers=WATCHERS) as cluster:
        node = cluster.node_ids[0]
        address = cluster.addresses[node]
        pid = cluster.pid(node)
        assert pid is not None
        with_retries(cluster, lambda n: put(cluster.streams_stub(n), "s", b"first"))
        # Many streams make every status large (each lists them all).
        channel, streams, _ = stubs(address)
        with channel:
            records = [cmd.Record(data=b"x")]
            made = [
                streams.PutRecords.future(
                    pb.PutRecordsRequest(stream=f"stream-{i:04d}", records=records), timeout=30
                )
                for i in range(STREAMS)
            ]
            for future in made:
                future.result()
        before = rss_bytes(pid)
        cpu_before, wall_before = cpu_seconds(pid), time.monotonic()
        channels = [grpc.insecure_channel(address) for _ in range(WATCHERS + 1)]
        try:
            # Opened and never read: each call's answers pile up at the node's door.
            watches = [
                pb_grpc.ClusterStub(ch).WatchStatus(
                    pb.WatchStatusRequest(interval_ms=50), timeout=60
                )
                for ch in channels[:WATCHERS]
            ]
            channel, streams, _ = stubs(address)
            with channel:
                put_times = []
                deadline = time.monotonic() + WATCH_SECONDS
                while time.monotonic() < deadline:
                    started = time.monotonic()
                    assert put(streams, "s", b"meanwhile").sequences
                    put_times.append(time.monotonic() - started)
                    time.sleep(0.02)
                after = rss_bytes(pid)
                # Over the whole time the watchers were open (opening 50
                # channels takes a while on a busy machine), not WATCH_SECONDS.
                cpu_share = (cpu_seconds(pid) - cpu_before) / (time.monotonic() - wall_before)
                with pytest.raises(grpc.RpcError) as refused:
                    next(
                        pb_grpc.ClusterStub(channels[WATCHERS]).WatchStatus(
                            pb.WatchStatusRequest(interval_ms=50), timeout=CALL_TIMEOUT_S
                        )
                    )
                assert exhausted(refused.value, "max_watch_subscribers", WATCHERS), refused.value
                assert put(streams, "s", b"still").sequences
            assert all(watch.running() or not watch.done() for watch in watches)
        finally:
            for ch in channels:
                ch.close()
        assert len(put_times) >= 10 and max(put_times) < CALL_TIMEOUT_S, put_times
        assert after - before < RSS_GROWTH_BOUND, (before, after)
        assert cpu_share < CPU_SHARE_BOUND, cpu_share
