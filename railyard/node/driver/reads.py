"""Linearizable reads waiting on the driver: ReadIndex bookkeeping (Raft §6.4).

A read barrier is answered once this node's state machine has applied every
write committed before the barrier was asked for. The driver owns one
`PendingReads` and calls it at fixed points of its loop: `start` with the
barriers a round collected (one ReadIndex round, one context, for all of
them), `on_read_states` with a Ready's read states, `serve` after applying,
`drop_in_flight` when the leader changes, `fail_all` when the node stops.

Invariants:
- A read is in exactly one of two places: in flight (its context asked of the
  core, no read state yet) or waiting for `applied` to reach its read index.
- A read is answered (its future resolved) only once `applied` reaches the
  read index its round came back with; never before.
- Rounds in flight when the leader changes were addressed to the old leader:
  they fail with `NotLeader`, and the caller may ask again. A round whose
  read state never comes (a lost READ_INDEX) is forgotten once all its
  callers gave up.
- Futures already done (callers that gave up at their deadline) are never
  touched again.

It knows nothing of the state machine or the network: it sees the core's
`read_index`, read states, and the applied index.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable, Sequence
from typing import Any

from railyard.raft import Index, NodeId, NotLeader, RaftCore, ReadState


class PendingReads:
    """The read barriers of one driver; see the module docstring."""

    def __init__(self) -> None:
        self._contexts = itertools.count(1)
        # Rounds asked of the core, by context, awaiting their read state.
        self._by_context: dict[int, list[asyncio.Future[None]]] = {}
        # Rounds that came back, awaiting `applied >= index`, in arrival order.
        self._by_index: list[tuple[Index, list[asyncio.Future[None]]]] = []

    def start(self, core: RaftCore, futures: list[asyncio.Future[None]]) -> None:
        """Start one ReadIndex round for `futures` (NotLeader at once when no leader is known)."""
        # Forget rounds whose callers all gave up (a lost READ_INDEX is never answered).
        for stale in [c for c, fs in self._by_context.items() if all(f.done() for f in fs)]:
            del self._by_context[stale]
        context = next(self._contexts)
        try:
            core.read_index(context)
        except NotLeader as exc:
            _fail(futures, exc)
            return
        self._by_context[context] = futures

    def on_read_states(self, read_states: Iterable[ReadState]) -> None:
        """Move the rounds a Ready's read states answer to wait for their read index."""
        for read_state in read_states:
            futures = self._by_context.pop(read_state.context, None)
            if futures:
                self._by_index.append((read_state.index, futures))

    def serve(self, applied: Index) -> None:
        """Answer every read whose read index is now applied."""
        still: list[tuple[Index, list[asyncio.Future[None]]]] = []
        for index, futures in self._by_index:
            if all(f.done() for f in futures):
                continue  # the callers gave up (deadline)
            if index <= applied:
                for f in futures:
                    if not f.done():
                        f.set_result(None)
            else:
                still.append((index, futures))
        self._by_index = still

    def drop_in_flight(self, leader_id: NodeId | None) -> None:
        """Fail the rounds still in flight with NotLeader(leader_id): they asked the old leader."""
        for futures in self._by_context.values():
            _fail(futures, NotLeader(leader_id))
        self._by_context.clear()

    def fail_all(self, exc: Exception) -> None:
        """Fail every read, in flight or waiting, with `exc` (the node is stopping)."""
        for futures in [*self._by_context.values(), *(f for _, f in self._by_index)]:
            _fail(futures, exc)
        self._by_context.clear()
        self._by_index.clear()


def _fail(futures: Sequence[asyncio.Future[Any]], exc: BaseException) -> None:
    for f in futures:
        if not f.done():
            f.set_exception(exc)
