"""Kinesis streams as sets of railyard shard streams.

A Kinesis stream exists when at least one of its shard streams does; it
is ACTIVE when all of them do and CREATING otherwise (a CreateStream that
did not finish: repeating it with the same ShardCount completes it,
DeleteStream removes what there is). Stream metadata is the shards':
creation time is the oldest shard's, retention is shard 0's.

Puts need a stream's shard count on every call; listing every railyard
stream each time would cost more than the put, so counts are remembered
for `SHARD_COUNT_TTL_MS`. A stale count is harmless: an append to a shard
stream that is gone fails with StreamMissing, and the caller looks again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from railyard.kinesis.backend import Backend, StreamState
from railyard.kinesis.shards import parse_shard_stream

ACTIVE = "ACTIVE"
CREATING = "CREATING"
# Long enough to spare a listing on almost every put of a busy producer,
# short enough that another node's DeleteStream is seen within a second.
SHARD_COUNT_TTL_MS = 1000


@dataclass
class KinesisStream:
    name: str
    shard_count: int
    shards: dict[int, StreamState] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return ACTIVE if len(self.shards) == self.shard_count else CREATING

    @property
    def created_ms(self) -> int:
        return min(s.created_ms for s in self.shards.values())

    @property
    def max_age_ms(self) -> int:
        first = self.shards.get(0) or next(iter(self.shards.values()))
        return first.max_age_ms


def group_streams(states: list[StreamState]) -> dict[str, KinesisStream]:
    """Kinesis streams by name, from every railyard stream (those not shards are skipped).

    Shards of one name with different counts (left over from an earlier
    stream of that name) are grouped under the count with most shards.
    """
    by_count: dict[tuple[str, int], KinesisStream] = {}
    for state in states:
        shard = parse_shard_stream(state.name)
        if shard is None:
            continue
        key = (shard.stream, shard.count)
        stream = by_count.setdefault(key, KinesisStream(shard.stream, shard.count))
        stream.shards[shard.index] = state
    streams: dict[str, KinesisStream] = {}
    for stream in sorted(by_count.values(), key=lambda s: -len(s.shards)):
        streams.setdefault(stream.name, stream)
    return dict(sorted(streams.items()))


class Catalog:
    """Looks Kinesis streams up through a backend, remembering shard counts briefly."""

    def __init__(self, backend: Backend, clock_ms: Callable[[], int]) -> None:
        self.backend = backend
        self.clock_ms = clock_ms
        self._counts: dict[str, tuple[int, int]] = {}  # name -> (shard count, when seen)

    async def all(self) -> dict[str, KinesisStream]:
        streams = group_streams(await self.backend.list_streams())
        now = self.clock_ms()
        self._counts = {
            name: (s.shard_count, now) for name, s in streams.items() if s.status == ACTIVE
        }
        return streams

    async def find(self, name: str) -> KinesisStream | None:
        return (await self.all()).get(name)

    async def shard_count(self, name: str) -> int | None:
        """The shard count of an ACTIVE stream, possibly up to SHARD_COUNT_TTL_MS old."""
        known = self._counts.get(name)
        if known is not None and self.clock_ms() - known[1] <= SHARD_COUNT_TTL_MS:
            return known[0]
        stream = await self.find(name)
        return stream.shard_count if stream is not None and stream.status == ACTIVE else None

    def forget(self, name: str) -> None:
        self._counts.pop(name, None)
