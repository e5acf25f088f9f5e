"""Membership changes (Raft dissertation chapter 4), rule by rule.

Single-server changes: a configuration is used as soon as it is appended
(§4.1), one change at a time, none by a new leader before it committed an
entry of its term (the 2015 fix); learners receive the log but never count;
a promotion waits for the learner to catch up (§4.2.1); a leader that removes
itself leads until the change commits (§4.2.2); a removed node cannot disrupt
the cluster (§4.2.3).
"""

from __future__ import annotations

import pytest

from railyard.raft import (
    AddressInUse,
    AlreadyMember,
    ChangeInProgress,
    ConfChange,
    ConfChangeKind,
    Entry,
    EntryKind,
    Index,
    LastVoter,
    Member,
    Membership,
    MessageType,
    NodeId,
    NotALearner,
    NotCaughtUp,
    Role,
    SnapshotMeta,
    Term,
    UnknownMember,
    encode_membership,
)
from tests.raft.helpers import drain, elect, message, new_core
from tests.raft.network import Network

N1, N2, N3, N4, N5 = (NodeId(f"n{k}") for k in range(1, 6))
ELECTION_TICKS = 10  # the default of RaftConfig


def add(node: NodeId, address: str = "") -> ConfChange:
    return ConfChange(ConfChangeKind.ADD_LEARNER, node, address)


def promote(node: NodeId) -> ConfChange:
    return ConfChange(ConfChangeKind.PROMOTE, node)


def remove(node: NodeId) -> ConfChange:
    return ConfChange(ConfChangeKind.REMOVE, node)


def cluster(voters: int = 3, spares: int = 2, **config: object) -> Network:
    net = Network(voters, spares=spares, **config)
    net.elect(N1)
    return net


def change(net: Network, leader: NodeId, conf: ConfChange) -> Index:
    index = net.cores[leader].propose_conf_change(conf)
    net.settle()
    return index


def catch_up(net: Network, leader: NodeId = N1) -> None:
    """A few heartbeats: enough rounds of replication for a live learner."""
    net.tick([leader], times=3)


def votes_asked_by(net: Network, node: NodeId, since: int = 0) -> list[MessageType]:
    """Vote and pre-vote requests `node` sent among the messages delivered from `since` on."""
    kinds = (MessageType.VOTE, MessageType.PRE_VOTE)
    return [m.type for m in net.delivered[since:] if m.sender == node and m.type in kinds]


# --------------------------------------------------------------- learners


def test_a_learner_receives_the_log_and_knows_its_configuration() -> None:
    net = cluster()
    net.propose(N1, b"before")
    change(net, N1, add(N4, "10.0.0.4:1"))
    net.propose(N1, b"after")
    assert net.applied_data(N4) == [b"before", b"after"]
    learner = net.cores[N4]
    assert learner.learners == (N4,) and learner.voters == (N1, N2, N3)
    assert learner.membership.member(N4) == Member(N4, "10.0.0.4:1")


def test_a_learner_never_campaigns() -> None:
    net = cluster()
    change(net, N1, add(N4))
    net.isolate(N4)
    net.tick([N4], times=5 * ELECTION_TICKS)
    assert net.cores[N4].role is Role.FOLLOWER
    assert votes_asked_by(net, N4) == []


def test_learners_do_not_count_toward_commit() -> None:
    net = cluster()
    change(net, N1, add(N4))
    change(net, N1, add(N5))
    net.crash(N2)
    net.crash(N3)
    index = net.propose(N1, b"x")
    assert net.cores[N4].log.last_index >= index  # the learners hold it:
    assert net.cores[N5].log.last_index >= index  # 3 servers of 5,
    assert net.cores[N1].log.committed < index  # but 1 voter of 3 is no quorum


def test_a_learners_vote_does_not_count() -> None:
    net = cluster()
    change(net, N1, add(N4))
    net.crash(N1)
    net.crash(N3)
    net.cores[N2].campaign()
    net.settle()
    # N4 may answer, but only N2 of the voters N1..N3 granted.
    assert net.cores[N2].role is Role.CANDIDATE


def test_a_joining_node_with_no_configuration_never_campaigns() -> None:
    net = cluster()
    net.tick([N5], times=5 * ELECTION_TICKS)
    assert net.cores[N5].voters == () and votes_asked_by(net, N5) == []


# --------------------------------------------------------------- promotion


def test_promotion_waits_until_the_learner_caught_up() -> None:
    net = cluster()
    net.cut(N1, N4)
    change(net, N1, add(N4))
    assert not net.cores[N1].status().progress[N4].caught_up  # no round finished yet
    with pytest.raises(NotCaughtUp):
        net.cores[N1].propose_conf_change(promote(N4))
    net.heal()
    catch_up(net)
    status = net.cores[N1].status().progress[N4]
    assert status.learner and status.caught_up
    change(net, N1, promote(N4))
    assert net.cores[N1].voters == (N1, N2, N3, N4)
    assert net.cores[N4].voters == (N1, N2, N3, N4) and net.cores[N4].learners == ()


def test_a_learner_that_stopped_is_never_promoted() -> None:
    net = cluster()
    change(net, N1, add(N4))
    catch_up(net)
    net.crash(N4)
    for _ in range(3):
        net.tick([N1], times=ELECTION_TICKS)  # the round under way now lasts that long
        with pytest.raises(NotCaughtUp):
            net.cores[N1].propose_conf_change(promote(N4))
    assert net.cores[N1].learners == (N4,)


def test_a_learner_cut_off_from_the_start_is_never_promoted() -> None:
    net = cluster()
    net.cut(N1, N4)
    change(net, N1, add(N4))
    net.tick([N1], times=3 * ELECTION_TICKS)
    with pytest.raises(NotCaughtUp):
        net.cores[N1].propose_conf_change(promote(N4))


def test_a_promoted_voter_counts_toward_the_quorum() -> None:
    net = cluster()
    change(net, N1, add(N4))
    catch_up(net)
    change(net, N1, promote(N4))
    net.crash(N2)
    net.crash(N3)
    index = net.propose(N1, b"x")
    assert net.cores[N1].log.committed < index  # 2 of 4 voters
    net.restart(N2)
    net.tick([N1], times=2)
    assert net.cores[N1].log.committed >= index  # 3 of 4


# --------------------------------------------------------------- one at a time


def test_a_second_change_waits_for_the_first_to_commit() -> None:
    net = cluster()
    leader = net.cores[N1]
    leader.propose_conf_change(add(N4))
    with pytest.raises(ChangeInProgress, match="not yet committed"):
        leader.propose_conf_change(add(N5))
    net.settle()
    leader.propose_conf_change(add(N5))  # the first one committed


def test_a_new_leader_changes_nothing_before_committing_in_its_term() -> None:
    """The 2015 fix: a change appended by a deposed leader may still take effect;
    a new leader's change must wait until its own no-op commits."""
    core = new_core(N1)
    elect(core)
    assert core.role is Role.LEADER
    with pytest.raises(ChangeInProgress, match="entry of its term"):
        core.propose_conf_change(add(N4))


def test_a_configuration_is_used_as_soon_as_appended_and_dropped_when_cut() -> None:
    follower = new_core(N2)
    grown = Membership.of_voters((N1, N2, N3, N4))
    config = Entry(Term(1), Index(1), EntryKind.CONFIG, encode_membership(grown))
    follower.step(message(MessageType.APPEND, N1, N2, 1, entries=(config,)))
    assert follower.voters == (N1, N2, N3, N4)  # not committed, in force
    assert drain(follower).membership == grown
    replacement = Entry(Term(2), Index(1), EntryKind.NOOP)
    follower.step(message(MessageType.APPEND, N3, N2, 2, entries=(replacement,)))
    assert follower.voters == (N1, N2, N3)  # back to the bootstrap configuration


@pytest.mark.parametrize(
    ("conf", "error"),
    [
        (add(N2), AlreadyMember),
        (add(N4), AlreadyMember),
        (add(N5, "taken:1"), AddressInUse),
        (promote(N2), NotALearner),
        (promote(N5), UnknownMember),
        (remove(N5), UnknownMember),
    ],
)
def test_changes_that_cannot_apply_are_refused(conf: ConfChange, error: type[Exception]) -> None:
    net = cluster()
    change(net, N1, add(N4, "taken:1"))
    before = net.cores[N1].log.last_index
    with pytest.raises(error):
        net.cores[N1].propose_conf_change(conf)
    assert net.cores[N1].log.last_index == before  # nothing appended


def test_the_last_voter_cannot_be_removed() -> None:
    net = Network(1)
    net.elect(N1)
    with pytest.raises(LastVoter):
        net.cores[N1].propose_conf_change(remove(N1))


# --------------------------------------------------------------- removal


def test_a_removed_follower_stops_receiving_and_never_campaigns() -> None:
    net = cluster()
    change(net, N1, remove(N3))
    assert net.cores[N1].voters == (N1, N2)
    assert net.cores[N3].voters == (N1, N2)  # it got the entry that removes it
    assert N3 not in net.cores[N1].status().progress
    since = len(net.delivered)
    net.tick([N3], times=5 * ELECTION_TICKS)
    assert votes_asked_by(net, N3, since) == []
    index = net.propose(N1, b"x")
    assert net.cores[N1].log.committed >= index and net.cores[N3].log.last_index < index


def test_a_leader_removing_itself_leads_until_the_change_commits() -> None:
    net = cluster()
    leader = net.cores[N1]
    leader.propose_conf_change(remove(N1))
    assert leader.role is Role.LEADER and leader.voters == (N2, N3)
    net.drop_types.add(MessageType.APPEND_RESPONSE)
    net.settle()
    assert leader.role is Role.LEADER  # not committed: still leading
    net.drop_types.clear()
    net.tick([N1])
    assert leader.role is Role.FOLLOWER
    net.settle()
    successor = net.leader()
    assert successor in (N2, N3)
    index = net.propose(successor, b"after")
    assert net.cores[successor].log.committed >= index
    since = len(net.delivered)
    net.tick([N1], times=5 * ELECTION_TICKS)
    assert votes_asked_by(net, N1, since) == []


@pytest.mark.parametrize("guards", [True, False], ids=["prevote+checkquorum", "neither"])
def test_a_removed_node_that_never_learned_cannot_disrupt(guards: bool) -> None:
    net = cluster(pre_vote=guards, check_quorum=guards)
    net.isolate(N3)
    change(net, N1, remove(N3))  # committed by N1 and N2
    assert net.cores[N3].voters == (N1, N2, N3)  # N3 never heard of it
    net.tick([N3], times=3 * ELECTION_TICKS)  # it campaigns, alone
    net.heal()
    term = net.cores[N1].current_term
    since = len(net.delivered)
    net.tick(times=3 * ELECTION_TICKS)
    assert votes_asked_by(net, N3, since)  # it still tries
    assert net.leader() == N1 and net.cores[N1].current_term == term
    assert net.cores[N2].current_term == term


# --------------------------------------------------------------- durability


def test_a_restarted_node_restores_its_configuration_from_the_log() -> None:
    net = cluster()
    change(net, N1, add(N4, "a:4"))
    net.crash(N2)
    net.restart(N2)
    assert net.cores[N2].learners == (N4,)
    assert net.cores[N2].membership.member(N4) == Member(N4, "a:4")


def test_a_snapshot_carries_the_configuration_to_a_new_learner() -> None:
    net = cluster()
    change(net, N1, add(N5, "a:5"))
    net.propose(N1, b"x")
    leader = net.cores[N1]
    applied = leader.log.applied
    meta = leader.snapshot_meta(applied)
    assert meta.membership == leader.membership
    net.disks[N1].snapshot = meta
    leader.compact(meta)
    change(net, N1, add(N4, "a:4"))
    catch_up(net)
    learner = net.cores[N4]
    assert net.disks[N4].snapshot == meta
    assert learner.learners == (N5, N4)
    assert learner.membership.member(N5) == Member(N5, "a:5")


def test_snapshot_metadata_without_a_configuration_stands_for_its_voters() -> None:
    meta = SnapshotMeta(Index(4), Term(1), (N1, N2))
    core = new_core(N1, snapshot=meta, applied=4)
    assert core.voters == (N1, N2) and core.learners == ()


def test_status_reports_the_configuration_and_whether_it_is_committed() -> None:
    net = cluster()
    leader = net.cores[N1]
    index = leader.propose_conf_change(add(N4))
    status = leader.status()
    assert (status.membership_index, status.membership_committed) == (index, False)
    assert leader.committed_membership()[1].learners == ()
    net.settle()
    assert leader.status().membership_committed
    assert leader.committed_membership() == (index, leader.membership)


def test_only_voters_are_asked_for_votes() -> None:
    net = cluster()
    change(net, N1, add(N4))
    candidate = net.cores[N2]
    candidate.campaign()
    asked = {m.to for m in candidate.ready().persisted_messages if m.type is MessageType.VOTE}
    assert asked == {N1, N3}


def test_the_live_quorum_guard_refuses_a_removal_that_leaves_no_live_majority() -> None:
    """Not a safety rule: the guard behind `member remove` without --force."""
    net = cluster()
    net.tick([N1], times=2)  # every follower answered this leader
    leader = net.cores[N1]
    assert leader.keeps_live_quorum(remove(N2))
    net.crash(N3)
    net.tick([N1], times=ELECTION_TICKS)
    assert not leader.keeps_live_quorum(remove(N2))  # N1 and a silent N3
    assert leader.keeps_live_quorum(remove(N3))  # N1 and N2 answer


def test_a_re_added_learner_with_a_higher_term_is_brought_back() -> None:
    """A removed node that never learned of it campaigned alone and raised its
    term; added back as a learner, it refuses the leader's appends of the lower
    term. Its answer carries its term, so the leader steps down and a new
    election at a higher term reaches it (without PreVote and CheckQuorum too)."""
    net = cluster(pre_vote=False, check_quorum=False)
    net.isolate(N3)
    change(net, N1, remove(N3))
    net.tick([N3], times=4 * ELECTION_TICKS)  # alone, it raises its term
    assert net.cores[N3].current_term > net.cores[N1].current_term
    net.heal()
    change(net, net.leader() or N1, add(N3))
    net.tick(times=6 * ELECTION_TICKS)
    leader = net.leader()
    assert leader is not None and leader != N3
    assert net.cores[N3].learners == (N3,) and net.cores[N3].role is Role.FOLLOWER
    index = net.propose(leader, b"x")
    assert net.cores[N3].log.last_index >= index
