"""What a node's metrics endpoint asks of the running node: samples and verdicts.

`Monitor` is the bridge between the endpoint's threads and the event loop.
A scrape or a probe calls it on an HTTP thread; it schedules a short
coroutine on the loop (`asyncio.run_coroutine_threadsafe`) that reads the
driver's state between two of its steps, and waits at most
`SAMPLE_TIMEOUT_S` for it. The coroutine copies the metrics' event
instruments (written on the loop, so the copy is consistent), and lists
streams on the reads thread only for a scrape, never for a probe. A loop
that does not answer in time gives no sample: /metrics then serves the last
one, /health and /ready answer 503.

Verdicts:
- health: the node knows a leader and is not stopping (etcd's /health);
- ready: the node serves clients, is not stopping, and is not catching up
  after starting with an empty store.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import threading
import time

from railyard.node.api.context import NodeContext
from railyard.node.observability import Probe, StateSample, StreamFigures
from railyard.raft import Role

# A loop busy for longer than this is reported as not answering.
SAMPLE_TIMEOUT_S = 1.0


class Monitor:
    """Samples one node's state for its metrics endpoint; see the module docstring."""

    def __init__(self, node: NodeContext, loop: asyncio.AbstractEventLoop) -> None:
        self.node = node
        self.loop = loop
        self.stopping = threading.Event()
        self.serving = threading.Event()

    def sample(self, *, streams: bool = True) -> StateSample | None:
        """A fresh sample (on an HTTP thread), or None if the loop did not answer in time."""
        try:
            future = asyncio.run_coroutine_threadsafe(self._sample(streams), self.loop)
        except RuntimeError:  # the loop is closed: the node stopped
            return None
        try:
            return future.result(SAMPLE_TIMEOUT_S)
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
            future.cancel()
            return None
        except Exception:  # the reads thread failed; the node handles that itself
            return None

    async def _sample(self, with_streams: bool) -> StateSample:
        driver = self.node.driver
        core = driver.status()
        soft = driver.soft_state
        horizon = time.monotonic() - self.node.election_timeout_ms / 1000
        sample = StateSample(
            has_leader=soft.leader_id is not None,
            is_leader=soft.role is Role.LEADER,
            term=core.term,
            commit_index=core.commit_index,
            applied_index=driver.applied,
            snapshot_index=core.snapshot_index,
            catching_up=core.awaiting_catch_up,
            proposals_pending=len(driver.waiters),
            active_peers=sum(1 for at in self.node.last_heard.values() if at >= horizon),
            # Copied now, between two steps of the driver: consistent with the state above.
            instruments=driver.metrics.copy_instruments(),
        )
        if not with_streams:
            return sample
        infos = await driver.machine_call(driver.machine.list_streams)
        figures = tuple(StreamFigures(s.name, s.record_count, s.bytes) for s in infos)
        return dataclasses.replace(sample, streams=figures)

    def health(self) -> Probe:
        if self.stopping.is_set():
            return Probe(False, "stopping")
        sample = self.sample(streams=False)
        if sample is None:
            return Probe(False, f"the node did not answer within {SAMPLE_TIMEOUT_S:g}s")
        if not sample.has_leader:
            return Probe(False, "no leader")
        return Probe(True)

    def ready(self) -> Probe:
        if self.stopping.is_set():
            return Probe(False, "stopping")
        if not self.serving.is_set():
            return Probe(False, "starting")
        sample = self.sample(streams=False)
        if sample is None:
            return Probe(False, f"the node did not answer within {SAMPLE_TIMEOUT_S:g}s")
        if sample.catching_up:
            return Probe(False, "catching up after starting with an empty store")
        return Probe(True)
