"""A deterministic simulator of many Raft cores on a faulty network.

`python -m railyard.sim --nodes 5 --seeds 0-999` plays one randomized
history per seed (loss, delay, reordering, duplication, partitions, crashes
that lose what was not yet fsync'd, paused nodes) and checks Raft's safety
properties after every step, then liveness once every fault heals. A seed
replays exactly: the same seed gives the same trace in any process.

Imports only `railyard.raft` and the standard library.
"""

from railyard.sim.breakage import BREAKS, broken
from railyard.sim.checker import Checker, Violation
from railyard.sim.schedule import DEFAULT_STEPS, SeedResult, run_seed

__all__ = ["BREAKS", "DEFAULT_STEPS", "Checker", "SeedResult", "Violation", "broken", "run_seed"]
