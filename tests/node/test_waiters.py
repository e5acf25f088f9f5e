"""ProposalWaiters: a proposal is answered with its entry's result only if
the entry committed in the term it was proposed in; otherwise, and whenever
this node will never learn the outcome, with LeadershipLost."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from railyard.node.driver.waiters import LeadershipLost, ProposalWaiters
from railyard.raft import Entry, Index, Term
from tests.raft.helpers import N1, N2, N3, drain, log_of, new_core
from tests.raft.network import Network

# Readies a single-node core needs to commit a batch, with room to spare: a bound, not a wait.
MAX_READIES = 10


def pending(count: int) -> list[asyncio.Future[Any]]:
    loop = asyncio.get_running_loop()
    return [loop.create_future() for _ in range(count)]


def echo(entries: list[Entry]) -> list[bytes]:
    """A state machine whose result for an entry is its command."""
    return [e.data for e in entries]


async def test_each_proposal_of_a_batch_gets_its_own_entry_result() -> None:
    waiters = ProposalWaiters()
    futures = pending(3)
    waiters.add(Index(5), Term(2), futures)
    entries = log_of(2, 2, 2, start=5)
    waiters.resolve(entries[:1], ["five"], N1)
    assert futures[0].result() == "five"
    assert not futures[1].done() and not futures[2].done()
    waiters.resolve(entries[1:], ["six", "seven"], N1)
    assert [f.result() for f in futures] == ["five", "six", "seven"]


async def test_batch_on_a_real_single_node_core_resolves_in_proposal_order() -> None:
    core, waiters = new_core(count=1), ProposalWaiters()
    core.campaign()
    datas = [b"a", b"b", b"c"]
    futures = pending(len(datas))
    first = core.propose_batch(datas)
    waiters.add(first, core.status().term, futures)
    # Apply each Ready's committed entries, as the driver does, until none is left.
    applied: list[Entry] = []
    for _ in range(MAX_READIES):
        if not core.has_ready():
            break
        committed = list(drain(core).committed_entries)
        waiters.resolve(committed, echo(committed), core.leader_id)
        applied += committed
    assert [f.result() for f in futures] == datas
    assert applied[0].index < first  # the leader's no-op came first, with no waiter


async def test_entry_committed_in_another_term_fails_with_leadership_lost() -> None:
    waiters = ProposalWaiters()
    (future,) = pending(1)
    waiters.add(Index(4), Term(2), [future])
    waiters.resolve([Entry(Term(3), Index(4))], ["another leader's result"], N3)
    with pytest.raises(LeadershipLost) as caught:
        future.result()
    assert caught.value.leader_id == N3


async def test_entry_overwritten_by_the_next_leader_fails_with_leadership_lost() -> None:
    net, waiters = Network(3), ProposalWaiters()
    net.elect(N1)
    net.isolate(N1)
    proposed_term = net.cores[N1].current_term
    (future,) = pending(1)
    waiters.add(net.propose(N1, b"never commits"), proposed_term, [future])
    net.elect(N2)  # N2 and N3 are a majority without N1
    net.heal()
    net.tick([N2])  # N2's heartbeat makes N1 follow; its appends replace N1's entry
    assert net.cores[N1].leader_id == N2
    applied_by_n1 = net.disks[N1].applied
    waiters.resolve(applied_by_n1, echo(applied_by_n1), N2)
    assert isinstance(future.exception(), LeadershipLost)


async def test_entries_without_a_waiter_are_skipped() -> None:
    waiters = ProposalWaiters()
    (future,) = pending(1)
    waiters.add(Index(3), Term(1), [future])
    # The no-op, another node's entries, then ours.
    waiters.resolve(log_of(1, 1, 1), [None, "x", "mine"], N1)
    assert future.result() == "mine"


async def test_proposal_whose_caller_gave_up_is_not_touched() -> None:
    waiters = ProposalWaiters()
    gave_up, waiting = pending(2)
    waiters.add(Index(1), Term(1), [gave_up, waiting])
    gave_up.cancel()
    waiters.resolve(log_of(1, 1), ["a", "b"], N1)
    assert gave_up.cancelled()
    assert waiting.result() == "b"


async def test_a_proposal_is_answered_at_most_once() -> None:
    waiters = ProposalWaiters()
    (future,) = pending(1)
    waiters.add(Index(1), Term(1), [future])
    waiters.resolve(log_of(1), ["first"], N1)
    waiters.resolve(log_of(1), ["again"], N1)  # would raise if the future were set twice
    waiters.fail_all_unknown(None)
    assert future.result() == "first"


async def test_fail_through_fails_only_what_the_snapshot_covers() -> None:
    waiters = ProposalWaiters()
    futures = pending(3)
    waiters.add(Index(5), Term(2), futures)
    waiters.fail_through(Index(6), N2)
    for covered in futures[:2]:
        error = covered.exception()
        assert isinstance(error, LeadershipLost) and error.leader_id == N2
    assert not futures[2].done()
    waiters.resolve(log_of(2, start=7), ["seven"], N2)
    assert futures[2].result() == "seven"


async def test_fail_all_unknown_fails_every_proposal_with_leadership_lost() -> None:
    waiters = ProposalWaiters()
    older, newer = pending(1), pending(2)
    waiters.add(Index(1), Term(1), older)
    waiters.add(Index(2), Term(1), newer)
    waiters.fail_all_unknown(N3)
    for future in [*older, *newer]:
        error = future.exception()
        assert isinstance(error, LeadershipLost) and error.leader_id == N3
    waiters.resolve(log_of(1, 1, 1), ["a", "b", "c"], N3)  # nothing left waiting


async def test_fail_all_uses_the_given_error_and_skips_futures_given_up() -> None:
    waiters = ProposalWaiters()
    gave_up, waiting = pending(2)
    waiters.add(Index(1), Term(1), [gave_up, waiting])
    gave_up.cancel()
    stopping = RuntimeError("node is stopping")
    waiters.fail_all(stopping)
    assert gave_up.cancelled()
    assert waiting.exception() is stopping
    waiters.resolve(log_of(1, 1), ["a", "b"], N1)  # nothing left waiting


def test_leadership_lost_names_the_leader_or_says_unknown() -> None:
    assert "n2" in str(LeadershipLost(N2))
    assert "unknown" in str(LeadershipLost(None))
