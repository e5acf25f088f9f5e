"""The forwarder's channels follow a member's address."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

from railyard.node.api.context import Forwarder, NodeContext


async def test_a_member_added_again_at_a_new_address_is_dialled_there() -> None:
    addresses = {"n2": "127.0.0.1:1"}
    forwarder = Forwarder(cast(NodeContext, SimpleNamespace(addresses=addresses, tls=None)))
    first = forwarder.channel("n2")
    assert forwarder.channel("n2") is first
    # What apply_membership does when n2 is removed and added again elsewhere.
    addresses["n2"] = "127.0.0.1:2"
    moved = forwarder.channel("n2")
    assert moved is not first
    assert forwarder.channel("n2") is moved
    await forwarder.close()
