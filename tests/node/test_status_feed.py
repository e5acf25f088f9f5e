"""The WatchStatus feed: one build per round for all subscribers, nothing for one that stalls."""

from __future__ import annotations

import asyncio

import pytest

from railyard.node.api.status_feed import StatusFeed

INTERVAL_MS = 100


class Counter:
    """A status that says which build it is."""

    def __init__(self) -> None:
        self.builds = 0

    async def build(self) -> bytes:
        self.builds += 1
        await asyncio.sleep(0)
        return str(self.builds).encode()


async def test_many_subscribers_share_each_build() -> None:
    counter = Counter()
    feed = StatusFeed(counter.build)
    got: list[list[bytes]] = [[] for _ in range(50)]

    async def watch(into: list[bytes]) -> None:
        with feed.subscribe(INTERVAL_MS) as subscriber:
            while True:
                into.append(await subscriber.next())

    async with asyncio.TaskGroup() as tasks:
        watchers = [tasks.create_task(watch(into)) for into in got]
        await asyncio.sleep(0.55)
        for watcher in watchers:
            watcher.cancel()
    # About one build per 100 ms round (not one per subscriber per round).
    assert 3 <= counter.builds <= 8, counter.builds
    assert all(3 <= len(into) <= 8 for into in got), [len(into) for into in got]
    # Every subscriber was handed the same statuses: the shared builds.
    assert all(into[:3] == got[0][:3] for into in got)


async def test_a_stalled_subscriber_costs_no_build_and_then_gets_the_newest() -> None:
    counter = Counter()
    feed = StatusFeed(counter.build)
    with feed.subscribe(INTERVAL_MS) as stalled:
        assert await stalled.next() == b"1"
        # Stalled (as in a send that gRPC flow control holds): it asks for nothing.
        await asyncio.sleep(0.5)
        assert counter.builds == 1
        with feed.subscribe(INTERVAL_MS) as lively:
            for _ in range(3):
                await lively.next()
            lively_builds = counter.builds
            # Unstalled, it gets a status as new as the last one built, no backlog.
            newest = await stalled.next()
            assert int(newest) >= lively_builds
    await asyncio.sleep(0)
    assert feed._task is None


async def test_a_failed_build_ends_the_subscribers_waiting_for_it() -> None:
    async def failing() -> bytes:
        raise RuntimeError("store gone")

    feed = StatusFeed(failing)
    with feed.subscribe(INTERVAL_MS) as subscriber, pytest.raises(RuntimeError, match="gone"):
        await asyncio.wait_for(subscriber.next(), timeout=5)
