"""The nemesis run: concurrent clients append and read while seeded faults hit the cluster.

Role: one function, `run_nemesis`, used by the short run in `make test` and
by the soak run. It starts a `ProxiedCluster`, runs `clients` concurrent
clients (each its own producer id, every appended value unique) recording
every operation in a `HistoryRecorder`, and meanwhile a `Nemesis` thread
injects faults from a schedule drawn from `random.Random(seed)`. After the
schedule it heals everything, waits for the nodes to converge, reads the
whole stream from every node (stale reads: each node's own applied state)
and checks: the history against the stream model, every node's stream
identical, every node's committed log identical. The `RunReport` carries
the figures (operations, faults, violations, unavailability).

Only the fault *choices* are seeded; process and network timing are not, so
a seed replays the same schedule, not the same interleaving.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import json
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc

from railyard.client import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    RailyardClient,
    RailyardError,
)
from railyard.proto import railyard_pb2 as pb
from tests.faults.netem import Network
from tests.faults.proxied import FaultClient, ProxiedCluster
from tests.support.history import CheckResult, HistoryRecorder, check_history

STREAM = "nemesis"
# Every fault kind the nemesis knows; the short run injects each once.
FAULTS = (
    "isolate_leader",
    "split",
    "one_way",
    "flapping_link",
    "pause_leader",
    "crash_leader",
    "crash_minority",
    "crash_all",
    "slow_links",
    "reset_links",
)
# A fault stays active this long: several election timeouts, so elections
# and step-downs happen under it.
DEFAULT_FAULT_S = 3.0
# Healthy time between faults, so the cluster recovers and clients progress.
DEFAULT_QUIET_S = 2.0
# Per-operation client budget: a short one resolves unknown outcomes
# quickly, a long one rides out elections. Several election timeouts.
CLIENT_TIMEOUT_S = 5.0
# A read asks for at most this many records, starting a little behind the
# client's latest acknowledged sequence, so it overlaps recent appends.
READ_LIMIT = 50
READ_BEHIND = 20
# The share of client operations that are appends; the rest are reads.
APPEND_SHARE = 0.7
# A flapping link changes state this often (seconds, uniform).
FLAP_MIN_S = 0.1
FLAP_MAX_S = 0.5
SLOW_DELAY_MS = 40
SLOW_JITTER_MS = 40
RESET_EVERY_S = 0.5
# After healing, the cluster must elect a leader and converge within this.
CONVERGE_TIMEOUT_S = 60.0
# A crashed node gets this long to come back up.
RESTART_TIMEOUT_S = 30.0


@dataclass
class FaultEvent:
    kind: str
    detail: str
    start_s: float  # seconds since the run started
    end_s: float = 0.0


@dataclass
class RunReport:
    seed: int
    nodes: int
    clients: int
    duration_s: float = 0.0
    appends: int = 0
    appends_ok: int = 0
    appends_uncertain: int = 0
    uncertain_appeared: int = 0
    reads: int = 0
    reads_ok: int = 0
    faults: list[FaultEvent] = field(default_factory=list)
    histories_checked: int = 0
    violations: list[str] = field(default_factory=list)
    final_records: int = 0
    log_entries_compared: int = 0
    longest_unavailability_s: float = 0.0
    # per fault kind: the longest gap between acknowledged appends inside its window
    unavailability_by_fault_s: dict[str, float] = field(default_factory=dict)
    # per fault kind: the longest gap between acknowledged appends that begins inside its
    # window, measured from the fault's start at the earliest and not cut at its end
    outage_by_fault_s: dict[str, float] = field(default_factory=dict)
    node_errors: list[str] = field(default_factory=list)

    def fault_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for f in self.faults:
            counts[f.kind] = counts.get(f.kind, 0) + 1
        return counts

    def summary(self) -> str:
        return (
            f"seed={self.seed} nodes={self.nodes} clients={self.clients}"
            f" duration={self.duration_s:.1f}s appends={self.appends} (ok {self.appends_ok},"
            f" uncertain {self.appends_uncertain}, of which appeared {self.uncertain_appeared})"
            f" reads={self.reads} (ok {self.reads_ok}) faults={self.fault_counts()}"
            f" final_records={self.final_records} log_entries_compared={self.log_entries_compared}"
            f" histories_checked={self.histories_checked} violations={len(self.violations)}"
            f" longest_unavailability={self.longest_unavailability_s:.2f}s"
            f" by_fault={_rounded(self.unavailability_by_fault_s)}"
            f" outage_by_fault={_rounded(self.outage_by_fault_s)}"
        )

    def to_json(self) -> str:
        data = asdict(self)
        data["fault_counts"] = self.fault_counts()
        return json.dumps(data, sort_keys=True)


def _rounded(figures: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 2) for k, v in figures.items()}


class Nemesis:
    """Injects faults from a seeded schedule until told to stop (runs in a thread)."""

    def __init__(
        self,
        cluster: ProxiedCluster,
        rng: random.Random,
        schedule: list[str] | None,
        *,
        fault_s: float,
        quiet_s: float,
        t0: float,
    ) -> None:
        self.cluster = cluster
        self.net = cluster.net
        self.rng = rng
        self.schedule = schedule
        self.fault_s = fault_s
        self.quiet_s = quiet_s
        self.t0 = t0
        self.events: list[FaultEvent] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def now(self) -> float:
        return time.monotonic() - self.t0

    def run(self, deadline: float) -> None:
        try:
            self._run(deadline)
        except BaseException as e:  # reported by the test, after healing
            self.error = e
        finally:
            self.heal_all()

    def _run(self, deadline: float) -> None:
        i = 0
        while not self.stop.is_set() and time.monotonic() < deadline:
            if self.schedule is not None:
                if i >= len(self.schedule):
                    return
                kind = self.schedule[i]
            else:
                kind = self.rng.choice(FAULTS)
            i += 1
            event = FaultEvent(kind, "", self.now())
            self.events.append(event)
            heal = getattr(self, f"fault_{kind}")(event)
            try:
                self.wait(self.fault_s, during=heal.tick if isinstance(heal, _Flapper) else None)
            finally:
                heal()
                event.end_s = self.now()
            self.wait(self.quiet_s)

    def wait(self, seconds: float, during: Callable[[], None] | None = None) -> None:
        end = time.monotonic() + seconds
        while not self.stop.is_set() and time.monotonic() < end:
            if during is not None:
                during()
            self.stop.wait(min(0.05, max(0.0, end - time.monotonic())))

    def heal_all(self) -> None:
        self.net.heal()
        self.cluster.resume_all()
        for nid in self.cluster.node_ids:
            if self.cluster.pid(nid) is None:
                self.cluster.restart(nid)

    # ------------------------------------------------------------ helpers

    def leader_or_any(self) -> str:
        statuses = {nid: self.cluster.safe_status(nid) for nid in self.cluster.node_ids}
        leaders = [n for n, s in statuses.items() if s is not None and s.role == pb.ROLE_LEADER]
        if leaders:
            best = max(leaders, key=lambda n: statuses[n].term)  # type: ignore[union-attr]
            return best
        return self.rng.choice(self.cluster.node_ids)

    def minority(self) -> list[str]:
        ids = self.cluster.node_ids
        size = self.rng.randint(1, (len(ids) - 1) // 2)
        return self.rng.sample(ids, size)

    def pair(self) -> tuple[str, str]:
        a, b = self.rng.sample(self.cluster.node_ids, 2)
        return a, b

    # ------------------------------------------------------------ faults

    def fault_isolate_leader(self, event: FaultEvent) -> Callable[[], None]:
        leader = self.leader_or_any()
        event.detail = f"isolate {leader}"
        self.net.isolate(leader, self.cluster.node_ids)
        return self.net.heal

    def fault_split(self, event: FaultEvent) -> Callable[[], None]:
        minority = self.minority()
        majority = [n for n in self.cluster.node_ids if n not in minority]
        event.detail = f"{minority} | {majority}"
        self.net.partition([minority, majority])
        return self.net.heal

    def fault_one_way(self, event: FaultEvent) -> Callable[[], None]:
        # Half the time from the leader, where a one-way cut hurts most.
        src, dst = self.pair()
        if self.rng.random() < 0.5:
            src = self.leader_or_any()
            dst = self.rng.choice([n for n in self.cluster.node_ids if n != src])
        event.detail = f"{src} -/-> {dst}"
        self.net.cut(src, dst)
        return self.net.heal

    def fault_flapping_link(self, event: FaultEvent) -> Callable[[], None]:
        a, b = self.pair()
        event.detail = f"{a} <-/-> {b} flapping"
        return _Flapper(self, a, b)

    def fault_pause_leader(self, event: FaultEvent) -> Callable[[], None]:
        leader = self.leader_or_any()
        event.detail = f"SIGSTOP {leader}"
        self.cluster.pause(leader)
        return lambda: self.cluster.resume(leader)

    def fault_crash_leader(self, event: FaultEvent) -> Callable[[], None]:
        leader = self.leader_or_any()
        event.detail = f"kill -9 {leader}"
        self.cluster.kill(leader, signal.SIGKILL)
        return lambda: self.cluster.restart(leader)

    def fault_crash_minority(self, event: FaultEvent) -> Callable[[], None]:
        victims = self.minority()
        event.detail = f"kill -9 {victims}"
        for nid in victims:
            self.cluster.kill(nid, signal.SIGKILL)

        def heal() -> None:
            for nid in victims:
                self.cluster.restart(nid)

        return heal

    def fault_crash_all(self, event: FaultEvent) -> Callable[[], None]:
        event.detail = "kill -9 all"
        self.cluster.resume_all()
        for nid in self.cluster.node_ids:
            self.cluster.kill(nid, signal.SIGKILL)

        def heal() -> None:
            for nid in self.cluster.node_ids:
                self.cluster.start_node(nid)
            for nid in self.cluster.node_ids:
                self.cluster.wait_ready(nid, RESTART_TIMEOUT_S)

        return heal

    def fault_slow_links(self, event: FaultEvent) -> Callable[[], None]:
        event.detail = f"delay {SLOW_DELAY_MS}+{SLOW_JITTER_MS}ms on every link"
        for a in self.cluster.node_ids:
            for b in self.cluster.node_ids:
                if a != b:
                    self.net.shape(a, b, delay_ms=SLOW_DELAY_MS, jitter_ms=SLOW_JITTER_MS)
        return self.net.heal

    def fault_reset_links(self, event: FaultEvent) -> Callable[[], None]:
        event.detail = f"reset every connection every {RESET_EVERY_S}s"
        return _Resetter(self)


class _Flapper:
    """Cuts and heals one link at random intervals while the fault lasts."""

    def __init__(self, nemesis: Nemesis, a: str, b: str) -> None:
        self.nemesis, self.a, self.b = nemesis, a, b
        self.cut = False
        self.next_flip = time.monotonic()

    def tick(self) -> None:
        if time.monotonic() < self.next_flip:
            return
        net = self.nemesis.net
        if self.cut:
            net.uncut(self.a, self.b)
            net.uncut(self.b, self.a)
        else:
            net.cut_both(self.a, self.b)
        self.cut = not self.cut
        self.next_flip = time.monotonic() + self.nemesis.rng.uniform(FLAP_MIN_S, FLAP_MAX_S)

    def __call__(self) -> None:
        self.nemesis.net.heal()


class _Resetter(_Flapper):
    """Resets every link's connections at a fixed pace while the fault lasts."""

    def __init__(self, nemesis: Nemesis) -> None:
        super().__init__(nemesis, "", "")

    def tick(self) -> None:
        if time.monotonic() < self.next_flip:
            return
        ids = self.nemesis.cluster.node_ids
        for i, a in enumerate(ids):
            for b in ids[i + 1 :]:
                self.nemesis.net.reset(a, b)
        self.next_flip = time.monotonic() + RESET_EVERY_S


# ---------------------------------------------------------------- clients


class Workload:
    """Concurrent clients appending unique values and reading recent records."""

    def __init__(
        self,
        cluster: ProxiedCluster,
        recorder: HistoryRecorder,
        seed: int,
        clients: int,
        pace_s: float = 0.0,
    ) -> None:
        self.pace_s = pace_s
        self.cluster = cluster
        self.recorder = recorder
        self.seed = seed
        self.clients = clients
        self.stop = asyncio.Event()
        self.acked_at: list[float] = []  # monotonic seconds of every acknowledged append
        self.latest = 0

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for k in range(self.clients):
                tg.create_task(self.client(k))

    async def client(self, k: int) -> None:
        rng = random.Random(self.seed * 1000 + k)
        name = f"c{k}"
        async with FaultClient(
            self.cluster.endpoints,
            self.cluster.real_address,
            timeout_s=CLIENT_TIMEOUT_S,
            producer_id=f"nemesis-{self.seed}-{name}",
        ) as client:
            i = 0
            while not self.stop.is_set():
                if rng.random() < APPEND_SHARE:
                    await self.append(client, name, f"{name}-{i}".encode())
                    i += 1
                else:
                    start = max(1, self.latest - rng.randint(0, READ_BEHIND))
                    await self.read(client, name, start)
                if self.pace_s:
                    await asyncio.sleep(self.pace_s)

    async def append(self, client: RailyardClient, name: str, value: bytes) -> None:
        op = self.recorder.invoke_append(name, STREAM, value)
        try:
            sequence = await client.put(STREAM, value)
        except (InvalidArgument, NotFound, AlreadyExists):
            self.recorder.fail(op)
            return
        except (RailyardError, OSError):
            self.recorder.unknown(op)
            return
        self.recorder.ok_append(op, sequence)
        self.acked_at.append(time.monotonic())
        self.latest = max(self.latest, sequence)

    async def read(self, client: RailyardClient, name: str, start: int) -> None:
        op = self.recorder.invoke_read(name, STREAM, start)
        try:
            response = await client.get_records(STREAM, start, limit=READ_LIMIT)
        except (InvalidArgument, NotFound):
            self.recorder.fail(op)
            return
        except (RailyardError, OSError):
            self.recorder.unknown(op)
            return
        records = [(r.sequence, r.data) for r in response.records]
        last = records[-1][0] + response.behind_latest if records else None
        self.recorder.ok_read(op, records, last)


def longest_gap(times: list[float], start: float, end: float) -> float:
    """The longest interval in [start, end] without an acknowledged append."""
    points = [start, *sorted(t for t in times if start <= t <= end), end]
    return max((b - a for a, b in itertools.pairwise(points)), default=0.0)


def longest_outage(ordered: list[float], start: float, end: float, t_end: float) -> float:
    """The longest gap between acknowledged appends that overlaps [start, end], not cut at end."""
    i = max(0, bisect.bisect_right(ordered, start) - 1)
    points = [*ordered, t_end]
    longest = 0.0
    while i < len(points) - 1 and points[i] <= end:
        longest = max(longest, points[i + 1] - max(points[i], start))
        i += 1
    if not ordered or ordered[0] > start:
        longest = max(longest, (ordered[0] if ordered else t_end) - start)
    return longest


# ---------------------------------------------------------------- the run


async def run_nemesis(
    tmp_path: Path,
    *,
    seed: int,
    nodes: int = 3,
    clients: int = 4,
    duration_s: float,
    schedule: list[str] | None = None,
    fault_s: float = DEFAULT_FAULT_S,
    quiet_s: float = DEFAULT_QUIET_S,
    snapshot_every: int = 10000,
    pace_s: float = 0.0,
) -> RunReport:
    """One run; returns its report. Raises only for harness failures."""
    report = RunReport(seed=seed, nodes=nodes, clients=clients)
    net = Network(seed)
    cluster = ProxiedCluster(tmp_path, net, nodes, snapshot_every=snapshot_every)
    try:
        cluster.start()
        cluster.wait_for_leader(timeout_s=CONVERGE_TIMEOUT_S)
        async with FaultClient(cluster.endpoints, cluster.real_address) as admin:
            await admin.create_stream(STREAM)
        recorder = HistoryRecorder()
        workload = Workload(cluster, recorder, seed, clients, pace_s)
        t0 = time.monotonic()
        nemesis = Nemesis(
            cluster, random.Random(seed), schedule, fault_s=fault_s, quiet_s=quiet_s, t0=t0
        )
        workload_task = asyncio.create_task(workload.run())
        await asyncio.to_thread(nemesis.run, t0 + duration_s)
        # Let the clients see the healed cluster for a moment before stopping.
        await asyncio.sleep(quiet_s)
        workload.stop.set()
        await workload_task
        t_end = time.monotonic()
        report.duration_s = t_end - t0
        report.faults = nemesis.events
        if nemesis.error is not None:
            raise RuntimeError(f"nemesis failed: {nemesis.error!r}") from nemesis.error
        _availability(report, workload.acked_at, t0, t_end)
        try:
            await asyncio.to_thread(_verify, cluster, recorder, report)
        except Exception as e:  # a harness step failed: report it with the figures
            report.violations.append(f"verification failed: {e!r}"[:2000])
    finally:
        with contextlib.suppress(Exception):
            cluster.stop()
        net.close()
        report.node_errors = _node_errors(cluster)
    _publish(report)
    return report


def _availability(report: RunReport, acked: list[float], t0: float, t_end: float) -> None:
    report.longest_unavailability_s = longest_gap(acked, t0, t_end)
    ordered = sorted(acked)
    for event in report.faults:
        start = t0 + event.start_s
        gap = longest_gap(acked, start, t0 + event.end_s)
        report.unavailability_by_fault_s[event.kind] = max(
            report.unavailability_by_fault_s.get(event.kind, 0.0), gap
        )
        outage = longest_outage(ordered, start, t0 + event.end_s, t_end)
        report.outage_by_fault_s[event.kind] = max(
            report.outage_by_fault_s.get(event.kind, 0.0), outage
        )


def _verify(cluster: ProxiedCluster, recorder: HistoryRecorder, report: RunReport) -> None:
    """After healing: convergence, one history check, identical streams and logs."""
    cluster.wait_for_leader(timeout_s=CONVERGE_TIMEOUT_S)
    statuses = cluster.wait_converged(timeout_s=CONVERGE_TIMEOUT_S)
    finals: dict[str, list[tuple[int, bytes]]] = {}
    for nid in cluster.node_ids:
        try:
            finals[nid] = cluster.read_stream(nid, STREAM)
        except grpc.RpcError as e:
            report.violations.append(
                f"{nid}: the final read failed: {e.code().name}: {e.details()}"
            )
    if not finals:
        return
    ref_id, reference = next(iter(finals.items()))
    for nid, final in finals.items():
        if final != reference:
            report.violations.append(
                f"{nid}'s stream differs from {ref_id}'s:"
                f" {len(final)} vs {len(reference)} records, first difference at"
                f" {_first_difference(final, reference)}"
            )
    result: CheckResult = check_history(recorder.history(), {STREAM: reference})
    report.histories_checked += 1
    report.violations += [str(v) for v in result.violations]
    report.appends, report.appends_ok = result.appends, result.appends_ok
    report.appends_uncertain, report.uncertain_appeared = (
        result.appends_uncertain,
        result.uncertain_appeared,
    )
    report.reads, report.reads_ok = result.reads, result.reads_ok
    report.final_records = len(reference)
    report.log_entries_compared = _compare_logs(cluster, statuses, report)


def _first_difference(a: list[tuple[int, bytes]], b: list[tuple[int, bytes]]) -> int | None:
    for x, y in zip(a, b, strict=False):
        if x != y:
            return x[0]
    return None if len(a) == len(b) else min(len(a), len(b)) + 1


def _compare_logs(
    cluster: ProxiedCluster, statuses: dict[str, pb.NodeStatus], report: RunReport
) -> int:
    """Entries every node still holds, up to the common commit index, must be identical."""
    commit = min(s.commit_index for s in statuses.values())
    logs = {
        nid: {e.index: e for e in cluster.read_log(nid) if e.index <= commit}
        for nid in cluster.node_ids
    }
    common = set.intersection(*(set(log) for log in logs.values()))
    ref_id = cluster.node_ids[0]
    for index in sorted(common):
        ref = logs[ref_id][index]
        key = (ref.term, ref.kind, ref.stream, ref.records, ref.size)
        for nid, log in logs.items():
            e = log[index]
            if (e.term, e.kind, e.stream, e.records, e.size) != key:
                report.violations.append(
                    f"log entry {index} differs: {ref_id} has {key},"
                    f" {nid} has {(e.term, e.kind, e.stream, e.records, e.size)}"
                )
            if not e.committed:
                report.violations.append(f"{nid}: entry {index} <= commit {commit} not committed")
    return len(common)


def _node_errors(cluster: ProxiedCluster) -> list[str]:
    """Tracebacks in node logs: a node must never crash on faults."""
    errors = []
    for nid in cluster.node_ids:
        log = cluster.log(nid)
        if "Traceback" in log:
            at = log.index("Traceback")
            errors.append(f"{nid}: {log[at : at + 2000]}")
    return errors


def _publish(report: RunReport) -> None:
    """Print the report; append it as a JSON line where RAILYARD_FAULTS_REPORT points."""
    print(f"\nnemesis run: {report.summary()}")
    for f in report.faults:
        print(f"  {f.start_s:7.2f}s..{f.end_s:7.2f}s {f.kind:15} {f.detail}")
    target = os.environ.get("RAILYARD_FAULTS_REPORT")
    if target:
        with open(target, "a") as out:
            out.write(report.to_json() + "\n")
