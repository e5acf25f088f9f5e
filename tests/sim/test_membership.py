"""The simulator with membership changes: seeds stay clean, changes really happen,
and the checks across configurations catch what they are for."""

from __future__ import annotations

import dataclasses

import pytest

from railyard.raft import (
    Entry,
    EntryKind,
    HardState,
    Index,
    Member,
    Membership,
    NodeId,
    Role,
    Term,
    encode_membership,
)
from railyard.sim import Violation, run_seed
from railyard.sim.__main__ import main, report
from railyard.sim.checker import COMMIT_QUORUM, CONFIG_CHANGE_RULE, VOTERS_LEAD, Checker
from railyard.sim.cluster import Simulation
from railyard.sim.logview import LogView
from railyard.sim.scenario import Scenario

# Seeds per cluster size with changes, and their ticks of faults: a few
# seconds of CPU; `python -m railyard.sim --membership` runs thousands.
SEEDS = 12
STEPS = 80
# Changes asked for per tick where a test wants many of them.
BUSY_OPERATOR = 0.3

A, B, C, D, E = (NodeId(f"n{k}") for k in range(1, 6))
ABC = Membership.of_voters((A, B, C))


@pytest.mark.parametrize("nodes", [3, 5])
def test_no_violation_with_membership_changes(nodes: int) -> None:
    failures = []
    for seed in range(SEEDS):
        result = run_seed(seed, nodes, STEPS, changes=True)
        if result.violation is not None:
            failures.append(report(result, nodes, STEPS, None, changes=True))
    assert not failures, "\n".join(failures)


def test_changes_happen_and_spares_join() -> None:
    """Adds, promotions and removals are accepted, and nodes beyond the initial set
    become members."""
    accepted: dict[str, int] = {}
    spares_joined = False
    for seed in range(4):
        result = run_seed(seed, 5, STEPS, trace=True, tweak=busy, changes=True)
        assert result.violation is None
        for line in result.trace:
            if " accepts ConfChange(" in line:
                kind = line.split("ConfChangeKind.")[1].split(":")[0]
                accepted[kind] = accepted.get(kind, 0) + 1
                spares_joined |= "ADD_LEARNER" in line and ("'n6'" in line or "'n7'" in line)
    assert set(accepted) == {"ADD_LEARNER", "PROMOTE", "REMOVE"}, accepted
    assert spares_joined


def busy(scenario: Scenario) -> Scenario:
    return dataclasses.replace(scenario, membership=BUSY_OPERATOR)


def test_without_the_option_histories_are_unchanged() -> None:
    """Spares and changes are drawn only with the option: old seeds replay as before."""
    plain = Simulation(3, 3)
    assert [n.node_id for n in plain.order] == [A, B, C]
    assert plain.scenario.membership == 0.0
    assert len(Simulation(3, 3, membership=True).order) == 5


def test_the_replay_command_names_the_option(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--nodes", "3", "--seeds", "0-1", "--steps", "40", "--membership"])
    assert code == 0
    assert capsys.readouterr().out.splitlines()[-1] == "2 seeds, 0 violations"


# ------------------------------------------------------------ checks, directly


class FakeNode:
    """What the checker reads of a node, set by hand."""

    def __init__(self, node_id: NodeId, membership: Membership, held: set[int]) -> None:
        self.node_id = node_id
        self.log = LogView()
        self.term = Term(2)
        self.commit = Index(0)
        self.role = Role.LEADER
        self.membership = membership
        self.held = held
        self.alive = True
        self.applied = Index(0)

    def disk_holds(self, index: Index, term: Term) -> bool:
        return index in self.held


def config(index: int, membership: Membership, term: int = 2) -> Entry:
    return Entry(Term(term), Index(index), EntryKind.CONFIG, encode_membership(membership))


def leader_with_log(membership: Membership = ABC) -> FakeNode:
    leader = FakeNode(A, membership, set())
    leader.log.write(
        (Entry(Term(2), Index(1), EntryKind.NOOP), config(2, membership), Entry(Term(2), Index(3)))
    )
    return leader


@pytest.mark.parametrize(
    "new",
    [
        Membership(ABC.voters, (Member(D),)),  # add a learner
        Membership.of_voters((A, B)),  # remove a voter
    ],
)
def test_one_step_changes_pass(new: Membership) -> None:
    Checker().check_config_change(leader_with_log(), config(4, new), ABC, Index(2), Index(3))


def test_a_promotion_passes() -> None:
    with_learner = Membership(ABC.voters, (Member(D),))
    promoted = Membership.of_voters((A, B, C, D))
    leader = leader_with_log(with_learner)
    Checker().check_config_change(leader, config(4, promoted), with_learner, Index(2), Index(3))


@pytest.mark.parametrize(
    ("new", "why"),
    [
        (Membership.of_voters((A, B, C, D)), "a newcomer made a voter at once"),
        (Membership.of_voters((A,)), "two voters removed"),
        (Membership(ABC.voters, (Member(D), Member(E))), "two learners added"),
    ],
)
def test_more_than_one_step_is_caught(new: Membership, why: str) -> None:
    with pytest.raises(Violation) as caught:
        Checker().check_config_change(leader_with_log(), config(4, new), ABC, Index(2), Index(3))
    assert caught.value.prop == CONFIG_CHANGE_RULE, why


def test_a_change_while_one_is_uncommitted_is_caught() -> None:
    new = Membership(ABC.voters, (Member(D),))
    with pytest.raises(Violation, match="not committed") as caught:
        Checker().check_config_change(leader_with_log(), config(4, new), ABC, Index(2), Index(1))
    assert caught.value.prop == CONFIG_CHANGE_RULE


def test_a_change_before_committing_in_its_term_is_caught() -> None:
    leader = FakeNode(A, ABC, set())
    leader.log.write((Entry(Term(1), Index(1)), Entry(Term(2), Index(2), EntryKind.NOOP)))
    new = Membership(ABC.voters, (Member(D),))
    with pytest.raises(Violation, match="before committing") as caught:
        Checker().check_config_change(leader, config(3, new), ABC, Index(0), Index(1))
    assert caught.value.prop == CONFIG_CHANGE_RULE


def test_a_commit_held_only_by_learners_and_the_leader_is_caught() -> None:
    with_learners = Membership(ABC.voters, (Member(D), Member(E)))
    leader = leader_with_log(with_learners)
    leader.held = {1, 2, 3}
    checker = Checker()
    checker.nodes = [
        leader,
        FakeNode(B, with_learners, set()),
        FakeNode(C, with_learners, set()),
        FakeNode(D, with_learners, {1, 2, 3}),
        FakeNode(E, with_learners, {1, 2, 3}),
    ]
    with pytest.raises(Violation) as caught:
        checker.check_commit_quorum(leader, HardState(Term(2), A, Index(3)), (with_learners,))
    assert caught.value.prop == COMMIT_QUORUM
    checker.nodes[1] = FakeNode(B, with_learners, {1, 2, 3})
    checker.check_commit_quorum(leader, HardState(Term(2), A, Index(3)), (with_learners,))


def test_a_leader_that_is_not_a_voter_is_caught() -> None:
    learner = FakeNode(D, Membership(ABC.voters, (Member(D),)), set())
    with pytest.raises(Violation) as caught:
        Checker().check_leader(learner)
    assert caught.value.prop == VOTERS_LEAD
