"""The endpoint in-process: boto3 and raw HTTP against the aiohttp app over a memory backend."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from railyard.kinesis import Credential, KinesisApi, KinesisHttp, ShardIterator, start_server
from tests.kinesis.memory import MemoryBackend

pytestmark = pytest.mark.timeout(60)


class Endpoint:
    def __init__(self, url: str, backend: MemoryBackend, api: KinesisApi) -> None:
        self.url = url
        self.backend = backend
        self.api = api

    def client(self, key: str = "AKIDTEST", secret: str = "secret") -> Any:
        return boto3.client(
            "kinesis",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            config=Config(retries={"max_attempts": 1}),
        )

    async def raw(
        self, body: bytes, target: str, **headers: str
    ) -> tuple[int, dict[str, Any], Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                self.url,
                data=body,
                headers={
                    "Content-Type": "application/x-amz-json-1.1",
                    "X-Amz-Target": target,
                    **headers,
                },
            ) as response,
        ):
            return response.status, dict(response.headers), await response.json(content_type=None)


async def _endpoint(credentials: dict[str, Credential] | None) -> AsyncIterator[Endpoint]:
    backend = MemoryBackend()
    api = KinesisApi(backend, token_key=b"test")
    runner = await start_server(KinesisHttp(api, credentials), "127.0.0.1", 0)
    host, port = runner.addresses[0][:2]
    try:
        yield Endpoint(f"http://{host}:{port}", backend, api)
    finally:
        await runner.cleanup()


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    async for e in _endpoint(None):
        yield e


def call(fn: Callable[..., Any], **kwargs: Any) -> Any:
    return asyncio.to_thread(fn, **kwargs)


async def error_of(fn: Callable[..., Any], **kwargs: Any) -> tuple[str, int]:
    with pytest.raises(ClientError) as err:
        await call(fn, **kwargs)
    return err.value.response["Error"]["Code"], err.value.response["ResponseMetadata"][
        "HTTPStatusCode"
    ]


async def test_create_describe_list_and_the_waiters(endpoint: Endpoint) -> None:
    k = endpoint.client()
    await call(k.create_stream, StreamName="orders", ShardCount=3)
    await call(k.get_waiter("stream_exists").wait, StreamName="orders")
    d = (await call(k.describe_stream, StreamName="orders"))["StreamDescription"]
    assert d["StreamStatus"] == "ACTIVE" and d["RetentionPeriodHours"] == 24
    assert [s["ShardId"] for s in d["Shards"]] == [f"shardId-00000000000{i}" for i in range(3)]
    assert d["Shards"][0]["HashKeyRange"]["StartingHashKey"] == "0"
    assert d["Shards"][2]["HashKeyRange"]["EndingHashKey"] == str(2**128 - 1)
    page = (await call(k.describe_stream, StreamName="orders", Limit=2))["StreamDescription"]
    assert page["HasMoreShards"] and len(page["Shards"]) == 2
    rest = await call(
        k.describe_stream, StreamName="orders", ExclusiveStartShardId="shardId-000000000001"
    )
    assert [s["ShardId"] for s in rest["StreamDescription"]["Shards"]] == ["shardId-000000000002"]
    summary = await call(k.describe_stream_summary, StreamName="orders")
    assert summary["StreamDescriptionSummary"]["OpenShardCount"] == 3
    await call(k.create_stream, StreamName="audit", ShardCount=1)
    listed = await call(k.list_streams, Limit=1)
    assert listed["StreamNames"] == ["audit"] and listed["HasMoreStreams"]
    more = await call(k.list_streams, NextToken=listed["NextToken"])
    assert more["StreamNames"] == ["orders"] and not more["HasMoreStreams"]
    assert more["StreamSummaries"][0]["StreamARN"].endswith(":stream/orders")
    shards = await call(k.list_shards, StreamName="orders", MaxResults=2)
    tail = await call(k.list_shards, NextToken=shards["NextToken"])
    assert len(shards["Shards"]) + len(tail["Shards"]) == 3
    assert await error_of(k.create_stream, StreamName="orders", ShardCount=3) == (
        "ResourceInUseException",
        400,
    )
    await call(k.delete_stream, StreamName="orders")
    await call(k.get_waiter("stream_not_exists").wait, StreamName="orders")
    assert await error_of(k.describe_stream, StreamName="orders") == (
        "ResourceNotFoundException",
        400,
    )


async def test_records_go_to_the_md5_shard_and_read_back_in_order(endpoint: Endpoint) -> None:
    k = endpoint.client()
    await call(k.create_stream, StreamName="s", ShardCount=2)
    put = await call(k.put_record, StreamName="s", Data=b"one", PartitionKey="a")
    expected_shard = 0 if int.from_bytes(__import__("hashlib").md5(b"a").digest()) < 2**127 else 1
    assert put["ShardId"] == f"shardId-00000000000{expected_shard}"
    explicit = await call(
        k.put_record, StreamName="s", Data=b"two", PartitionKey="a", ExplicitHashKey=str(2**127)
    )
    assert explicit["ShardId"] == "shardId-000000000001"
    entries = [{"Data": f"r{i}".encode(), "PartitionKey": f"k{i}"} for i in range(20)]
    entries.insert(5, {"Data": b"x" * (1 << 20), "PartitionKey": "big"})
    answer = await call(k.put_records, StreamName="s", Records=entries)
    assert answer["FailedRecordCount"] == 1
    assert answer["Records"][5]["ErrorCode"] == "ValidationException"
    assert all("SequenceNumber" in r for i, r in enumerate(answer["Records"]) if i != 5)
    seen: dict[str, list[bytes]] = {}
    for shard in ("shardId-000000000000", "shardId-000000000001"):
        it = (
            await call(
                k.get_shard_iterator,
                StreamName="s",
                ShardId=shard,
                ShardIteratorType="TRIM_HORIZON",
            )
        )["ShardIterator"]
        got = await call(k.get_records, ShardIterator=it, Limit=100)
        seen[shard] = [r["Data"] for r in got["Records"]]
        numbers = [int(r["SequenceNumber"]) for r in got["Records"]]
        assert numbers == sorted(numbers)
        assert got["MillisBehindLatest"] == 0
        assert got["NextShardIterator"] != it
    everything = [d for data in seen.values() for d in data]
    assert sorted(everything) == sorted([b"one", b"two"] + [f"r{i}".encode() for i in range(20)])
    in_put_order = [e["Data"] for i, e in enumerate(entries) if i != 5]
    for data in seen.values():
        batch = [d for d in data if d.startswith(b"r")]
        assert batch == [d for d in in_put_order if d in batch]


async def test_iterator_types(endpoint: Endpoint) -> None:
    k = endpoint.client()
    await call(k.create_stream, StreamName="s", ShardCount=1)
    numbers = [
        (await call(k.put_record, StreamName="s", Data=bytes([i]), PartitionKey="p"))[
            "SequenceNumber"
        ]
        for i in range(5)
    ]
    shard = "shardId-000000000000"

    async def first(kind: str, **extra: Any) -> list[bytes]:
        it = (
            await call(
                k.get_shard_iterator, StreamName="s", ShardId=shard, ShardIteratorType=kind, **extra
            )
        )["ShardIterator"]
        return [r["Data"] for r in (await call(k.get_records, ShardIterator=it))["Records"]]

    assert await first("TRIM_HORIZON") == [bytes([i]) for i in range(5)]
    assert await first("LATEST") == []
    assert await first("AT_SEQUENCE_NUMBER", StartingSequenceNumber=numbers[2]) == [
        b"\2",
        b"\3",
        b"\4",
    ]
    assert await first("AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=numbers[2]) == [b"\3", b"\4"]
    ts = endpoint.backend.streams["s.shard-0-of-1"].records[3].timestamp_ms / 1000
    assert await first("AT_TIMESTAMP", Timestamp=ts) == [b"\3", b"\4"]
    assert await error_of(
        k.get_shard_iterator,
        StreamName="s",
        ShardId="shardId-000000000009",
        ShardIteratorType="LATEST",
    ) == ("ResourceNotFoundException", 400)


async def test_expired_and_malformed_iterators_are_400s(endpoint: Endpoint) -> None:
    k = endpoint.client()
    await call(k.create_stream, StreamName="s", ShardCount=1)
    stale = endpoint.api.tokens.iterator(ShardIterator("s", 0, 1, 1, issued_ms=0))
    assert await error_of(k.get_records, ShardIterator=stale) == ("ExpiredIteratorException", 400)
    assert await error_of(k.get_records, ShardIterator="bogus") == ("InvalidArgumentException", 400)


async def test_malformed_requests_are_400s_with_a_request_id(endpoint: Endpoint) -> None:
    cases = [
        (b"{not json", "Kinesis_20131202.ListStreams", "SerializationException"),
        (b"[1]", "Kinesis_20131202.ListStreams", "SerializationException"),
        (b"{}", "Kinesis_20131202.MergeShards", "UnknownOperationException"),
        (b"{}", "Nothing", "UnknownOperationException"),
        (b'{"StreamName": "bad name!"}', "Kinesis_20131202.DescribeStream", "ValidationException"),
        (
            b'{"StreamName": "s", "ShardCount": "4"}',
            "Kinesis_20131202.CreateStream",
            "SerializationException",
        ),
        (b'{"ShardIterator": 12}', "Kinesis_20131202.GetRecords", "SerializationException"),
        (
            b'{"StreamName": "s", "Data": "%%%", "PartitionKey": "k"}',
            "Kinesis_20131202.PutRecord",
            "SerializationException",
        ),
    ]
    for body, target, expected in cases:
        status, headers, answer = await endpoint.raw(body, target)
        assert (status, answer["__type"]) == (400, expected), (body, target, answer)
        assert headers.get("x-amzn-RequestId")


async def test_a_retried_invocation_is_applied_once(endpoint: Endpoint) -> None:
    k = endpoint.client()
    await call(k.create_stream, StreamName="s", ShardCount=2)
    body = json.dumps(
        {
            "StreamName": "s",
            "Records": [
                {"Data": base64.b64encode(b"x").decode(), "PartitionKey": str(i)} for i in range(10)
            ],
        }
    ).encode()
    target = "Kinesis_20131202.PutRecords"
    headers = {"amz-sdk-invocation-id": "5b2f9a5e-8c0e-4f8b-9a39-3d1c2c1a7f00"}
    _, _, first = await endpoint.raw(body, target, **headers)
    _, _, again = await endpoint.raw(body, target, **headers)
    assert first == again
    stored = sum(len(s.records) for s in endpoint.backend.streams.values())
    assert stored == 10
    _, _, other = await endpoint.raw(body, target)  # no invocation id: a new put
    assert other != first
    assert sum(len(s.records) for s in endpoint.backend.streams.values()) == 20


async def test_roles_limit_what_a_signed_key_may_do() -> None:
    keys = {
        "AKIDREADER": Credential("r", "reader"),
        "AKIDWRITER": Credential("w", "writer"),
        "AKIDADMIN": Credential("a", "admin"),
    }
    async for endpoint in _endpoint(keys):
        admin = endpoint.client("AKIDADMIN", "a")
        writer = endpoint.client("AKIDWRITER", "w")
        reader = endpoint.client("AKIDREADER", "r")
        # As over gRPC: a writer may create, only an admin delete or change retention.
        await call(writer.create_stream, StreamName="s", ShardCount=1)
        assert await error_of(reader.create_stream, StreamName="t", ShardCount=1) == (
            "AccessDeniedException",
            400,
        )
        assert await error_of(writer.delete_stream, StreamName="s") == (
            "AccessDeniedException",
            400,
        )
        assert await error_of(
            writer.increase_stream_retention_period, StreamName="s", RetentionPeriodHours=48
        ) == ("AccessDeniedException", 400)
        await call(admin.increase_stream_retention_period, StreamName="s", RetentionPeriodHours=48)
        await call(writer.put_record, StreamName="s", Data=b"d", PartitionKey="k")
        assert await error_of(reader.put_record, StreamName="s", Data=b"d", PartitionKey="k") == (
            "AccessDeniedException",
            400,
        )
        assert (await call(reader.list_streams))["StreamNames"] == ["s"]
        wrong = endpoint.client("AKIDREADER", "guess")
        assert (await error_of(wrong.list_streams))[0] == "InvalidSignatureException"
        status, _, answer = await endpoint.raw(b"{}", "Kinesis_20131202.ListStreams")
        assert (status, answer["__type"]) == (400, "MissingAuthenticationTokenException")


async def test_an_unfinished_create_shows_creating_and_is_completed_by_repeating_it(
    endpoint: Endpoint,
) -> None:
    k = endpoint.client()
    await endpoint.backend.create_stream("half.shard-1-of-3", 24 * 3_600_000)
    d = (await call(k.describe_stream, StreamName="half"))["StreamDescription"]
    assert d["StreamStatus"] == "CREATING"
    assert (await error_of(k.put_record, StreamName="half", Data=b"d", PartitionKey="k"))[0] == (
        "ResourceNotFoundException"
    )
    assert (await error_of(k.create_stream, StreamName="half", ShardCount=2))[0] == (
        "ResourceInUseException"
    )
    await call(k.create_stream, StreamName="half", ShardCount=3)
    d = (await call(k.describe_stream, StreamName="half"))["StreamDescription"]
    assert d["StreamStatus"] == "ACTIVE" and len(d["Shards"]) == 3


async def test_put_records_bounds(endpoint: Endpoint) -> None:
    k = endpoint.client()
    await call(k.create_stream, StreamName="s", ShardCount=1)
    record = {"Data": b"x", "PartitionKey": "k"}
    status, _, answer = await endpoint.raw(
        b'{"StreamName": "s", "Records": []}', "Kinesis_20131202.PutRecords"
    )
    assert (status, answer["__type"]) == (400, "ValidationException")
    assert await error_of(k.put_records, StreamName="s", Records=[record] * 501) == (
        "ValidationException",
        400,
    )
    six_mib = [{"Data": b"x" * 900_000, "PartitionKey": str(i)} for i in range(7)]
    assert await error_of(k.put_records, StreamName="s", Records=six_mib) == (
        "InvalidArgumentException",
        400,
    )
    assert sum(len(s.records) for s in endpoint.backend.streams.values()) == 0


async def test_retention_moves_within_kinesis_bounds(endpoint: Endpoint) -> None:
    k = endpoint.client()
    await call(k.create_stream, StreamName="s", ShardCount=2)
    await call(k.increase_stream_retention_period, StreamName="s", RetentionPeriodHours=48)
    d = (await call(k.describe_stream_summary, StreamName="s"))["StreamDescriptionSummary"]
    assert d["RetentionPeriodHours"] == 48
    assert {s.max_age_ms for s in endpoint.backend.streams.values()} == {48 * 3_600_000}
    assert (
        await error_of(k.decrease_stream_retention_period, StreamName="s", RetentionPeriodHours=72)
    )[0] == "InvalidArgumentException"
    assert (
        await error_of(k.decrease_stream_retention_period, StreamName="s", RetentionPeriodHours=12)
    )[0] == "InvalidArgumentException"
    await call(k.decrease_stream_retention_period, StreamName="s", RetentionPeriodHours=24)
