"""WatchStatus subscribers, served from one status built and encoded once per round.

Each subscriber asks for its next status when it has sent the previous
one, and gets it once its interval has passed since the last it got. One
task (running while anyone subscribes) builds the node's status when some
waiting subscriber is due, encodes it once, and hands the same bytes to
every subscriber due then; a status built less than `REUSE_MS` ago is
handed out again instead of being rebuilt.

A subscriber that does not read blocks in its own send (gRPC flow control)
and asks for nothing meanwhile: no status is built for it, nothing queues
for it (it holds at most the one status it is sending), and the others are
not held up. When it asks again it gets the newest status, never a backlog.
So the cost is one build per round whatever the number of subscribers, and
the memory one status per subscriber at most, all bounded by
``[limits] max_watch_subscribers`` (`admission.py`).

Knows nothing of gRPC: the status comes from a `build` coroutine.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator

# A status this fresh is as good as a new one (the least WatchStatus interval).
REUSE_MS = 50


class Subscriber:
    """One watcher: its interval, when it is next due, and its request if it waits."""

    def __init__(self, feed: StatusFeed, interval_s: float) -> None:
        self.feed = feed
        self.interval_s = interval_s
        self.due_at = 0.0
        self.waiting: asyncio.Future[bytes] | None = None

    async def next(self) -> bytes:
        """The newest status, once this subscriber's interval has passed since its last."""
        self.waiting = asyncio.get_running_loop().create_future()
        try:
            self.feed.wake()
            return await self.waiting
        finally:
            self.waiting = None


class StatusFeed:
    """Builds the status for every subscriber due at once; see the module docstring."""

    def __init__(self, build: Callable[[], Awaitable[bytes]]) -> None:
        self._build = build
        self._subscribers: list[Subscriber] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Future[None] | None = None
        self._latest: bytes | None = None
        self._latest_at = 0.0

    @contextlib.contextmanager
    def subscribe(self, interval_ms: int) -> Iterator[Subscriber]:
        subscriber = Subscriber(self, interval_ms / 1000)
        self._subscribers.append(subscriber)
        if self._task is None:
            self._task = asyncio.ensure_future(self._serve())
        try:
            yield subscriber
        finally:
            self._subscribers.remove(subscriber)
            if not self._subscribers and self._task is not None:
                self._task.cancel()
                self._task = None

    def wake(self) -> None:
        self._wakeup.set()

    async def _serve(self) -> None:
        while self._subscribers:
            now = time.monotonic()
            due = [s for s in self._subscribers if s.waiting is not None and s.due_at <= now]
            if due:
                await self._hand_out(due)
            waiting = [s.due_at for s in self._subscribers if s.waiting is not None]
            self._wakeup.clear()
            if waiting:
                pause = max(0.0, min(waiting) - time.monotonic())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause):
                        await self._wakeup.wait()
            else:
                await self._wakeup.wait()

    async def _hand_out(self, due: list[Subscriber]) -> None:
        try:
            status = await self._status()
        except Exception as exc:
            for subscriber in due:
                if subscriber.waiting is not None and not subscriber.waiting.done():
                    subscriber.waiting.set_exception(exc)
            return
        now = time.monotonic()
        for subscriber in due:
            if subscriber.waiting is not None and not subscriber.waiting.done():
                subscriber.waiting.set_result(status)
                subscriber.due_at = now + subscriber.interval_s

    async def _status(self) -> bytes:
        if self._latest is not None and time.monotonic() - self._latest_at < REUSE_MS / 1000:
            return self._latest
        status = await self._build()
        self._latest, self._latest_at = status, time.monotonic()
        return status
