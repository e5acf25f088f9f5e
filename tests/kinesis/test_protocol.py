"""The protocol pieces without a server: shards, sequence numbers, iterators, SigV4."""

from __future__ import annotations

import hashlib
import itertools
from datetime import UTC, datetime, timedelta

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from railyard.kinesis import Credential, KinesisError, ShardIterator, TokenCodec
from railyard.kinesis.positions import (
    ITERATOR_LIFETIME_MS,
    parse_sequence_number,
    sequence_number,
)
from railyard.kinesis.shards import (
    HASH_KEY_LIMIT,
    hash_range,
    parse_shard_id,
    parse_shard_stream,
    partition_hash,
    shard_for_hash,
    shard_id,
    shard_stream_name,
)
from railyard.kinesis.sigv4 import Verified, verify


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, 1000])
def test_hash_ranges_split_the_whole_key_space_evenly(count: int) -> None:
    ranges = [hash_range(i, count) for i in range(count)]
    assert ranges[0][0] == 0
    assert ranges[-1][1] == HASH_KEY_LIMIT - 1
    for (_, end), (start, _) in itertools.pairwise(ranges):
        assert start == end + 1
    for i, (start, end) in enumerate(ranges):
        assert shard_for_hash(start, count) == i
        assert shard_for_hash(end, count) == i


def test_two_shards_split_where_kinesis_splits() -> None:
    assert hash_range(0, 2) == (0, 170141183460469231731687303715884105727)
    assert hash_range(1, 2)[0] == 170141183460469231731687303715884105728


def test_a_partition_key_hashes_by_md5_big_endian() -> None:
    expected = int(hashlib.md5(b"user-42").hexdigest(), 16)
    assert partition_hash("user-42") == expected


def test_shard_stream_names_round_trip_and_foreign_names_are_not_shards() -> None:
    name = shard_stream_name("orders.v2", 3, 4)
    assert name == "orders.v2.shard-3-of-4"
    shard = parse_shard_stream(name)
    assert shard is not None and (shard.stream, shard.index, shard.count) == ("orders.v2", 3, 4)
    for foreign in ("orders", "orders.shard-4-of-4", "orders.shard-01-of-4", "x.shard-0-of-0"):
        assert parse_shard_stream(foreign) is None
    assert shard_id(7) == "shardId-000000000007"
    assert parse_shard_id("shardId-000000000007") == 7
    assert parse_shard_id("shardId-7") is None


def test_sequence_numbers_increase_within_a_shard_and_name_their_shard() -> None:
    numbers = [int(sequence_number(2, s)) for s in range(0, 50)]
    assert numbers == sorted(numbers) and len(set(numbers)) == 50
    assert parse_sequence_number(sequence_number(2, 41), "x") == (2, 41)
    assert int(sequence_number(0, (1 << 63) - 1)) < int(sequence_number(1, 0))
    for bad in ("", "01", "12a", "5"):
        with pytest.raises(KinesisError) as err:
            parse_sequence_number(bad, "StartingSequenceNumber")
        assert err.value.error_type == "InvalidArgumentException"


def test_iterators_round_trip_and_expire_after_five_minutes() -> None:
    codec = TokenCodec(b"cluster")
    it = ShardIterator("orders", 1, 4, 17, issued_ms=1_000_000)
    token = codec.iterator(it)
    assert len(token) <= 512
    assert codec.open_iterator(token, 1_000_000 + ITERATOR_LIFETIME_MS) == it
    with pytest.raises(KinesisError) as err:
        codec.open_iterator(token, 1_000_000 + ITERATOR_LIFETIME_MS + 1)
    assert err.value.error_type == "ExpiredIteratorException"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-2],
        lambda t: "A" + t[1:],
        lambda t: "not an iterator",
        lambda t: "",
        lambda t: "ééé",
    ],
)
def test_a_mangled_iterator_is_an_invalid_argument(mangle: object) -> None:
    codec = TokenCodec(b"cluster")
    token = codec.iterator(ShardIterator("orders", 0, 1, 1, 5))
    with pytest.raises(KinesisError) as err:
        codec.open_iterator(mangle(token), 5)  # type: ignore[operator]
    assert (err.value.error_type, err.value.status) == ("InvalidArgumentException", 400)


def test_an_iterator_from_another_cluster_key_is_refused() -> None:
    token = TokenCodec(b"a").iterator(ShardIterator("orders", 0, 1, 1, 5))
    with pytest.raises(KinesisError):
        TokenCodec(b"b").open_iterator(token, 5)


# ------------------------------------------------------------------ SigV4

KEYS = {"AKIDWRITER": Credential("s3cret", "writer")}


def _signed(body: bytes, key: str = "AKIDWRITER", secret: str = "s3cret") -> dict[str, str]:
    request = AWSRequest(
        method="POST",
        url="http://127.0.0.1:4567/",
        data=body,
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "Kinesis_20131202.ListStreams",
        },
    )
    auth = SigV4Auth(Credentials(key, secret), "kinesis", "eu-west-1")
    auth.add_auth(request)
    headers = {k.lower(): v for k, v in request.headers.items()}
    headers["host"] = "127.0.0.1:4567"
    return headers


def _verify(headers: dict[str, str], body: bytes, now: datetime | None = None) -> Verified:
    # The server's clock at verification: botocore signs with the current time.
    now = now or datetime.now(UTC)
    return verify(
        method="POST", path="/", query="", headers=headers, body=body, credentials=KEYS, now=now
    )


def test_a_botocore_signature_verifies_and_names_role_and_region() -> None:
    verified = _verify(_signed(b"{}"), b"{}")
    assert (verified.access_key_id, verified.role, verified.region) == (
        "AKIDWRITER",
        "writer",
        "eu-west-1",
    )


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("body", "InvalidSignatureException"),
        ("secret", "InvalidSignatureException"),
        ("key", "UnrecognizedClientException"),
        ("unsigned", "MissingAuthenticationTokenException"),
        ("old", "InvalidSignatureException"),
        ("target", "InvalidSignatureException"),
    ],
)
def test_a_wrong_signature_is_refused(case: str, expected: str) -> None:
    body = b'{"Limit": 1}'
    headers = _signed(body)
    now = datetime.now(UTC)
    if case == "body":
        body = b'{"Limit": 2}'
    elif case == "secret":
        headers = _signed(body, secret="guess")
    elif case == "key":
        headers = _signed(body, key="AKIDOTHER")
    elif case == "unsigned":
        del headers["authorization"]
    elif case == "old":
        now += timedelta(minutes=16)
    elif case == "target":
        headers["x-amz-target"] = "Kinesis_20131202.DeleteStream"
    with pytest.raises(KinesisError) as err:
        _verify(headers, body, now)
    assert err.value.error_type == expected
