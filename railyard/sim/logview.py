"""A Raft log as the simulator sees it: a snapshot point plus the entries after it.

Used twice per simulated node: once for the log the core holds in memory (as
reported through `Ready.entries` and `Ready.snapshot`) and once for what the
simulated disk holds. The view never decides anything about Raft; it only
answers "which entry is at index i" so the checker can compare logs.

Invariant: `entries[k].index == offset + 1 + k` (the list is dense).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from railyard.raft import NO_INDEX, NO_TERM, Entry, Index, Term


@dataclass
class LogView:
    offset: Index = NO_INDEX  # index of the last entry covered by the snapshot
    offset_term: Term = NO_TERM
    entries: list[Entry] = field(default_factory=list)

    def copy(self) -> LogView:
        return LogView(self.offset, self.offset_term, list(self.entries))

    @property
    def last_index(self) -> Index:
        return Index(self.offset + len(self.entries))

    def last_term(self) -> Term:
        return self.entries[-1].term if self.entries else self.offset_term

    def term_at(self, index: int) -> Term | None:
        """The term at `index`, the snapshot's term at its index, None when unknown."""
        if index == self.offset:
            return self.offset_term
        k = index - self.offset - 1
        if 0 <= k < len(self.entries):
            return self.entries[k].term
        return None

    def entry_at(self, index: int) -> Entry | None:
        k = index - self.offset - 1
        if 0 <= k < len(self.entries):
            return self.entries[k]
        return None

    def write(self, new: tuple[Entry, ...]) -> list[Entry]:
        """Cut the log at `new[0].index` and append `new`; returns the entries cut."""
        if not new:
            return []
        k = new[0].index - self.offset - 1
        cut = self.entries[k:]
        del self.entries[k:]
        self.entries.extend(new)
        return cut

    def compact(self, index: Index, term: Term) -> None:
        """Drop entries up to `index`, which a snapshot now covers."""
        drop = index - self.offset
        if drop > 0:
            del self.entries[:drop]
        self.offset, self.offset_term = index, term

    def reset(self, index: Index, term: Term) -> None:
        """Start the log after a snapshot that replaces it entirely."""
        self.entries.clear()
        self.offset, self.offset_term = index, term
