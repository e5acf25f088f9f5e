"""One node's metrics: a Prometheus registry and the figures `Status` reports.

Names follow etcd's (`etcd_server_has_leader` becomes
`railyard_server_has_leader`): units in the name, base units (seconds,
bytes), `_total` only on counters. Two kinds of figure:

- events, counted or timed where they happen: fsyncs, applies, snapshots,
  committed and failed proposals, leader changes, peer bytes and failures,
  round trips, records appended and read. These are the only costs on the
  hot path, a lock and an add each, and all of them are no-ops when the
  node has no `metrics_address` (`NodeMetrics(enabled=False)`);
- state, sampled when Prometheus scrapes: role, term, indexes, pending
  proposals, streams (`StateSample`, taken on the event loop by the sampler
  the process installs, between two steps of the driver), and the sizes of
  the data files and the free space of their disk (read on the scraping
  thread, off the loop).

Whether or not metrics are served, the node keeps the few figures `Status`
reports (`fsync_p99_s`, `committed_per_s`, `round_trip_s`): a ring of recent
fsync durations, a per-second counter of committed entries, the last round
trip to each peer.

Invariants: counters only rise (a restart starts them at zero); the label
sets are bounded: `peer` by the cluster file, `method` and `code` by the
services, `stream` by `max_streams` (the first streams by name).

It knows nothing of the core or the stores: the process passes the paths
and the sampler.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily
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


Sampler = Callable[[], StateSample | None]


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
        self._peers: dict[str, PeerInstruments] = {
            p: PeerInstruments(_NOOP, _NOOP, _NOOP, _NOOP) for p in peers
        }
        self._fsync: _Observe = _NOOP
        self._apply: _Observe = _NOOP
        self._snapshot: _Observe = _NOOP
        self._committed: _Inc = _NOOP
        self._applied: _Inc = _NOOP
        self._failed: _Inc = _NOOP
        self._leader_changes: _Inc = _NOOP
        self._appended: _Inc = _NOOP
        self._read: _Inc = _NOOP
        if enabled:
            # etcd's counters have no `_created` series; ours neither (half the series).
            disable_created_metrics()  # type: ignore[no-untyped-call]
            self.registry = CollectorRegistry()
            self._register(peers, node_id, cluster)
            self.registry.register(
                _StateCollector(self, data_dir, log_file, state_file, max_streams)
            )
        self.sampler: Sampler = lambda: None
        # Guards `_last_sample`, read by concurrent scrapes.
        self._lock = threading.Lock()
        self._last_sample: StateSample | None = None

    def _register(self, peers: Sequence[str], node_id: str, cluster: str) -> None:
        r = self.registry
        assert r is not None
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        info = Gauge(
            "railyard_server_info",
            "Always 1; its labels name the node and its cluster.",
            ["node", "cluster"],
            registry=r,
        )
        info.labels(node=node_id, cluster=cluster).set(1)
        self._leader_changes = Counter(
            "railyard_server_leader_changes_seen_total",
            "Times this node saw the leader change (a new leader known).",
            registry=r,
        )
        self._committed = Counter(
            "railyard_server_proposals_committed_total",
            "Log entries this node learned were committed.",
            registry=r,
        )
        self._applied = Counter(
            "railyard_server_proposals_applied_total",
            "Committed log entries applied to this node's state machine.",
            registry=r,
        )
        self._failed = Counter(
            "railyard_server_proposals_failed_total",
            "Writes proposed through this node that failed (no leader, leader lost, disk full).",
            registry=r,
        )
        self._fsync = Histogram(
            "railyard_disk_log_fsync_duration_seconds",
            "Duration of one raft log save: one transaction, one fsync.",
            buckets=FSYNC_BUCKETS,
            registry=r,
        )
        self._apply = Histogram(
            "railyard_disk_apply_duration_seconds",
            "Duration of applying one batch of committed entries to the state machine.",
            buckets=APPLY_BUCKETS,
            registry=r,
        )
        self._snapshot = Histogram(
            "railyard_disk_snapshot_duration_seconds",
            "Duration of taking (or installing) one snapshot, file written and synced.",
            buckets=SNAPSHOT_BUCKETS,
            registry=r,
        )
        self._appended = Counter(
            "railyard_records_appended_total",
            "Records appended to streams by this node's state machine (every replica counts).",
            registry=r,
        )
        self._read = Counter(
            "railyard_records_read_total",
            "Records this node returned to clients.",
            registry=r,
        )
        sent = Counter(
            "railyard_network_peer_sent_bytes_total",
            "Bytes of Raft traffic (messages, snapshot data) sent to a peer.",
            ["peer"],
            registry=r,
        )
        received = Counter(
            "railyard_network_peer_received_bytes_total",
            "Bytes of Raft traffic (messages, snapshot data) received from a peer.",
            ["peer"],
            registry=r,
        )
        failures = Counter(
            "railyard_network_peer_send_failures_total",
            "Messages (or snapshots) to a peer dropped: its connection failed or was backed up.",
            ["peer"],
            registry=r,
        )
        round_trip = Histogram(
            "railyard_network_peer_round_trip_time_seconds",
            "Heartbeat to its answer, as the leader sees it.",
            ["peer"],
            buckets=ROUND_TRIP_BUCKETS,
            registry=r,
        )
        # Every peer's series exists from the start, at zero.
        self._peers = {
            p: PeerInstruments(
                sent.labels(peer=p),
                received.labels(peer=p),
                failures.labels(peer=p),
                round_trip.labels(peer=p),
            )
            for p in peers
        }

    # ------------------------------------------------------------ events

    def peer(self, peer_id: str) -> PeerInstruments:
        return self._peers[peer_id]

    def observe_fsync(self, seconds: float) -> None:
        """A log save finished (called on the log thread)."""
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
    """The sampled gauges, built at each scrape (on the scraping thread)."""

    def __init__(
        self,
        metrics: NodeMetrics,
        data_dir: Path | None,
        log_file: str,
        state_file: str,
        max_streams: int,
    ) -> None:
        self.metrics = metrics
        self.data_dir = data_dir
        self.log_file = log_file
        self.state_file = state_file
        self.max_streams = max_streams

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return list(self._families(None))

    def collect(self) -> Iterable[GaugeMetricFamily]:
        return list(self._families(self.metrics.sample()))

    def _families(self, s: StateSample | None) -> Iterator[GaugeMetricFamily]:
        def gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc)
            if value is not None:
                family.add_metric([], value)
            return family

        def of(pick: Callable[[StateSample], float]) -> float | None:
            return None if s is None else pick(s)

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
