"""Randomized fault schedules over a few seeds, with Raft's safety checks (see fuzz.py).

The simulator in railyard.sim runs thousands of seeds; these few keep the core
honest in its own suite.
"""

from __future__ import annotations

import pytest

from tests.raft.fuzz import run_seed

# Few seeds: this suite must stay fast; the simulator covers breadth.
SEEDS = range(10)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("count", [3, 5])
def test_random_schedule_is_safe_and_live(seed: int, count: int) -> None:
    fuzz = run_seed(seed, steps=1500, count=count)
    assert fuzz.committed, "the schedule should commit something"
