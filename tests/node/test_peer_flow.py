"""A peer link's send queue: control messages overtake queued appends (`peers/flow.py`)."""

from __future__ import annotations

import asyncio

from railyard.node.peers.flow import SendQueue
from railyard.proto import railyard_pb2 as pb


def append(size: int) -> pb.RaftMessage:
    return pb.RaftMessage(type=pb.MESSAGE_TYPE_APPEND, entries=[pb.Entry(data=b"x" * size)])


def heartbeat() -> pb.RaftMessage:
    return pb.RaftMessage(type=pb.MESSAGE_TYPE_HEARTBEAT)


def test_a_heartbeat_queued_after_appends_goes_first_in_an_envelope_of_its_own() -> None:
    queue = SendQueue(16)
    for _ in range(3):
        assert queue.put(append(1000))
    assert queue.put(heartbeat())
    first = queue.pop()
    assert first is not None and first.type == pb.MESSAGE_TYPE_HEARTBEAT
    assert queue.take(first, 256, 1 << 20) == [first]
    bulk = queue.pop()
    assert bulk is not None
    assert len(queue.take(bulk, 256, 1 << 20)) == 3


def test_appends_keep_their_order_and_envelopes_their_byte_bound() -> None:
    queue = SendQueue(16)
    for size in (10, 20, 30, 40):
        queue.put(append(size))
    first = queue.pop()
    assert first is not None
    batch = queue.take(first, 256, 25)
    assert [len(m.entries[0].data) for m in batch] == [10, 20]
    rest = queue.pop()
    assert rest is not None and len(rest.entries[0].data) == 30


def test_a_full_lane_refuses_but_the_other_lane_still_takes() -> None:
    queue = SendQueue(2)
    assert queue.put(append(1)) and queue.put(append(1))
    assert not queue.put(append(1))
    assert queue.put(heartbeat())
    assert queue.clear() == 3 and len(queue) == 0


def test_a_wake_up_ends_a_wait_without_a_message() -> None:
    async def scenario() -> None:
        queue = SendQueue(4)
        waiting = asyncio.ensure_future(queue.get())
        await asyncio.sleep(0)
        queue.wake()
        assert await waiting is None
        queue.put(heartbeat())
        got = await queue.get()
        assert got is not None and got.type == pb.MESSAGE_TYPE_HEARTBEAT

    asyncio.run(scenario())
