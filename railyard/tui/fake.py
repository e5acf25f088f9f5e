"""A scripted `DashboardSource` for tests and layout work: no network at all.

`FakeSource` hands out queued `StatusUpdate`s per endpoint, then waits for
more (tests `push()` them). `demo_source()` builds a deterministic three-node
cluster with a minute of commit history, used by the snapshot tests so the
screen is the same on every run.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence

from railyard.proto import railyard_pb2 as pb
from railyard.tui.source import StatusUpdate

# The demo's fixed instant: 2026-01-02 03:04:05 UTC, so event times print the same everywhere.
DEMO_NOW = 1767323045.0
DEMO_CLUSTER = "demo"
DEMO_HISTORY_S = 60


class FakeSource:
    """Queued updates per endpoint, canned log tails, recorded transfers."""

    def __init__(
        self,
        endpoints: Sequence[str],
        updates: Iterable[StatusUpdate] = (),
        logs: dict[str, list[pb.LogEntryInfo]] | None = None,
    ) -> None:
        self._endpoints = tuple(endpoints)
        self._queues: dict[str, asyncio.Queue[StatusUpdate]] = {
            endpoint: asyncio.Queue() for endpoint in self._endpoints
        }
        self.logs: dict[str, list[pb.LogEntryInfo]] = dict(logs or {})
        self.transfers: list[str] = []
        self.transfer_error: Exception | None = None
        self.delivered = 0
        self.watch_intervals: list[float] = []
        self.closed = False
        for update in updates:
            self.push(update)

    @property
    def endpoints(self) -> Sequence[str]:
        return self._endpoints

    @property
    def pending(self) -> int:
        return sum(queue.qsize() for queue in self._queues.values())

    def push(self, update: StatusUpdate) -> None:
        self._queues[update.endpoint].put_nowait(update)

    async def watch(self, endpoint: str, interval_s: float) -> AsyncIterator[StatusUpdate]:
        self.watch_intervals.append(interval_s)
        queue = self._queues[endpoint]
        while True:
            update = await queue.get()
            self.delivered += 1
            yield update

    async def read_log(self, endpoint: str, count: int) -> list[pb.LogEntryInfo]:
        return self.logs.get(endpoint, [])[-count:]

    async def transfer_leadership(self, to: str) -> pb.TransferLeadershipResponse:
        self.transfers.append(to)
        if self.transfer_error is not None:
            raise self.transfer_error
        return pb.TransferLeadershipResponse(leader=to)

    async def close(self) -> None:
        self.closed = True


# ---------------------------------------------------------------- demo data

DEMO_ENDPOINTS = ("127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003")
DEMO_IDS = ("n1", "n2", "n3")
_DEMO_TERM = 7
_DEMO_ELECTION_S = 8
_DEMO_OUTAGE_S = 5
_DEMO_COMMITS_PER_S = (40, 120, 80, 200, 150, 90, 60, 180, 220, 130)


def demo_status(
    index: int,
    *,
    commit: int,
    leader: str = "n1",
    term: int = _DEMO_TERM,
    snapshots_taken: int = 1,
) -> pb.NodeStatus:
    """A plausible status of demo node `index` (0-based) at commit index `commit`."""
    node_id = DEMO_IDS[index]
    is_leader = node_id == leader
    lag = 0 if is_leader else index * 3
    status = pb.NodeStatus(
        cluster=DEMO_CLUSTER,
        node_id=node_id,
        address=DEMO_ENDPOINTS[index],
        role=pb.ROLE_LEADER if is_leader else pb.ROLE_FOLLOWER,
        term=term,
        leader_id=leader,
        commit_index=commit - lag,
        applied_index=commit - lag,
        last_log_index=commit - lag + (2 if is_leader else 0),
        snapshot_index=(commit // 10_000) * 10_000,
        voted_for=leader,
        last_contact_ms_ago=12 if is_leader else 40 + 10 * index,
        uptime_ms=3_600_000,
        snapshots_taken=snapshots_taken,
        fsync_p99_ms=2.5 + index,
        apply_lag=index,
        proposals_per_s=1_250.0,
        disk_free_bytes=(40 - index) << 30,
    )
    if is_leader:
        for member_index, member_id in enumerate(DEMO_IDS):
            # The last demo node is a learner still catching up.
            learner = member_index == len(DEMO_IDS) - 1
            status.members.add(
                id=member_id,
                address=DEMO_ENDPOINTS[member_index],
                role="learner" if learner else "voter",
                reachable=True,
                match_index=commit - member_index * 3,
            )
        status.config_index = 1
        for peer_index, peer_id in enumerate(DEMO_IDS):
            if peer_id != node_id:
                status.peers.add(
                    node_id=peer_id,
                    match_index=commit - peer_index * 3,
                    next_index=commit - peer_index * 3 + 1,
                    state="replicate",
                    last_contact_ms_ago=40 + 10 * peer_index,
                    round_trip_ms=0.4 * peer_index,
                )
        status.streams.add(
            name="orders",
            first_sequence=1,
            last_sequence=commit * 3,
            record_count=commit * 3,
            bytes=commit * 3 * 212,
        )
        status.streams.add(
            name="clicks",
            first_sequence=501,
            last_sequence=9_000,
            record_count=8_500,
            bytes=1_204_113,
        )
        status.streams.add(name="audit-log", first_sequence=0, last_sequence=0)
    return status


def demo_log(commit: int, count: int = 40) -> list[pb.LogEntryInfo]:
    """A log tail ending just past `commit` (the last two entries not yet committed)."""
    entries: list[pb.LogEntryInfo] = []
    first = commit + 2 - count + 1
    for index in range(first, commit + 3):
        if index % 17 == 0:
            entry = pb.LogEntryInfo(index=index, term=_DEMO_TERM, kind="noop", size=0)
        elif index % 13 == 0:
            entry = pb.LogEntryInfo(
                index=index, term=_DEMO_TERM, kind="create_stream", stream="clicks", size=24
            )
        else:
            stream = "orders" if index % 3 else "clicks"
            records = 1 + index % 7
            entry = pb.LogEntryInfo(
                index=index,
                term=_DEMO_TERM,
                kind="append",
                stream=stream,
                records=records,
                size=records * 212,
            )
        entry.committed = index <= commit
        entries.append(entry)
    return entries


def demo_updates(now: float = DEMO_NOW, history_s: int = DEMO_HISTORY_S) -> list[StatusUpdate]:
    """`history_s` of status: an election, steady commits, then n3 goes down."""
    updates: list[StatusUpdate] = []
    commit = 10_000 - 40
    # The election happens early in the history, n3's outage at its end.
    election_s = min(_DEMO_ELECTION_S, history_s // 4)
    outage_s = min(_DEMO_OUTAGE_S, history_s // 2)
    for second in range(history_s + 1):
        at = now - history_s + second
        commit += _DEMO_COMMITS_PER_S[second % len(_DEMO_COMMITS_PER_S)]
        taken = 1 if second < history_s // 2 else 2
        # n2 led term 6, n1 took over in term 7.
        leader, term = ("n2", _DEMO_TERM - 1) if second < election_s else ("n1", _DEMO_TERM)
        for index, endpoint in enumerate(DEMO_ENDPOINTS):
            if index == 2 and second >= history_s - outage_s:
                continue
            status = demo_status(
                index, commit=commit, leader=leader, term=term, snapshots_taken=taken
            )
            updates.append(StatusUpdate(endpoint, at, status))
    updates.append(
        StatusUpdate(
            DEMO_ENDPOINTS[2],
            now - outage_s + 1,
            None,
            "UNAVAILABLE: failed to connect to all addresses",
        )
    )
    return updates


def demo_source(now: float = DEMO_NOW, history_s: int = DEMO_HISTORY_S) -> FakeSource:
    """The deterministic three-node demo cluster the snapshot tests show."""
    updates = demo_updates(now, history_s)
    last_commit = max(u.status.commit_index for u in updates if u.status is not None)
    logs = {endpoint: demo_log(last_commit) for endpoint in DEMO_ENDPOINTS}
    return FakeSource(DEMO_ENDPOINTS, updates, logs)
