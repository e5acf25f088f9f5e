"""The Transport follows the configuration (node/peers/links.py): a member
added gets a running link, one removed or moved has its link stopped and closed."""

from __future__ import annotations

import asyncio
import contextlib
from typing import cast

from railyard.node.peers.links import PeerLink, Transport
from railyard.raft import NodeId


class FakeLink:
    def __init__(self, peer_id: NodeId, address: str, peer_address: str | None) -> None:
        self.peer_id = peer_id
        self.address = address
        self.peer_address = peer_address
        self.running = asyncio.Event()
        self.closed = False

    async def run(self) -> None:
        self.running.set()
        await asyncio.Event().wait()

    async def close(self) -> None:
        self.closed = True


def test_links_follow_the_members() -> None:
    made: list[FakeLink] = []

    def make(peer_id: NodeId, address: str, peer_address: str | None) -> PeerLink:
        link = FakeLink(peer_id, address, peer_address)
        made.append(link)
        return cast(PeerLink, link)

    async def scenario() -> None:
        transport = Transport([], make)
        transport.set_members({NodeId("n2"): ("h2:1", None)})
        runner = asyncio.create_task(transport.run())
        await asyncio.wait_for(made[0].running.wait(), 5)
        transport.set_members({NodeId("n2"): ("h2:1", None), NodeId("n4"): ("h4:1", "h4:2")})
        await asyncio.wait_for(made[1].running.wait(), 5)
        assert set(transport.links) == {"n2", "n4"}
        # n2 moves to another address: a new link; n4 is removed.
        transport.set_members({NodeId("n2"): ("h2:9", None)})
        await asyncio.wait_for(made[2].running.wait(), 5)
        await asyncio.sleep(0)
        assert set(transport.links) == {"n2"} and transport.links[NodeId("n2")].address == "h2:9"
        assert made[0].closed and made[1].closed and not made[2].closed
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner

    asyncio.run(scenario())
