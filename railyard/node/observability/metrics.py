"""One node's metrics: a Prometheus registry and the figures `Status` reports.

Names follow etcd's (`etcd_server_has_leader` becomes
`railyard_server_has_leader`): units in the name, base units (seconds,
bytes), `_total` only on counters. Two kinds of figure:

- events, counted or timed where they happen: fsyncs, applies, snapshots,
  committed and failed proposals, leader changes, peer bytes and failures,
  round trips, gRPC calls, records appended and read. These are the only
  costs on the hot path, and all of them are no-ops when the node has no
  `metrics_address` (`NodeMetrics(enabled=False)`);
- state, sampled when Prometheus scrapes: role, term, indexes, pending
  proposals, streams (`StateSample`, taken on the event loop by the sampler
  the process installs, between two steps of the driver), and the sizes of
  the data files and the free space of their disk (read on the scraping
  thread, off the loop).

The event instruments are our own (`LoopCounter`, `LoopHistogram`), not
prometheus-client's: they are written on the event loop only (a log save
reports its duration back to the loop), so an update is a plain add, no
lock; prometheus-client's take a lock per update (timed on this machine
under load: 3.9 us a counter increment and 7.9 us a histogram observation,
against 0.55 us and 1.8 us for ours). The sample copies their values on the loop,
between two steps, so a scrape sees a consistent set (a histogram's count
equals its +Inf bucket), and the text is rendered on the scraping thread
by prometheus-client from that copy.

Whether or not metrics are served, the node keeps the few figures `Status`
reports (`fsync_p99_s`, `committed_per_s`, `round_trip_s`): a ring of recent
fsync durations, a per-second counter of committed entries, the last round
trip to each peer.

Invariants: instruments are written on the event loop only; counters only
rise (a restart starts them at zero); the label sets are bounded: `peer` by
the cluster file, `method` and `code` by the services, `stream` by
`max_streams` (the first streams by name).

It knows nothing of the core or the stores: the process passes the paths
and the sampler.
"""

from __future__ import annotations

import bisect
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector


def exponential_buckets(start: float, factor: float, count: int) -> tuple[float, ...]:
    """Prometheus's ExponentialBuckets: `count` upper bounds from `start`, each `factor` apart."""
    return tuple(start * factor**i for i in range(count))


# etcd's WAL fsync buckets: 1 ms ... 8.192 s.
FSYNC_BUCKETS = exponential_buckets(0.001, 2, 14)
# etcd's apply buckets: 0.1 ms ... 52 s (a single put applies in well under 1 ms).
APPLY_BUCKETS = exponential_buckets(0.0001, 2, 20)
# A snapshot copies the whole state database: 10 ms ... 82 s.
SNAPSHOT_BUCKETS = exponential_buckets(0.01, 2, 14)
# etcd's peer round-trip buckets: 0.1 ms ... 0.8 s.
ROUND_TRIP_BUCKETS = exponential_buckets(0.0001, 2, 14)
# gRPC calls: 0.1 ms ... 6.5 s (long-lived streams land in +Inf).
GRPC_BUCKETS = exponential_buckets(0.0001, 2, 17)
# Per-stream gauges for at most this many streams, so cardinality stays bounded.
DEFAULT_MAX_STREAMS = 100
# Fsyncs kept for the p99 that Status reports: enough for a stable p99.
RECENT_FSYNCS = 1024
# Status's proposals/s: committed entries over the last few whole seconds.
RATE_WINDOW_S = 5
# A heartbeat unanswered for this long was lost: its round trip is not counted.
ROUND_TRIP_GIVE_UP_S = 5.0
P99 = 0.99

# The files whose sizes railyard_disk_log_bytes and _state_bytes report,
# with SQLite's companions (write-ahead log, shared memory).
SQLITE_SUFFIXES = ("", "-wal", "-shm")


@dataclass(frozen=True, slots=True)
class StreamFigures:
    name: str
    records: int
    bytes: int


@dataclass(frozen=True, slots=True)
class StateSample:
    """The node's state at one moment, taken on its event loop."""

    has_leader: bool
    is_leader: bool
    term: int
    commit_index: int
    applied_index: int
    snapshot_index: int
    catching_up: bool
    proposals_pending: int
    active_peers: int
    streams: tuple[StreamFigures, ...] = ()
    # The event instruments' values at the same moment (`NodeMetrics.copy_instruments`).
    instruments: InstrumentsCopy = ()


Sampler = Callable[[], StateSample | None]
# Per family: (name, kind, labels, [(label values, value or (bucket counts, sum))]).
InstrumentsCopy = tuple[tuple[str, str, tuple[str, ...], list[tuple[tuple[str, ...], object]]], ...]


class _Inc(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class _Observe(Protocol):
    def observe(self, amount: float) -> None: ...


class _Noop:
    """Stands for every instrument of a node that serves no metrics."""

    def inc(self, amount: float = 1) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass


_NOOP = _Noop()


@dataclass(frozen=True, slots=True)
class PeerInstruments:
    """The counters of one peer, bound once by the link that sends to it."""

    sent_bytes: _Inc
    received_bytes: _Inc
    send_failures: _Inc
    round_trip: _Observe


class LoopCounter:
    """A counter written on the event loop only: `inc` is a plain add."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def copy(self) -> object:
        return self.value


class LoopHistogram:
    """A histogram written on the event loop only: one bisect and two adds per value."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        # Prometheus buckets are upper bounds, inclusive: the first bound >= amount.
        self.counts[bisect.bisect_left(self.bounds, amount)] += 1
        self.sum += amount

    def copy(self) -> object:
        return (list(self.counts), self.sum)


@dataclass
class _Family:
    """One metric name and its children, one per set of label values."""

    name: str
    doc: str
    kind: str  # counter | histogram
    labels: tuple[str, ...] = ()
    bounds: tuple[float, ...] = ()
    children: dict[tuple[str, ...], LoopCounter | LoopHistogram] = field(default_factory=dict)

    def child(self, *values: str) -> LoopCounter | LoopHistogram:
        found = self.children.get(values)
        if found is None:
            found = LoopHistogram(self.bounds) if self.kind == "histogram" else LoopCounter()
            self.children[values] = found
        return found

    def counter(self, *values: str) -> LoopCounter:
        found = self.child(*values)
        assert isinstance(found, LoopCounter)
        return found

    def histogram(self, *values: str) -> LoopHistogram:
        found = self.child(*values)
        assert isinstance(found, LoopHistogram)
        return found

    def copy(self) -> tuple[str, str, tuple[str, ...], list[tuple[tuple[str, ...], object]]]:
        return (
            self.name,
            self.kind,
            self.labels,
            [(values, c.copy()) for values, c in self.children.items()],
        )


def _render(
    copied: tuple[str, str, tuple[str, ...], list[tuple[tuple[str, ...], object]]],
    docs: dict[str, tuple[str, tuple[float, ...]]],
) -> Metric:
    name, kind, labels, children = copied
    doc, bounds = docs[name]
    if kind == "counter":
        counter = CounterMetricFamily(name, doc, labels=labels)
        for values, value in children:
            assert isinstance(value, float)
            counter.add_metric(list(values), value)
        return counter
    family = HistogramMetricFamily(name, doc, labels=labels)
    les = [*(repr(float(b)) for b in bounds), "+Inf"]
    for values, value in children:
        assert isinstance(value, tuple)
        counts: list[int] = value[0]
        total: float = value[1]
        cumulative: list[tuple[str, float]] = []
        running = 0
        for le, n in zip(les, counts, strict=True):
            running += n
            cumulative.append((le, float(running)))
        family.add_metric(list(values), cumulative, total)
    return family


class RecentSamples:
    """The last `size` values observed; quantiles over them (thread-safe appends)."""

    def __init__(self, size: int = RECENT_FSYNCS) -> None:
        self._values: deque[float] = deque(maxlen=size)

    def add(self, value: float) -> None:
        self._values.append(value)

    def quantile(self, q: float) -> float | None:
        values = sorted(self._values)
        if not values:
            return None
        return values[min(len(values) - 1, int(q * len(values)))]


class RateMeter:
    """Events per second over the last `window_s` whole seconds (one bucket a second)."""

    def __init__(self, window_s: int = RATE_WINDOW_S) -> None:
        self.window_s = window_s
        self._buckets: deque[tuple[int, int]] = deque(maxlen=window_s + 1)

    def add(self, count: int, now: float) -> None:
        second = int(now)
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1] = (second, self._buckets[-1][1] + count)
        else:
            self._buckets.append((second, count))

    def per_second(self, now: float) -> float:
        """The rate over the whole seconds before `now` (the current one is still filling)."""
        current = int(now)
        total = sum(n for s, n in self._buckets if current - self.window_s <= s < current)
        return total / self.window_s


class NodeMetrics:
    """One node's instruments and registry; see the module docstring."""

    def __init__(
        self,
        *,
        peers: Sequence[str],
        enabled: bool,
        data_dir: Path | None = None,
        log_file: str = "raft.db",
        state_file: str = "streams.db",
        max_streams: int = DEFAULT_MAX_STREAMS,
        node_id: str = "",
        cluster: str = "",
    ) -> None:
        self.enabled = enabled
        self.recent_fsyncs = RecentSamples()
        self.committed_rate = RateMeter()
        self.round_trip_s: dict[str, float] = {}
        self._heartbeat_sent_at: dict[str, float] = {}
        self.registry: CollectorRegistry | None = None
        self._families: list[_Family] = []
        self._peers: dict[str, PeerInstruments] = {}
        self._make_peer: Callable[[str], PeerInstruments] = lambda p: PeerInstruments(
            _NOOP, _NOOP, _NOOP, _NOOP
        )
        for p in peers:
            self.add_peer(p)
        self._fsync: _Observe = _NOOP
        self._apply: _Observe = _NOOP
        self._snapshot: _Observe = _NOOP
        self._committed: _Inc = _NOOP
        self._applied: _Inc = _NOOP
        self._failed: _Inc = _NOOP
        self._leader_changes: _Inc = _NOOP
        self._appended: _Inc = _NOOP
        self._read: _Inc = _NOOP
        self.grpc_requests: _Family | None = None
        self.grpc_duration: _Family | None = None
        self.sampler: Sampler = lambda: None
        # Guards `_last_sample`, read by concurrent scrapes.
        self._lock = threading.Lock()
        self._last_sample: StateSample | None = None
        if enabled:
            self.registry = CollectorRegistry()
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
            self._register(peers)
            self.registry.register(
                _StateCollector(self, data_dir, log_file, state_file, max_streams, node_id, cluster)
            )

    def _family(
        self, name: str, doc: str, labels: tuple[str, ...] = (), bounds: tuple[float, ...] = ()
    ) -> _Family:
        family = _Family(name, doc, "histogram" if bounds else "counter", labels, bounds)
        self._families.append(family)
        return family

    def _register(self, peers: Sequence[str]) -> None:
        self._leader_changes = self._family(
            "railyard_server_leader_changes_seen",
            "Times this node saw the leader change (a new leader known).",
        ).counter()
        self._committed = self._family(
            "railyard_server_proposals_committed",
            "Log entries this node learned were committed.",
        ).counter()
        self._applied = self._family(
            "railyard_server_proposals_applied",
            "Committed log entries applied to this node's state machine.",
        ).counter()
        self._failed = self._family(
            "railyard_server_proposals_failed",
            "Writes proposed through this node that failed (no leader, leader lost, disk full).",
        ).counter()
        self._fsync = self._family(
            "railyard_disk_log_fsync_duration_seconds",
            "Duration of one raft log save: one transaction, one fsync.",
            bounds=FSYNC_BUCKETS,
        ).histogram()
        self._apply = self._family(
            "railyard_disk_apply_duration_seconds",
            "Duration of applying one batch of committed entries to the state machine.",
            bounds=APPLY_BUCKETS,
        ).histogram()
        self._snapshot = self._family(
            "railyard_disk_snapshot_duration_seconds",
            "Duration of taking (or installing) one snapshot, file written and synced.",
            bounds=SNAPSHOT_BUCKETS,
        ).histogram()
        self._appended = self._family(
            "railyard_records_appended",
            "Records appended to streams by this node's state machine (every replica counts).",
        ).counter()
        self._read = self._family(
            "railyard_records_read", "Records this node returned to clients."
        ).counter()
        sent = self._family(
            "railyard_network_peer_sent_bytes",
            "Bytes of Raft traffic (messages, snapshot data) sent to a peer.",
            ("peer",),
        )
        received = self._family(
            "railyard_network_peer_received_bytes",
            "Bytes of Raft traffic (messages, snapshot data) received from a peer.",
            ("peer",),
        )
        failures = self._family(
            "railyard_network_peer_send_failures",
            "Messages (or snapshots) to a peer dropped: its connection failed or was backed up.",
            ("peer",),
        )
        round_trip = self._family(
            "railyard_network_peer_round_trip_time_seconds",
            "Heartbeat to its answer, as the leader sees it.",
            ("peer",),
            ROUND_TRIP_BUCKETS,
        )
        # Every peer's series exists from the start (or from its joining), at zero.
        self._make_peer = lambda p: PeerInstruments(
            sent.counter(p), received.counter(p), failures.counter(p), round_trip.histogram(p)
        )
        self._peers = {}
        for p in peers:
            self.add_peer(p)
        self.grpc_requests = self._family(
            "railyard_grpc_requests",
            "gRPC calls served, by method and status code.",
            ("method", "code"),
        )
        self.grpc_duration = self._family(
            "railyard_grpc_request_duration_seconds",
            "Time from a gRPC call's start to its answer (a stream's whole life).",
            ("method",),
            GRPC_BUCKETS,
        )

    def copy_instruments(self) -> InstrumentsCopy:
        """The event instruments' values (call on the event loop, which writes them)."""
        return tuple(f.copy() for f in self._families)

    def render_instruments(self, copied: InstrumentsCopy) -> list[Metric]:
        docs = {f.name: (f.doc, f.bounds) for f in self._families}
        return [_render(c, docs) for c in copied]

    # ------------------------------------------------------------ events

    def peer(self, peer_id: str) -> PeerInstruments:
        if peer_id not in self._peers:
            self.add_peer(peer_id)  # an accepted sender not linked yet (a joining node's leader)
        return self._peers[peer_id]

    def add_peer(self, peer_id: str) -> None:
        """Count traffic with `peer_id` too (a member added since the node started)."""
        if peer_id not in self._peers:
            self._peers[peer_id] = self._make_peer(peer_id)

    def observe_fsync(self, seconds: float) -> None:
        """A log save finished (reported on the event loop)."""
        self.recent_fsyncs.add(seconds)
        self._fsync.observe(seconds)

    def observe_apply(self, seconds: float) -> None:
        self._apply.observe(seconds)

    def observe_snapshot(self, seconds: float) -> None:
        self._snapshot.observe(seconds)

    def committed(self, count: int, now: float) -> None:
        self._committed.inc(count)
        self.committed_rate.add(count, now)

    def applied(self, entries: int, records: int) -> None:
        self._applied.inc(entries)
        if records:
            self._appended.inc(records)

    def proposal_failed(self) -> None:
        self._failed.inc()

    def leader_changed(self) -> None:
        self._leader_changes.inc()

    def records_read(self, count: int) -> None:
        if count:
            self._read.inc(count)

    def heartbeat_sent(self, peer_id: str, now: float) -> None:
        sent_at = self._heartbeat_sent_at.get(peer_id)
        if sent_at is None or now - sent_at > ROUND_TRIP_GIVE_UP_S:
            self._heartbeat_sent_at[peer_id] = now

    def heartbeat_answered(self, peer_id: str, now: float) -> None:
        """NB: a lost heartbeat followed by an answered one counts one interval too many;
        loss is rare and the give-up bound keeps it from lasting."""
        sent_at = self._heartbeat_sent_at.pop(peer_id, None)
        instruments = self._peers.get(peer_id)
        if sent_at is None or instruments is None:
            return
        seconds = now - sent_at
        self.round_trip_s[peer_id] = seconds
        instruments.round_trip.observe(seconds)

    # ------------------------------------------------------------ Status's figures

    def fsync_p99_s(self) -> float | None:
        return self.recent_fsyncs.quantile(P99)

    def committed_per_s(self, now: float) -> float:
        return self.committed_rate.per_second(now)

    # ------------------------------------------------------------ sampling

    def sample(self) -> StateSample | None:
        """A fresh state sample, or the last one if the sampler cannot give one now."""
        fresh = self.sampler()
        with self._lock:
            if fresh is not None:
                self._last_sample = fresh
            return self._last_sample


class _StateCollector(Collector):
    """Everything of ours a scrape shows, built from one sample on the scraping thread."""

    def __init__(
        self,
        metrics: NodeMetrics,
        data_dir: Path | None,
        log_file: str,
        state_file: str,
        max_streams: int,
        node_id: str,
        cluster: str,
    ) -> None:
        self.metrics = metrics
        self.data_dir = data_dir
        self.log_file = log_file
        self.state_file = state_file
        self.max_streams = max_streams
        self.node_id = node_id
        self.cluster = cluster

    def describe(self) -> Iterable[Metric]:
        return list(self._families(None))

    def collect(self) -> Iterable[Metric]:
        sample = self.metrics.sample()
        # Before the loop ever answered: a copy taken here, off the loop (at
        # worst a value written meanwhile is missed or half-counted).
        copied = sample.instruments if sample is not None else self.metrics.copy_instruments()
        return [*self.metrics.render_instruments(copied), *self._families(sample)]

    def _families(self, s: StateSample | None) -> Iterator[Metric]:
        def gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc)
            if value is not None:
                family.add_metric([], value)
            return family

        def of(pick: Callable[[StateSample], float]) -> float | None:
            return None if s is None else pick(s)

        info = GaugeMetricFamily(
            "railyard_server_info",
            "Always 1; its labels name the node and its cluster.",
            labels=["node", "cluster"],
        )
        info.add_metric([self.node_id, self.cluster], 1)
        yield info

        yield gauge(
            "railyard_server_has_leader",
            "1 when this node knows a leader, 0 otherwise.",
            of(lambda s: float(s.has_leader)),
        )
        yield gauge(
            "railyard_server_is_leader",
            "1 when this node is the leader, 0 otherwise.",
            of(lambda s: float(s.is_leader)),
        )
        yield gauge("railyard_server_term", "The node's current term.", of(lambda s: s.term))
        yield gauge(
            "railyard_server_commit_index",
            "The highest log index known committed.",
            of(lambda s: s.commit_index),
        )
        yield gauge(
            "railyard_server_applied_index",
            "The highest log index applied to the state machine.",
            of(lambda s: s.applied_index),
        )
        yield gauge(
            "railyard_server_snapshot_index",
            "The log index of the node's latest snapshot.",
            of(lambda s: s.snapshot_index),
        )
        yield gauge(
            "railyard_server_catching_up",
            "1 while a node that started with an empty store has not caught up with a leader.",
            of(lambda s: float(s.catching_up)),
        )
        yield gauge(
            "railyard_server_proposals_pending",
            "Writes proposed and waiting to be committed and applied.",
            of(lambda s: s.proposals_pending),
        )
        yield gauge(
            "railyard_network_active_peers",
            "Peers heard from within the last election timeout.",
            of(lambda s: s.active_peers),
        )
        yield gauge(
            "railyard_disk_log_bytes",
            "Size of the raft log's files (database, write-ahead log, shared memory).",
            self._files_bytes(self.log_file),
        )
        yield gauge(
            "railyard_disk_state_bytes",
            "Size of the state machine's files (database, write-ahead log, shared memory).",
            self._files_bytes(self.state_file),
        )
        yield gauge(
            "railyard_disk_free_bytes",
            "Bytes free for unprivileged users on the data directory's file system.",
            self._free_bytes(),
        )
        records = GaugeMetricFamily(
            "railyard_stream_records", "Records held by a stream.", labels=["stream"]
        )
        size = GaugeMetricFamily(
            "railyard_stream_bytes", "Bytes of record data held by a stream.", labels=["stream"]
        )
        streams = () if s is None else s.streams
        for stream in sorted(streams, key=lambda f: f.name)[: self.max_streams]:
            records.add_metric([stream.name], stream.records)
            size.add_metric([stream.name], stream.bytes)
        yield records
        yield size
        yield gauge(
            "railyard_streams",
            "Streams held by this node (per-stream gauges cover at most the first by name).",
            None if s is None else len(streams),
        )

    def _files_bytes(self, name: str) -> float | None:
        if self.data_dir is None:
            return None
        total = 0
        for suffix in SQLITE_SUFFIXES:
            try:
                total += (self.data_dir / (name + suffix)).stat().st_size
            except FileNotFoundError:
                continue
            except OSError:
                return None
        return float(total)

    def _free_bytes(self) -> float | None:
        if self.data_dir is None:
            return None
        try:
            st = os.statvfs(self.data_dir)
        except OSError:
            return None
        return float(st.f_bavail * st.f_frsize)
