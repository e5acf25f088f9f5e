"""One Kinesis session through boto3, reduced to what must match between endpoints.

`run` drives a client through every operation the endpoint serves and
returns a summary: the fields of each answer (recursively, without values
that differ by nature: sequence numbers, timestamps, iterators, ARNs'
regions) and the error code of each call meant to fail. The same summary
from two endpoints means the same shapes and the same errors.
"""

from __future__ import annotations

import time
from typing import Any

from botocore.exceptions import ClientError

SHARDS = 4
RECORDS = 60


def shape(value: Any) -> Any:
    """The structure of an answer: dict keys and element shapes, no values."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in sorted(value.items()) if k != "ResponseMetadata"}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def error_code(fn: Any, **kwargs: Any) -> tuple[str, int]:
    try:
        fn(**kwargs)
    except ClientError as exc:
        return exc.response["Error"]["Code"], exc.response["ResponseMetadata"]["HTTPStatusCode"]
    raise AssertionError(f"{fn.__name__}({kwargs}) did not fail")


def read_shard(
    client: Any, stream: str, shard_id: str, limit: int = 7
) -> tuple[list[dict[str, Any]], list[int], bool]:
    """Every record of a shard through a NextShardIterator loop, each call's
    MillisBehindLatest, and whether every call gave a new iterator."""
    it = client.get_shard_iterator(
        StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records: list[dict[str, Any]] = []
    behind: list[int] = []
    renewed = True
    for _ in range(200):
        page = client.get_records(ShardIterator=it, Limit=limit)
        records += page["Records"]
        behind.append(page["MillisBehindLatest"])
        renewed = renewed and page["NextShardIterator"] != it
        it = page["NextShardIterator"]
        if not page["Records"] and page["MillisBehindLatest"] == 0:
            break
    return records, behind, renewed


def run(client: Any, stream: str, *, oversized_fails_alone: bool = True) -> dict[str, Any]:
    """The session's summary. With `oversized_fails_alone=False` (moto: the whole
    PutRecords is refused), the oversized record is put in a call of its own."""
    out: dict[str, Any] = {}
    client.create_stream(StreamName=stream, ShardCount=SHARDS)
    client.get_waiter("stream_exists").wait(
        StreamName=stream, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )
    described = client.describe_stream(StreamName=stream)
    out["describe"] = shape(described)
    shards = [s["ShardId"] for s in described["StreamDescription"]["Shards"]]
    assert len(shards) == SHARDS
    assert described["StreamDescription"]["StreamStatus"] == "ACTIVE"
    out["summary"] = shape(client.describe_stream_summary(StreamName=stream))
    listed = client.list_streams()
    assert stream in listed["StreamNames"]
    out["list_streams"] = shape(listed)
    out["list_shards"] = shape(client.list_shards(StreamName=stream))

    put = client.put_record(StreamName=stream, Data=b"first", PartitionKey="p-first")
    out["put_record"] = shape(put)
    latest = client.get_shard_iterator(
        StreamName=stream, ShardId=put["ShardId"], ShardIteratorType="LATEST"
    )["ShardIterator"]
    before = time.time()
    entries = [{"Data": f"r{i:03d}".encode(), "PartitionKey": f"key-{i}"} for i in range(RECORDS)]
    mixed = [*entries[:10], {"Data": b"x" * (1 << 20), "PartitionKey": "big"}, *entries[10:]]
    if oversized_fails_alone:
        answer = client.put_records(StreamName=stream, Records=mixed)
        out["put_records_failed"] = answer["FailedRecordCount"]
        out["put_records_error"] = answer["Records"][10].get("ErrorCode")
        ok = [r for i, r in enumerate(answer["Records"]) if i != 10]
    else:
        out["put_records_error"] = error_code(client.put_records, StreamName=stream, Records=mixed)
        answer = client.put_records(StreamName=stream, Records=entries)
        out["put_records_failed"] = answer["FailedRecordCount"]
        ok = answer["Records"]
    assert all("SequenceNumber" in r and "ErrorCode" not in r for r in ok)
    out["put_records_entry"] = shape(ok[0])

    # Every record of every shard once, in per-shard order, MillisBehindLatest reaching 0.
    seen: list[bytes] = []
    for shard in shards:
        records, behind, renewed = read_shard(client, stream, shard)
        out["every_iterator_new"] = out.get("every_iterator_new", True) and renewed
        numbers = [int(r["SequenceNumber"]) for r in records]
        assert numbers == sorted(set(numbers)), "per-shard order"
        assert behind[-1] == 0
        seen += [r["Data"] for r in records]
        out.setdefault("record", shape(records[0]) if records else None)
    assert sorted(seen) == sorted([b"first"] + [e["Data"] for e in entries])
    per_shard_batch = {
        shard: [r["Data"] for r in read_shard(client, stream, shard)[0] if r["Data"] != b"first"]
        for shard in shards
    }
    for data in per_shard_batch.values():
        assert data == sorted(data), "a shard's records keep the put's order"

    # Iterator types, on the shard of the first record.
    after_latest = client.get_records(ShardIterator=latest)["Records"]
    out["latest_sees_later_puts"] = bool(after_latest)
    first_number = put["SequenceNumber"]
    at = client.get_shard_iterator(
        StreamName=stream,
        ShardId=put["ShardId"],
        ShardIteratorType="AT_SEQUENCE_NUMBER",
        StartingSequenceNumber=first_number,
    )["ShardIterator"]
    out["at_sequence_first"] = client.get_records(ShardIterator=at)["Records"][0]["Data"]
    after = client.get_shard_iterator(
        StreamName=stream,
        ShardId=put["ShardId"],
        ShardIteratorType="AFTER_SEQUENCE_NUMBER",
        StartingSequenceNumber=first_number,
    )["ShardIterator"]
    after_records = client.get_records(ShardIterator=after)["Records"]
    out["after_sequence_skips_it"] = all(r["Data"] != b"first" for r in after_records)
    stamp = client.get_shard_iterator(
        StreamName=stream,
        ShardId=put["ShardId"],
        ShardIteratorType="AT_TIMESTAMP",
        Timestamp=before - 0.001,
    )["ShardIterator"]
    stamped = client.get_records(ShardIterator=stamp)["Records"]
    out["at_timestamp_skips_earlier"] = all(r["Data"] != b"first" for r in stamped)

    # Errors.
    out["malformed_iterator"] = error_code(client.get_records, ShardIterator="bogus-iterator")
    out["missing_stream"] = error_code(client.describe_stream, StreamName=f"{stream}-missing")
    out["create_twice"] = error_code(client.create_stream, StreamName=stream, ShardCount=SHARDS)
    out["put_missing"] = error_code(
        client.put_record, StreamName=f"{stream}-missing", Data=b"d", PartitionKey="k"
    )
    out["bad_shard"] = error_code(
        client.get_shard_iterator,
        StreamName=stream,
        ShardId="shardId-000000000099",
        ShardIteratorType="LATEST",
    )
    client.increase_stream_retention_period(StreamName=stream, RetentionPeriodHours=48)
    client.decrease_stream_retention_period(StreamName=stream, RetentionPeriodHours=36)
    out["retention_hours"] = client.describe_stream_summary(StreamName=stream)[
        "StreamDescriptionSummary"
    ]["RetentionPeriodHours"]
    out["retention_decrease_up"] = error_code(
        client.decrease_stream_retention_period, StreamName=stream, RetentionPeriodHours=72
    )
    out["retention_too_long"] = error_code(
        client.increase_stream_retention_period, StreamName=stream, RetentionPeriodHours=9000
    )
    out["long_partition_key"] = error_code(
        client.put_record, StreamName=stream, Data=b"d", PartitionKey="k" * 257
    )

    client.delete_stream(StreamName=stream)
    client.get_waiter("stream_not_exists").wait(
        StreamName=stream, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )
    out["after_delete"] = error_code(client.describe_stream, StreamName=stream)
    return out
