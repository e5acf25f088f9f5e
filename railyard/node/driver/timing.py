"""Time for the core: ticks at the heartbeat interval, and a dead leader's lease cut short.

The core counts ticks; the node owns time. `Ticker.run` posts one tick per
interval to the driver, and `leader_refuses_connections` lets a follower
skip the fixed part of its election timeout when its leader's host refuses
connections (the process is gone).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from railyard.node.observability import event
from railyard.raft import NodeId, RaftCore, Role, Term


class Ticker:
    """One driver's clock; see the module docstring."""

    def __init__(self, election_ticks: int, log: logging.Logger) -> None:
        self.election_ticks = election_ticks
        self.log = log
        self._skipped_timeout_for: tuple[NodeId, Term] | None = None
        self.interval_s: float | None = None  # once running

    async def run(
        self,
        post: Callable[[Callable[[], object]], None],
        tick: Callable[[], None],
        interval_s: float,
    ) -> None:
        """Post `tick` every `interval_s` seconds, forever (never a burst after a stall)."""
        self.interval_s = interval_s
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += interval_s
            delay = next_at - loop.time()
            if delay < -interval_s:
                # The loop stalled: do not fire a burst of ticks (a spurious election).
                next_at = loop.time()
                delay = 0.0
            await asyncio.sleep(max(0.0, delay))
            post(tick)

    def leader_refuses_connections(self, core: RaftCore, peer: NodeId) -> None:
        """Called in the driver when connecting to `peer` was refused: its process is gone.

        A follower of that leader skips the fixed part of its election timeout
        (`election_ticks` ticks at once), keeping the randomized part, so the
        followers of a crashed leader still campaign at staggered times, and
        no sooner than Raft would let them win a (pre-)vote: every follower
        of the dead leader sees the refusal and leaves its lease too. Safety
        never depends on timing; a false alarm costs at most an election.
        """
        status = core.status()
        if status.role is not Role.FOLLOWER or status.leader_id != peer:
            return
        if self._skipped_timeout_for == (peer, status.term):
            return  # once per leader and term, or the randomization would be lost
        self._skipped_timeout_for = (peer, status.term)
        self.log.info(
            "leader %s refuses connections; not waiting out its lease",
            peer,
            extra=event("connection_refused", peer=peer, by="leader", term=status.term),
        )
        for _ in range(self.election_ticks):
            core.tick()
