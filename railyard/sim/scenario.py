"""What one seed's schedule looks like: core settings and fault intensities.

Every seed draws its own mix, from a perfect network with a rare crash to a
lossy, partitioned cluster whose nodes crash between fsync and send, so a
seed range covers calm and stormy histories alike. All draws come from the
seed's one `random.Random`, first thing, in a fixed order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from railyard.sim.network import NetworkFaults


@dataclass(frozen=True)
class Scenario:
    # core settings
    pre_vote: bool
    check_quorum: bool
    heartbeat_ticks: int
    max_inflight_appends: int
    max_entries_per_append: int
    # per-tick probabilities of faults
    crash: float
    restart: float  # per crashed node
    partition: float
    heal: float
    pause: float  # a node stops (GC pause, stopped VM), then resumes
    clock_skew: float  # a node's tick comes a unit early or late
    # the driver's fsync
    slow_persist: float  # an fsync takes whole units instead of none
    crash_after_persist: float  # crash between the fsync and sending persisted messages
    # clients and operators, per tick
    propose: float
    batch_max: int
    read: float
    compact: float
    campaign: float
    transfer: float
    network: NetworkFaults
    # an operator's membership change, per tick (only with --membership)
    membership: float = 0.0


def draw_scenario(rng: random.Random) -> Scenario:
    choice = rng.choice
    return Scenario(
        pre_vote=rng.random() < 0.8,
        check_quorum=rng.random() < 0.8,
        heartbeat_ticks=choice((1, 1, 2, 3)),
        max_inflight_appends=choice((2, 8, 256)),
        max_entries_per_append=choice((1, 4, 1024)),
        crash=choice((0.0, 0.005, 0.02, 0.04)),
        restart=choice((0.05, 0.2, 0.5)),
        partition=choice((0.0, 0.01, 0.03, 0.06)),
        heal=choice((0.02, 0.1, 0.3)),
        pause=choice((0.0, 0.005, 0.02)),
        clock_skew=choice((0.0, 0.05)),
        slow_persist=choice((0.0, 0.2, 0.6)),
        crash_after_persist=choice((0.0, 0.002, 0.01)),
        propose=choice((0.3, 0.6, 0.9)),
        batch_max=choice((1, 4, 16)),
        read=choice((0.02, 0.1, 0.3)),
        compact=choice((0.0, 0.02, 0.1)),
        campaign=choice((0.0, 0.005, 0.02)),
        transfer=choice((0.0, 0.005, 0.02)),
        network=NetworkFaults(
            loss=choice((0.0, 0.01, 0.05, 0.15)),
            duplicate=choice((0.0, 0.02, 0.1)),
            long_delay=choice((0.0, 0.01, 0.05)),
            long_delay_ticks=choice((1, 3, 8)),
        ),
    )
