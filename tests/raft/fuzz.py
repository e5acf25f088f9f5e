"""A small randomized fault schedule over cores, with Raft's safety checks.

Used by test_random_schedules.py on a few seeds; the full simulator lives in
railyard.sim. Faults: loss, reordering, duplication, partitions, crashes that
lose everything not persisted, compaction and snapshots.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass, field

from railyard.raft import (
    Entry,
    EntryKind,
    Index,
    Message,
    MessageType,
    NodeId,
    NotLeader,
    ProposalDropped,
    RaftCore,
    Role,
    SnapshotMeta,
    Term,
)
from tests.raft.network import Disk, ids, make_config

# Probability weights of each action per step.
ACTIONS = (
    ("tick", 30),
    ("deliver", 40),
    ("ready", 25),
    ("drop", 3),
    ("duplicate", 2),
    ("propose", 8),
    ("partition", 1),
    ("heal", 2),
    ("crash", 1),
    ("restart", 3),
    ("compact", 1),
    ("transfer", 1),
    ("read", 2),
)


@dataclass
class Violation(Exception):
    seed: int
    step: int
    what: str

    def __str__(self) -> str:
        return f"seed {self.seed} step {self.step}: {self.what}"


@dataclass
class Fuzz:
    seed: int
    count: int = 3
    rng: random.Random = field(init=False)
    voters: tuple[NodeId, ...] = field(init=False)
    disks: dict[NodeId, Disk] = field(init=False)
    cores: dict[NodeId, RaftCore | None] = field(init=False)
    wire: list[Message] = field(default_factory=list)
    blocked: set[tuple[NodeId, NodeId]] = field(default_factory=set)
    leaders: dict[Term, NodeId] = field(default_factory=dict)
    committed: dict[Index, Entry] = field(default_factory=dict)
    proposals: int = 0
    step_number: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.voters = ids(self.count)
        self.disks = {node: Disk() for node in self.voters}
        self.cores = {node: None for node in self.voters}
        for node in self.voters:
            self.start(node)

    def start(self, node: NodeId) -> None:
        disk = self.disks[node]
        self.cores[node] = RaftCore(
            make_config(
                node,
                self.voters,
                election_ticks=5,
                max_inflight_appends=4,
                max_entries_per_append=3,
            ),
            random.Random(self.rng.random()),
            hard_state=disk.hard_state,
            snapshot=disk.snapshot,
            entries=list(disk.entries),
            applied=disk.applied_index,
        )

    def fail(self, what: str) -> None:
        raise Violation(self.seed, self.step_number, what)

    # ---------------------------------------------------------------- actions

    def live(self) -> list[NodeId]:
        return [n for n in self.voters if self.cores[n] is not None]

    def handle_ready(self, node: NodeId) -> None:
        core = self.cores[node]
        assert core is not None
        if not core.has_ready():
            return
        ready = core.ready()
        disk = self.disks[node]
        if ready.snapshot is not None:
            disk.install(ready.snapshot)
            disk.applied = []
            self.snapshot_applied_index = ready.snapshot.index
        self.wire.extend(ready.messages)
        disk.save_entries(ready.entries)
        if ready.hard_state is not None:
            if ready.hard_state.current_term < disk.hard_state.current_term:
                self.fail(f"{node} term went back")
            disk.hard_state = ready.hard_state
        self.wire.extend(ready.persisted_messages)
        for entry in ready.committed_entries:
            if entry.index <= disk.applied_index:
                continue
            if entry.index != disk.applied_index + 1:
                self.fail(f"{node} applies {entry.index} after {disk.applied_index}")
            known = self.committed.setdefault(entry.index, entry)
            if known != entry:
                self.fail(f"{node} applies {entry} but {known} was applied elsewhere")
            disk.applied.append(entry)
        core.advance(ready)

    def act(self, action: str) -> None:
        live = self.live()
        rng = self.rng
        if action == "tick" and live:
            self.cores[rng.choice(live)].tick()  # type: ignore[union-attr]
        elif action == "ready" and live:
            self.handle_ready(rng.choice(live))
        elif action == "deliver" and self.wire:
            # Mostly in order, sometimes reordered.
            position = 0 if rng.random() < 0.7 else rng.randrange(len(self.wire))
            message = self.wire.pop(position)
            core = self.cores[message.to]
            delivered = core is not None and (message.sender, message.to) not in self.blocked
            if delivered:
                core.step(message)  # type: ignore[union-attr]
            self.report_if_snapshot(message, delivered)
        elif action == "drop" and self.wire:
            self.report_if_snapshot(self.wire.pop(rng.randrange(len(self.wire))), False)
        elif action == "duplicate" and self.wire:
            self.wire.append(rng.choice(self.wire))
        elif action == "propose":
            self.propose()
        elif action == "partition":
            a, b = rng.sample(list(self.voters), 2)
            self.blocked.add((a, b))
            if rng.random() < 0.7:
                self.blocked.add((b, a))
        elif action == "heal":
            self.blocked.clear()
        elif action == "crash" and len(live) > 1:
            node = rng.choice(live)
            self.cores[node] = None
        elif action == "restart":
            down = [n for n in self.voters if self.cores[n] is None]
            if down:
                self.start(rng.choice(down))
        elif action == "compact":
            self.compact()
        elif action == "transfer":
            leader = self.leader()
            if leader is not None:
                self.cores[leader].transfer_leadership(rng.choice(self.voters))  # type: ignore[union-attr]
        elif action == "read" and live:
            with contextlib.suppress(NotLeader):
                self.cores[rng.choice(live)].read_index(rng.randrange(1, 1000))  # type: ignore[union-attr]

    def report_if_snapshot(self, message: Message, delivered: bool) -> None:
        """The driver tells the leader how a snapshot transfer ended, as the node does."""
        sender = self.cores[message.sender]
        if message.type is MessageType.SNAPSHOT and sender is not None:
            sender.report_snapshot(message.to, delivered)

    def propose(self) -> None:
        leader = self.leader()
        if leader is None:
            return
        self.proposals += 1
        with contextlib.suppress(ProposalDropped):
            self.cores[leader].propose_batch(  # type: ignore[union-attr]
                [
                    f"{self.seed}:{self.proposals}:{i}".encode()
                    for i in range(self.rng.randrange(1, 4))
                ]
            )

    def compact(self) -> None:
        live = self.live()
        if not live:
            return
        node = self.rng.choice(live)
        core = self.cores[node]
        disk = self.disks[node]
        assert core is not None
        index = disk.applied_index
        if index <= core.log.snapshot_index or index > core.log.applying:
            return
        term = core.log.term(index)
        assert term is not None
        meta = SnapshotMeta(index, term, self.voters)
        core.compact(meta)
        disk.snapshot = meta
        disk.entries = [e for e in disk.entries if e.index > index]

    def leader(self) -> NodeId | None:
        best: NodeId | None = None
        for node in self.live():
            core = self.cores[node]
            assert core is not None
            if core.role is Role.LEADER and (
                best is None or core.current_term > self.cores[best].current_term  # type: ignore[union-attr]
            ):
                best = node
        return best

    # ---------------------------------------------------------------- checks

    def check(self) -> None:
        for node in self.live():
            core = self.cores[node]
            assert core is not None
            core.check_invariants()
            if core.role is Role.LEADER:
                known = self.leaders.setdefault(core.current_term, node)
                if known != node:
                    self.fail(f"two leaders in term {core.current_term}: {known}, {node}")
                self.check_completeness(node, core)

    def check_completeness(self, node: NodeId, core: RaftCore) -> None:
        for index, entry in self.committed.items():
            term = core.log.term(index)
            if term is not None and term != entry.term:
                self.fail(f"leader {node} lacks committed {entry}")
            if index > core.log.last_index:
                self.fail(f"leader {node} log too short for committed {index}")

    def check_log_matching(self) -> None:
        live = [self.cores[n] for n in self.live()]
        for a_index, a in enumerate(live):
            for b in live[a_index + 1 :]:
                assert a is not None and b is not None
                lo = max(a.log.first_index, b.log.first_index)
                hi = min(a.log.last_index, b.log.last_index)
                matched = False
                for index in range(hi, lo - 1, -1):
                    ta, tb = a.log.term(Index(index)), b.log.term(Index(index))
                    if matched and ta != tb:
                        self.fail(f"logs of {a.node_id} and {b.node_id} diverge at {index}")
                    if ta == tb:
                        matched = True
                        ea = a.log_entries(Index(index), Index(index + 1))
                        eb = b.log_entries(Index(index), Index(index + 1))
                        if ea != eb:
                            self.fail(f"same index/term, different entries at {index}")

    def run(self, steps: int) -> None:
        names = [name for name, _ in ACTIONS]
        weights = [weight for _, weight in ACTIONS]
        for self.step_number in range(steps):
            self.act(self.rng.choices(names, weights)[0])
            self.check()
            if self.step_number % 50 == 0:
                self.check_log_matching()
        self.heal_and_check_liveness()

    def heal_and_check_liveness(self) -> None:
        self.blocked.clear()
        for node in self.voters:
            if self.cores[node] is None:
                self.start(node)
        for _ in range(400):
            for node in self.voters:
                self.cores[node].tick()  # type: ignore[union-attr]
            self.flush()
            if self.leader() is not None:
                break
        leader = self.leader()
        if leader is None:
            raise Violation(self.seed, self.step_number, "no leader after healing")
        for _ in range(50):
            try:
                index = self.cores[leader].propose(b"final")  # type: ignore[union-attr]
                break
            except ProposalDropped:
                for node in self.voters:
                    self.cores[node].tick()  # type: ignore[union-attr]
                self.flush()
                leader = self.leader()
                assert leader is not None
        for _ in range(100):
            for node in self.voters:
                self.cores[node].tick()  # type: ignore[union-attr]
            self.flush()
            if all(self.disks[n].applied_index >= index for n in self.voters):
                break
        else:
            self.fail(f"index {index} not applied everywhere after healing")
        self.check_log_matching()

    def flush(self) -> None:
        for _ in range(10_000):
            for node in self.voters:
                self.handle_ready(node)
            if not self.wire:
                return
            message = self.wire.pop(0)
            core = self.cores[message.to]
            if core is not None:
                core.step(message)
            self.report_if_snapshot(message, core is not None)
            self.check()
        self.fail("no quiescence")


def run_seed(seed: int, steps: int = 2000, count: int = 3) -> Fuzz:
    fuzz = Fuzz(seed, count)
    fuzz.run(steps)
    return fuzz


__all__ = ["EntryKind", "MessageType", "Violation", "run_seed"]
