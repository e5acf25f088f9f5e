"""The Raft log store contract and an in-memory implementation.

A log store holds what Raft requires to be durable (Raft Figure 2:
`current_term`, `voted_for`, the log) plus `commit_index` and the metadata
of the last compaction. Its shape, shared by every implementation:

- The log covers indexes `first_index() .. last_index()`. Entries up to the
  snapshot index were compacted away; `first_index()` is the snapshot index
  plus one and `last_index()` is the snapshot index when no entry follows it.
- `term(i)` is known for every stored entry, for the snapshot index (the
  snapshot's term) and for index 0 (term 0); otherwise it is `None`.
- `save(hard_state, entries)` is atomic: after a crash either all of it is
  on disk or none of it. The first entry's index says where the stored log
  is cut before the new entries are written (a follower's conflict, Raft
  §5.3). Entries must continue the log without a gap.
- `compact(meta)` follows Raft §7: if the log holds the snapshot's last
  entry (same index and term) the entries after it are kept, otherwise the
  whole log is discarded. A compaction older than the current one is a no-op.

`MemoryLogStore` keeps all of this in a list; the simulator uses it, and the
conformance suite (tests/storage/test_log_conformance.py) runs against it
and `SqliteLogStore` alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from railyard.raft import NO_INDEX, NO_TERM, Entry, HardState, Index, SnapshotMeta, Term
from railyard.storage.errors import LogCompacted, LogGap


class LogStore(Protocol):
    """What the node needs from durable Raft state."""

    def save(self, hard_state: HardState | None, entries: Sequence[Entry]) -> None: ...

    def entries(self, lo: Index, hi: Index, max_bytes: int | None = None) -> list[Entry]: ...

    def term(self, index: Index) -> Term | None: ...

    def first_index(self) -> Index: ...

    def last_index(self) -> Index: ...

    def truncate_suffix(self, from_index: Index) -> None: ...

    def compact(self, meta: SnapshotMeta) -> None: ...

    def snapshot_meta(self) -> SnapshotMeta | None: ...

    def hard_state(self) -> HardState: ...

    def close(self) -> None: ...


def entries_to_write(
    entries: Sequence[Entry], snapshot_index: Index, last: Index
) -> Sequence[Entry]:
    """The part of `entries` that a store must write, after checking it continues the log.

    Entries at or before the snapshot index are already covered by the
    snapshot and are dropped; anything else must start at most one past the
    last stored index and be contiguous.
    """
    if not entries:
        return entries
    skip = 0
    while skip < len(entries) and entries[skip].index <= snapshot_index:
        skip += 1
    rest = entries[skip:]
    if not rest:
        return rest
    if rest[0].index > last + 1:
        raise LogGap(f"entries start at index {rest[0].index} but the log ends at {last}")
    expected = rest[0].index
    for entry in rest:
        if entry.index != expected:
            raise LogGap(f"entries are not contiguous: index {entry.index} after {expected - 1}")
        expected = Index(expected + 1)
    return rest


def select_within_bytes(entries: Sequence[Entry], max_bytes: int | None) -> list[Entry]:
    """The longest prefix of `entries` within `max_bytes` of data, but at least one entry."""
    if max_bytes is None:
        return list(entries)
    chosen: list[Entry] = []
    total = 0
    for entry in entries:
        total += len(entry.data)
        if chosen and total > max_bytes:
            break
        chosen.append(entry)
    return chosen


class MemoryLogStore:
    """A `LogStore` in memory: fast, not durable. For the simulator and tests."""

    def __init__(self) -> None:
        self._hard_state = HardState()
        self._snapshot: SnapshotMeta | None = None
        self._entries: list[Entry] = []  # _entries[k].index == snapshot index + 1 + k

    def _snapshot_index(self) -> Index:
        return self._snapshot.index if self._snapshot else NO_INDEX

    def save(self, hard_state: HardState | None, entries: Sequence[Entry]) -> None:
        rest = entries_to_write(entries, self._snapshot_index(), self.last_index())
        if rest:
            del self._entries[rest[0].index - self._snapshot_index() - 1 :]
            self._entries.extend(rest)
        if hard_state is not None:
            self._hard_state = hard_state

    def entries(self, lo: Index, hi: Index, max_bytes: int | None = None) -> list[Entry]:
        first = self.first_index()
        if lo < first:
            raise LogCompacted(lo, first)
        hi = Index(min(hi, self.last_index() + 1))
        if lo >= hi:
            return []
        return select_within_bytes(self._entries[lo - first : hi - first], max_bytes)

    def term(self, index: Index) -> Term | None:
        snapshot_index = self._snapshot_index()
        if index == snapshot_index:
            return self._snapshot.term if self._snapshot else NO_TERM
        if snapshot_index < index <= self.last_index():
            return self._entries[index - snapshot_index - 1].term
        return None

    def first_index(self) -> Index:
        return Index(self._snapshot_index() + 1)

    def last_index(self) -> Index:
        return Index(self._snapshot_index() + len(self._entries))

    def truncate_suffix(self, from_index: Index) -> None:
        if from_index <= self._snapshot_index():
            raise LogGap(
                f"cannot truncate at {from_index}: compacted up to {self._snapshot_index()}"
            )
        del self._entries[from_index - self._snapshot_index() - 1 :]

    def compact(self, meta: SnapshotMeta) -> None:
        if meta.index <= self._snapshot_index():
            return
        if self.term(meta.index) == meta.term:
            self._entries = self._entries[meta.index - self._snapshot_index() :]
        else:
            self._entries = []
        self._snapshot = meta

    def snapshot_meta(self) -> SnapshotMeta | None:
        return self._snapshot

    def hard_state(self) -> HardState:
        return self._hard_state

    def close(self) -> None:
        """Nothing to release; present for the `LogStore` protocol."""
