"""A peer link's send queue: control messages overtake queued appends.

Two lanes, each first in, first out: APPEND messages (up to megabytes of
entries each) in the bulk lane, everything else (heartbeats, votes, every
response, TimeoutNow, ReadIndex) in the control lane, which is emptied
first. A heartbeat or a vote therefore waits behind at most the envelope
being written, never behind the appends queued after it was sent; and the
bytes of appends ahead of it anywhere (this queue, the socket's buffer, the
follower's inbox) are bounded by the core's in-flight byte budget per
follower (`raft/progress.py`, `max_inflight_bytes`).

Reordering across the lanes is safe: Raft tolerates reordered messages,
and a heartbeat carries min(commit, match), so one that overtakes an append
never makes a follower commit an entry it does not hold yet. Within a lane
the order is kept, so appends stay pipelined in order.

The queue is bounded per lane: a full lane refuses the message (the caller
reports the peer unreachable, as a full queue always did). A `wake` makes a
waiting `get` return None, so a sender notices that its connection ended.
"""

from __future__ import annotations

import asyncio
from collections import deque

from railyard.proto import railyard_pb2 as pb


def entry_bytes(m: pb.RaftMessage) -> int:
    return sum(len(e.data) for e in m.entries)


class SendQueue:
    """Messages waiting for a peer's connection, control before bulk."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._control: deque[pb.RaftMessage] = deque()
        self._bulk: deque[pb.RaftMessage] = deque()
        self._ready = asyncio.Event()
        self._woken = False

    def put(self, m: pb.RaftMessage, *, notify: bool = True) -> bool:
        """Queue `m` in its lane; False (nothing queued) when that lane is full.

        With `notify=False` a waiting `get` is not woken: the caller takes
        the message itself, or calls `notify`.
        """
        lane = self._bulk if m.type == pb.MESSAGE_TYPE_APPEND else self._control
        if len(lane) >= self.capacity:
            return False
        lane.append(m)
        if notify:
            self._ready.set()
        return True

    def notify(self) -> None:
        """Wake a waiting `get` for what was queued with `notify=False`."""
        self._ready.set()

    def wake(self) -> None:
        """Make a waiting (or the next) `get` return None."""
        self._woken = True
        self._ready.set()

    def pop(self) -> pb.RaftMessage | None:
        if self._control:
            return self._control.popleft()
        if self._bulk:
            return self._bulk.popleft()
        return None

    async def get(self) -> pb.RaftMessage | None:
        """The next message, or None after a `wake`."""
        while True:
            m = self.pop()
            if m is not None:
                return m
            if self._woken:
                self._woken = False
                return None
            self._ready.clear()
            await self._ready.wait()

    def take(
        self, first: pb.RaftMessage, max_messages: int, max_bytes: int
    ) -> list[pb.RaftMessage]:
        """`first` and what follows it in its lane without waiting, up to the envelope's bounds.

        One lane per envelope: a receiver delivers an envelope once it holds
        all of it, so control messages travel in a small one of their own.
        """
        lane = self._bulk if first.type == pb.MESSAGE_TYPE_APPEND else self._control
        batch = [first]
        size = entry_bytes(first)
        while lane and len(batch) < max_messages and size < max_bytes:
            m = lane.popleft()
            batch.append(m)
            size += entry_bytes(m)
        return batch

    def clear(self) -> int:
        """Drop every queued message; how many there were."""
        dropped = len(self._control) + len(self._bulk)
        self._control.clear()
        self._bulk.clear()
        self._woken = False
        return dropped

    def __len__(self) -> int:
        return len(self._control) + len(self._bulk)
