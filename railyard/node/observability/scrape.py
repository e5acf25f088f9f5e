"""What a Prometheus scrape shows of the node's state, beside the event instruments.

State is not kept in gauges as it changes: a scrape asks for a `StateSample`
(role, term, indexes, pending proposals, streams), taken on the event loop
by the sampler the process installs, between two steps of the driver, with
a copy of the event instruments' values at the same moment, so a scrape
sees a consistent set (a histogram's count equals its +Inf bucket).
`StateCollector` renders that sample on the scraping thread, and reads the
sizes of the data files and the free space of their disk itself, off the
loop.

The label sets stay bounded: `stream` by `max_streams` (the first streams
by name).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from railyard.node.observability.instruments import InstrumentsCopy

if TYPE_CHECKING:
    from railyard.node.observability.metrics import NodeMetrics

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


class StateCollector(Collector):
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
