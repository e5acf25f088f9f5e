"""The dashboard's picture of the cluster, built from status updates alone.

`ClusterView.observe()` folds each `StatusUpdate` into per-node state and
returns the `Event`s it implies (leader or term changes, nodes going down or
coming back, snapshots taken or installed). Everything here is a pure
function of the updates and the times stamped on them: no clock is read, no
widget is touched, so tests can drive it update by update.

What counts as "the leader": the leader reported at the highest term among
the nodes that are up. A node that believes in an older leader has simply
not heard of the new term yet (Raft §5.1).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from railyard.proto import railyard_pb2 as pb
from railyard.tui.source import StatusUpdate

# The sparkline covers the last minute, one bar per second.
RATE_WINDOW_S = 60
RATE_BUCKET_S = 1.0
# "commits/s" in the header: averaged over a few seconds so it reads steadily
# at a 250 ms refresh yet still follows a load change quickly.
HEADER_RATE_WINDOW_S = 5.0
# Events kept for the events pane (older ones scroll away).
MAX_EVENTS = 500


class Severity(Enum):
    INFO = "info"
    GOOD = "good"
    WARN = "warn"
    BAD = "bad"


@dataclass(frozen=True, slots=True)
class Event:
    at: float
    text: str
    severity: Severity = Severity.INFO


class NodeState(Enum):
    UNKNOWN = "…"
    UP = "up"
    DOWN = "down"  # refused or failed: the process is gone or broken
    UNREACHABLE = "unreachable"  # silent: stopped, partitioned or overloaded

    @property
    def is_down(self) -> bool:
        return self in (NodeState.DOWN, NodeState.UNREACHABLE)


@dataclass
class NodeView:
    """What the dashboard knows about one endpoint."""

    endpoint: str
    state: NodeState = NodeState.UNKNOWN
    status: pb.NodeStatus | None = None  # the last one received, kept while down
    error: str = ""
    last_seen_at: float | None = None
    changed_at: float | None = None  # when `state` last changed
    # (time, commit_index) samples: enough history for the sparkline window.
    commits: deque[tuple[float, int]] = field(default_factory=deque)

    @property
    def node_id(self) -> str:
        return self.status.node_id if self.status is not None else ""

    @property
    def label(self) -> str:
        return self.node_id or self.endpoint

    @property
    def up(self) -> bool:
        return self.state is NodeState.UP


@dataclass
class ClusterView:
    """Every node's latest status, the cluster's leader, and its history."""

    endpoints: Sequence[str]
    nodes: dict[str, NodeView] = field(init=False)
    leader_id: str = ""
    term: int = 0
    leader_changed_at: float | None = None
    previous_leader_id: str = ""  # the last leader seen, kept through elections
    events: deque[Event] = field(default_factory=lambda: deque(maxlen=MAX_EVENTS))
    events_total: int = 0  # ever recorded, so a reader can tell which are new

    def __post_init__(self) -> None:
        self.nodes = {endpoint: NodeView(endpoint) for endpoint in self.endpoints}

    # ------------------------------------------------------------ folding

    def observe(self, update: StatusUpdate) -> list[Event]:
        """Fold one update in; returns (and records) the events it implies."""
        node = self.nodes.get(update.endpoint)
        if node is None:
            return []
        events = (
            self._observe_up(node, update.status, update.at)
            if update.status is not None
            else self._observe_down(node, update, update.at)
        )
        events.extend(self._maybe_leader_change(update.at))
        self.record(events)
        return events

    def record(self, events: Sequence[Event]) -> None:
        """Adds events (also those of the caller's own doing, e.g. a transfer)."""
        self.events.extend(events)
        self.events_total += len(events)

    def events_after(self, seen: int) -> tuple[list[Event], int]:
        """The events recorded after the first `seen` (those still kept), and the new total."""
        missed = min(self.events_total - seen, len(self.events))
        return list(self.events)[len(self.events) - missed :], self.events_total

    def _observe_up(self, node: NodeView, status: pb.NodeStatus, at: float) -> list[Event]:
        events: list[Event] = []
        previous = node.status
        if node.state.is_down:
            events.append(Event(at, f"{status.node_id or node.endpoint} is up", Severity.GOOD))
        if previous is not None:
            events.extend(_snapshot_events(previous, status, at))
        if node.state is not NodeState.UP:
            node.changed_at = at
        node.state = NodeState.UP
        node.status = status
        node.error = ""
        node.last_seen_at = at
        _record_commit(node.commits, at, status.commit_index)
        return events

    def _observe_down(self, node: NodeView, update: StatusUpdate, at: float) -> list[Event]:
        events: list[Event] = []
        state = NodeState.UNREACHABLE if update.timed_out else NodeState.DOWN
        if node.state is not state:
            node.changed_at = at
        if not node.state.is_down:
            events.append(Event(at, f"{node.label} is {state.value}: {update.error}", Severity.BAD))
        node.state = state
        node.error = update.error
        return events

    def _maybe_leader_change(self, at: float) -> list[Event]:
        term, leader_id = self._believed_leader()
        if term < self.term or (term == self.term and leader_id == self.leader_id):
            return []
        if term == self.term and not leader_id:
            # A node that lost its leader without a new term (it went down):
            # the leader of this term is still the one we saw.
            return []
        events: list[Event] = []
        if term > self.term and self.term:
            events.append(Event(at, f"term {self.term} → {term}", Severity.WARN))
        if leader_id and leader_id != self.leader_id:
            was = self.leader_id or self.previous_leader_id
            was_text = f" (was {was})" if was and was != leader_id else ""
            events.append(Event(at, f"{leader_id} leads term {term}{was_text}", Severity.GOOD))
            self.leader_changed_at = at
            self.previous_leader_id = leader_id
        elif not leader_id and self.leader_id:
            events.append(Event(at, f"no leader in term {term}", Severity.BAD))
            self.leader_changed_at = at
        self.term, self.leader_id = term, leader_id
        return events

    def _believed_leader(self) -> tuple[int, str]:
        term, leader_id = 0, ""
        for node in self.nodes.values():
            if not node.up or node.status is None:
                continue
            status = node.status
            if status.term > term or (status.term == term and status.leader_id and not leader_id):
                term, leader_id = status.term, status.leader_id
        return term, leader_id

    # ------------------------------------------------------------ reading

    @property
    def cluster_name(self) -> str:
        for node in self.nodes.values():
            if node.status is not None and node.status.cluster:
                return node.status.cluster
        return ""

    @property
    def up_count(self) -> int:
        return sum(node.up for node in self.nodes.values())

    @property
    def has_quorum(self) -> bool:
        return self.up_count > len(self.nodes) // 2

    def leader(self) -> NodeView | None:
        for node in self.nodes.values():
            if node.up and node.node_id == self.leader_id and self.leader_id:
                return node
        return None

    def by_id(self, node_id: str) -> NodeView | None:
        for node in self.nodes.values():
            if node.node_id == node_id:
                return node
        return None

    def lag(self, node: NodeView) -> int | None:
        """Entries this node's log is behind the leader's, as the leader sees it."""
        leader = self.leader()
        if leader is None or leader.status is None or node.status is None:
            return None
        if node is leader:
            return 0
        for peer in leader.status.peers:
            # A match index of 0 is "not known yet" (a new leader has not
            # heard back from this follower): fall back to the node's own log.
            if peer.node_id == node.node_id and peer.match_index > 0:
                return max(0, leader.status.last_log_index - peer.match_index)
        return max(0, leader.status.last_log_index - node.status.last_log_index)

    def streams(self) -> Sequence[pb.StreamInfo]:
        """The streams as the leader has applied them (else the most advanced node)."""
        best = self.leader()
        if best is None:
            candidates = [n for n in self.nodes.values() if n.up and n.status is not None]
            if not candidates:
                return ()
            best = max(candidates, key=lambda n: n.status.applied_index if n.status else 0)
        return best.status.streams if best.status is not None else ()

    def commits_per_s(self, now: float) -> float:
        """The cluster's commit rate: the leader's (else the fastest node's)."""
        leader = self.leader()
        nodes = [leader] if leader is not None else list(self.nodes.values())
        rates = [_rate(n.commits, now - HEADER_RATE_WINDOW_S, now) for n in nodes]
        return max(rates, default=0.0)

    def rate_history(self, node: NodeView, now: float) -> list[float]:
        """Commits per second of one node over the last minute, oldest first.

        Buckets are aligned to whole seconds, so the history changes once a
        second (not on every update) and the last bar is the last full second.
        """
        buckets = int(RATE_WINDOW_S / RATE_BUCKET_S)
        end = math.floor(now / RATE_BUCKET_S) * RATE_BUCKET_S
        start = end - RATE_WINDOW_S
        return _rates(node.commits, [start + i * RATE_BUCKET_S for i in range(buckets + 1)])


def _record_commit(samples: deque[tuple[float, int]], at: float, commit_index: int) -> None:
    samples.append((at, commit_index))
    # Keep one sample older than the window: the step function needs the
    # value at the window's start.
    horizon = at - RATE_WINDOW_S - RATE_BUCKET_S
    while len(samples) > 1 and samples[1][0] < horizon:
        samples.popleft()


def _commits_at(samples: Sequence[tuple[float, int]], times: Sequence[float]) -> list[int | None]:
    """The commit index last reported at or before each of the ascending `times`."""
    values: list[int | None] = []
    value: int | None = None
    i = 0
    for t in times:
        while i < len(samples) and samples[i][0] <= t:
            value = samples[i][1]
            i += 1
        values.append(value)
    return values


def _rates(samples: Sequence[tuple[float, int]], times: Sequence[float]) -> list[float]:
    """Commits per second between consecutive `times` (0 where nothing is known)."""
    values = _commits_at(samples, times)
    rates: list[float] = []
    for i in range(len(times) - 1):
        first, last, span = values[i], values[i + 1], times[i + 1] - times[i]
        if first is None or last is None or span <= 0:
            rates.append(0.0)
        else:
            rates.append(max(0, last - first) / span)
    return rates


def _rate(samples: Sequence[tuple[float, int]], start: float, end: float) -> float:
    return _rates(samples, (start, end))[0]


def _snapshot_events(before: pb.NodeStatus, after: pb.NodeStatus, at: float) -> list[Event]:
    events: list[Event] = []
    if after.snapshots_taken > before.snapshots_taken:
        events.append(Event(at, f"{after.node_id} took a snapshot at {after.snapshot_index}"))
    if after.snapshots_installed > before.snapshots_installed:
        text = f"{after.node_id} installed a snapshot at {after.snapshot_index}"
        events.append(Event(at, text, Severity.WARN))
    return events
