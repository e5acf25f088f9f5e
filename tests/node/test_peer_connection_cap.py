"""The peer listener's connection cap and its rate-limited refusal lines (issue 14).

Connections past the cap are closed at once, with a reason in the log; a
flood of refusals writes a few lines a minute per kind of refusal, then
says how many it suppressed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence

import pytest

from railyard.node.observability.refusals import RefusalLog
from railyard.node.peers import tcp
from railyard.proto import railyard_pb2 as pb
from tests.support.cluster import HOST, free_ports

CAP = 3
# Well under FRAME_TIMEOUT_S: a connection past the cap is closed at once,
# one within it is held until the timeout.
CLOSED_AT_ONCE_S = 2.0
FLOOD = 60


class Sink:
    def refusal(self, sender: pb.Peer) -> str | None:
        return None

    async def deliver(self, sender: pb.Peer, messages: Sequence[pb.RaftMessage]) -> str | None:
        return None

    def pipe_ended(self, node_id: str) -> None:
        pass

    async def receive_snapshot(self, chunks: AsyncIterator[pb.SnapshotChunk]) -> str | None:
        return None


@pytest.fixture
async def listener(caplog: pytest.LogCaptureFixture) -> AsyncIterator[tcp.PeerListener]:
    caplog.set_level(logging.WARNING, logger="cap")
    listener = tcp.PeerListener(
        address=f"{HOST}:{free_ports(1)[0]}",
        sink=Sink(),
        log=logging.getLogger("cap"),
        max_connections=CAP,
    )
    await listener.start()
    try:
        yield listener
    finally:
        await listener.close()


async def open_raw(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = address.rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


async def closed_at_once(reader: asyncio.StreamReader) -> bool:
    try:
        async with asyncio.timeout(CLOSED_AT_ONCE_S):
            return await reader.read() == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


async def test_connections_past_the_cap_are_closed_at_once_with_a_logged_reason(
    listener: tcp.PeerListener, caplog: pytest.LogCaptureFixture
) -> None:
    held = [await open_raw(listener.address) for _ in range(CAP)]
    try:
        await asyncio.sleep(0.2)  # the listener has taken them all
        reader, writer = await open_raw(listener.address)
        assert await closed_at_once(reader)
        writer.transport.abort()
        assert any("peer connections are open already" in r.getMessage() for r in caplog.records)
        # Those within the cap are still open (silent, they wait for their preamble).
        assert not await closed_at_once(held[0][0])
    finally:
        for _, w in held:
            w.transport.abort()


async def test_a_flood_of_refused_connections_writes_a_few_lines(
    listener: tcp.PeerListener, caplog: pytest.LogCaptureFixture
) -> None:
    held = [await open_raw(listener.address) for _ in range(CAP)]
    try:
        await asyncio.sleep(0.2)
        for _ in range(FLOOD):
            reader, writer = await open_raw(listener.address)
            await closed_at_once(reader)
            writer.transport.abort()
        lines = [r for r in caplog.records if "open already" in r.getMessage()]
        assert 1 <= len(lines) <= listener.refusals.lines_per_window < FLOOD
    finally:
        for _, w in held:
            w.transport.abort()


def test_refusal_lines_per_kind_per_window_then_the_suppressed_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="limited")
    now = [0.0]
    log = RefusalLog(
        logging.getLogger("limited"), lines_per_window=3, window_s=60.0, clock=lambda: now[0]
    )
    logged = [log.warning("cap", "refused %d", i) for i in range(10)]
    assert logged == [True] * 3 + [False] * 7
    assert log.warning("other kind", "refused too")  # kinds are counted apart
    now[0] = 61.0
    assert log.warning("cap", "refused %d", 10)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[:3] == ["refused 0", "refused 1", "refused 2"]
    assert messages[-1] == "refused 10 (7 more cap refusals suppressed)"
