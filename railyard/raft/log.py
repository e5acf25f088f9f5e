"""The Raft log a core keeps in memory: the entries after the last compaction.

Indexes start at 1. Entries up to `snapshot_index` were compacted into a
snapshot; the list holds `snapshot_index + 1 .. last_index` contiguously, so
an entry is found by subtracting the offset, never by searching.

Watermarks, always in this order:
    snapshot_index <= applied <= applying <= committed <= last_index
    stable_index <= handed_index <= last_index
- `committed`: known committed (Raft §5.3); never decreases.
- `applying`: committed entries already handed to the driver in a Ready.
- `applied`: what the driver confirmed by `advance`.
- `handed_index`: entries already handed to the driver to persist.
- `stable_index`: entries the driver confirmed durable.

Terms never decrease along a log, so the first or last index of a term is
found by binary search.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from railyard.raft.errors import InvariantViolation
from railyard.raft.membership import MembershipLog
from railyard.raft.types import (
    NO_INDEX,
    NO_MEMBERSHIP,
    NO_TERM,
    Entry,
    Index,
    Membership,
    SnapshotMeta,
    Term,
)


def _entry_term(entry: Entry) -> Term:
    return entry.term


class RaftLog:
    """Entries after the last snapshot plus the watermarks described in the module docstring."""

    __slots__ = (
        "_entries",
        "applied",
        "applying",
        "committed",
        "handed_index",
        "memberships",
        "snapshot_index",
        "snapshot_term",
        "stable_index",
        "truncated_from",
    )

    def __init__(
        self,
        snapshot: SnapshotMeta | None,
        entries: Sequence[Entry],
        commit_index: Index,
        applied: Index,
        bootstrap: Membership = NO_MEMBERSHIP,
    ) -> None:
        """`bootstrap`: the configuration in force while neither the log nor the
        snapshot holds one (a store created before configurations were logged)."""
        self.snapshot_index = snapshot.index if snapshot else NO_INDEX
        self.snapshot_term = snapshot.term if snapshot else NO_TERM
        self._entries: list[Entry] = list(entries)
        self._check_contiguous()
        # Every configuration the log holds, kept in step with each change below.
        self.memberships = MembershipLog(bootstrap, snapshot)
        self.memberships.appended(self._entries)
        last = self.last_index
        # What the driver restarts from is durable by definition.
        self.stable_index = last
        self.handed_index = last
        self.applied = Index(max(applied, self.snapshot_index))
        self.committed = Index(max(commit_index, self.applied))
        if self.committed > last:
            raise InvariantViolation(f"commit index {self.committed} beyond last index {last}")
        self.applying = self.applied
        # Set by `try_append` when it replaced entries: the first index replaced.
        self.truncated_from = NO_INDEX

    def _check_contiguous(self) -> None:
        expected = self.snapshot_index + 1
        for entry in self._entries:
            if entry.index != expected:
                raise InvariantViolation(f"log not contiguous: {entry.index} where {expected}")
            expected += 1

    # ------------------------------------------------------------------ reading

    @property
    def first_index(self) -> Index:
        return Index(self.snapshot_index + 1)

    @property
    def last_index(self) -> Index:
        return Index(self.snapshot_index + len(self._entries))

    @property
    def last_term(self) -> Term:
        return self._entries[-1].term if self._entries else self.snapshot_term

    def term(self, index: Index) -> Term | None:
        """The term of the entry at `index`, or None if compacted or not there."""
        offset = index - self.snapshot_index
        if offset > 0:
            if offset <= len(self._entries):
                return self._entries[offset - 1].term
            return None
        if offset == 0:
            return self.snapshot_term
        return None

    def matches(self, index: Index, term: Term) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: Index, last_term: Term) -> bool:
        """The election restriction (Raft §5.4.1): last term first, then length."""
        our_term = self.last_term
        return last_term > our_term or (last_term == our_term and last_index >= self.last_index)

    def slice(self, lo: Index, hi: Index) -> list[Entry]:
        """Entries [lo, hi) that are still in memory (clipped at both ends)."""
        base = self.snapshot_index + 1
        return self._entries[max(lo - base, 0) : max(hi - base, 0)]

    def entries_for_append(self, lo: Index, max_entries: int, max_bytes: int) -> tuple[Entry, ...]:
        """Up to `max_entries` entries from `lo`, at most `max_bytes` of data (at least one)."""
        start = lo - self.snapshot_index - 1
        if start < 0:
            raise InvariantViolation(f"entries from {lo} were compacted")
        batch = self._entries[start : start + max_entries]
        total = 0
        for position, entry in enumerate(batch):
            total += len(entry.data)
            if total > max_bytes and position > 0:
                return tuple(batch[:position])
        return tuple(batch)

    def first_index_of_term_at(self, index: Index) -> Index:
        """The first index holding the same term as `index` (which must be in memory)."""
        term = self.term(index)
        if term is None:
            raise InvariantViolation(f"no entry at {index}")
        position = bisect.bisect_left(self._entries, term, key=_entry_term)
        return Index(self.snapshot_index + 1 + position)

    def last_index_of_term(self, term: Term) -> Index | None:
        """The last index whose entry has `term`, if the log holds one."""
        position = bisect.bisect_right(self._entries, term, key=_entry_term)
        if position > 0 and self._entries[position - 1].term == term:
            return Index(self.snapshot_index + position)
        if term == self.snapshot_term and self.snapshot_index > 0:
            return self.snapshot_index
        return None

    # ------------------------------------------------------------------ writing

    def append(self, entries: Sequence[Entry]) -> None:
        """The leader's own append: entries continue the log."""
        if entries and entries[0].index != self.last_index + 1:
            raise InvariantViolation(f"append at {entries[0].index} after {self.last_index}")
        self._entries.extend(entries)
        self.memberships.appended(entries)

    def try_append(
        self, prev_index: Index, prev_term: Term, entries: Sequence[Entry]
    ) -> Index | None:
        """A follower's append (Raft §5.3): the last new index, or None on mismatch.

        Only a suffix starting at the first conflicting entry is replaced;
        entries that match are kept even if the append is shorter (it may be
        stale or reordered).
        """
        self.truncated_from = NO_INDEX
        if self.term(prev_index) != prev_term:
            return None
        conflict = self._find_conflict(entries)
        if conflict:
            if conflict <= self.committed:
                raise InvariantViolation(f"conflict at {conflict} <= committed {self.committed}")
            self._truncate_and_append(entries[conflict - entries[0].index :])
        return Index(prev_index + len(entries))

    def _find_conflict(self, entries: Sequence[Entry]) -> Index:
        """The index of the first entry not already in the log, or NO_INDEX."""
        if not entries:
            return NO_INDEX
        last = entries[-1]
        if self.term(last.index) == last.term:
            return NO_INDEX  # Log Matching: every earlier entry matches too.
        if entries[0].index > self.last_index:
            return entries[0].index
        for entry in entries:
            if self.term(entry.index) != entry.term:
                return entry.index
        return NO_INDEX

    def _truncate_and_append(self, entries: Sequence[Entry]) -> None:
        first = entries[0].index
        if first <= self.last_index:
            self.truncated_from = first
            del self._entries[first - self.snapshot_index - 1 :]
            self.stable_index = Index(min(self.stable_index, first - 1))
            self.handed_index = Index(min(self.handed_index, first - 1))
            self.memberships.truncated(Index(first - 1))
        self._entries.extend(entries)
        self.memberships.appended(entries)

    def commit_to(self, index: Index) -> bool:
        """Raise the commit index to `index`; False if it is not higher."""
        if index <= self.committed:
            return False
        if index > self.last_index:
            raise InvariantViolation(f"commit {index} beyond last index {self.last_index}")
        self.committed = index
        return True

    # ------------------------------------------------------------- hand-offs

    def has_unhanded_entries(self) -> bool:
        return self.handed_index < self.last_index

    def take_unhanded_entries(self) -> tuple[Entry, ...]:
        start = max(self.handed_index - self.snapshot_index, 0)
        self.handed_index = self.last_index
        return tuple(self._entries[start:])

    def stable_to(self, index: Index, term: Term) -> None:
        """The driver made entries up to (index, term) durable."""
        if index > self.stable_index and self.term(index) == term:
            self.stable_index = index
            self.handed_index = Index(max(self.handed_index, index))

    def has_committed_to_hand(self) -> bool:
        return self.applying < self.committed

    def take_committed_entries(self) -> tuple[Entry, ...]:
        base = self.snapshot_index + 1
        batch = tuple(self._entries[self.applying + 1 - base : self.committed + 1 - base])
        self.applying = self.committed
        return batch

    def applied_to(self, index: Index) -> None:
        if index > self.applied:
            self.applied = index

    # ------------------------------------------------------------- snapshots

    def restore(self, snapshot: SnapshotMeta) -> None:
        """Replace the whole log by a received snapshot (it is ahead of `committed`)."""
        self._entries = []
        self.snapshot_index = snapshot.index
        self.snapshot_term = snapshot.term
        self.committed = snapshot.index
        self.applying = snapshot.index
        self.applied = snapshot.index
        self.stable_index = snapshot.index
        self.handed_index = snapshot.index
        self.memberships.restored(snapshot)

    def compact(self, snapshot: SnapshotMeta) -> None:
        """Drop entries up to `snapshot.index`, which the driver saved in a snapshot."""
        if snapshot.index <= self.snapshot_index:
            return
        if snapshot.index > self.applying:
            raise InvariantViolation(f"compact at {snapshot.index} beyond applied {self.applying}")
        if self.term(snapshot.index) != snapshot.term:
            raise InvariantViolation(f"compact at {snapshot.index}: term {snapshot.term} differs")
        del self._entries[: snapshot.index - self.snapshot_index]
        self.memberships.compacted(snapshot.index)
        self.snapshot_index = snapshot.index
        self.snapshot_term = snapshot.term
        self.applied = Index(max(self.applied, snapshot.index))
