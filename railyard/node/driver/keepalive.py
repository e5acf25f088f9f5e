"""Heartbeats while the driver waits on its disk.

The driver steps nothing while it handles a Ready: a log save or an apply of
megabytes (maximum-size records on a slow disk) can take longer than an
election timeout, and a leader that sends no heartbeat meanwhile, or
followers that answer none, make the cluster elect a new leader under load
(issue 14). While a Ready is handled the core cannot change (only the driver
mutates it), so the node may speak for it as it is:

- a leader sends each peer, every heartbeat interval, the heartbeat its core
  would send on a tick (this term, commit = min(commit, the peer's match),
  no read context);
- a follower answers a heartbeat of its leader at its term at once, as its
  core will (its log's last index, the heartbeat's context). The heartbeat
  is also stepped later, in order, which answers it again: a leader counts
  a second answer as nothing new.

Knows nothing of the transport (it sends through the driver's outbox).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from railyard.raft import Index, Message, MessageType, RaftCore, Role

# Before the ticker has said how long a heartbeat interval is.
IDLE_CHECK_S = 0.05


class _Outbox(Protocol):
    def send(self, messages: Sequence[Message]) -> None: ...


class Keepalive:
    """Speaks for a core that is busy with a Ready; see the module docstring."""

    def __init__(self, core: Callable[[], RaftCore], outbox: _Outbox) -> None:
        self._core = core
        self._outbox = outbox
        # When the Ready being handled started (monotonic), None between Readys.
        self.busy_since: float | None = None
        self._last_sent = 0.0

    async def run(self, interval_s: Callable[[], float | None]) -> None:
        """Forever: a leader busy for a heartbeat interval sends its heartbeats.

        Looks twice per interval (known once the ticker runs), so a heartbeat
        is at most half an interval late.
        """
        while True:
            interval = interval_s()
            await asyncio.sleep(interval / 2 if interval else IDLE_CHECK_S)
            since = self.busy_since
            now = time.monotonic()
            if interval and since is not None and now - max(since, self._last_sent) >= interval:
                self._last_sent = now
                self._outbox.send(leader_heartbeats(self._core()))

    def answer(self, message: Message) -> None:
        """While busy, answer a heartbeat of our leader at our term now."""
        if self.busy_since is None or message.type is not MessageType.HEARTBEAT:
            return
        core = self._core()
        if (
            core.role is not Role.FOLLOWER
            or core.leader_id != message.sender
            or core.current_term != message.term
        ):
            return
        self._outbox.send(
            [
                Message(
                    MessageType.HEARTBEAT_RESPONSE,
                    message.sender,
                    core.node_id,
                    core.current_term,
                    context=message.context,
                    match_index=core.log.last_index,
                )
            ]
        )


def leader_heartbeats(core: RaftCore) -> list[Message]:
    """The heartbeats a leader's tick would send now, without a read context (reads only)."""
    if core.role is not Role.LEADER:
        return []
    committed = core.log.committed
    return [
        Message(
            MessageType.HEARTBEAT,
            peer,
            core.node_id,
            core.current_term,
            leader_commit=Index(min(core.progress[peer].match_index, committed)),
        )
        for peer in core.peers
    ]
