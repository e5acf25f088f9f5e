"""ClientSource: watching, falling back to polling, reporting and reconnecting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from railyard.proto import railyard_pb2 as pb
from railyard.tui import source as source_module
from railyard.tui.source import ClientSource, StatusUpdate

ENDPOINT = "127.0.0.1:1"
# Every loop below stops after this many updates; each wait is bounded.
TAKE = 4
WAIT_S = 5.0


class ScriptedClient:
    """A client whose watch/status answers come from per-call scripts."""

    def __init__(self) -> None:
        self.watch_outcomes: list[str] = []  # "fail" | "empty" | "stream" | "silent"
        self.status_ok = True
        self.status_calls = 0
        self.watch_calls = 0
        self.transfers: list[str | None] = []

    async def status(self, endpoint: str) -> pb.NodeStatus:
        self.status_calls += 1
        if not self.status_ok:
            raise ConnectionError("connection refused")
        return pb.NodeStatus(node_id="n1", commit_index=self.status_calls)

    async def watch_status(
        self, endpoint: str, interval_ms: int = 250
    ) -> AsyncIterator[pb.NodeStatus]:
        self.watch_calls += 1
        outcome = self.watch_outcomes.pop(0) if self.watch_outcomes else "stream"
        if outcome == "fail":
            raise ConnectionError("connection refused")
        if outcome == "silent":
            await asyncio.Event().wait()
        if outcome == "stream":
            for i in range(2):
                yield pb.NodeStatus(node_id="n1", commit_index=100 + i)
            raise ConnectionError("stream broken")

    async def read_log(self, endpoint: str, count: int = 50) -> list[pb.LogEntryInfo]:
        return [pb.LogEntryInfo(index=i) for i in range(count)]

    async def transfer_leadership(self, to: str | None = None) -> pb.TransferLeadershipResponse:
        self.transfers.append(to)
        return pb.TransferLeadershipResponse(leader=to or "")


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(source_module, "RECONNECT_INITIAL_S", 0.001)
    monkeypatch.setattr(source_module, "RECONNECT_MAX_S", 0.002)
    monkeypatch.setattr(source_module, "MIN_SILENCE_S", 0.05)


async def take(source: ClientSource, n: int = TAKE, interval_s: float = 0.01) -> list[StatusUpdate]:
    updates: list[StatusUpdate] = []

    async def collect() -> None:
        async for update in source.watch(ENDPOINT, interval_s):
            updates.append(update)
            if len(updates) == n:
                return

    await asyncio.wait_for(collect(), WAIT_S)
    return updates


async def test_stream_updates_then_a_broken_stream_is_reported_down_and_retried() -> None:
    client = ScriptedClient()
    client.watch_outcomes = ["stream", "stream"]
    updates = await take(ClientSource(client, [ENDPOINT], clock=lambda: 7.0), n=5)
    assert [u.status.commit_index if u.status else None for u in updates] == [
        100,
        101,
        None,
        100,
        101,
    ]
    assert "stream broken" in updates[2].error
    assert all(u.at == 7.0 and u.endpoint == ENDPOINT for u in updates)


async def test_down_node_is_reported_and_reconnects_by_itself() -> None:
    client = ScriptedClient()
    client.status_ok = False
    client.watch_outcomes = ["fail", "fail", "stream"]
    updates = await take(ClientSource(client, [ENDPOINT]), n=3)
    assert [u.up for u in updates] == [False, False, True]
    assert "connection refused" in updates[0].error
    assert not updates[0].timed_out
    assert client.watch_calls == 3


async def test_falls_back_to_polling_status_when_the_stream_gives_nothing() -> None:
    client = ScriptedClient()
    client.watch_outcomes = ["empty"]
    updates = await take(ClientSource(client, [ENDPOINT]))
    assert all(u.up for u in updates)
    assert client.watch_calls == 1  # polled ever since
    # The first Status call was the probe; the polled ones follow.
    assert [u.status.commit_index for u in updates if u.status] == [2, 3, 4, 5]


async def test_polling_that_fails_goes_back_to_the_stream_when_the_node_returns() -> None:
    client = ScriptedClient()
    client.watch_outcomes = ["empty", "stream"]
    source = ClientSource(client, [ENDPOINT])
    seen: list[StatusUpdate] = []

    async def collect() -> None:
        async for update in source.watch(ENDPOINT, 0.01):
            seen.append(update)
            if len(seen) == 2:
                client.status_ok = False  # the node dies while polled
            if not update.up:
                client.status_ok = True
            if update.status is not None and update.status.commit_index >= 100:
                return

    await asyncio.wait_for(collect(), WAIT_S)
    assert [u.up for u in seen] == [True, True, False, True]
    assert client.watch_calls == 2


async def test_a_silent_stream_is_declared_unreachable() -> None:
    client = ScriptedClient()
    client.status_ok = False
    client.watch_outcomes = ["silent"]
    updates = await take(ClientSource(client, [ENDPOINT]), n=1)
    assert not updates[0].up
    assert updates[0].timed_out
    assert updates[0].error.startswith("no status for")


async def test_read_log_and_transfer_go_to_the_client() -> None:
    client = ScriptedClient()
    source = ClientSource(client, [ENDPOINT])
    assert len(await source.read_log(ENDPOINT, 3)) == 3
    assert (await source.transfer_leadership("n2")).leader == "n2"
    assert client.transfers == ["n2"]
