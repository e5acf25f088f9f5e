"""How many entries per second a 3-node cluster of Raft cores commits, with no I/O at all.

    .venv/bin/python bench/core_bench.py [--entries N] [--batches 1,64]

Three `RaftCore`s in one process on a perfect network: every message is
delivered at once, in order, nothing is lost; "persisting" a Ready is free.
What remains is the protocol's own cost: stepping messages, building
Readies, tracking progress and commit. Each round every core ticks once,
the leader proposes a batch (`propose_batch`, 1 or 64 entries), and the
cluster runs until no core has work left. The figure is the entries the
leader committed per second, after the followers applied them too, both per
second of wall time and per second of this process's CPU time (the latter
stays meaningful on a machine shared with other work). It bounds a node's
throughput from above: the core must not be what limits a cluster.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import deque
from collections.abc import Sequence

from railyard.raft import Message, NodeId, RaftConfig, RaftCore, Role

NODES = tuple(NodeId(f"n{k}") for k in (1, 2, 3))
# Entries committed per measured configuration by default: enough for a
# steady state (well over a second of work at 1 entry per round).
DEFAULT_ENTRIES = 20_000
# Rounds at the same batch size are cheap at 64, so measure more entries there.
ENTRIES_SCALE_PER_BATCH = {1: 1, 64: 10}
PAYLOAD = b"x" * 100  # a small record, like a typical put


class Cluster:
    def __init__(self) -> None:
        rng = random.Random(0)
        self.cores = {
            node: RaftCore(RaftConfig(node, NODES), random.Random(rng.getrandbits(64)))
            for node in NODES
        }
        self.wire: deque[Message] = deque()
        self.applied = dict.fromkeys(NODES, 0)

    def pump(self) -> None:
        """Deliver and handle until no core has anything left to do."""
        cores, wire = self.cores, self.wire
        busy = True
        while busy:
            busy = False
            for node, core in cores.items():
                if core.has_ready():
                    busy = True
                    ready = core.ready()
                    wire.extend(ready.messages)
                    wire.extend(ready.persisted_messages)  # persisting is free here
                    if ready.committed_entries:
                        self.applied[node] = ready.committed_entries[-1].index
                    core.advance(ready)
            while wire:
                busy = True
                msg = wire.popleft()
                cores[msg.to].step(msg)

    def elect(self, node: NodeId) -> RaftCore:
        leader = self.cores[node]
        leader.campaign()
        self.pump()
        assert leader.status().role is Role.LEADER
        return leader

    def round(self, leader: RaftCore, batch: Sequence[bytes]) -> None:
        for core in self.cores.values():
            core.tick()
        leader.propose_batch(batch)
        self.pump()


def measure(batch_size: int, entries: int) -> tuple[int, float, float]:
    cluster = Cluster()
    leader = cluster.elect(NODES[0])
    start_index = leader.status().commit_index
    batch = [PAYLOAD] * batch_size
    rounds = max(1, entries // batch_size)
    started, started_cpu = time.perf_counter(), time.process_time()
    for _ in range(rounds):
        cluster.round(leader, batch)
    elapsed = time.perf_counter() - started
    elapsed_cpu = time.process_time() - started_cpu
    committed = leader.status().commit_index - start_index
    assert committed == rounds * batch_size, "every proposal commits on a perfect network"
    assert min(cluster.applied.values()) == leader.status().commit_index
    return committed, elapsed, elapsed_cpu


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=DEFAULT_ENTRIES)
    parser.add_argument("--batches", default="1,64", help="proposals per round, comma list")
    args = parser.parse_args(argv)
    print(
        f"{'proposals/tick':>14} {'entries':>9} {'wall s':>7} {'cpu s':>7}"
        f" {'committed/s (wall)':>19} {'committed/s (cpu)':>18}"
    )
    for size in (int(part) for part in args.batches.split(",")):
        entries = args.entries * ENTRIES_SCALE_PER_BATCH.get(size, 1)
        committed, wall, cpu = measure(size, entries)
        print(
            f"{size:>14} {committed:>9} {wall:>7.2f} {cpu:>7.2f}"
            f" {committed / wall:>19,.0f} {committed / cpu:>18,.0f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
