"""A tiny in-test network of Raft cores: delivers messages, handles Ready/advance.

Each node has a "disk" (hard state, log, snapshot) written exactly as a
driver would, so `crash`/`restart` rebuild a core from what it persisted.
Messages are delivered FIFO; links can be cut per direction.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from railyard.raft import (
    NO_INDEX,
    Entry,
    EntryKind,
    HardState,
    Index,
    Message,
    MessageType,
    NodeId,
    RaftConfig,
    RaftCore,
    ReadState,
    Ready,
    Role,
    SnapshotMeta,
)

# Enough rounds for any test scenario to settle; a bound so a livelock fails fast.
MAX_DELIVERY_ROUNDS = 100_000


def ids(count: int) -> tuple[NodeId, ...]:
    return tuple(NodeId(f"n{number}") for number in range(1, count + 1))


@dataclass
class Disk:
    """What a node made durable."""

    hard_state: HardState = field(default_factory=HardState)
    entries: list[Entry] = field(default_factory=list)
    snapshot: SnapshotMeta | None = None
    applied: list[Entry] = field(default_factory=list)  # the state machine's history

    def save_entries(self, entries: Iterable[Entry]) -> None:
        batch = list(entries)
        if not batch:
            return
        first = batch[0].index
        base = self.snapshot.index if self.snapshot else 0
        del self.entries[max(first - base - 1, 0) :]
        self.entries.extend(batch)

    def install(self, snapshot: SnapshotMeta) -> None:
        self.snapshot = snapshot
        self.entries = []

    @property
    def applied_index(self) -> Index:
        if self.applied:
            return self.applied[-1].index
        return self.snapshot.index if self.snapshot else NO_INDEX


def make_config(node_id: NodeId, voters: tuple[NodeId, ...], **overrides: object) -> RaftConfig:
    return RaftConfig(node_id, voters, **overrides)  # type: ignore[arg-type]


class Network:
    """Cores wired together; `settle()` runs until no message or Ready is left.

    `spares` more nodes run with no configuration, as nodes that join later.
    """

    def __init__(self, count: int = 3, *, seed: int = 0, spares: int = 0, **config: object) -> None:
        self.voters = ids(count)
        self.nodes = ids(count + spares)
        self.seed = seed
        self.config_overrides = config
        self.disks: dict[NodeId, Disk] = {node: Disk() for node in self.nodes}
        self.cores: dict[NodeId, RaftCore] = {}
        self.read_states: dict[NodeId, list[ReadState]] = {node: [] for node in self.nodes}
        self.queue: deque[Message] = deque()
        self.cut_links: set[tuple[NodeId, NodeId]] = set()
        self.down: set[NodeId] = set()
        self.delivered: list[Message] = []
        self.drop_types: set[MessageType] = set()
        for node in self.nodes:
            self.cores[node] = self._new_core(node)

    def _new_core(self, node: NodeId) -> RaftCore:
        disk = self.disks[node]
        rng = random.Random(f"{self.seed}-{node}-{len(self.delivered)}")
        bootstrap = self.voters if node in self.voters else ()
        return RaftCore(
            make_config(node, bootstrap, **self.config_overrides),
            rng,
            hard_state=disk.hard_state,
            snapshot=disk.snapshot,
            entries=list(disk.entries),
            applied=disk.applied_index,
        )

    # ------------------------------------------------------------ driving

    def handle_ready(self, node: NodeId) -> Ready | None:
        core = self.cores[node]
        if not core.has_ready():
            return None
        ready = core.ready()
        disk = self.disks[node]
        if ready.snapshot is not None:
            disk.install(ready.snapshot)
        self.queue.extend(ready.messages)
        disk.save_entries(ready.entries)
        if ready.hard_state is not None:
            disk.hard_state = ready.hard_state
        self.queue.extend(ready.persisted_messages)
        disk.applied.extend(e for e in ready.committed_entries if e.index > disk.applied_index)
        self.read_states[node].extend(ready.read_states)
        core.advance(ready)
        return ready

    def handle_all_ready(self) -> bool:
        progressed = False
        for node in self.nodes:
            if node not in self.down:
                while self.handle_ready(node) is not None:
                    progressed = True
        return progressed

    def deliver_one(self) -> bool:
        if not self.queue:
            return False
        message = self.queue.popleft()
        if (
            message.to in self.down
            or message.sender in self.down
            or (message.sender, message.to) in self.cut_links
            or message.type in self.drop_types
        ):
            return True
        self.delivered.append(message)
        self.cores[message.to].step(message)
        return True

    def settle(self) -> None:
        for _ in range(MAX_DELIVERY_ROUNDS):
            self.handle_all_ready()
            if not self.deliver_one() and not self.handle_all_ready():
                return
        raise AssertionError("network did not settle")

    def tick(self, nodes: Iterable[NodeId] | None = None, times: int = 1) -> None:
        """Tick nodes (default: all up) `times` times, settling after each tick."""
        chosen = list(nodes) if nodes is not None else [n for n in self.nodes if n not in self.down]
        for _ in range(times):
            for node in chosen:
                self.cores[node].tick()
            self.settle()

    # ------------------------------------------------------------ scenarios

    def elect(self, node: NodeId) -> None:
        """Elect `node` as after its voters stopped hearing from any leader: only a
        transfer the leader asked for breaks a live lease (`raft/election.py`)."""
        for other in self.voters:
            core = self.cores[other]
            if other != node and core.role is not Role.LEADER:
                core.election_elapsed = max(core.election_elapsed, core.config.election_ticks)
        self.cores[node].campaign()
        self.settle()
        assert self.cores[node].role is Role.LEADER, self.cores[node].status()

    def leader(self) -> NodeId | None:
        leaders = [
            n for n in self.nodes if n not in self.down and self.cores[n].role is Role.LEADER
        ]
        top = max((self.cores[n].current_term for n in leaders), default=None)
        found = [n for n in leaders if self.cores[n].current_term == top]
        return found[0] if found else None

    def propose(self, node: NodeId, *datas: bytes) -> Index:
        index = self.cores[node].propose_batch(datas)
        self.settle()
        return index

    def isolate(self, node: NodeId) -> None:
        for other in self.nodes:
            if other != node:
                self.cut_links.add((node, other))
                self.cut_links.add((other, node))

    def cut(self, a: NodeId, b: NodeId) -> None:
        self.cut_links.add((a, b))
        self.cut_links.add((b, a))

    def heal(self) -> None:
        self.cut_links.clear()

    def crash(self, node: NodeId) -> None:
        """Lose everything not durable: the core's memory and undelivered messages to it."""
        self.down.add(node)
        self.queue = deque(m for m in self.queue if m.to != node and m.sender != node)

    def restart(self, node: NodeId) -> None:
        self.down.discard(node)
        self.cores[node] = self._new_core(node)

    def applied_data(self, node: NodeId) -> list[bytes]:
        return [e.data for e in self.disks[node].applied if e.kind is EntryKind.NORMAL]

    def commit_indexes(self) -> dict[NodeId, Index]:
        return {n: self.cores[n].log.committed for n in self.nodes}
