"""Elections message by message: timeouts, votes, PreVote, leader stickiness."""

from __future__ import annotations

from railyard.raft import HardState, Index, MessageType, NodeId, Role, Term
from railyard.raft.election import CAMPAIGN_TRANSFER_CONTEXT, TRANSFER_NOTICE_CONTEXT
from tests.raft.helpers import N1, N2, N3, drain, elect, log_of, message, new_core, sent
from tests.raft.network import Network


def ticks_until_campaign(seed: int) -> int:
    core = new_core(seed=seed, pre_vote=False)
    for tick in range(1, 100):
        core.tick()
        if core.role is Role.CANDIDATE:
            return tick
    raise AssertionError("never campaigned")


def test_randomized_timeout_in_range_and_varies() -> None:
    seen = {ticks_until_campaign(seed) for seed in range(60)}
    assert min(seen) >= 10 and max(seen) < 20
    assert len(seen) > 5


def test_timeout_is_reproducible_from_the_seed() -> None:
    assert ticks_until_campaign(7) == ticks_until_campaign(7)


def test_single_node_elects_itself() -> None:
    core = new_core(count=1)
    for _ in range(20):
        core.tick()
    assert core.role is Role.LEADER and core.current_term == 1


def test_candidate_counts_its_own_vote() -> None:
    """With 3 voters, one granted vote plus our own is a majority."""
    core = new_core(pre_vote=False)
    core.campaign()
    requests = sent(drain(core), MessageType.VOTE)
    assert {m.to for m in requests} == {N2, N3}
    assert core.voted_for == N1
    core.step(message(MessageType.VOTE_RESPONSE, N2, N1, 1, vote_granted=True))
    assert core.role is Role.LEADER


def test_candidate_loses_on_majority_rejection() -> None:
    core = new_core(pre_vote=False)
    core.campaign()
    drain(core)
    core.step(message(MessageType.VOTE_RESPONSE, N2, N1, 1, vote_granted=False))
    assert core.role is Role.CANDIDATE
    core.step(message(MessageType.VOTE_RESPONSE, N3, N1, 1, vote_granted=False))
    assert core.status().role is Role.FOLLOWER and core.current_term == 1


def test_vote_requests_wait_for_persistence() -> None:
    core = new_core(pre_vote=False)
    core.campaign()
    ready = core.ready()
    assert ready.hard_state == HardState(Term(1), N1, Index(0))
    assert {m.type for m in ready.persisted_messages} == {MessageType.VOTE}
    assert not ready.messages


def test_vote_granted_once_per_term_and_persisted() -> None:
    core = new_core(N1)
    core.step(message(MessageType.VOTE, N2, N1, 1))
    ready = drain(core)
    (reply,) = ready.persisted_messages
    assert reply.vote_granted and reply.term == 1
    assert ready.hard_state is not None and ready.hard_state.voted_for == N2
    core.step(message(MessageType.VOTE, N3, N1, 1))
    (reply,) = sent(drain(core))
    assert not reply.vote_granted
    core.step(message(MessageType.VOTE, N2, N1, 1))  # a retry by the same candidate
    (reply,) = sent(drain(core))
    assert reply.vote_granted


def test_vote_rejected_for_stale_log() -> None:
    core = new_core(N1, hard_state=HardState(Term(2)), entries=log_of(1, 2))
    core.step(message(MessageType.VOTE, N2, N1, 3, last_log_index=Index(5), last_log_term=Term(1)))
    (reply,) = sent(drain(core))
    assert not reply.vote_granted and core.current_term == 3


def test_higher_term_makes_a_leader_step_down() -> None:
    core = new_core(N1, check_quorum=False)
    elect(core)
    core.step(message(MessageType.APPEND_RESPONSE, N2, N1, 5))
    assert core.role is Role.FOLLOWER and core.current_term == 5 and core.leader_id is None


def test_pre_vote_changes_no_state() -> None:
    core = new_core(N1)
    for _ in range(20):
        core.tick()
    assert core.role is Role.PRE_CANDIDATE and core.current_term == 0
    ready = drain(core)
    requests = sent(ready, MessageType.PRE_VOTE)
    assert {m.term for m in requests} == {1}
    assert requests[0] in ready.messages  # pre-votes promise nothing durable
    voter = new_core(N2)
    voter.step(requests[0])
    (reply,) = sent(drain(voter))
    assert reply.vote_granted and reply.term == 1
    assert voter.current_term == 0 and voter.voted_for is None


def test_pre_vote_win_starts_real_election() -> None:
    core = new_core(N1)
    for _ in range(20):
        core.tick()
    drain(core)
    core.step(message(MessageType.PRE_VOTE_RESPONSE, N2, N1, 1, vote_granted=True))
    assert core.role is Role.CANDIDATE and core.current_term == 1
    assert {m.type for m in sent(drain(core))} == {MessageType.VOTE}


def test_stale_pre_vote_grant_is_ignored() -> None:
    core = new_core(N1, hard_state=HardState(Term(3)))
    for _ in range(20):
        core.tick()
    drain(core)
    core.step(message(MessageType.PRE_VOTE_RESPONSE, N2, N1, 3, vote_granted=True))
    assert core.role is Role.PRE_CANDIDATE


def test_follower_with_live_leader_ignores_votes() -> None:
    """Leader stickiness: a recently heard leader is not deposed by a vote request."""
    core = new_core(N1)
    core.step(message(MessageType.HEARTBEAT, N2, N1, 1))
    drain(core)
    core.step(message(MessageType.VOTE, N3, N1, 2, last_log_index=Index(9), last_log_term=Term(1)))
    core.step(
        message(MessageType.PRE_VOTE, N3, N1, 2, last_log_index=Index(9), last_log_term=Term(1))
    )
    assert core.current_term == 1 and core.leader_id == N2
    assert not sent(drain(core))


def test_transfer_context_bypasses_stickiness_after_the_leaders_notice() -> None:
    core = new_core(N1)
    core.step(message(MessageType.HEARTBEAT, N2, N1, 1))
    core.step(message(MessageType.TIMEOUT_NOW, N2, N1, 1, context=TRANSFER_NOTICE_CONTEXT))
    drain(core)
    assert core.role is Role.FOLLOWER  # a notice is not an order to campaign
    core.step(message(MessageType.VOTE, N3, N1, 2, context=CAMPAIGN_TRANSFER_CONTEXT))
    (reply,) = sent(drain(core))
    assert reply.vote_granted and core.current_term == 2 and core.voted_for == N3


def test_votes_granted_after_leader_silence() -> None:
    core = new_core(N1)
    core.step(message(MessageType.HEARTBEAT, N2, N1, 1))
    for _ in range(10):
        core.tick()  # a whole election timeout without hearing from the leader
    core.step(message(MessageType.PRE_VOTE, N3, N1, 2))
    assert sent(drain(core), MessageType.PRE_VOTE_RESPONSE)[0].vote_granted


def test_lower_term_pre_vote_is_rejected_with_our_term() -> None:
    core = new_core(N1, hard_state=HardState(Term(4)))
    core.step(message(MessageType.PRE_VOTE, N2, N1, 3))
    (reply,) = sent(drain(core))
    assert reply.type is MessageType.PRE_VOTE_RESPONSE and not reply.vote_granted
    assert reply.term == 4


def test_stale_leader_learns_newer_term_from_reply() -> None:
    core = new_core(N1, hard_state=HardState(Term(4)))
    core.step(message(MessageType.HEARTBEAT, N2, N1, 2))
    (reply,) = sent(drain(core))
    assert reply.type is MessageType.APPEND_RESPONSE and reply.term == 4


def test_candidate_steps_down_for_leader_of_same_term() -> None:
    core = new_core(N1, pre_vote=False)
    core.campaign()
    drain(core)
    core.step(message(MessageType.HEARTBEAT, N2, N1, 1))
    assert core.role is Role.FOLLOWER and core.leader_id == N2 and core.current_term == 1


def test_leader_appends_noop_on_election() -> None:
    core = new_core(N1)
    ready = elect(core)
    (noop,) = ready.entries
    assert noop.kind.name == "NOOP" and noop.term == core.current_term


def test_check_quorum_leader_steps_down_alone() -> None:
    net = Network(3)
    net.elect(N1)
    net.isolate(N1)
    net.tick([N1], times=10)
    assert net.cores[N1].role is Role.FOLLOWER


def test_check_quorum_leader_stays_with_quorum() -> None:
    net = Network(3)
    net.elect(N1)
    net.isolate(N3)
    net.tick([N1, N2], times=30)
    assert net.cores[N1].role is Role.LEADER


def test_elections_converge_in_a_network() -> None:
    for seed in range(5):
        net = Network(5, seed=seed)
        net.tick(times=40)
        leader = net.leader()
        assert leader is not None
        assert all(net.cores[n].leader_id == leader for n in net.voters)


def test_non_voter_never_campaigns() -> None:
    core = new_core(NodeId("outsider"))
    for _ in range(50):
        core.tick()
    assert core.role is Role.FOLLOWER
