"""Sequence numbers, shard iterators and page tokens: what a client holds between calls.

Sequence numbers are decimal strings. The number of record s of shard i is
(i + 1) · 10^20 + s: strictly increasing within a shard, made only of
replicated state (so stable across failover and restart), and it tells
which shard it came from. Railyard sequences stay below 2^63 < 10^20.
`s = 0` ("before the first record") is a shard's starting sequence number.

Iterators and page tokens are opaque to clients: compact JSON, tagged with
an HMAC so a mangled one is refused rather than misread, then base64. The
key only detects damage: an iterator grants nothing a client could not
ask for with GetShardIterator. Each carries the time it was issued and
expires `ITERATOR_LIFETIME_MS` later, as Kinesis' do.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass

from railyard.kinesis.errors import KinesisError, expired_iterator, invalid_argument

SEQUENCE_SHARD_FACTOR = 10**20
SEQUENCE_NUMBER = re.compile(r"0|[1-9]\d{0,128}")
# Kinesis' iterator lifetime: five minutes from issue.
ITERATOR_LIFETIME_MS = 5 * 60 * 1000
# ListShards/ListStreams tokens last as long (Kinesis: ExpiredNextTokenException).
TOKEN_LIFETIME_MS = ITERATOR_LIFETIME_MS
# Bytes of HMAC-SHA256 kept: enough that a damaged token never passes.
_TAG_BYTES = 12
_ITERATOR_VERSION = 1
# The service model bounds a ShardIterator to 512 characters.
MAX_ITERATOR_CHARS = 512


def sequence_number(shard_index: int, sequence: int) -> str:
    return str((shard_index + 1) * SEQUENCE_SHARD_FACTOR + sequence)


def parse_sequence_number(text: str, field: str) -> tuple[int, int]:
    """(shard index, railyard sequence) of a sequence number we issued."""
    if not SEQUENCE_NUMBER.fullmatch(text):
        raise invalid_argument(f"{field} {text!r} is not a sequence number (decimal digits)")
    shard_part, sequence = divmod(int(text), SEQUENCE_SHARD_FACTOR)
    if shard_part < 1:
        raise invalid_argument(f"{field} {text!r} was not issued by this service")
    return shard_part - 1, sequence


@dataclass(frozen=True, slots=True)
class ShardIterator:
    """Where a reader of one shard stands: the next railyard sequence it reads."""

    stream: str
    shard_index: int
    shard_count: int
    next_sequence: int
    issued_ms: int


class TokenCodec:
    """Encodes and checks iterators and page tokens with one key."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _seal(self, payload: list[object]) -> str:
        data = json.dumps(payload, separators=(",", ":")).encode()
        tag = hmac.new(self._key, data, hashlib.sha256).digest()[:_TAG_BYTES]
        return base64.urlsafe_b64encode(tag + data).decode()

    def _open(self, token: str) -> list[object] | None:
        try:
            raw = base64.urlsafe_b64decode(token.encode("ascii"))
        except (binascii.Error, ValueError, UnicodeEncodeError):
            return None
        tag, data = raw[:_TAG_BYTES], raw[_TAG_BYTES:]
        expected = hmac.new(self._key, data, hashlib.sha256).digest()[:_TAG_BYTES]
        if not hmac.compare_digest(tag, expected):
            return None
        try:
            payload = json.loads(data)
        except ValueError:
            return None
        return payload if isinstance(payload, list) else None

    def iterator(self, it: ShardIterator) -> str:
        return self._seal(
            [
                _ITERATOR_VERSION,
                it.stream,
                it.shard_index,
                it.shard_count,
                it.next_sequence,
                it.issued_ms,
            ]
        )

    def open_iterator(self, token: str, now_ms: int) -> ShardIterator:
        """The iterator a token holds; InvalidArgument if it is not one, Expired if too old."""
        payload = self._open(token)
        if (
            payload is None
            or len(payload) != 6
            or payload[0] != _ITERATOR_VERSION
            or not isinstance(payload[1], str)
            or not all(isinstance(v, int) and v >= 0 for v in payload[2:])
        ):
            raise invalid_argument("Invalid ShardIterator.")
        _, stream, index, count, next_sequence, issued = payload
        it = ShardIterator(stream, index, count, next_sequence, issued)  # type: ignore[arg-type]
        if it.shard_index >= it.shard_count:
            raise invalid_argument("Invalid ShardIterator.")
        if now_ms - it.issued_ms > ITERATOR_LIFETIME_MS:
            raise expired_iterator(
                f"Iterator expired. The iterator was created at time {it.issued_ms} while "
                f"right now it is {now_ms} which is further in the future than the tolerated "
                f"delay of {ITERATOR_LIFETIME_MS} milliseconds."
            )
        return it

    def page_token(self, kind: str, position: str, issued_ms: int) -> str:
        """A NextToken: where listing `kind` resumes (after `position`)."""
        return self._seal([kind, position, issued_ms])

    def open_page_token(self, token: str, kind: str, now_ms: int) -> str:
        payload = self._open(token)
        if (
            payload is None
            or len(payload) != 3
            or payload[0] != kind
            or not isinstance(payload[1], str)
            or not isinstance(payload[2], int)
        ):
            raise invalid_argument(f"NextToken {token[:64]!r} is not a valid token")
        if now_ms - payload[2] > TOKEN_LIFETIME_MS:
            raise KinesisError(
                "ExpiredNextTokenException",
                f"The NextToken is older than {TOKEN_LIFETIME_MS // 1000} seconds",
            )
        return payload[1]
