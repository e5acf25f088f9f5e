"""Record operations: PutRecord, PutRecords, GetShardIterator, GetRecords.

Exactly-once puts. botocore sends an `amz-sdk-invocation-id` header that
stays the same across its own retries of one call (other AWS SDKs do the
same). A put that carries one appends each shard's records with the
producer id `kinesis/<invocation id>/<shard stream digest>` and producer
sequence 1, so the cluster's producer table (`streams/producers.py`)
answers a retry with the first result instead of appending again, on any
node and across a leader change. Because that makes a retry harmless, a
put with an invocation id whose outcome is unknown is answered with a 500
(botocore retries it by itself); one without gets a 400. A new call from
the application — a new invocation id — is a new put: an application that
re-sends after a timeout of its own may duplicate records, as with Kinesis.
The producer table is bounded (least recently used first), so a retry that
arrives after very many other puts may be applied again.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from railyard.kinesis import backend as b
from railyard.kinesis.errors import (
    KinesisError,
    invalid_argument,
    not_found,
    unavailable,
    validation,
)
from railyard.kinesis.fields import HASH_KEY, MAX_PARTITION_KEY_CHARS, Fields
from railyard.kinesis.positions import (
    SEQUENCE_NUMBER,
    ShardIterator,
    parse_sequence_number,
    sequence_number,
)
from railyard.kinesis.shards import (
    HASH_KEY_LIMIT,
    parse_shard_id,
    partition_hash,
    shard_for_hash,
    shard_id,
    shard_stream_name,
)

if TYPE_CHECKING:
    from railyard.kinesis.operations import CallContext, KinesisApi

# Kinesis' limits: a record (data + partition key) up to 1 MiB, a PutRecords
# call up to 500 records and 5 MiB, a GetRecords answer up to 10,000
# records and 10 MiB.
MAX_RECORD_BYTES = 1 << 20
MAX_PUT_RECORDS = 500
MAX_PUT_BYTES = 5 << 20
MAX_GET_RECORDS = 10_000
MAX_GET_BYTES = 10 << 20
# What botocore sends: a UUID. Anything else is not used for deduplication.
INVOCATION_ID = re.compile(r"[A-Za-z0-9-]{8,64}")
_PRODUCER_DIGEST_CHARS = 16
_ITERATOR_TYPES = {
    "TRIM_HORIZON": b.TRIM_HORIZON,
    "LATEST": b.LATEST,
    "AT_SEQUENCE_NUMBER": b.AT_SEQUENCE,
    "AFTER_SEQUENCE_NUMBER": b.AFTER_SEQUENCE,
    "AT_TIMESTAMP": b.AT_TIMESTAMP,
}


def producer_id(invocation_id: str | None, shard_stream: str) -> str:
    """The producer id of one call's append to one shard; "" (no deduplication) without an id."""
    if invocation_id is None or not INVOCATION_ID.fullmatch(invocation_id):
        return ""
    digest = hashlib.sha256(shard_stream.encode()).hexdigest()[:_PRODUCER_DIGEST_CHARS]
    return f"kinesis/{invocation_id}/{digest}"


@dataclass(frozen=True, slots=True)
class Entry:
    """One record to put: its data, partition key and hash key, or why it is refused."""

    data: bytes
    key: bytes
    hash_key: int
    error: str | None = None


class RecordOperations:
    def __init__(self, api: KinesisApi) -> None:
        self.api = api
        self.backend = api.backend

    # ------------------------------------------------------------ puts

    def _entry(self, f: Fields) -> Entry:
        data = f.blob("Data", required=True)
        assert data is not None
        key_text = f.string(
            "PartitionKey", required=True, min_len=1, max_len=MAX_PARTITION_KEY_CHARS
        )
        assert key_text is not None
        explicit = f.string("ExplicitHashKey", pattern=HASH_KEY)
        if explicit is not None:
            hash_key = int(explicit)
            if hash_key >= HASH_KEY_LIMIT:
                raise invalid_argument(
                    f"ExplicitHashKey {explicit} is outside 0 … 2^128 - 1 (Invalid hash key)"
                )
        else:
            hash_key = partition_hash(key_text)
        key = key_text.encode()
        size = len(data) + len(key)
        error = None
        if size > MAX_RECORD_BYTES:
            error = (
                f"Record size {size} bytes (data + partition key) exceeds the limit of "
                f"{MAX_RECORD_BYTES} bytes"
            )
        return Entry(data, key, hash_key, error)

    async def _shard_count(self, name: str) -> int:
        count = await self.api.catalog.shard_count(name)
        if count is None:
            raise self.api.stream_not_found(name)
        return count

    async def _append(
        self,
        name: str,
        count: int,
        shard: int,
        records: Sequence[tuple[bytes, bytes]],
        ctx: CallContext,
    ) -> b.AppendResult:
        stream = shard_stream_name(name, shard, count)
        try:
            return await self.backend.append(
                stream, records, producer_id(ctx.invocation_id, stream), 1
            )
        except b.StreamMissing:
            self.api.catalog.forget(name)
            raise self.api.stream_not_found(name) from None
        except b.Rejected as exc:
            raise invalid_argument(str(exc)) from None
        except b.Unavailable as exc:
            raise unavailable(
                f"The put's outcome is unknown: {exc}",
                retry_is_safe=bool(producer_id(ctx.invocation_id, stream)),
            ) from None

    async def put_record(self, f: Fields, ctx: CallContext) -> dict[str, Any]:
        name = f.stream_name()
        assert name is not None
        # Accepted and checked; a shard's records are in arrival order anyway.
        f.string("SequenceNumberForOrdering", pattern=SEQUENCE_NUMBER)
        entry = self._entry(f)
        if entry.error is not None:
            raise validation(f"Value at 'data' failed to satisfy constraint: {entry.error}")
        count = await self._shard_count(name)
        shard = shard_for_hash(entry.hash_key, count)
        result = await self._append(name, count, shard, [(entry.data, entry.key)], ctx)
        return {
            "ShardId": shard_id(shard),
            "SequenceNumber": sequence_number(shard, result.first_sequence),
            "EncryptionType": "NONE",
        }

    async def put_records(self, f: Fields, ctx: CallContext) -> dict[str, Any]:
        name = f.stream_name()
        assert name is not None
        raw = f.body.get("Records")
        if isinstance(raw, list) and 1 <= len(raw) <= MAX_PUT_RECORDS:
            # The common entry is read in one step; any other takes the
            # field-by-field path, which finds and words what is wrong.
            entries = [
                _plain_entry(item)
                or self._entry(
                    Fields(item if isinstance(item, dict) else {}, f"records.{n}.member.")
                )
                for n, item in enumerate(raw, start=1)
            ]
            if not all(isinstance(item, dict) for item in raw):
                f.items("Records", max_len=MAX_PUT_RECORDS)  # raises the serialization error
        else:
            f.items("Records", required=True, min_len=1, max_len=MAX_PUT_RECORDS)
            raise AssertionError("items accepts only a list of 1 to 500 entries")
        total = sum(len(e.data) + len(e.key) for e in entries if e.error is None)
        if total > MAX_PUT_BYTES:
            raise invalid_argument(
                f"Records size {total} bytes exceeds the {MAX_PUT_BYTES // (1 << 20)} MiB limit"
            )
        count = await self._shard_count(name)
        by_shard: dict[int, list[int]] = {}
        for position, entry in enumerate(entries):
            if entry.error is None:
                by_shard.setdefault(shard_for_hash(entry.hash_key, count), []).append(position)
        shards = list(by_shard)
        outcomes = await asyncio.gather(
            *(
                self._append(
                    name, count, s, [(entries[p].data, entries[p].key) for p in by_shard[s]], ctx
                )
                for s in shards
            ),
            return_exceptions=True,
        )
        results: list[dict[str, Any]] = [
            {"ErrorCode": "ValidationException", "ErrorMessage": e.error}
            if e.error is not None
            else {}
            for e in entries
        ]
        for shard, outcome in zip(shards, outcomes, strict=True):
            self._fill(results, by_shard[shard], shard, outcome)
        failed = sum(1 for r in results if "ErrorCode" in r)
        return {"FailedRecordCount": failed, "Records": results, "EncryptionType": "NONE"}

    def _fill(
        self,
        results: list[dict[str, Any]],
        positions: list[int],
        shard: int,
        outcome: b.AppendResult | BaseException,
    ) -> None:
        if isinstance(outcome, KinesisError):
            if outcome.status != 400 or outcome.error_type != "InternalFailureException":
                # A stream gone, or a retry-safe unknown outcome: the whole call answers.
                raise outcome
            for p in positions:
                results[p] = {"ErrorCode": "InternalFailure", "ErrorMessage": outcome.message}
            return
        if isinstance(outcome, BaseException):
            raise outcome
        name = shard_id(shard)
        for offset, p in enumerate(positions):
            results[p] = {
                "SequenceNumber": sequence_number(shard, outcome.first_sequence + offset),
                "ShardId": name,
            }

    # ------------------------------------------------------------ iterators, reads

    async def get_shard_iterator(self, f: Fields, ctx: CallContext) -> dict[str, Any]:
        name = f.stream_name()
        assert name is not None
        shard_text = f.string("ShardId", required=True, min_len=1, max_len=128)
        kind = f.string("ShardIteratorType", required=True)
        start = f.string("StartingSequenceNumber")
        timestamp_ms = f.timestamp_ms("Timestamp")
        assert shard_text is not None and kind is not None
        position = _ITERATOR_TYPES.get(kind)
        if position is None:
            raise validation(
                f"Value '{kind}' at 'shardIteratorType' failed to satisfy constraint: Member "
                f"must satisfy enum value set: [{', '.join(_ITERATOR_TYPES)}]"
            )
        stream = await self.api.existing(name)
        index = parse_shard_id(shard_text)
        if index is None or index not in stream.shards:
            raise not_found(
                f"Shard {shard_text} in stream {name} under account "
                f"{self.api.account_id} does not exist"
            )
        sequence = 0
        if position in (b.AT_SEQUENCE, b.AFTER_SEQUENCE):
            if start is None:
                raise invalid_argument(
                    f"StartingSequenceNumber is required for ShardIteratorType {kind}"
                )
            from_shard, sequence = parse_sequence_number(start, "StartingSequenceNumber")
            if from_shard != index:
                raise invalid_argument(
                    f"Invalid StartingSequenceNumber. It encodes {shard_id(from_shard)}, while "
                    f"it was used in a call to a shard with {shard_text}"
                )
        if position == b.AT_TIMESTAMP and timestamp_ms is None:
            raise invalid_argument("Timestamp is required for ShardIteratorType AT_TIMESTAMP")
        shard_stream = shard_stream_name(name, index, stream.shard_count)
        try:
            first = await self.backend.resolve(shard_stream, position, sequence, timestamp_ms or 0)
        except b.StreamMissing:
            raise self.api.stream_not_found(name) from None
        except b.Unavailable as exc:
            raise unavailable(str(exc), retry_is_safe=True) from None
        it = ShardIterator(name, index, stream.shard_count, first, self.api.clock_ms())
        return {"ShardIterator": self.api.tokens.iterator(it)}

    async def get_records(self, f: Fields, ctx: CallContext) -> dict[str, Any]:
        token = f.string("ShardIterator", required=True, min_len=1, max_len=512)
        limit = f.integer("Limit", minimum=1, maximum=MAX_GET_RECORDS) or MAX_GET_RECORDS
        assert token is not None
        now = self.api.clock_ms()
        it = self.api.tokens.open_iterator(token, now)
        shard_stream = shard_stream_name(it.stream, it.shard_index, it.shard_count)
        try:
            batch = await self.backend.read(shard_stream, it.next_sequence, limit, MAX_GET_BYTES)
        except b.StreamMissing:
            raise not_found(
                f"Shard {shard_id(it.shard_index)} in stream {it.stream} under account "
                f"{self.api.account_id} does not exist"
            ) from None
        except b.Unavailable as exc:
            raise unavailable(str(exc), retry_is_safe=True) from None
        records = [_record(it.shard_index, r) for r in batch.records]
        # Kinesis' "how far behind the tip": 0 once nothing is left to read;
        # otherwise the age of the last record returned, the read's position
        # in time (the tip's own timestamp would cost another query).
        behind_ms = 0
        if batch.behind_latest and batch.records:
            behind_ms = max(0, now - batch.records[-1].timestamp_ms)
        next_it = ShardIterator(it.stream, it.shard_index, it.shard_count, batch.next_sequence, now)
        return {
            "Records": records,
            "NextShardIterator": self.api.tokens.iterator(next_it),
            "MillisBehindLatest": behind_ms,
        }


def _plain_entry(item: object) -> Entry | None:
    """An entry of base64 Data and a 1-256 character PartitionKey only, or None."""
    if type(item) is not dict or len(item) != 2:
        return None
    data, key = item.get("Data"), item.get("PartitionKey")
    if (
        type(data) is not str
        or type(key) is not str
        or not 1 <= len(key) <= MAX_PARTITION_KEY_CHARS
    ):
        return None
    try:
        raw = binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError):
        return None
    encoded_key = key.encode()
    size = len(raw) + len(encoded_key)
    if size > MAX_RECORD_BYTES:
        return None
    return Entry(raw, encoded_key, partition_hash(key))


def _record(shard: int, r: b.StoredRecord) -> dict[str, Any]:
    record: dict[str, Any] = {
        "SequenceNumber": sequence_number(shard, r.sequence),
        "ApproximateArrivalTimestamp": r.timestamp_ms / 1000,
        "Data": base64.b64encode(r.data).decode("ascii"),
    }
    # A record put through railyard without a key has no partition key (the
    # field is optional in a Record); a binary key is shown as best it can be.
    if r.key:
        record["PartitionKey"] = r.key.decode("utf-8", errors="replace")
    return record
