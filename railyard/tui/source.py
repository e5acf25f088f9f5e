"""Where the dashboard's data comes from: the `DashboardSource` seam.

The app never talks to gRPC itself. It subscribes to one stream of
`StatusUpdate`s per node endpoint, asks for the Raft log tail of the selected
node, and asks for a leadership transfer, all through a `DashboardSource`.
`ClientSource` implements it with `railyard.client`; `FakeSource`
(`railyard.tui.fake`) with scripted data for tests.

Invariants of every source:
- `watch()` never raises and never ends on its own: an unreachable node is
  reported as a `StatusUpdate` whose `status` is None, and the source keeps
  reconnecting (with backoff) until the subscriber cancels the iteration.
- Every update is stamped with the time it was observed (`at`, seconds on the
  source's clock, the same clock the app reads), so rates and "time since"
  texts are computed from data, not from when the screen happened to redraw.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from railyard.client import DeadlineExceeded, Unavailable
from railyard.proto import railyard_pb2 as pb

Clock = Callable[[], float]
"""Seconds since the epoch (time.time by default; tests pass a frozen one)."""

# Backoff for reconnecting to a node that is down: start fast so a restarted
# node shows up again within a heartbeat or two, cap low so it never takes
# more than a couple of seconds to notice it is back.
RECONNECT_INITIAL_S = 0.1
RECONNECT_MAX_S = 2.0
# A status stream that stays silent this many intervals is declared
# unreachable (a stopped or partitioned node sends nothing and no error).
SILENT_INTERVALS = 4
# ... but never sooner than this, so a short interval does not flap on a busy
# machine.
MIN_SILENCE_S = 2.0
# Every one-shot call (ReadLog, Status, TransferLeadership) has a deadline.
CALL_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """One observation of one node: its status, or why it could not be had."""

    endpoint: str
    at: float
    status: pb.NodeStatus | None
    error: str = ""
    # True when the node went silent (no answer, no error): "unreachable"
    # rather than "down".
    timed_out: bool = False

    @property
    def up(self) -> bool:
        return self.status is not None


class DashboardSource(Protocol):
    """What the dashboard needs from a cluster."""

    @property
    def endpoints(self) -> Sequence[str]: ...

    def watch(self, endpoint: str, interval_s: float) -> AsyncIterator[StatusUpdate]:
        """Status updates of one node, about every `interval_s`, forever."""
        ...

    async def read_log(self, endpoint: str, count: int) -> list[pb.LogEntryInfo]:
        """The most recent `count` Raft log entries of one node (raises on failure)."""
        ...

    async def transfer_leadership(self, to: str) -> pb.TransferLeadershipResponse:
        """Move leadership to node id `to` (raises on failure)."""
        ...

    async def close(self) -> None: ...


class ClusterClient(Protocol):
    """The part of `railyard.client.RailyardClient` the dashboard uses."""

    async def status(self, endpoint: str) -> pb.NodeStatus: ...

    def watch_status(
        self, endpoint: str, interval_ms: int = ...
    ) -> AsyncIterator[pb.NodeStatus]: ...

    async def read_log(self, endpoint: str, count: int = ...) -> list[pb.LogEntryInfo]: ...

    async def transfer_leadership(self, to: str | None = None) -> pb.TransferLeadershipResponse: ...


# gRPC's words for a node that went away, and ours (first match wins).
GRPC_REASONS = (
    (("connection refused", "failed to connect"), "not running (connection refused)"),
    (
        ("socket closed", "stream removed", "connection reset", "broken pipe", "eof"),
        "connection lost",
    ),
)


def describe_error(exc: BaseException, endpoint: str = "") -> str:
    """A one-line reason for the nodes table and the events pane, in our words.

    gRPC's texts ("unavailable (Stream removed (Socket closed))") say how the
    transport failed, not what happened to the node: those are translated.
    Other messages start with the endpoint, which the dashboard shows
    already: it is dropped.
    """
    if isinstance(exc, DeadlineExceeded):
        return "no answer in time"
    if isinstance(exc, Unavailable):
        text = str(exc).lower()
        for needles, reason in GRPC_REASONS:
            if any(needle in text for needle in needles):
                return reason
    lines = str(exc).strip().splitlines()
    text = lines[0].removeprefix(f"{endpoint}: ") if lines and endpoint else ""
    text = text or (lines[0] if lines else "")
    return text or type(exc).__name__


class ClientSource:
    """A `DashboardSource` over `railyard.client`: WatchStatus per node.

    Each node is watched with its WatchStatus stream. When the stream fails
    before delivering anything but a plain Status call answers, the node does
    not serve the stream (or the stream is broken): that node is polled with
    Status instead until polling fails. Anything else is "down" (or
    "unreachable" when the node went silent): reported, then retried with
    exponential backoff.
    """

    def __init__(
        self,
        client: ClusterClient,
        endpoints: Sequence[str],
        *,
        clock: Clock = time.time,
        close: Callable[[], object] | None = None,
    ) -> None:
        self._client = client
        self._endpoints = tuple(endpoints)
        self._clock = clock
        self._close = close

    @property
    def endpoints(self) -> Sequence[str]:
        return self._endpoints

    async def watch(self, endpoint: str, interval_s: float) -> AsyncIterator[StatusUpdate]:
        backoff_s = RECONNECT_INITIAL_S
        silence_s = max(MIN_SILENCE_S, SILENT_INTERVALS * interval_s)
        polling = False
        while True:
            delivered = False
            timed_out = False
            try:
                stream = (
                    self._poll(endpoint, interval_s)
                    if polling
                    else self._client.watch_status(endpoint, interval_ms=_to_ms(interval_s))
                )
                iterator = aiter(stream)
                try:
                    while True:
                        status = await asyncio.wait_for(anext(iterator), silence_s)
                        delivered = True
                        backoff_s = RECONNECT_INITIAL_S
                        yield StatusUpdate(endpoint, self._clock(), status)
                finally:
                    await _close_quietly(iterator)
            except StopAsyncIteration:
                error = "status stream ended"
            except TimeoutError:
                error = f"no status for {silence_s:.1f}s"
                timed_out = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the screen must survive any failure of one node
                error = describe_error(exc, endpoint)
            if not polling and not delivered and await self._answers(endpoint):
                # Status answers but the stream gave nothing: poll this time
                # (the stream is retried after the next failure).
                polling = True
                continue
            polling = False
            yield StatusUpdate(endpoint, self._clock(), None, error, timed_out=timed_out)
            await asyncio.sleep(backoff_s)
            backoff_s = min(RECONNECT_MAX_S, backoff_s * 2)

    async def _answers(self, endpoint: str) -> bool:
        try:
            await asyncio.wait_for(self._client.status(endpoint), CALL_TIMEOUT_S)
        except asyncio.CancelledError:
            raise
        except Exception:
            return False
        return True

    async def _poll(self, endpoint: str, interval_s: float) -> AsyncIterator[pb.NodeStatus]:
        while True:
            yield await asyncio.wait_for(self._client.status(endpoint), CALL_TIMEOUT_S)
            await asyncio.sleep(interval_s)

    async def read_log(self, endpoint: str, count: int) -> list[pb.LogEntryInfo]:
        return await asyncio.wait_for(self._client.read_log(endpoint, count=count), CALL_TIMEOUT_S)

    async def transfer_leadership(self, to: str) -> pb.TransferLeadershipResponse:
        return await self._client.transfer_leadership(to)

    async def close(self) -> None:
        if self._close is not None:
            result = self._close()
            if asyncio.iscoroutine(result):
                await result


def _to_ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


async def _close_quietly(iterator: AsyncIterator[pb.NodeStatus]) -> None:
    """Close an abandoned stream so its gRPC call is cancelled now, not at GC."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is None:
        return
    try:
        await aclose()
    except Exception:  # closing a broken stream may fail; the node is reported already
        return
