"""PendingReads: ReadIndex bookkeeping of the driver (Raft §6.4).

The core is real: a follower that knows its leader forwards each round as a
READ_INDEX message, so a test sees the context `PendingReads` chose and
answers it as the leader would; a single-node leader answers at once.
"""

from __future__ import annotations

import asyncio

import pytest

from railyard.node.driver.reads import PendingReads
from railyard.raft import Index, MessageType, NodeId, NotLeader, RaftCore, ReadState
from tests.raft.helpers import N1, N2, N3, drain, message, new_core, sent


def pending() -> asyncio.Future[None]:
    return asyncio.get_running_loop().create_future()


def follower_of(leader: NodeId = N1, term: int = 1) -> RaftCore:
    """N2, a follower that heard a heartbeat from `leader` in `term`."""
    core = new_core(N2)
    core.step(message(MessageType.HEARTBEAT, leader, N2, term))
    drain(core)
    return core


def forwarded_contexts(core: RaftCore) -> list[int]:
    """The contexts of the READ_INDEX rounds the follower forwarded since the last Ready."""
    return [m.context for m in sent(drain(core), MessageType.READ_INDEX)]


def leader_answers(core: RaftCore, context: int, read_index: int) -> tuple[ReadState, ...]:
    """The leader N1 confirms round `context` at `read_index`; the follower's read states."""
    core.step(
        message(
            MessageType.READ_INDEX_RESPONSE,
            N1,
            N2,
            1,
            context=context,
            read_index=Index(read_index),
            success=True,
        )
    )
    return drain(core).read_states


def held(reads: PendingReads) -> int:
    """How many futures `reads` still holds, in flight or waiting.

    White box: nothing public shows that a round was dropped.
    """
    in_flight = sum(len(fs) for fs in reads._by_context.values())
    return in_flight + sum(len(fs) for _, fs in reads._by_index)


async def test_read_is_served_only_once_applied_reaches_its_read_index() -> None:
    core, reads = follower_of(), PendingReads()
    first, second = pending(), pending()
    reads.start(core, [first, second])
    (context,) = forwarded_contexts(core)
    reads.on_read_states(leader_answers(core, context, read_index=7))
    reads.serve(Index(6))
    assert not first.done() and not second.done()
    reads.serve(Index(7))
    assert first.done() and first.result() is None
    assert second.done() and second.result() is None
    assert held(reads) == 0


async def test_read_is_not_served_while_its_round_is_in_flight() -> None:
    core, reads = follower_of(), PendingReads()
    read = pending()
    reads.start(core, [read])
    assert forwarded_contexts(core)
    reads.serve(Index(1_000))  # no read state yet: no read index to compare with
    assert not read.done()


async def test_read_states_are_matched_to_rounds_by_context() -> None:
    core, reads = follower_of(), PendingReads()
    early, late = pending(), pending()
    reads.start(core, [early])
    reads.start(core, [late])
    early_context, late_context = forwarded_contexts(core)
    assert early_context != late_context
    # The answers come back out of order, each with its own read index.
    reads.on_read_states(leader_answers(core, late_context, read_index=9))
    reads.on_read_states(leader_answers(core, early_context, read_index=4))
    reads.serve(Index(4))
    assert early.done() and not late.done()
    reads.serve(Index(9))
    assert late.done()


async def test_single_node_leader_serves_at_its_commit_index() -> None:
    core, reads = new_core(count=1), PendingReads()
    core.campaign()
    drain(core)
    core.propose_batch([b"a", b"b"])
    drain(core)
    commit = core.log.committed
    assert commit == Index(3)  # the leader's no-op, then the two commands
    read = pending()
    reads.start(core, [read])
    read_states = drain(core).read_states
    assert [rs.index for rs in read_states] == [commit]
    reads.on_read_states(read_states)
    reads.serve(Index(commit - 1))
    assert not read.done()
    reads.serve(commit)
    assert read.done()


async def test_caller_that_gave_up_is_not_resolved_and_its_round_is_dropped() -> None:
    core, reads = follower_of(), PendingReads()
    gave_up = pending()
    reads.start(core, [gave_up])
    (context,) = forwarded_contexts(core)
    reads.on_read_states(leader_answers(core, context, read_index=3))
    gave_up.cancel()  # the caller's deadline passed
    reads.serve(Index(3))
    assert gave_up.cancelled()
    assert held(reads) == 0


async def test_only_the_callers_that_gave_up_are_skipped_in_a_round() -> None:
    core, reads = follower_of(), PendingReads()
    gave_up, waiting = pending(), pending()
    reads.start(core, [gave_up, waiting])
    (context,) = forwarded_contexts(core)
    reads.on_read_states(leader_answers(core, context, read_index=3))
    gave_up.cancel()
    reads.serve(Index(3))
    assert gave_up.cancelled()
    assert waiting.done() and waiting.result() is None


async def test_round_whose_callers_all_gave_up_is_forgotten_at_the_next_start() -> None:
    core, reads = follower_of(), PendingReads()
    lost = pending()
    reads.start(core, [lost])  # its READ_INDEX is never answered
    (lost_context,) = forwarded_contexts(core)
    lost.cancel()
    reads.start(core, [pending()])
    assert held(reads) == 1  # only the new round
    # Should the lost round's answer come after all, it is ignored.
    reads.on_read_states(leader_answers(core, lost_context, read_index=2))
    reads.serve(Index(2))
    assert lost.cancelled() and held(reads) == 1


async def test_start_without_a_known_leader_fails_at_once_with_not_leader() -> None:
    core, reads = new_core(N2), PendingReads()
    read = pending()
    reads.start(core, [read])
    with pytest.raises(NotLeader) as caught:
        read.result()
    assert caught.value.leader_id is None
    assert held(reads) == 0


async def test_leader_change_fails_rounds_in_flight_with_not_leader() -> None:
    core, reads = follower_of(N1, term=1), PendingReads()
    read = pending()
    reads.start(core, [read])
    (context,) = forwarded_contexts(core)
    core.step(message(MessageType.HEARTBEAT, N3, N2, 2))  # N3 leads term 2
    soft = drain(core).soft_state
    assert soft is not None and soft.leader_id == N3
    reads.drop_in_flight(soft.leader_id)
    with pytest.raises(NotLeader) as caught:
        read.result()
    assert caught.value.leader_id == N3
    # The old leader's late answer is ignored (the future is not touched again).
    reads.on_read_states([ReadState(Index(1), context)])
    reads.serve(Index(1))
    assert held(reads) == 0


async def test_leader_change_keeps_rounds_already_confirmed() -> None:
    core, reads = follower_of(), PendingReads()
    confirmed, in_flight = pending(), pending()
    reads.start(core, [confirmed])
    reads.start(core, [in_flight])
    confirmed_context, _ = forwarded_contexts(core)
    reads.on_read_states(leader_answers(core, confirmed_context, read_index=5))
    reads.drop_in_flight(N3)
    assert in_flight.done() and isinstance(in_flight.exception(), NotLeader)
    assert not confirmed.done()  # its read index was confirmed: it only waits for apply
    reads.serve(Index(5))
    assert confirmed.done() and confirmed.result() is None


async def test_fail_all_fails_reads_in_flight_and_waiting_but_not_those_given_up() -> None:
    core, reads = follower_of(), PendingReads()
    waiting, in_flight, gave_up = pending(), pending(), pending()
    reads.start(core, [waiting])
    reads.start(core, [in_flight, gave_up])
    waiting_context, _ = forwarded_contexts(core)
    reads.on_read_states(leader_answers(core, waiting_context, read_index=5))
    gave_up.cancel()
    stopping = RuntimeError("node is stopping")
    reads.fail_all(stopping)
    assert waiting.exception() is stopping
    assert in_flight.exception() is stopping
    assert gave_up.cancelled()
    assert held(reads) == 0
    reads.serve(Index(5))  # nothing left to answer, nothing touched twice


async def test_start_without_a_leader_leaves_futures_already_given_up_alone() -> None:
    core, reads = new_core(N2), PendingReads()
    gave_up, waiting = pending(), pending()
    gave_up.cancel()
    reads.start(core, [gave_up, waiting])
    assert gave_up.cancelled()
    assert isinstance(waiting.exception(), NotLeader)
