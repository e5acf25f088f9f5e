"""The Kinesis operations, written against `Backend`.

`KinesisApi.call(operation, body, ...)` takes a parsed JSON body and returns
the JSON answer or raises `KinesisError`. Field names and shapes are those
of botocore's `kinesis/2013-12-02/service-2.json`; sharding, sequence
numbers and iterators are explained in `shards.py` and `positions.py`.

Stream operations live here; record operations (puts, iterators, reads)
in `records.py`.

Roles, the same as the gRPC API's for the same acts: a reader may
describe, list and read; a writer may also put and create; an admin may
also delete and change retention (a tighter retention drops records). `role=None` (no
credentials configured) may do everything.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from railyard.kinesis.backend import Backend, LimitExceeded, StreamConflict, StreamMissing
from railyard.kinesis.catalog import Catalog, KinesisStream
from railyard.kinesis.errors import (
    KinesisError,
    access_denied,
    in_use,
    invalid_argument,
    not_found,
    unknown_operation,
)
from railyard.kinesis.fields import STREAM_NAME, Fields
from railyard.kinesis.positions import TokenCodec, sequence_number
from railyard.kinesis.records import RecordOperations
from railyard.kinesis.shards import (
    hash_range,
    parse_shard_id,
    shard_id,
    shard_stream_name,
    shard_stream_suffix_len,
)

READER = "reader"
WRITER = "writer"
ADMIN = "admin"
ROLES = (READER, WRITER, ADMIN)
_RANK = {READER: 0, WRITER: 1, ADMIN: 2}

DEFAULT_REGION = "us-east-1"
# The account in ARNs and messages: railyard has no accounts, so the one
# local emulators use.
DEFAULT_ACCOUNT_ID = "000000000000"
MS_PER_HOUR = 3_600_000
# Kinesis' retention bounds, and the retention a new stream gets.
MIN_RETENTION_HOURS = 24
MAX_RETENTION_HOURS = 8760
# An ON_DEMAND stream created without ShardCount starts with Kinesis' 4 shards.
ON_DEMAND_SHARDS = 4
# Every shard is a railyard stream and a describe lists them all: a bound
# keeps one CreateStream from making an unbounded number of streams.
MAX_SHARDS = 1024
DESCRIBE_SHARDS_DEFAULT = 100
LIST_SHARDS_DEFAULT = 1000
LIST_STREAMS_DEFAULT = 100
MAX_PAGE = 10_000


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


Handler = Callable[[Fields, "CallContext"], Awaitable[dict[str, Any]]]


class CallContext:
    """What one call carries besides its body."""

    def __init__(self, invocation_id: str | None, region: str | None) -> None:
        self.invocation_id = invocation_id
        self.region = region or DEFAULT_REGION


class KinesisApi:
    def __init__(
        self,
        backend: Backend,
        *,
        token_key: bytes,
        account_id: str = DEFAULT_ACCOUNT_ID,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.backend = backend
        self.account_id = account_id
        self.clock_ms = clock_ms
        self.catalog = Catalog(backend, clock_ms)
        self.tokens = TokenCodec(token_key)
        self.records = RecordOperations(self)
        self._operations: dict[str, tuple[str, Handler]] = {
            "CreateStream": (WRITER, self.create_stream),
            "DeleteStream": (ADMIN, self.delete_stream),
            "IncreaseStreamRetentionPeriod": (ADMIN, self.increase_retention),
            "DecreaseStreamRetentionPeriod": (ADMIN, self.decrease_retention),
            "DescribeStream": (READER, self.describe_stream),
            "DescribeStreamSummary": (READER, self.describe_stream_summary),
            "ListStreams": (READER, self.list_streams),
            "ListShards": (READER, self.list_shards),
            "PutRecord": (WRITER, self.records.put_record),
            "PutRecords": (WRITER, self.records.put_records),
            "GetShardIterator": (READER, self.records.get_shard_iterator),
            "GetRecords": (READER, self.records.get_records),
        }

    @property
    def operations(self) -> tuple[str, ...]:
        return tuple(self._operations)

    async def call(
        self,
        operation: str,
        body: Mapping[str, Any],
        *,
        role: str | None = None,
        invocation_id: str | None = None,
        region: str | None = None,
    ) -> dict[str, Any]:
        found = self._operations.get(operation)
        if found is None:
            raise unknown_operation(f"Operation {operation!r} is not supported")
        needed, handler = found
        if role is not None and _RANK[role] < _RANK[needed]:
            raise access_denied(
                f"A {role} may not call {operation}: it needs the {needed} role or higher"
            )
        return await handler(Fields(body), CallContext(invocation_id, region))

    # ------------------------------------------------------------ naming

    def arn(self, name: str, region: str) -> str:
        return f"arn:aws:kinesis:{region}:{self.account_id}:stream/{name}"

    def stream_not_found(self, name: str) -> KinesisError:
        return not_found(f"Stream {name} under account {self.account_id} not found.")

    async def existing(self, name: str) -> KinesisStream:
        stream = await self.catalog.find(name)
        if stream is None:
            raise self.stream_not_found(name)
        return stream

    # ------------------------------------------------------------ create, delete

    async def create_stream(self, f: Fields, ctx: CallContext) -> dict[str, Any]:
        name = f.stream_name()
        assert name is not None
        count = f.integer("ShardCount", minimum=1)
        mode = _stream_mode(f)
        if count is None:
            if mode != "ON_DEMAND":
                raise invalid_argument("ShardCount is required for a PROVISIONED stream")
            count = ON_DEMAND_SHARDS
        if count > MAX_SHARDS:
            raise KinesisError(
                "LimitExceededException",
                f"ShardCount {count} exceeds this service's limit of {MAX_SHARDS} shards "
                "per stream",
            )
        longest = self.backend.max_name_chars - shard_stream_suffix_len(count)
        if len(name) > longest:
            raise invalid_argument(
                f"StreamName {name!r} is too long: with {count} shards a name may have at most "
                f"{longest} characters (each shard is a railyard stream named "
                f"{shard_stream_name(name[:8] + '…', count - 1, count)!r}, at most "
                f"{self.backend.max_name_chars} characters)"
            )
        existing = await self.catalog.find(name)
        if existing is not None and (existing.status == "ACTIVE" or existing.shard_count != count):
            raise in_use(f"Stream {name} under account {self.account_id} already exists.")
        max_age_ms = (
            existing.max_age_ms if existing is not None else MIN_RETENTION_HOURS * MS_PER_HOUR
        )
        missing = [i for i in range(count) if existing is None or i not in existing.shards]
        try:
            await asyncio.gather(
                *(
                    self.backend.create_stream(shard_stream_name(name, i, count), max_age_ms)
                    for i in missing
                )
            )
        except StreamConflict:
            raise in_use(f"Stream {name} under account {self.account_id} already exists.") from None
        except LimitExceeded as exc:
            raise KinesisError("LimitExceededException", str(exc)) from None
        return {}

    async def delete_stream(self, f: Fields, ctx: CallContext) -> dict[str, Any]:
        name = f.stream_name()
        assert name is not None
        f.boolean("EnforceConsumerDeletion")
        stream = await self.existing(name)
        self.catalog.forget(name)
        results = await asyncio.gather(
            *(
                self.backend.delete_stream(shard_stream_name(name, i, stream.shard_count))
                for i in stream.shards
            ),
            return_exceptions=True,
        )
        for result in results:
            # A shard already gone was deleted by a concurrent DeleteStream: the end is the same.
            if isinstance(result, BaseException) and not isinstance(result, StreamMissing):
                raise result
        return {}

    # ------------------------------------------------------------ retention

    async def increase_retention(self, f: Fields, ctx: CallContext) -> dict[str, Any]:
        return await self._retention(f, increase=True)

    async def decrease_retention(self, f: Fields, ctx: CallContext) -> dict[str, Any]:
        return await self._retention(f, increase=False)

    async def _retention(self, f: Fields, *, increase: bool) -> dict[str, Any]:
        name = f.stream_name()
        assert name is not None
        hours = f.integer("RetentionPeriodHours", required=True)
        assert hours is not None
        if hours < MIN_RETENTION_HOURS:
            raise invalid_argument(
                f"Minimum allowed retention period is {MIN_RETENTION_HOURS} hours. "
                f"Requested retention period ({hours} hours) is too short."
            )
        if hours > MAX_RETENTION_HOURS:
            raise invalid_argument(
                f"Maximum allowed retention period is {MAX_RETENTION_HOURS} hours. "
                f"Requested retention period ({hours} hours) is too long."
            )
        stream = await self.existing(name)
        current = _retention_hours(stream)
        if increase and hours < current:
            raise invalid_argument(
                f"Requested retention period ({hours} hours) for stream {name} can not be "
                f"shorter than existing retention period ({current} hours). "
                "Use DecreaseRetentionPeriod API."
            )
        if not increase and hours > current:
            raise invalid_argument(
                f"Requested retention period ({hours} hours) for stream {name} can not be "
                f"longer than existing retention period ({current} hours). "
                "Use IncreaseRetentionPeriod API."
            )
        await asyncio.gather(
            *(
                self.backend.set_retention(
                    shard_stream_name(name, i, stream.shard_count), hours * MS_PER_HOUR
                )
                for i in stream.shards
            )
        )
        return {}

    # ------------------------------------------------------------ describe, list

    def _shard(self, stream: KinesisStream, index: int) -> dict[str, Any]:
        start, end = hash_range(index, stream.shard_count)
        return {
            "ShardId": shard_id(index),
            "HashKeyRange": {"StartingHashKey": str(start), "EndingHashKey": str(end)},
            "SequenceNumberRange": {"StartingSequenceNumber": sequence_number(index, 0)},
        }

    def _summary_fields(self, stream: KinesisStream, region: str) -> dict[str, Any]:
        return {
            "StreamName": stream.name,
            "StreamARN": self.arn(stream.name, region),
            "StreamStatus": stream.status,
            "StreamModeDetails": {"StreamMode": "PROVISIONED"},
            "RetentionPeriodHours": _retention_hours(stream),
            "StreamCreationTimestamp": stream.created_ms / 1000,
            "EnhancedMonitoring": [{"ShardLevelMetrics": []}],
            "EncryptionType": "NONE",
        }

    async def describe_stream(self, f: Fields, ctx: CallContext) -> dict[str, Any]:
        name = f.stream_name()
        assert name is not None
        limit = f.integer("Limit", minimum=1, maximum=MAX_PAGE) or DESCRIBE_SHARDS_DEFAULT
        after = _exclusive_start_shard(f)
        stream = await self.existing(name)
        indexes = [i for i in sorted(stream.shards) if i > after]
        page = indexes[:limit]
        return {
            "StreamDescription": {
                **self._summary_fields(stream, ctx.region),
                "Shards": [self._shard(stream, i) for i in page],
                "HasMoreShards": len(indexes) > len(page),
            }
        }

    async def describe_stream_summary(self, f: Fields, ctx: CallContext) -> dict[str, Any]:
        name = f.stream_name()
        assert name is not None
        stream = await self.existing(name)
        return {
            "StreamDescriptionSummary": {
                **self._summary_fields(stream, ctx.region),
                "OpenShardCount": len(stream.shards),
                "ConsumerCount": 0,
            }
        }

    async def list_streams(self, f: Fields, ctx: CallContext) -> dict[str, Any]:
        limit = f.integer("Limit", minimum=1, maximum=MAX_PAGE) or LIST_STREAMS_DEFAULT
        after = f.string("ExclusiveStartStreamName", min_len=1, max_len=128, pattern=STREAM_NAME)
        token = f.string("NextToken", min_len=1)
        if token is not None:
            after = self.tokens.open_page_token(token, "ListStreams", self.clock_ms())
        streams = [
            s for name, s in (await self.catalog.all()).items() if after is None or name > after
        ]
        page = streams[:limit]
        answer: dict[str, Any] = {
            "StreamNames": [s.name for s in page],
            "HasMoreStreams": len(streams) > len(page),
            "StreamSummaries": [
                {
                    "StreamName": s.name,
                    "StreamARN": self.arn(s.name, ctx.region),
                    "StreamStatus": s.status,
                    "StreamModeDetails": {"StreamMode": "PROVISIONED"},
                    "StreamCreationTimestamp": s.created_ms / 1000,
                }
                for s in page
            ],
        }
        if len(streams) > len(page):
            answer["NextToken"] = self.tokens.page_token(
                "ListStreams", page[-1].name, self.clock_ms()
            )
        return answer

    async def list_shards(self, f: Fields, ctx: CallContext) -> dict[str, Any]:
        name = f.stream_name(required=False)
        token = f.string("NextToken", min_len=1)
        limit = f.integer("MaxResults", minimum=1, maximum=MAX_PAGE) or LIST_SHARDS_DEFAULT
        after = _exclusive_start_shard(f)
        f.timestamp_ms("StreamCreationTimestamp")
        f.mapping("ShardFilter")  # every shard is open: each filter selects all of them
        if token is not None:
            if name is not None:
                raise invalid_argument("NextToken and StreamName cannot be provided together.")
            position = self.tokens.open_page_token(token, "ListShards", self.clock_ms())
            name, _, last = position.rpartition("/")
            after = int(last)
        if name is None:
            raise invalid_argument("Either NextToken or StreamName should be provided.")
        stream = await self.existing(name)
        indexes = [i for i in sorted(stream.shards) if i > after]
        page = indexes[:limit]
        answer: dict[str, Any] = {"Shards": [self._shard(stream, i) for i in page]}
        if len(indexes) > len(page):
            answer["NextToken"] = self.tokens.page_token(
                "ListShards", f"{name}/{page[-1]}", self.clock_ms()
            )
        return answer


def _stream_mode(f: Fields) -> str:
    details = f.mapping("StreamModeDetails")
    if details is None:
        return "PROVISIONED"
    mode = details.string("StreamMode", required=True)
    if mode not in ("PROVISIONED", "ON_DEMAND"):
        raise invalid_argument(f"StreamMode {mode!r}: expected PROVISIONED or ON_DEMAND")
    return mode


def _exclusive_start_shard(f: Fields) -> int:
    """The shard index a page starts after; -1 for the first page."""
    text = f.string("ExclusiveStartShardId", min_len=1, max_len=128, pattern=STREAM_NAME)
    if text is None:
        return -1
    index = parse_shard_id(text)
    if index is None:
        raise invalid_argument(
            f"ExclusiveStartShardId {text!r}: expected a shard id such as shardId-000000000000"
        )
    return index


def _retention_hours(stream: KinesisStream) -> int:
    return stream.max_age_ms // MS_PER_HOUR if stream.max_age_ms else MAX_RETENTION_HOURS
