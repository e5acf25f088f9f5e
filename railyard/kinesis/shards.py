"""Shards: a Kinesis stream of N shards is N railyard streams.

Shard i of stream `orders` with 4 shards is the railyard stream
`orders.shard-<i>-of-4`, so `railyard stream list` shows which Kinesis
stream and shard each one is, and the shard count is known from any one
of them (a stream whose shards are not all there is still being created or
deleted).

Hash keys split 0 … 2^128 - 1 evenly, as Kinesis does: shard i starts at
i · ⌊2^128 / N⌋ and the last shard ends at 2^128 - 1. A record goes to the
shard whose range holds the MD5 of its partition key read as a big-endian
integer, or its `ExplicitHashKey`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

HASH_KEY_LIMIT = 1 << 128
# ShardId as Kinesis spells it: "shardId-" and twelve digits.
SHARD_ID_PREFIX = "shardId-"
SHARD_ID_DIGITS = 12
SHARD_ID = re.compile(r"shardId-(\d{12})")
_SHARD_STREAM = re.compile(r"(?P<name>.+)\.shard-(?P<index>\d+)-of-(?P<count>\d+)")


@dataclass(frozen=True, slots=True)
class ShardName:
    """Which Kinesis stream and shard a railyard stream holds."""

    stream: str
    index: int
    count: int


def shard_stream_name(stream: str, index: int, count: int) -> str:
    return f"{stream}.shard-{index}-of-{count}"


def shard_stream_suffix_len(count: int) -> int:
    """Characters the shard suffix adds to a Kinesis name (for its last shard, the longest)."""
    return len(shard_stream_name("", count - 1, count))


def parse_shard_stream(name: str) -> ShardName | None:
    """The Kinesis stream and shard of a railyard stream name; None if it names no shard."""
    found = _SHARD_STREAM.fullmatch(name)
    if found is None:
        return None
    index, count = int(found["index"]), int(found["count"])
    if not 0 <= index < count or name != shard_stream_name(found["name"], index, count):
        return None  # leading zeros or an index out of range: not one of ours
    return ShardName(found["name"], index, count)


def shard_id(index: int) -> str:
    return f"{SHARD_ID_PREFIX}{index:0{SHARD_ID_DIGITS}d}"


def parse_shard_id(text: str) -> int | None:
    found = SHARD_ID.fullmatch(text)
    return int(found[1]) if found else None


def hash_range(index: int, count: int) -> tuple[int, int]:
    """The first and last hash key of shard `index` of `count`."""
    width = HASH_KEY_LIMIT // count
    start = index * width
    end = HASH_KEY_LIMIT - 1 if index == count - 1 else start + width - 1
    return start, end


def partition_hash(partition_key: str) -> int:
    return int.from_bytes(
        hashlib.md5(partition_key.encode(), usedforsecurity=False).digest(), "big"
    )


def shard_for_hash(hash_key: int, count: int) -> int:
    return min(hash_key // (HASH_KEY_LIMIT // count), count - 1)
