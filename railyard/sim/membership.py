"""Membership changes in the simulator: spare nodes, random changes, current members.

With `--membership` the cluster starts with `--nodes` voters and
`SPARE_NODES` more nodes that run from the start with no configuration (as
`railyard node start --join` would). An operator asks the node it believes
leads to add a node as a learner, promote a learner, or remove a member
(voter or learner, the leader included); a removed node may be added again
later, with whatever its disk still holds. The leader refuses what the
rules forbid (`ConfChangeError`), as it would refuse a real operator.

Liveness is judged on the members of the latest committed configuration:
spares never added and removed nodes owe the cluster nothing.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from railyard.raft import (
    ConfChange,
    ConfChangeKind,
    EntryKind,
    Membership,
    NodeId,
    decode_membership,
)
from railyard.sim.checker import Checker

# Nodes beyond the initial voters, there to be added.
SPARE_NODES = 2
# Per-tick chance of an operator's change, drawn per seed.
CHANGE_RATES = (0.02, 0.05, 0.1)
# A voter is removed only while more than this many remain, so most histories
# keep a cluster that can lose a node.
MIN_VOTERS_AFTER_REMOVAL = 2


def spare_ids(initial: int) -> tuple[NodeId, ...]:
    return tuple(NodeId(f"n{initial + k + 1}") for k in range(SPARE_NODES))


def draw_change(rng: random.Random, view: Membership, every: Sequence[NodeId]) -> ConfChange | None:
    """A change an operator could ask of a leader whose configuration is `view`."""
    members = view.voter_ids + view.learner_ids
    choices: list[ConfChangeKind] = []
    outsiders = [node for node in every if node not in members]
    if outsiders:
        choices.append(ConfChangeKind.ADD_LEARNER)
    if view.learners:
        choices.append(ConfChangeKind.PROMOTE)
    if view.learners or len(view.voters) > MIN_VOTERS_AFTER_REMOVAL:
        choices.append(ConfChangeKind.REMOVE)
    if not choices:
        return None
    kind = rng.choice(choices)
    if kind is ConfChangeKind.ADD_LEARNER:
        node = rng.choice(outsiders)
        return ConfChange(kind, node, f"{node}.sim:1", f"{node}.sim:2")
    if kind is ConfChangeKind.PROMOTE:
        return ConfChange(kind, rng.choice(view.learner_ids))
    removable = list(view.learner_ids)
    if len(view.voters) > MIN_VOTERS_AFTER_REMOVAL:
        removable += view.voter_ids
    return ConfChange(kind, rng.choice(removable))


def committed_membership(checker: Checker, initial: Membership) -> Membership:
    """The latest configuration among the entries known committed."""
    for entry in reversed(checker.committed):
        if entry.kind == EntryKind.CONFIG:
            return decode_membership(entry.data)
    return initial


def member_ids(checker: Checker, initial: Membership) -> set[NodeId]:
    current = committed_membership(checker, initial)
    return set(current.voter_ids + current.learner_ids)
