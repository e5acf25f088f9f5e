"""The leader's view of each follower's log (Raft §5.3 `next_index`/`match_index`).

A follower's progress is in one of three states, as in etcd-io/raft:

- PROBE: the leader does not know where the logs match; it sends one append
  at a time and waits for the answer (or a heartbeat response) before the next.
- REPLICATE: the logs match up to `match_index`; the leader streams appends
  optimistically, advancing `next_index` as it sends, with at most
  `max_inflight_appends` unacknowledged appends (pipelining) holding at
  most `max_inflight_bytes` of entry data (one append may cross it, as in
  etcd-io/raft's MaxInflightBytes). The byte bound is what keeps a
  heartbeat from queueing behind megabytes of appends to a follower that
  is slower than the leader: past it the follower gets only heartbeats
  until acknowledgements free room.
- SNAPSHOT: the entries the follower needs were compacted; the leader sent a
  snapshot and sends nothing more until it hears the outcome.

Invariant: `match_index < next_index`.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

from railyard.raft.types import NO_INDEX, Index


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


@dataclass(slots=True)
class Inflights:
    """Last indexes (and entry bytes) of the appends sent but not yet acknowledged, oldest first.

    Full at `capacity` appends or once they hold `max_bytes` (0: no byte bound).
    """

    capacity: int
    max_bytes: int = 0
    last_indexes: deque[Index] = field(default_factory=deque)
    sizes: deque[int] = field(default_factory=deque)
    bytes: int = 0

    def full(self) -> bool:
        return len(self.last_indexes) >= self.capacity or (
            self.max_bytes > 0 and self.bytes >= self.max_bytes
        )

    def add(self, last_index: Index, size: int = 0) -> None:
        self.last_indexes.append(last_index)
        self.sizes.append(size)
        self.bytes += size

    def free_le(self, index: Index) -> None:
        """Forget every append whose entries are all at or below `index`."""
        pending = self.last_indexes
        while pending and pending[0] <= index:
            self.free_first_one()

    def free_first_one(self) -> None:
        if self.last_indexes:
            self.last_indexes.popleft()
            self.bytes -= self.sizes.popleft()

    def reset(self) -> None:
        self.last_indexes.clear()
        self.sizes.clear()
        self.bytes = 0


@dataclass(slots=True)
class Progress:
    """Replication state of one peer, kept by the leader."""

    match_index: Index
    next_index: Index
    inflights: Inflights
    state: ProgressState = ProgressState.PROBE
    probe_sent: bool = False  # PROBE: an append is out; wait before the next
    pending_snapshot: Index = NO_INDEX  # SNAPSHOT: index of the snapshot sent
    recent_active: bool = False  # heard from within the current election timeout
    last_contact_tick: int = 0  # a new leader's grace counts as contact, for CheckQuorum
    answered: bool = False  # the peer answered this leader at least once
    lost_log_count: int = 0  # times the peer's log was found to end below match_index
    # Catch-up rounds (dissertation §4.2.1): a round ends when the peer holds the
    # leader's last index as of the round's start; the next starts at once.
    round_target: Index = NO_INDEX
    round_start_tick: int = 0
    last_round_ticks: int | None = None  # how long the last finished round took

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT:
            # The snapshot may have landed: resume after it rather than re-probe below.
            self.next_index = Index(max(self.match_index, self.pending_snapshot) + 1)
        else:
            self.next_index = Index(self.match_index + 1)
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = NO_INDEX
        self.inflights.reset()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next_index = Index(self.match_index + 1)
        self.probe_sent = False
        self.pending_snapshot = NO_INDEX
        self.inflights.reset()

    def become_snapshot(self, snapshot_index: Index) -> None:
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = snapshot_index
        self.probe_sent = False
        self.inflights.reset()

    def maybe_update(self, match_index: Index) -> bool:
        """Record an acknowledgement up to `match_index`; False if it says nothing new."""
        updated = match_index > self.match_index
        if updated:
            self.match_index = match_index
            self.probe_sent = False
        if self.next_index <= match_index:
            self.next_index = Index(match_index + 1)
        return updated

    def is_paused(self) -> bool:
        """True when the leader must not send this peer another append now."""
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return self.inflights.full()
        return True

    def sent_append(self, last_index: Index, entry_count: int, entry_bytes: int = 0) -> None:
        """Account for an append just sent whose last entry is `last_index`."""
        if self.state is ProgressState.REPLICATE:
            if entry_count:
                self.next_index = Index(last_index + 1)
                self.inflights.add(last_index, entry_bytes)
        elif self.state is ProgressState.PROBE:
            self.probe_sent = True
