"""Leadership transfer (Raft §3.10) and forced elections."""

from __future__ import annotations

import pytest

from railyard.raft import MessageType, NodeId, NotLeader, ProposalDropped, Role, UnknownPeer
from tests.raft.helpers import N1, N2, N3, ack_append, drain, elect, message, new_core, sent
from tests.raft.network import Network


def test_transfer_to_up_to_date_follower() -> None:
    net = Network(3)
    net.elect(N1)
    net.propose(N1, b"a")
    net.cores[N1].transfer_leadership(N2)
    net.settle()
    assert net.leader() == N2
    assert net.cores[N1].role is Role.FOLLOWER
    assert any(m.type is MessageType.TIMEOUT_NOW and m.to == N2 for m in net.delivered)
    net.propose(N2, b"b")
    assert net.applied_data(N1) == [b"a", b"b"]


def test_transfer_catches_the_target_up_first() -> None:
    net = Network(3)
    net.elect(N1)
    net.isolate(N3)
    net.propose(N1, b"a", b"b")
    net.heal()
    net.cores[N1].transfer_leadership(N3)
    net.settle()
    assert net.leader() == N3
    assert net.applied_data(N3) == [b"a", b"b"]


def test_transfer_to_none_picks_most_up_to_date() -> None:
    net = Network(3)
    net.elect(N1)
    net.isolate(N3)
    net.propose(N1, b"a")
    net.heal()
    net.cores[N1].transfer_leadership(None)
    net.settle()
    assert net.leader() == N2


def test_proposals_dropped_while_transferring_then_abandoned() -> None:
    core = new_core(N1)
    ready = elect(core)
    ack_append(core, sent(ready, MessageType.APPEND)[0])
    drain(core)
    core.transfer_leadership(N3)  # N3 is behind: no TIMEOUT_NOW yet
    assert not sent(drain(core), MessageType.TIMEOUT_NOW)
    with pytest.raises(ProposalDropped):
        core.propose(b"x")
    for _ in range(10):
        core.tick()
        core.step(message(MessageType.HEARTBEAT_RESPONSE, N2, N1, core.current_term))
    assert core.role is Role.LEADER
    assert core.propose(b"x") > 0  # abandoned after an election timeout


def test_transfer_errors() -> None:
    with pytest.raises(NotLeader):
        new_core(N2).transfer_leadership(N1)
    core = new_core(N1)
    elect(core)
    with pytest.raises(UnknownPeer):
        core.transfer_leadership(NodeId("nobody"))
    core.transfer_leadership(N1)  # to ourselves: nothing to do
    assert core.role is Role.LEADER


def test_campaign_does_not_break_a_live_leaders_lease() -> None:
    """Only the leader can vouch for a campaign that breaks its followers' lease
    (issue 14): a follower that campaigns on its own is refused while the leader
    is heard from, and leadership moves only by the leader's transfer."""
    net = Network(3)
    net.elect(N1)
    net.propose(N1, b"a")
    net.cores[N3].campaign()
    net.settle()
    assert net.cores[N2].voted_for != N3 and net.cores[N3].role is not Role.LEADER
