"""The checker bites: each deliberately broken rule of the core is reported.

For each break the simulator runs seeds in order until one violates a
property; a correct checker finds one within a modest range. Afterwards the
core is whole again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from railyard.sim import BREAKS, Checker, Violation, broken, run_seed
from railyard.sim.checker import (
    COMMIT_QUORUM,
    CONFIG_CHANGE_RULE,
    DURABILITY,
    ELECTION_SAFETY,
    LEADER_COMMIT_RULE,
    LEADER_COMPLETENESS,
    LINEARIZABLE_READS,
    LIVENESS,
    LOG_MATCHING,
    STATE_MACHINE_SAFETY,
)
from railyard.sim.node import SimNode
from railyard.sim.scenario import Scenario

# What each break may be caught as: the property its bug breaks first.
EXPECTED = {
    "vote-without-log-check": {LEADER_COMPLETENESS, STATE_MACHINE_SAFETY, LOG_MATCHING},
    "commit-old-term": {LEADER_COMMIT_RULE, LEADER_COMPLETENESS, STATE_MACHINE_SAFETY},
    "ack-before-persist": {DURABILITY},
    "read-without-quorum": {LINEARIZABLE_READS},
    "concurrent-changes": {CONFIG_CHANGE_RULE},
}
# Breaks of membership changes show only in histories that make changes.
WITH_CHANGES = {"concurrent-changes"}
# Cluster size per break: stale reads need a deposed or brand-new leader that
# is asked before it learns better, which five nodes produce more often.
NODES = {"read-without-quorum": 5}
# Without the direct durability check, a promise broken by a crash still shows:
# a commit a majority of the voters does not hold on disk, a committed entry
# lost (safety), or a leader that believes a follower holds entries it lost and
# never resends them (liveness).
LOST_ACK_SYMPTOMS = {
    COMMIT_QUORUM,
    LEADER_COMPLETENESS,
    STATE_MACHINE_SAFETY,
    ELECTION_SAFETY,
    LOG_MATCHING,
    LIVENESS,
}
# Seeds tried per break before giving up; each is caught sooner today (the
# crash storm's early acknowledgements last, at seed 173: forced campaigns no
# longer break a live leader's lease, so leadership churns less).
MAX_SEEDS = 250
STEPS = 300


def test_every_break_has_an_expectation() -> None:
    assert set(EXPECTED) == set(BREAKS)


def first_violation(
    rule: str, nodes: int, tweak: Callable[[Scenario], Scenario] | None = None
) -> Violation | None:
    changes = rule in WITH_CHANGES
    with broken(rule):
        for seed in range(MAX_SEEDS):
            result = run_seed(seed, nodes, STEPS, tweak=tweak, changes=changes)
            if result.violation is not None:
                return result.violation
    return None


@pytest.mark.parametrize("rule", sorted(BREAKS))
def test_break_is_caught(rule: str) -> None:
    caught = first_violation(rule, NODES.get(rule, 3))
    assert caught is not None, f"--break {rule}: no violation in {MAX_SEEDS} seeds"
    assert caught.prop in EXPECTED[rule], f"--break {rule} caught as {caught}"


def crash_storm(scenario: Scenario) -> Scenario:
    """Frequent crashes while fsyncs are slow: early acknowledgements get lost."""
    return dataclasses.replace(scenario, crash=0.04, restart=0.3, slow_persist=0.6, propose=0.9)


def test_lost_acknowledgement_is_caught_end_to_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the direct check, the harm done by early acknowledgements shows."""
    monkeypatch.setattr(SimNode, "check_promise", lambda self, msg: None)
    caught = first_violation("ack-before-persist", 5, crash_storm)
    assert caught is not None, f"no symptom of early acknowledgements in {MAX_SEEDS} seeds"
    assert caught.prop in LOST_ACK_SYMPTOMS, caught


def test_break_is_undone() -> None:
    """A seed that fails with the break passes again once the context exits."""
    with broken("vote-without-log-check"):
        seed = next(s for s in range(MAX_SEEDS) if run_seed(s, 3, STEPS).violation)
    assert run_seed(seed, 3, STEPS).violation is None


# Safety or liveness: whichever the overlapping configurations break first.
OVERLAPPING_CHANGE_SYMPTOMS = LOST_ACK_SYMPTOMS


def membership_storm(scenario: Scenario) -> Scenario:
    """An operator asking for a change every other tick: changes overlap."""
    return dataclasses.replace(scenario, membership=0.5)


def test_concurrent_changes_harm_shows_end_to_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the direct rule check, overlapping changes still break the cluster:
    here as configurations that can no longer elect a leader or commit."""
    monkeypatch.setattr(Checker, "check_config_change", lambda *args: None)
    caught = first_violation("concurrent-changes", 3, membership_storm)
    assert caught is not None, f"no symptom of overlapping changes in {MAX_SEEDS} seeds"
    assert caught.prop in OVERLAPPING_CHANGE_SYMPTOMS, caught
