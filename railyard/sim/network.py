"""The simulated network: loss, delay, reordering, duplication and partitions.

Time is counted in units, `TICK_UNITS` to a core tick. A message normally
takes a few units, so several round trips fit in one tick, as on a LAN where
the heartbeat interval is far longer than a round trip. Some messages are
held back for whole ticks (a congested link), which reorders them behind
later traffic. Partitions cut directed links: a symmetric partition cuts
both directions between two groups; a one-way fault cuts single directions,
the case that trips implementations assuming links fail symmetrically.

All choices come from the simulation's one `random.Random`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from railyard.raft import NodeId

# Units per core tick: ten lets a message take 1-3 units (a LAN round trip is
# far below a heartbeat interval) while long delays still span whole ticks.
TICK_UNITS = 10
# A normal delivery takes 1 .. NORMAL_DELAY_UNITS units (jitter reorders messages).
NORMAL_DELAY_UNITS = 3


@dataclass
class NetworkFaults:
    """Per-seed intensities; zero everywhere is a perfect network."""

    loss: float = 0.0  # probability a message is dropped
    duplicate: float = 0.0  # probability a message is delivered twice
    long_delay: float = 0.0  # probability a message is held back for whole ticks
    long_delay_ticks: int = 3  # longest hold-back, in ticks


class Network:
    def __init__(self, rng: random.Random, faults: NetworkFaults) -> None:
        self.rng = rng
        self.faults = faults
        self.cut: set[tuple[NodeId, NodeId]] = set()  # (from, to) links that drop everything

    def delays(self) -> list[int]:
        """Delivery delays, in units, of one message sent now: none when it is lost."""
        # rng.random() arithmetic rather than randint: this runs for every message.
        random_ = self.rng.random
        faults = self.faults
        if faults.loss and random_() < faults.loss:
            return []
        if faults.duplicate and random_() < faults.duplicate:
            return [self._delay(), self._delay()]
        return [self._delay()]

    def _delay(self) -> int:
        faults = self.faults
        random_ = self.rng.random
        if faults.long_delay and random_() < faults.long_delay:
            span = (faults.long_delay_ticks - 1) * TICK_UNITS + 1
            return TICK_UNITS + int(random_() * span)
        return 1 + int(random_() * NORMAL_DELAY_UNITS)

    def blocked(self, sender: NodeId, to: NodeId) -> bool:
        return (sender, to) in self.cut

    def split(self, group: Sequence[NodeId], rest: Sequence[NodeId]) -> None:
        """Symmetric partition: nothing crosses between `group` and `rest`."""
        self.cut = {(a, b) for a in group for b in rest} | {(b, a) for a in group for b in rest}

    def cut_one_way(self, links: Sequence[tuple[NodeId, NodeId]]) -> None:
        self.cut = set(links)

    def heal(self) -> None:
        self.cut = set()

    def describe(self) -> str:
        return " ".join(f"{a}->{b}" for a, b in sorted(self.cut)) or "none"
