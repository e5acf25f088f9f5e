"""The simulator over 500 seeds each for 3- and 5-node clusters: no property may break.

Seeds run in chunks so a failure names its range; the assertion message is the
simulator's own report, with the command that replays the seed.
"""

from __future__ import annotations

import pytest

from railyard.sim import run_seed
from railyard.sim.__main__ import report

# 500 seeds per cluster size (the minimum), in chunks of this many.
SEEDS_PER_SIZE = 500
CHUNK = 100
# Ticks of faults per seed (the command line's default is 300): short enough
# that both sizes together cost about 30 s of CPU, long enough (5-8 election
# timeouts) that seeds see elections, crashes, partitions, compaction and the
# healing phase. `python -m railyard.sim` runs the long histories.
STEPS = {3: 80, 5: 50}


@pytest.mark.parametrize("first", range(0, SEEDS_PER_SIZE, CHUNK))
@pytest.mark.parametrize("nodes", [3, 5])
def test_no_violation(nodes: int, first: int) -> None:
    failures = []
    for seed in range(first, first + CHUNK):
        result = run_seed(seed, nodes, STEPS[nodes])
        if result.violation is not None:
            failures.append(report(result, nodes, STEPS[nodes], None))
    assert not failures, "\n".join(failures)


def test_seeds_do_real_work() -> None:
    """A seed is not vacuous: leaders are elected and entries commit despite faults."""
    result = run_seed(1, 5, STEPS[5])
    assert result.violation is None
    assert result.stats.elections >= 1
    assert result.stats.committed > 10
    assert result.stats.messages > 100
