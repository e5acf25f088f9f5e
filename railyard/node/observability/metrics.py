"""One node's metrics: a Prometheus registry and the figures `Status` reports.

Names follow etcd's (`etcd_server_has_leader` becomes
`railyard_server_has_leader`): units in the name, base units (seconds,
bytes), `_total` only on counters. Two kinds of figure:

- events, counted or timed where they happen: fsyncs, applies, snapshots,
  committed and failed proposals, leader changes, peer bytes and failures,
  round trips, gRPC calls, records appended and read, rows scrubbed. These
  are the only costs on the hot path, and all of them are no-ops when the node has no
  `metrics_address` (`NodeMetrics(enabled=False)`). A duration is measured
  by whoever does the work (the driver's snapshotter times a snapshot) and
  recorded here as it is told (`observe_snapshot`): nothing is timed twice.
  The instruments themselves are in `instruments.py`;
- state, sampled when Prometheus scrapes (`scrape.py`): role, term,
  indexes, pending proposals, streams, and the sizes of the data files and
  the free space of their disk.

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

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import Metric

from railyard.node.observability.instruments import (
    NOOP,
    Family,
    Inc,
    InstrumentsCopy,
    Observe,
    PeerInstruments,
    RateMeter,
    RecentSamples,
    render,
)
from railyard.node.observability.scrape import Sampler, StateCollector, StateSample


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
# The native port's one method, as its metrics name it.
NATIVE_PUT = "PutRecord"
# Per-stream gauges for at most this many streams, so cardinality stays bounded.
DEFAULT_MAX_STREAMS = 100
# A heartbeat unanswered for this long was lost: its round trip is not counted.
ROUND_TRIP_GIVE_UP_S = 5.0
P99 = 0.99


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
        self._families: list[Family] = []
        self._peers: dict[str, PeerInstruments] = {}
        self._make_peer: Callable[[str], PeerInstruments] = lambda p: PeerInstruments(
            NOOP, NOOP, NOOP, NOOP
        )
        for p in peers:
            self.add_peer(p)
        self._fsync: Observe = NOOP
        self._apply: Observe = NOOP
        self._snapshot: Observe = NOOP
        self._committed: Inc = NOOP
        self._applied: Inc = NOOP
        self._failed: Inc = NOOP
        self._leader_changes: Inc = NOOP
        self._appended: Inc = NOOP
        self._read: Inc = NOOP
        self._scrubbed: Inc = NOOP
        self._scrubs: Inc = NOOP
        self.grpc_requests: Family | None = None
        self.grpc_duration: Family | None = None
        self.native_requests: Family | None = None
        self.native_duration: Family | None = None
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
                StateCollector(self, data_dir, log_file, state_file, max_streams, node_id, cluster)
            )

    def _family(
        self, name: str, doc: str, labels: tuple[str, ...] = (), bounds: tuple[float, ...] = ()
    ) -> Family:
        family = Family(name, doc, "histogram" if bounds else "counter", labels, bounds)
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
        self._scrubbed = self._family(
            "railyard_disk_state_scrubbed_rows",
            "Rows of the state database checked against their checksums by the background scrub.",
        ).counter()
        self._scrubs = self._family(
            "railyard_disk_state_scrubs",
            "Passes of the background scrub completed over the whole state database.",
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
        self.native_requests = self._family(
            "railyard_native_requests",
            "Requests served on the native put port, by method and status code.",
            ("method", "code"),
        )
        self.native_duration = self._family(
            "railyard_native_request_duration_seconds",
            "Time from a native request's arrival to its answer.",
            ("method",),
            GRPC_BUCKETS,
        )

    def native_request(self, code: str, started: float) -> None:
        """One native request answered with `code`, `started` at this perf_counter time."""
        if self.native_requests is None or self.native_duration is None:
            return
        self.native_requests.counter(NATIVE_PUT, code).inc()
        self.native_duration.histogram(NATIVE_PUT).observe(time.perf_counter() - started)

    def copy_instruments(self) -> InstrumentsCopy:
        """The event instruments' values (call on the event loop, which writes them)."""
        return tuple(f.copy() for f in self._families)

    def render_instruments(self, copied: InstrumentsCopy) -> list[Metric]:
        docs = {f.name: (f.doc, f.bounds) for f in self._families}
        return [render(c, docs) for c in copied]

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

    def scrubbed(self, rows: int) -> None:
        if rows:
            self._scrubbed.inc(rows)

    def scrub_finished(self) -> None:
        self._scrubs.inc()

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
