"""One seed's history: N cores, a faulty network, crashing drivers, busy clients.

Time advances in units (`TICK_UNITS` per core tick) through one event heap:
message deliveries, node ticks, fsync completions and transport reports.
Events of the same instant are handled first, then every node they touched
drives its core (drain its inbox, take a Ready, handle it), so a node sees a
batch of inputs per instant as a real driver loop would.

Each tick the schedule may crash, restart, pause or partition nodes, and
clients propose unique values, read, compact, force elections and transfer
leadership. At the end every fault heals and the liveness check runs.

Everything random comes from one `random.Random(seed)`; every core gets its
own `random.Random` seeded from it. No set or dict of strings is iterated
where order matters, so a seed replays the same history in any process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from railyard.raft import (
    ConfChangeError,
    Index,
    Membership,
    MessageType,
    NodeId,
    NotLeader,
    ProposalDropped,
    RaftConfig,
    Role,
    UnknownPeer,
)
from railyard.sim import membership
from railyard.sim.checker import READY_CONTRACT, Checker, Violation
from railyard.sim.network import TICK_UNITS, Network
from railyard.sim.node import Event, SimNode
from railyard.sim.scenario import Scenario, draw_scenario

# Only the leader of a term sends these: each one witnesses who led its term,
# even a leader that stepped down before its driver saw it lead.
FROM_LEADER = frozenset({MessageType.APPEND, MessageType.HEARTBEAT, MessageType.SNAPSHOT})
# Messages that promise durable state (see SimNode.check_promise).
PROMISES = frozenset(
    {
        MessageType.VOTE,
        MessageType.VOTE_RESPONSE,
        MessageType.APPEND_RESPONSE,
        MessageType.SNAPSHOT_RESPONSE,
    }
)
# The election timeout of every core, in ticks (the core's default).
ELECTION_TICKS = 10
# A message lost to a crash or a cut link: how often the transport notices and
# tells the sender (ReportUnreachable); the rest time out silently.
REPORT_UNREACHABLE = 0.5
# A compaction mostly snapshots right up to applied, as a node compacting every
# N entries does; the rest pick any point, leaving older snapshots in play.
COMPACT_AT_APPLIED = 0.7


@dataclass
class Stats:
    """What a seed's history contained, to show a run did real work."""

    ticks: int = 0
    messages: int = 0
    crashes: int = 0
    elections: int = 0
    committed: int = 0
    reads: int = 0
    snapshots_sent: int = 0


@dataclass
class Simulation:
    """The nodes, the network, the clock and the event heap of one seed."""

    seed: int
    node_count: int
    tracing: bool = False
    # Tests may reshape the seed's drawn scenario (e.g. to storm one fault kind).
    tweak: Callable[[Scenario], Scenario] | None = None
    # Spare nodes and random membership changes (`railyard.sim.membership`).
    membership: bool = False
    rng: random.Random = field(init=False)
    initial: Membership = field(init=False)
    scenario: Scenario = field(init=False)
    network: Network = field(init=False)
    checker: Checker = field(init=False)
    nodes: dict[NodeId, SimNode] = field(init=False)
    order: list[SimNode] = field(init=False)
    heap: list[tuple[int, int, str, Any]] = field(default_factory=list)
    now: int = 0
    seq: int = 0
    next_value: int = 0
    next_read: int = 1
    trace: list[str] = field(default_factory=list)
    stats: Stats = field(default_factory=Stats)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.scenario = draw_scenario(self.rng)
        if self.membership:
            # Drawn only here, so histories without membership changes stay the same.
            rate = self.rng.choice(membership.CHANGE_RATES)
            self.scenario = dataclasses.replace(self.scenario, membership=rate)
        if self.tweak is not None:
            self.scenario = self.tweak(self.scenario)
        self.network = Network(self.rng, self.scenario.network)
        self.checker = Checker()
        ids = tuple(NodeId(f"n{k + 1}") for k in range(self.node_count))
        self.initial = Membership.of_voters(ids)
        spares = membership.spare_ids(self.node_count) if self.membership else ()
        sc = self.scenario
        self.order = [
            SimNode(
                node_id,
                RaftConfig(
                    node_id,
                    ids if node_id in ids else (),  # a spare joins with no configuration
                    election_ticks=ELECTION_TICKS,
                    heartbeat_ticks=sc.heartbeat_ticks,
                    pre_vote=sc.pre_vote,
                    check_quorum=sc.check_quorum,
                    max_inflight_appends=sc.max_inflight_appends,
                    max_entries_per_append=sc.max_entries_per_append,
                ),
                self.checker,
            )
            for node_id in ids + spares
        ]
        self.nodes = {node.node_id: node for node in self.order}
        self.checker.nodes = list(self.order)
        self.note(f"seed {self.seed}: {sc}")
        for node in self.order:
            self.boot(node)

    # --- bookkeeping ---------------------------------------------------------

    def note(self, text: str) -> None:
        if self.tracing:
            self.trace.append(f"{self.now:>7} {text}")

    def schedule(self, at: int, kind: str, data: Any) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (at, self.seq, kind, data))

    def live(self) -> list[SimNode]:
        return [node for node in self.order if node.alive]

    def boot(self, node: SimNode) -> None:
        node.boot(random.Random(self.rng.getrandbits(64)))
        node.paused_until = -1
        self.schedule(self.now + self.rng.randint(1, TICK_UNITS), "tick", (node, node.incarnation))
        self.note(f"{node.node_id} boots: {node.disk.hard_state}, log {node.log.last_index}")

    def crash(self, node: SimNode, why: str) -> None:
        node.crash()
        self.stats.crashes += 1
        self.note(f"{node.node_id} crashes ({why})")

    # --- the event loop ------------------------------------------------------

    def run_until(self, end: int) -> None:
        heap = self.heap
        while heap and heap[0][0] <= end:
            self.now = now = heap[0][0]
            touched: list[SimNode] = []
            while heap and heap[0][0] == now:
                _, _, kind, data = heapq.heappop(heap)
                node = self.handle(kind, data)
                if node is not None and node not in touched:
                    touched.append(node)
            for node in touched:
                self.drive(node)
        self.now = end

    def handle(self, kind: str, data: Any) -> SimNode | None:
        """Handle one timed event; returns the node whose driver should run."""
        if kind == "deliver":
            return self.deliver(*data)
        node: SimNode = data[0]
        incarnation: int = data[1]
        if node.incarnation != incarnation or not node.alive:
            return None
        if kind == "tick":
            self.schedule(self.now + self.tick_interval(), "tick", data)
            if node.paused_until > self.now:
                return None  # a paused process misses its timer
            node.inbox.append(("tick",))
        elif kind == "persist":
            if node.paused_until > self.now:
                self.schedule(node.paused_until, "persist", data)
                return None
            self.complete_ready(node)
        elif kind == "report":
            node.inbox.append(data[2])
        return node  # "resume" and the above

    def tick_interval(self) -> int:
        skew = self.scenario.clock_skew
        if skew and self.rng.random() < skew:
            return TICK_UNITS + self.rng.choice((-1, 1))
        return TICK_UNITS

    def deliver(self, msg: Any, payload: Any, sender_incarnation: int) -> SimNode | None:
        target = self.nodes[msg.to]
        sender = self.nodes[msg.sender]
        lost = not target.alive or self.network.blocked(msg.sender, msg.to)
        if msg.type is MessageType.SNAPSHOT:
            # The transport tells the sender how streaming the snapshot file went.
            self.report(sender, sender_incarnation, ("snap_report", msg.to, not lost))
        if lost:
            if self.tracing:
                self.note(f"lost at delivery: {_describe(msg)}")
            if self.rng.random() < REPORT_UNREACHABLE:
                self.report(sender, sender_incarnation, ("unreachable", msg.to))
            return None
        target.inbox.append(("msg", msg, payload))
        return target

    def report(self, node: SimNode, incarnation: int, event: Event) -> None:
        self.schedule(self.now + 1, "report", (node, incarnation, event))

    def send(self, node: SimNode, messages: tuple[Any, ...]) -> None:
        network = self.network
        for msg in messages:
            if msg.to not in self.nodes or msg.sender != node.node_id:
                raise Violation(READY_CONTRACT, f"{node.node_id} sends a misaddressed {msg}")
            if msg.type in FROM_LEADER:
                self.checker.check_sent_by_leader(msg)
            elif msg.type in PROMISES:
                node.check_promise(msg)
            payload = None
            if msg.type is MessageType.SNAPSHOT:
                payload = node.snapshot_payload(msg)
                self.stats.snapshots_sent += 1
            self.stats.messages += 1
            delays = network.delays()
            if self.tracing and len(delays) != 1:
                fate = "dropped" if not delays else "duplicated"
                self.note(f"{fate} by the network: {_describe(msg)}")
            for delay in delays:
                self.schedule(self.now + delay, "deliver", (msg, payload, node.incarnation))
            if not delays and payload is not None:
                # The snapshot stream failed: the transport tells the sender.
                self.report(node, node.incarnation, ("snap_report", msg.to, False))

    # --- the driver ----------------------------------------------------------

    def drive(self, node: SimNode) -> None:
        """Run `node`'s driver loop until it waits for an fsync or has nothing to do."""
        while node.alive and node.pending is None and node.paused_until <= self.now:
            core = node.core
            assert core is not None
            inbox = node.inbox
            while inbox:
                event = inbox.popleft()
                if event[0] == "msg" and event[2] is None:
                    core.step(event[1])  # the common case, without the dispatch
                else:
                    self.process(node, event)
            if not core.has_ready():
                return
            was_leader = node.role is Role.LEADER
            ready = node.take_ready()
            if node.role is Role.LEADER and not was_leader:
                self.stats.elections += 1
                self.note(f"{node.node_id} leads term {node.term}")
            if self.tracing:
                self.note_ready(node, ready)
            self.send(node, ready.messages)
            sc = self.scenario
            if sc.slow_persist and self.rng.random() < sc.slow_persist:
                delay = self.rng.randint(1, TICK_UNITS)
                self.note(f"{node.node_id} fsync takes {delay} units")
                self.schedule(self.now + delay, "persist", (node, node.incarnation))
                return
            self.complete_ready(node)

    def complete_ready(self, node: SimNode) -> None:
        ready = node.pending
        assert ready is not None
        node.persist()
        sc = self.scenario
        if sc.crash_after_persist and self.rng.random() < sc.crash_after_persist:
            self.crash(node, "after its fsync, before sending persisted messages")
            return
        self.send(node, ready.persisted_messages)
        served = node.finish()
        self.stats.reads += len(served)
        self.stats.committed = max(self.stats.committed, len(self.checker.committed))

    def note_ready(self, node: SimNode, ready: Any) -> None:
        parts = [f"{node.node_id} ready"]
        if ready.soft_state:
            parts.append(f"soft={ready.soft_state.role.value}/{ready.soft_state.leader_id}")
        if ready.hard_state:
            hs = ready.hard_state
            parts.append(f"hard=t{hs.current_term}/v{hs.voted_for}/c{hs.commit_index}")
        if ready.entries:
            parts.append(f"entries={ready.entries[0].index}..{ready.entries[-1].index}")
        if ready.snapshot:
            parts.append(f"snapshot={ready.snapshot.index}")
        if ready.committed_entries:
            parts.append(f"apply={[e.index for e in ready.committed_entries]}")
        if ready.read_states:
            parts.append(f"reads={[(r.context, r.index) for r in ready.read_states]}")
        for msg in ready.messages:
            parts.append(f"\n          -> {_describe(msg)}")
        for msg in ready.persisted_messages:
            parts.append(f"\n          => {_describe(msg)} (after the fsync)")
        self.note(" ".join(parts))

    def process(self, node: SimNode, event: Event) -> None:
        """Hand one input to the core, as the node's driver would."""
        core = node.core
        assert core is not None
        kind = event[0]
        if kind == "msg":
            msg = event[1]
            if msg.type is MessageType.SNAPSHOT:
                meta = msg.snapshot
                node.received[(meta.index, meta.term)] = event[2]  # the file lands first
            core.step(msg)
        elif kind == "tick":
            core.tick()
        elif kind == "propose":
            self.propose(node, event[1], event[2])
        elif kind == "read":
            try:
                core.read_index(event[1])
            except NotLeader:
                self.checker.reads.pop(event[1], None)
        elif kind == "campaign":
            core.campaign()
        elif kind == "transfer":
            with contextlib.suppress(NotLeader, UnknownPeer):
                core.transfer_leadership(event[1])
        elif kind == "conf":
            try:
                # The operator's guard of `member remove` (without --force).
                if not core.keeps_live_quorum(event[1]):
                    self.note(f"{node.node_id}: {event[1]} would leave no live quorum")
                    return
                index = core.propose_conf_change(event[1])
                self.note(f"{node.node_id} accepts {event[1]} at {index}")
            except (NotLeader, ProposalDropped, ConfChangeError) as refused:
                self.note(f"{node.node_id} refuses {event[1]}: {refused}")
        elif kind == "compact":
            base = node.snapshot.index if node.snapshot else 0
            if node.applied > base:
                if self.rng.random() < COMPACT_AT_APPLIED:
                    index = node.applied
                else:
                    index = Index(self.rng.randint(base + 1, node.applied))
                node.compact(index)
                self.note(f"{node.node_id} compacts to {index}")
        elif kind == "snap_report":
            core.report_snapshot(event[1], event[2])
        elif kind == "unreachable":
            core.report_unreachable(event[1])

    def propose(self, node: SimNode, values: list[bytes], forward: bool) -> None:
        core = node.core
        assert core is not None
        try:
            index = core.propose(values[0]) if len(values) == 1 else core.propose_batch(values)
            self.note(f"{node.node_id} accepts {len(values)} values at {index}")
        except NotLeader as err:
            hint = self.nodes.get(err.leader_id) if err.leader_id else None
            if forward and hint is not None and hint.alive:
                hint.inbox.append(("propose", values, False))
                self.schedule(self.now + 1, "resume", (hint, hint.incarnation))
        except ProposalDropped:
            pass


def _describe(msg: Any) -> str:
    """One line per message for traces: only the fields its type uses."""
    text = f"{msg.type.value} {msg.sender}->{msg.to} t{msg.term}"
    kind = msg.type
    if kind in (MessageType.VOTE, MessageType.PRE_VOTE):
        text += f" last={msg.last_log_index}/t{msg.last_log_term}"
    elif kind in (MessageType.VOTE_RESPONSE, MessageType.PRE_VOTE_RESPONSE):
        text += f" granted={msg.vote_granted}"
    elif kind is MessageType.APPEND:
        span = f"{msg.entries[0].index}..{msg.entries[-1].index}" if msg.entries else "-"
        text += (
            f" prev={msg.prev_log_index}/t{msg.prev_log_term} entries={span}"
            f" commit={msg.leader_commit}"
        )
    elif kind in (MessageType.APPEND_RESPONSE, MessageType.SNAPSHOT_RESPONSE):
        text += f" ok={msg.success} match={msg.match_index}"
        if not msg.success:
            text += f" hint={msg.conflict_index}/t{msg.conflict_term}"
    elif kind is MessageType.HEARTBEAT:
        text += f" commit={msg.leader_commit} ctx={msg.context}"
    elif kind is MessageType.SNAPSHOT and msg.snapshot is not None:
        text += f" snapshot={msg.snapshot.index}/t{msg.snapshot.term}"
    elif kind in (MessageType.READ_INDEX, MessageType.READ_INDEX_RESPONSE):
        text += f" ctx={msg.context} index={msg.read_index} ok={msg.success}"
    return text
