"""Proposals waiting on the driver for their entries to be applied.

The driver owns one `ProposalWaiters`: `add` registers the futures of a
batch the core accepted (their entries' indexes and the term they were
proposed in), `resolve` answers them as their entries are applied, and the
`fail_*` methods answer the ones whose outcome this node will never learn.

Invariants:
- A proposal is answered with its entry's result only if the entry was
  proposed in the term it committed in; otherwise (another leader's entry
  took its index), or when leadership changes first, with `LeadershipLost`:
  its outcome is unknown.
- Entries covered by an installed snapshot were applied elsewhere: their
  proposals fail with `LeadershipLost` too.
- Each proposal is answered at most once; futures already done (callers
  that gave up) are never touched again.

It knows nothing of the core or the state machine: it sees indexes, terms
and results.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from railyard.raft import Entry, Index, NodeId, Term
from railyard.streams import ApplyResult


class LeadershipLost(Exception):
    """The proposal's outcome is unknown: leadership changed before it was applied."""

    def __init__(self, leader_id: NodeId | None) -> None:
        super().__init__(f"leadership changed (leader: {leader_id or 'unknown'})")
        self.leader_id = leader_id


@dataclass(slots=True)
class _Waiter:
    term: Term
    future: asyncio.Future[ApplyResult | None]


class ProposalWaiters:
    """The proposals of one driver awaiting their entries; see the module docstring."""

    def __init__(self) -> None:
        self._waiters: dict[Index, _Waiter] = {}

    def add(
        self, first: Index, term: Term, futures: Sequence[asyncio.Future[ApplyResult | None]]
    ) -> None:
        """Wait on the entries `first`, `first + 1`, ... proposed in `term`, one per future."""
        for offset, future in enumerate(futures):
            self._waiters[Index(first + offset)] = _Waiter(term, future)

    def resolve(
        self,
        entries: Sequence[Entry],
        results: Sequence[ApplyResult | None],
        leader_id: NodeId | None,
    ) -> None:
        """Answer the proposals of applied `entries` with their `results`."""
        for entry, result in zip(entries, results, strict=True):
            waiter = self._waiters.pop(entry.index, None)
            if waiter is None or waiter.future.done():
                continue
            if waiter.term == entry.term:
                waiter.future.set_result(result)
            else:
                waiter.future.set_exception(LeadershipLost(leader_id))

    def fail_through(self, index: Index, leader_id: NodeId | None) -> None:
        """Fail with LeadershipLost the proposals up to `index` (a snapshot covers them)."""
        self._fail(lambda i: i <= index, leader_id)

    def fail_all_unknown(self, leader_id: NodeId | None) -> None:
        """Fail every proposal with LeadershipLost: its outcome is unknown."""
        self._fail(lambda _index: True, leader_id)

    def fail_all(self, exc: Exception) -> None:
        """Fail every proposal with `exc` (the node is stopping)."""
        for waiter in self._waiters.values():
            if not waiter.future.done():
                waiter.future.set_exception(exc)
        self._waiters.clear()

    def _fail(self, which: Callable[[Index], bool], leader_id: NodeId | None) -> None:
        for index in [i for i in self._waiters if which(i)]:
            waiter = self._waiters.pop(index)
            if not waiter.future.done():
                waiter.future.set_exception(LeadershipLost(leader_id))
