"""The nemesis suite: real nodes, faulty network and processes, every operation checked.

The short run (marker `faults`, part of `make test`) injects each fault kind
once, in a seeded order, on a 3-node cluster. The soak run (marker `soak`,
`make soak` / scripts/soak.sh) draws faults at random for
RAILYARD_SOAK_MINUTES (default 20) on a 5-node cluster that also takes
snapshots. Both print the seed; RAILYARD_NEMESIS_SEED replays a schedule.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.faults.nemesis import FAULTS, RunReport, run_nemesis

# Short run: each fault held this long (two to four election timeouts of the
# test clusters' 500 ms), then this long healthy (s).
SHORT_FAULT_S = 2.0
SHORT_QUIET_S = 1.0
# Longer than the schedule can take (faults + heals + restarts); it ends earlier.
SHORT_BUDGET_S = 120.0
DEFAULT_SOAK_MINUTES = 20.0
# Soak: take snapshots often so lagging and restarted nodes install them.
SOAK_SNAPSHOT_EVERY = 500
SOAK_NODES = 5
SOAK_CLIENTS = 6
# Each soak client pauses this long between operations: the machine is shared,
# and a long run needs many faults more than a high rate.
SOAK_PACE_S = 0.02
# Head room above the soak duration for start-up, healing and checking.
SOAK_EXTRA_S = 600


def _seed() -> int:
    env = os.environ.get("RAILYARD_NEMESIS_SEED")
    return int(env) if env else random.SystemRandom().randrange(1 << 32)


def _assert_clean(report: RunReport) -> None:
    replay = f"replay the schedule with RAILYARD_NEMESIS_SEED={report.seed}"
    assert not report.violations, f"{len(report.violations)} violations ({replay}):\n" + "\n".join(
        report.violations[:50]
    )
    assert not report.node_errors, f"a node logged a traceback ({replay}):\n" + "\n".join(
        report.node_errors
    )
    assert report.appends_ok > 0, f"no append was acknowledged ({replay})"
    assert report.histories_checked == 1


@pytest.mark.faults
@pytest.mark.timeout(300)
async def test_short_nemesis_run(tmp_path: Path) -> None:
    seed = _seed()
    print(f"nemesis seed {seed}")
    schedule = random.Random(seed).sample(FAULTS, len(FAULTS))
    report = await run_nemesis(
        tmp_path,
        seed=seed,
        duration_s=SHORT_BUDGET_S,
        schedule=schedule,
        fault_s=SHORT_FAULT_S,
        quiet_s=SHORT_QUIET_S,
    )
    assert [f.kind for f in report.faults] == schedule, f"seed {seed}: schedule cut short"
    _assert_clean(report)


@pytest.mark.soak
@pytest.mark.timeout(
    int(float(os.environ.get("RAILYARD_SOAK_MINUTES", DEFAULT_SOAK_MINUTES)) * 60) + SOAK_EXTRA_S
)
async def test_soak_nemesis_run(tmp_path: Path) -> None:
    minutes = float(os.environ.get("RAILYARD_SOAK_MINUTES", DEFAULT_SOAK_MINUTES))
    seed = _seed()
    print(f"nemesis seed {seed}, {minutes:g} minutes")
    report = await run_nemesis(
        tmp_path,
        seed=seed,
        nodes=SOAK_NODES,
        clients=SOAK_CLIENTS,
        duration_s=minutes * 60,
        snapshot_every=SOAK_SNAPSHOT_EVERY,
        pace_s=SOAK_PACE_S,
    )
    _assert_clean(report)
