"""A leader's commit notices, held briefly in case the next append carries the news.

When a leader's commit index moves and a follower has no entries to
receive, the core sends it an empty append whose only news is the new
commit index (`RaftCore.on_commit_advanced`). At 1 put in flight that is
half of the leader's peer messages: the append of a put, its answer, then
the notice of its commit and the notice's answer; each follower runs a
round of its own for the notice. Yet the next put's append, which carries
the same commit index, usually leaves within a millisecond.

So the driver hands a leader's notices to `CommitNotices` instead of
sending them: a notice is held at most `HOLD_S`, and dropped when an
append to the same follower leaves first. A put's answer waits on none of
this: the leader answers once it has applied the entry, and a follower
acknowledges an append once it is durable, whatever it knows of the
commit index. Measured at 1 put in flight (`bench/RESULTS.md`): p50 -10 %,
the whole cluster's CPU per put -10 %.

Invariants:
- Only an empty append is held (no entries: the follower lacks nothing),
  and every append carries the leader's whole commit index
  (`raft/replication.py`), so an append that leaves later says at least
  what the held notice said: dropping the notice loses nothing.
- A held notice leaves within `HOLD_S`: a follower with nothing more to
  receive learns the commit index, and applies, at most that much later
  than it would have. Heartbeats (commit = min(commit, match)) are never
  held; reads served through a follower still wait for its apply, as before.
- Raft tolerates a delayed message: a notice from a term that has ended
  meanwhile is refused by its follower like any stale append.

It knows nothing of the core's state; it sees the messages the driver sends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from railyard.raft import Message, MessageType, NodeId

# How long a notice may wait for an append to carry it: about five puts'
# round trips at 1 in flight here, and short beside the heartbeat interval
# a follower would otherwise wait for.
HOLD_S = 0.005


class _Outbox(Protocol):
    def send(self, messages: Sequence[Message]) -> None: ...


def is_notice(message: Message) -> bool:
    """An append without entries: its only news is the leader's commit index."""
    return message.type is MessageType.APPEND and not message.entries


class CommitNotices:
    """Holds a leader's commit notices; see the module docstring."""

    def __init__(self, outbox: _Outbox, hold_s: float = HOLD_S) -> None:
        self.outbox = outbox
        self.hold_s = hold_s
        self._held: dict[NodeId, Message] = {}
        self._timer: asyncio.TimerHandle | None = None

    def send(self, messages: Sequence[Message]) -> None:
        """Send `messages` now; each append among them carries any notice held for its peer."""
        if self._held:
            for message in messages:
                if message.type is MessageType.APPEND:
                    self._held.pop(message.to, None)
        self.outbox.send(messages)

    def send_holding_notices(self, messages: Sequence[Message]) -> None:
        """Send `messages`, but hold their notices (a newer one replaces an older)."""
        rest = [m for m in messages if not is_notice(m)]
        for message in messages:
            if is_notice(message):
                self._held[message.to] = message
        if rest:
            self.outbox.send(rest)
        if self._held and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.hold_s, self.release)

    def release(self) -> None:
        """Send every notice still held."""
        self._timer = None
        held = list(self._held.values())
        self._held.clear()
        if held:
            self.outbox.send(held)

    def close(self) -> None:
        """Forget what is held: the node is stopping."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._held.clear()
