"""boto3 against a real 3-node cluster's Kinesis endpoints (leader and follower), and moto."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from railyard.kinesis import ShardIterator, TokenCodec
from railyard.proto import railyard_pb2 as pb
from tests.kinesis import scenario
from tests.support.cluster import LocalCluster

pytestmark = pytest.mark.timeout(120)


def client(url: str, **config: Any) -> Any:
    return boto3.client(
        "kinesis",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(**config),
    )


# The first test's summary, reused by the moto comparison (run again if it is missing).
_SUMMARIES: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("kinesis"), kinesis=True)
    try:
        c.start()
        c.wait_for_leader()
        yield c
    finally:
        c.stop()


def test_leader_and_follower_endpoints_give_the_same_answers(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader()
    follower = next(n for n in cluster.node_ids if n != leader)
    on_leader = scenario.run(client(cluster.kinesis_url(leader)), "via-leader")
    on_follower = scenario.run(client(cluster.kinesis_url(follower)), "via-follower")
    assert on_leader == on_follower
    _SUMMARIES["ours"] = on_leader
    assert on_leader["put_records_failed"] == 1
    assert on_leader["retention_hours"] == 36
    assert on_leader["put_records_error"] == "ValidationException"
    assert on_leader["latest_sees_later_puts"]
    assert on_leader["at_sequence_first"] == b"first"
    assert on_leader["after_sequence_skips_it"] and on_leader["at_timestamp_skips_earlier"]
    assert on_leader["malformed_iterator"] == ("InvalidArgumentException", 400)
    assert on_leader["missing_stream"] == ("ResourceNotFoundException", 400)
    assert on_leader["create_twice"] == ("ResourceInUseException", 400)
    assert on_leader["after_delete"] == ("ResourceNotFoundException", 400)


def test_an_expired_iterator_is_refused(cluster: LocalCluster) -> None:
    k = client(cluster.kinesis_url("n1"))
    k.create_stream(StreamName="expiry", ShardCount=1)
    issued_long_ago = ShardIterator("expiry", 0, 1, 1, issued_ms=int(time.time() * 1000) - 301_000)
    token = TokenCodec(b"test").iterator(issued_long_ago)  # the cluster's name seals iterators
    code = scenario.error_code(k.get_records, ShardIterator=token)
    assert code == ("ExpiredIteratorException", 400)


def test_railyard_and_kinesis_see_the_same_records(cluster: LocalCluster) -> None:
    k = client(cluster.kinesis_url("n2"))
    k.create_stream(StreamName="both", ShardCount=2)
    put = k.put_record(StreamName="both", Data=b"from kinesis", PartitionKey="pk")
    index = int(put["ShardId"].removeprefix("shardId-"))
    stream = f"both.shard-{index}-of-2"
    names = [
        s.name for s in cluster.streams_stub("n1").ListStreams(pb.ListStreamsRequest()).streams
    ]
    assert {"both.shard-0-of-2", "both.shard-1-of-2"} <= set(names)
    got = cluster.streams_stub("n1").GetRecords(
        pb.GetRecordsRequest(stream=stream, from_sequence=1)
    )
    assert [(r.data, r.key) for r in got.records] == [(b"from kinesis", b"pk")]
    cluster.streams_stub("n1").PutRecord(
        pb.PutRecordRequest(stream=stream, data=b"from railyard", key=b"rk", has_key=True)
    )
    records, *_ = scenario.read_shard(k, "both", put["ShardId"])
    assert [(r["Data"], r["PartitionKey"]) for r in records] == [
        (b"from kinesis", "pk"),
        (b"from railyard", "rk"),
    ]


PRODUCERS = 4


def test_puts_through_a_follower_survive_a_leader_kill_exactly_once(cluster: LocalCluster) -> None:
    leader = cluster.wait_for_leader()
    follower = next(n for n in cluster.node_ids if n != leader)
    # Standard retries: botocore resends a call that failed with a 500 or a
    # dropped connection, with the same amz-sdk-invocation-id.
    k = client(
        cluster.kinesis_url(follower),
        retries={"mode": "standard", "max_attempts": 10},
        read_timeout=20,
    )
    k.create_stream(StreamName="failover", ShardCount=3)
    acknowledged: list[bytes] = []
    failed_calls: list[str] = []
    stop = threading.Event()

    def produce(producer: int) -> None:
        mine = client(
            cluster.kinesis_url(follower),
            retries={"mode": "standard", "max_attempts": 10},
            read_timeout=20,
        )
        for call in range(400):
            if stop.is_set():
                return
            batch = [
                {"Data": f"p{producer}-c{call:04d}-{i:02d}".encode(), "PartitionKey": f"{call}-{i}"}
                for i in range(20)
            ]
            try:
                answer = mine.put_records(StreamName="failover", Records=batch)
            except (ClientError, BotoCoreError) as exc:
                failed_calls.append(repr(exc))
                continue
            acknowledged.extend(
                e["Data"]
                for e, r in zip(batch, answer["Records"], strict=True)
                if "SequenceNumber" in r
            )

    # Several calls in flight when the leader dies: some of them committed
    # without an answer, which botocore then sends again.
    producers = [threading.Thread(target=produce, args=(p,)) for p in range(PRODUCERS)]
    for producer in producers:
        producer.start()
    try:
        deadline = time.monotonic() + 10
        while len(acknowledged) < 400 and time.monotonic() < deadline:
            time.sleep(0.02)
        cluster.kill(leader)
        new_leader = cluster.wait_for_leader(
            exclude=leader, among=[n for n in cluster.node_ids if n != leader]
        )
        acknowledged_at_kill = len(acknowledged)
        deadline = time.monotonic() + 10
        while len(acknowledged) < acknowledged_at_kill + 400 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for producer in producers:
            producer.join(timeout=60)
    assert not any(producer.is_alive() for producer in producers)
    assert new_leader != leader
    assert len(acknowledged) > acknowledged_at_kill, "puts went on after the leader was killed"
    seen: list[bytes] = []
    for shard in range(3):
        records, *_ = scenario.read_shard(k, "failover", f"shardId-00000000000{shard}", 1000)
        seen += [r["Data"] for r in records]
    assert len(seen) == len(set(seen)), "a record was stored twice"
    missing = set(acknowledged) - set(seen)
    assert not missing, f"{len(missing)} acknowledged records are missing"
    assert not failed_calls, failed_calls[:3]


# Where moto (5.x) is known to differ from Kinesis, and what this endpoint answers.
MOTO_KNOWN_WRONG = {
    # moto decodes the iterator without checking it: a malformed one is an HTTP 500.
    "malformed_iterator": ("InvalidArgumentException", 400),
    # moto hands back the same iterator when a read found nothing new.
    "every_iterator_new": True,
    # A partition key over 256 characters breaks the model's length
    # constraint, a ValidationException in Kinesis; moto says InvalidArgument.
    "long_partition_key": ("ValidationException", 400),
    # moto refuses the whole PutRecords for one oversized record; here it fails alone.
    "put_records_error": "ValidationException",
}


def _fields(shape: Any) -> set[str]:
    """Every field path of an answer's shape."""
    if isinstance(shape, dict):
        return {f"{k}.{p}" if p else k for k, v in shape.items() for p in _fields(v) | {""}}
    if isinstance(shape, list) and shape:
        return _fields(shape[0])
    return set()


def test_moto_gives_the_same_shapes_and_error_codes(cluster: LocalCluster) -> None:
    from moto.server import ThreadedMotoServer

    from tests.support.cluster import free_ports

    port = free_ports(1)[0]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        moto = scenario.run(client(f"http://127.0.0.1:{port}"), "moto", oversized_fails_alone=False)
    finally:
        server.stop()
    ours = _SUMMARIES.get("ours") or scenario.run(
        client(cluster.kinesis_url(cluster.wait_for_leader())), "ours"
    )
    for key, expected in MOTO_KNOWN_WRONG.items():
        assert ours[key] == expected
        assert moto[key] != expected, f"moto now gets {key} right: drop it from the list"
    assert moto["put_records_error"] == ("ValidationException", 400)
    assert ours["put_records_failed"] == 1 and moto["put_records_failed"] == 0
    shared = [k for k in ours if k not in MOTO_KNOWN_WRONG and k != "put_records_failed"]
    for key in shared:
        if isinstance(ours[key], dict):
            # Every field moto answers with, this endpoint answers with too.
            assert _fields(moto[key]) <= _fields(ours[key]), key
        else:
            assert ours[key] == moto[key], key
