"""The randomized schedule of one seed: faults and client requests per tick, then healing.

`run_seed` is the simulator's entry point: it builds a `Simulation`, plays
`steps` ticks of faults and requests, checking every property as each Ready
is handled, heals every fault, and checks liveness: a leader within a
bounded number of ticks and values proposed after the heal applied on every
node.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from railyard.raft import Index, NodeId, Role
from railyard.sim import membership
from railyard.sim.checker import CORE_ERROR, LIVENESS, READY_CONTRACT, Violation
from railyard.sim.cluster import ELECTION_TICKS, Simulation, Stats
from railyard.sim.network import TICK_UNITS, NetworkFaults
from railyard.sim.node import SimNode
from railyard.sim.scenario import Scenario

# Ticks of faults and requests per seed, unless --steps says otherwise.
DEFAULT_STEPS = 300
# Liveness bounds, in ticks after the heal: a leader within 20 election timeouts
# (randomized timeouts make repeated split votes unlikely long before that), and
# the values proposed then applied everywhere within as many again.
ELECTION_BOUND_TICKS = 20 * ELECTION_TICKS
COMMIT_BOUND_TICKS = 20 * ELECTION_TICKS
# Values proposed after the heal, which must be applied on every node.
LIVENESS_VALUES = 3
# A proposal the leader accepted but lost (a leader change) is retried after this.
LIVENESS_RETRY_TICKS = 3 * ELECTION_TICKS
# Longest GC-like pause of a node, in election timeouts.
MAX_PAUSE_ELECTIONS = 3
# Round trips (about a tick each) allowed per full replication window of backlog.
BACKLOG_SLACK = 2
# Every this many ticks each idle core's whole log is compared with its Readies'.
LOG_CHECK_TICKS = 25
# Share of crashes aimed at a node whose fsync is in progress, when there is one.
CRASH_MID_FSYNC = 0.4
# Share of crashes aimed at a leader, when there is one.
CRASH_LEADER = 0.3
# Share of pauses that hit a leader, when there is one.
PAUSE_LEADER = 0.5
# Clients send most requests to a node they believe leads, the rest anywhere
# (that node answers NotLeader and the client follows the hint once).
TO_LEADER = 0.85
# Leadership transfers name their target this often; the rest let the leader pick.
TRANSFER_TO_NAMED = 0.7
# Partitions: a random symmetric split this often, isolating the leader this
# often (the classic stale-leader setup), and one-way link cuts otherwise.
SPLIT_RANDOM = 0.5
SPLIT_LEADER = 0.2


@dataclass
class SeedResult:
    """The outcome of one seed: the first violation (None: all held), when, and the trace."""

    seed: int
    violation: Violation | None
    at_time: int
    trace: list[str] = field(default_factory=list)
    stats: Stats = field(default_factory=Stats)


def run_seed(
    seed: int,
    nodes: int,
    steps: int = DEFAULT_STEPS,
    trace: bool = False,
    tweak: Callable[[Scenario], Scenario] | None = None,
    changes: bool = False,
) -> SeedResult:
    """Play seed `seed` on `nodes` cores; stops at the first violation.

    `tweak` reshapes the drawn scenario (tests use it to storm one fault kind).
    `changes` adds spare nodes and random membership changes (`sim.membership`).
    """
    sim = Simulation(seed, nodes, tracing=trace, tweak=tweak, membership=changes)
    violation: Violation | None = None
    try:
        for tick in range(steps):
            step(sim, tick)
        heal(sim)
        check_liveness(sim)
        cross_check_status(sim, logs=True)
    except Violation as found:
        violation = found
    except Exception as error:  # any exception of the core is a finding
        where = traceback.extract_tb(error.__traceback__)[-1]
        violation = Violation(
            CORE_ERROR, f"{type(error).__name__}: {error} (at {where.filename}:{where.lineno})"
        )
        sim.trace.extend(traceback.format_exc().splitlines())
    if violation is not None:
        sim.note(f"VIOLATION {violation}")
    sim.stats.ticks = sim.now // TICK_UNITS
    return SeedResult(seed, violation, sim.now, sim.trace, sim.stats)


def step(sim: Simulation, tick: int) -> None:
    """One tick: faults and requests at its start, then its events."""
    cross_check_status(sim, logs=tick % LOG_CHECK_TICKS == 0)
    inject_faults(sim)
    send_requests(sim)
    sim.run_until((tick + 1) * TICK_UNITS - 1)


# --- faults ---------------------------------------------------------------------


def inject_faults(sim: Simulation) -> None:
    rng, sc, now = sim.rng, sim.scenario, sim.now
    live = sim.live()
    if sc.crash and live and rng.random() < sc.crash:
        # Power tends to fail mid-fsync in these histories: that is where a driver
        # that acknowledges too early loses what it promised.
        # And leaders crash more than their share: elections after a leader's
        # death, among logs of different lengths and terms, are where Raft breaks.
        syncing = [node for node in live if node.pending is not None]
        leaders = [node for node in live if node.role is Role.LEADER]
        draw = rng.random()
        if syncing and draw < CRASH_MID_FSYNC:
            sim.crash(rng.choice(syncing), "during its fsync")
        elif leaders and draw < CRASH_MID_FSYNC + CRASH_LEADER:
            sim.crash(rng.choice(leaders), "leader")
        else:
            sim.crash(rng.choice(live), "fault")
    for node in sim.order:
        if not node.alive and rng.random() < sc.restart:
            sim.boot(node)
    if sc.partition and len(sim.order) > 1 and rng.random() < sc.partition:
        partition(sim)
    elif sim.network.cut and rng.random() < sc.heal:
        sim.network.heal()
        sim.note("partition heals")
    if sc.pause and live and rng.random() < sc.pause:
        # A paused leader wakes up still believing it leads: the stale-leader case.
        leaders = [n for n in live if n.role is Role.LEADER]
        node = rng.choice(leaders if leaders and rng.random() < PAUSE_LEADER else live)
        ticks = rng.randint(1, MAX_PAUSE_ELECTIONS * ELECTION_TICKS)
        node.paused_until = now + ticks * TICK_UNITS
        sim.schedule(node.paused_until, "resume", (node, node.incarnation))
        sim.note(f"{node.node_id} pauses for {ticks} ticks")


def partition(sim: Simulation) -> None:
    rng, network = sim.rng, sim.network
    ids = [node.node_id for node in sim.order]
    kind = rng.random()
    if kind < SPLIT_RANDOM:
        shuffled = list(ids)
        rng.shuffle(shuffled)
        cut = rng.randint(1, len(ids) // 2)
        network.split(shuffled[:cut], shuffled[cut:])
    elif kind < SPLIT_RANDOM + SPLIT_LEADER:
        leaders = [n.node_id for n in sim.order if n.alive and n.role is Role.LEADER]
        isolated = rng.choice(leaders) if leaders else rng.choice(ids)
        network.split([isolated], [i for i in ids if i != isolated])
    else:
        links = [(a, b) for a in ids for b in ids if a != b]
        network.cut_one_way(rng.sample(links, rng.randint(1, len(ids))))
    sim.note(f"partition: {network.describe()}")


# --- requests -------------------------------------------------------------------


def send_requests(sim: Simulation) -> None:
    rng, sc = sim.rng, sim.scenario
    live = sim.live()
    if not live:
        return
    if rng.random() < sc.propose:
        count = rng.randint(1, sc.batch_max)
        propose(sim, pick_target(sim, live), count)
    if sc.read and rng.random() < sc.read:
        node = pick_target(sim, live)
        context = sim.next_read
        sim.next_read += 1
        sim.checker.begin_read(node.node_id, context)
        request(sim, node, ("read", context))
    if sc.compact and rng.random() < sc.compact:
        request(sim, rng.choice(live), ("compact",))
    if sc.campaign and rng.random() < sc.campaign:
        node = rng.choice(live)
        sim.note(f"{node.node_id} is told to campaign")
        request(sim, node, ("campaign",))
    if sc.transfer and rng.random() < sc.transfer:
        node = pick_target(sim, live)
        others = [n.node_id for n in sim.order if n is not node]
        to: NodeId | None = (
            rng.choice(others) if others and rng.random() < TRANSFER_TO_NAMED else None
        )
        sim.note(f"{node.node_id} is asked to transfer leadership to {to}")
        request(sim, node, ("transfer", to))
    if sc.membership and rng.random() < sc.membership:
        node = pick_target(sim, live)
        every = [n.node_id for n in sim.order]
        change = membership.draw_change(rng, node.membership, every)
        if change is not None:
            sim.note(f"{node.node_id} is asked for {change}")
            request(sim, node, ("conf", change))


def pick_target(sim: Simulation, live: list[SimNode]) -> SimNode:
    leaders = [node for node in live if node.role is Role.LEADER]
    if leaders and sim.rng.random() < TO_LEADER:
        return sim.rng.choice(leaders)
    return sim.rng.choice(live)


def propose(sim: Simulation, node: SimNode, count: int) -> list[bytes]:
    values = []
    for _ in range(count):
        sim.next_value += 1
        values.append(b"v%d" % sim.next_value)
    sim.checker.proposed.update(values)
    request(sim, node, ("propose", values, True))
    return values


def request(sim: Simulation, node: SimNode, event: tuple[object, ...]) -> None:
    node.inbox.append(event)
    sim.schedule(sim.now, "resume", (node, node.incarnation))


# --- healing and liveness ---------------------------------------------------------


def heal(sim: Simulation) -> None:
    """End every fault: a perfect network, all nodes up and running, fast fsyncs."""
    sim.note("heal: every fault ends")
    sim.network.heal()
    sim.network.faults = NetworkFaults()
    sim.scenario = _calm(sim)
    for node in sim.order:
        if not node.alive:
            sim.boot(node)
        elif node.paused_until > sim.now:
            node.paused_until = sim.now
            sim.schedule(sim.now, "resume", (node, node.incarnation))


def _calm(sim: Simulation) -> Scenario:
    sc = sim.scenario
    return replace(
        sc,
        crash=0.0,
        partition=0.0,
        pause=0.0,
        crash_after_persist=0.0,
        campaign=0.0,
        transfer=0.0,
        membership=0.0,
    )


def members(sim: Simulation) -> list[SimNode]:
    """The nodes liveness is owed to: the members of the latest committed configuration."""
    if not sim.membership:
        return sim.order
    ids = membership.member_ids(sim.checker, sim.initial)
    return [node for node in sim.order if node.node_id in ids]


def stable_leader(sim: Simulation) -> SimNode | None:
    live = [node for node in members(sim) if node.alive]
    leaders = [node for node in sim.live() if node.role is Role.LEADER]
    top = max(node.term for node in live + leaders)
    leaders = [n for n in leaders if n.term == top]
    return leaders[0] if leaders else None


def check_liveness(sim: Simulation) -> None:
    start = sim.now // TICK_UNITS
    tick = start
    leader = None
    while leader is None:
        if tick - start >= ELECTION_BOUND_TICKS:
            raise Violation(
                LIVENESS, f"no leader {ELECTION_BOUND_TICKS} ticks after healing: {_roles(sim)}"
            )
        _run_tick(sim, tick)
        tick += 1
        leader = stable_leader(sim)
    elected = tick
    bound = commit_bound(sim, leader)
    values: list[bytes] = []
    proposed_at = tick
    while True:
        if not values or (tick - proposed_at >= LIVENESS_RETRY_TICKS and not _done(sim, values)):
            leader = stable_leader(sim)
            if leader is not None:
                values = propose(sim, leader, LIVENESS_VALUES)
                proposed_at = tick
        _run_tick(sim, tick)
        tick += 1
        if values and _done(sim, values):
            sim.note(f"liveness: values applied everywhere {tick - start} ticks after healing")
            return
        if tick - elected >= bound:
            raise Violation(
                LIVENESS,
                f"values {values} proposed after healing not applied everywhere "
                f"{bound} ticks after a leader was elected: {_roles(sim)}",
            )


def commit_bound(sim: Simulation, leader: SimNode) -> int:
    """Ticks allowed to replicate the backlog plus the new values everywhere.

    A follower can lag by the whole backlog the leader accepted while it could
    not commit; the leader ships at most a window of appends of bounded size
    per round trip (about a tick), so the bound grows with the backlog.
    """
    config = leader.config
    window = config.max_inflight_appends * config.max_entries_per_append
    backlog = leader.log.last_index - min(node.applied for node in members(sim))
    return COMMIT_BOUND_TICKS + BACKLOG_SLACK * backlog // window


def _run_tick(sim: Simulation, tick: int) -> None:
    cross_check_status(sim)
    sim.run_until((tick + 1) * TICK_UNITS - 1)


def _done(sim: Simulation, values: list[bytes]) -> bool:
    where = sim.checker.value_index
    indexes = [where.get(value) for value in values]
    if any(index is None for index in indexes):
        return False
    highest = max(index for index in indexes if index is not None)
    return all(node.applied >= highest for node in members(sim))


def _roles(sim: Simulation) -> str:
    return ", ".join(
        f"{n.node_id}={n.role.value}/t{n.term}/c{n.commit}/a{n.applied}/l{n.log.last_index}"
        if n.alive
        else f"{n.node_id}=down"
        for n in sim.order
    )


# --- cross-checks against the core's own account --------------------------------


def cross_check_status(sim: Simulation, logs: bool = False) -> None:
    """An idle core's status (and with `logs` its whole log) must match its Readies."""
    for node in sim.order:
        core = node.core
        if core is None or node.pending is not None or node.inbox or core.has_ready():
            continue
        if logs:
            check_core_log(node)
        st = core.status()
        mine = (node.term, node.role, node.commit, node.applied, node.log.last_index)
        theirs = (st.term, st.role, st.commit_index, st.applied_index, st.last_index)
        if mine != theirs:
            raise Violation(
                READY_CONTRACT,
                f"{node.node_id} status (term, role, commit, applied, last) {theirs} "
                f"differs from what its Readies reported {mine}",
            )


def check_core_log(node: SimNode) -> None:
    """An idle core's in-memory log equals the log its Readies described."""
    assert node.core is not None
    log = node.log
    held = node.core.log_entries(Index(log.offset + 1), Index(log.last_index + 1))
    if list(held) != log.entries:
        raise Violation(
            READY_CONTRACT,
            f"{node.node_id} holds {len(held)} entries after {log.offset}, its Readies "
            f"described {len(log.entries)} (or different ones)",
        )
