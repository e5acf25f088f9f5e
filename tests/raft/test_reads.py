"""ReadIndex (Raft §6.4): confirmation rounds, followers forwarding, waiting for a term commit."""

from __future__ import annotations

import pytest

from railyard.raft import Index, MessageType, NotLeader, ReadState
from tests.raft.helpers import N1, N2, N3, ack_append, drain, elect, message, new_core, sent
from tests.raft.network import Network


def test_single_node_answers_at_once() -> None:
    core = new_core(count=1)
    core.campaign()
    core.advance(core.ready())
    drain(core)
    core.read_index(7)
    assert drain(core).read_states == (ReadState(Index(1), 7),)


def test_leader_waits_for_quorum_of_heartbeat_acks() -> None:
    core = new_core(N1)
    ready = elect(core)
    ack_append(core, sent(ready, MessageType.APPEND)[0])
    drain(core)
    core.read_index(42)
    beats = sent(drain(core), MessageType.HEARTBEAT)
    assert {b.to for b in beats} == {N2, N3}
    round_context = beats[0].context
    assert round_context != 0
    core.step(message(MessageType.HEARTBEAT_RESPONSE, N3, N1, 1, context=round_context - 1))
    assert drain(core).read_states == ()  # an older round does not confirm this read
    core.step(message(MessageType.HEARTBEAT_RESPONSE, N2, N1, 1, context=round_context))
    assert drain(core).read_states == (ReadState(Index(1), 42),)


def test_leader_defers_reads_until_it_commits_in_its_term() -> None:
    core = new_core(N1)
    ready = elect(core)
    core.read_index(5)
    assert not sent(drain(core), MessageType.HEARTBEAT)
    ack_append(core, sent(ready, MessageType.APPEND)[0])
    beats = sent(drain(core), MessageType.HEARTBEAT)
    assert beats
    core.step(message(MessageType.HEARTBEAT_RESPONSE, N2, N1, 1, context=beats[0].context))
    assert drain(core).read_states == (ReadState(Index(1), 5),)


def test_follower_without_leader_raises() -> None:
    with pytest.raises(NotLeader):
        new_core(N2).read_index(1)


def test_follower_forwards_and_hands_response() -> None:
    follower = new_core(N2)
    follower.step(message(MessageType.HEARTBEAT, N1, N2, 1))
    drain(follower)
    follower.read_index(9)
    (request,) = sent(drain(follower))
    assert request.type is MessageType.READ_INDEX and request.to == N1 and request.context == 9
    follower.step(
        message(
            MessageType.READ_INDEX_RESPONSE, N1, N2, 1, context=9, read_index=Index(4), success=True
        )
    )
    assert drain(follower).read_states == (ReadState(Index(4), 9),)


def test_reads_in_a_network_from_leader_and_follower() -> None:
    net = Network(3)
    net.elect(N1)
    net.propose(N1, b"a")
    commit = net.cores[N1].log.committed
    net.cores[N1].read_index(1)
    net.cores[N2].read_index(1)  # the same context on two nodes does not collide
    net.settle()
    assert net.read_states[N1] == [ReadState(commit, 1)]
    assert net.read_states[N2] == [ReadState(commit, 1)]


def test_partitioned_leader_cannot_serve_reads() -> None:
    net = Network(3)
    net.elect(N1)
    net.propose(N1, b"a")
    net.isolate(N1)
    net.cores[N1].read_index(3)
    net.settle()
    assert net.read_states[N1] == []


def test_reads_between_two_readies_share_one_round() -> None:
    core = new_core(N1)
    ready = elect(core)
    ack_append(core, sent(ready, MessageType.APPEND)[0])
    drain(core)
    core.read_index(1)
    core.read_index(2)
    beats = sent(drain(core), MessageType.HEARTBEAT)
    assert len(beats) == 2  # one round: a heartbeat to each follower
    core.step(message(MessageType.HEARTBEAT_RESPONSE, N2, N1, 1, context=beats[0].context))
    assert drain(core).read_states == (ReadState(Index(1), 1), ReadState(Index(1), 2))
    core.read_index(3)  # after the heartbeats left: a new round, never the old one
    (beat, _) = sent(drain(core), MessageType.HEARTBEAT)
    assert beat.context == beats[0].context + 1
