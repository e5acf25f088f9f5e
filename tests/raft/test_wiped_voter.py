"""A node whose store was wiped does not vote for history it may have forgotten.

Raft assumes stable storage (§5.2, §5.4.3). A node that comes back with an
empty store starts `awaiting_catch_up`: it refuses votes and pre-votes to
candidates whose log is non-empty until it has caught up with a leader, so
its vote cannot elect a leader that lacks an entry it had acknowledged. The
scenario: A, B, C; entry e committed on A and B while C lags; B is wiped, A
is down; C must not win with B's vote.
"""

from __future__ import annotations

import random

from railyard.raft import (
    Entry,
    HardState,
    Index,
    Message,
    MessageType,
    NodeId,
    RaftCore,
    Role,
    SnapshotMeta,
    Term,
)
from railyard.raft.election import CAMPAIGN_TRANSFER_CONTEXT
from tests.raft.helpers import N1, N2, N3, drain, log_of, message, sent
from tests.raft.network import Disk, Network, ids, make_config

A, B, C = N1, N2, N3
# Elections tried while A is down: each is a full randomized election timeout
# or more, so many campaigns by both B and C happen.
TICKS_WHILE_A_DOWN = 100
# Enough for an election after A returns (election timeout < 2 * 10 ticks).
TICKS_TO_ELECT = 60
E = b"e"


class WipingNetwork(Network):
    """Network whose nodes tell their core when their store started empty, as
    `railyard.node.process` does."""

    def _new_core(self, node: NodeId) -> RaftCore:
        disk = self.disks[node]
        return RaftCore(
            make_config(node, self.voters, **self.config_overrides),
            random.Random(f"{self.seed}-{node}-{len(self.delivered)}"),
            hard_state=disk.hard_state,
            snapshot=disk.snapshot,
            entries=list(disk.entries),
            applied=disk.applied_index,
            started_empty=disk.snapshot is None and not disk.entries,
        )

    def wipe(self, node: NodeId) -> None:
        """Stop `node`, delete everything it stored, start it again."""
        self.crash(node)
        self.disks[node] = Disk()
        self.restart(node)


def awaiting_core(node: NodeId = B, count: int = 3) -> RaftCore:
    return RaftCore(make_config(node, ids(count)), random.Random(0), started_empty=True)


def holds(core: RaftCore, data: bytes) -> bool:
    return any(entry.data == data for entry in core.log_entries(Index(1), Index(1 << 30)))


def committed_on_a_and_b_only(net: WipingNetwork) -> Index:
    """A leads; some history on all three; then e committed on A and B while C lags."""
    net.elect(A)
    for number in range(3):
        net.propose(A, str(number).encode())
    net.isolate(C)
    index = net.propose(A, E)
    net.heal()
    net.cut(A, C)  # C keeps lagging until A goes down
    net.settle()
    assert net.cores[A].log.committed >= index and net.cores[B].log.committed >= index
    assert not holds(net.cores[C], E)
    return index


def tick_and_watch(net: WipingNetwork, times: int) -> None:
    """Tick all nodes that are up; after every tick no leader may lack e."""
    for _ in range(times):
        net.tick()
        for node in net.voters:
            core = net.cores[node]
            if node not in net.down and core.role is Role.LEADER:
                assert holds(core, E), f"{node} leads term {core.current_term} without e"


# ---------------------------------------------------------------- the F9 scenario


def test_wiped_voter_does_not_elect_a_leader_without_a_committed_entry() -> None:
    net = WipingNetwork(3)
    index = committed_on_a_and_b_only(net)
    net.wipe(B)
    assert net.cores[B].status().awaiting_catch_up
    net.crash(A)
    net.heal()
    tick_and_watch(net, TICKS_WHILE_A_DOWN)  # PreVote rounds, then elections
    net.cores[C].campaign()  # forced: a real election, no PreVote
    net.settle()
    assert net.cores[C].role is not Role.LEADER
    assert net.leader() is None
    assert net.cores[B].status().awaiting_catch_up
    # A returns: a leader holding e is elected and B catches up.
    net.restart(A)
    tick_and_watch(net, TICKS_TO_ELECT)
    leader = net.leader()
    assert leader is not None and holds(net.cores[leader], E)
    net.propose(leader, b"after")
    for node in net.voters:
        assert net.cores[node].term_of(index) == net.cores[leader].term_of(index)
        assert net.applied_data(node)[-2:] == [E, b"after"]
    assert not net.cores[B].status().awaiting_catch_up


def test_caught_up_voter_votes_normally_again() -> None:
    net = WipingNetwork(3)
    committed_on_a_and_b_only(net)
    net.wipe(B)
    net.heal()
    net.propose(A, b"after")  # B and C catch up from A
    assert not net.cores[B].status().awaiting_catch_up
    net.crash(A)
    # C now holds e: with B's vote it wins, as Raft without any wipe would.
    net.cores[C].campaign()
    net.settle()
    assert net.cores[C].role is Role.LEADER
    assert net.cores[B].voted_for == C


def test_fresh_cluster_with_empty_stores_still_elects() -> None:
    net = WipingNetwork(3)
    assert all(net.cores[node].status().awaiting_catch_up for node in net.voters)
    net.tick(times=TICKS_TO_ELECT)
    leader = net.leader()
    assert leader is not None
    assert not net.cores[leader].status().awaiting_catch_up  # winning ends it
    net.propose(leader, b"first")
    for node in net.voters:
        assert net.applied_data(node) == [b"first"]
        assert not net.cores[node].status().awaiting_catch_up


def test_wiped_node_without_flag_would_lose_the_entry() -> None:
    """The same run on a network that does not pass `started_empty` (as before
    the fix) elects C without e: the scenario does exercise the hole."""
    net = Network(3)
    net.elect(A)
    net.isolate(C)
    net.propose(A, E)
    net.heal()
    net.crash(B)
    net.disks[B] = Disk()
    net.restart(B)
    net.crash(A)
    net.cores[C].campaign()
    net.settle()
    assert net.cores[C].role is Role.LEADER and not holds(net.cores[C], E)


# ---------------------------------------------------------------- votes one by one


def test_awaiting_node_refuses_votes_and_pre_votes_to_candidates_with_history() -> None:
    core = awaiting_core()
    for kind, reply in (
        (MessageType.PRE_VOTE, MessageType.PRE_VOTE_RESPONSE),
        (MessageType.VOTE, MessageType.VOTE_RESPONSE),
    ):
        core.step(message(kind, C, B, 5, last_log_index=Index(4), last_log_term=Term(3)))
        (answer,) = sent(drain(core), reply)
        assert not answer.vote_granted
    assert core.voted_for is None


def test_awaiting_node_grants_candidates_with_empty_logs() -> None:
    core = awaiting_core()
    core.step(message(MessageType.PRE_VOTE, C, B, 1))
    (pre,) = sent(drain(core), MessageType.PRE_VOTE_RESPONSE)
    core.step(message(MessageType.VOTE, C, B, 1))
    (vote,) = sent(drain(core), MessageType.VOTE_RESPONSE)
    assert pre.vote_granted and vote.vote_granted and core.voted_for == C


def test_node_with_a_log_is_never_awaiting() -> None:
    core = RaftCore(
        make_config(B, ids(3)),
        random.Random(0),
        hard_state=HardState(Term(1)),
        entries=log_of(1, 1),
    )
    assert not core.status().awaiting_catch_up
    core.step(message(MessageType.VOTE, C, B, 2, last_log_index=Index(2), last_log_term=Term(1)))
    (vote,) = sent(drain(core), MessageType.VOTE_RESPONSE)
    assert vote.vote_granted


def test_awaiting_node_may_win_among_empty_logs_and_leaves_the_state() -> None:
    core = awaiting_core()
    core.campaign()
    (request, _) = sent(drain(core), MessageType.VOTE)
    core.step(message(MessageType.VOTE_RESPONSE, C, B, request.term, vote_granted=True))
    assert core.role is Role.LEADER and not core.status().awaiting_catch_up


# ---------------------------------------------------------------- leaving the state

HISTORY = 72  # entries of term 1 the cluster holds; the leader's no-op follows at term 2


def history(last: int = HISTORY + 1, first: int = 1) -> list[Entry]:
    terms = [1] * HISTORY + [2]
    return log_of(*terms[first - 1 : last], start=first)


def append(prev: int, entries: list[Entry], commit: int) -> Message:
    prev_term = 0 if prev == 0 else (1 if prev <= HISTORY else 2)
    return message(
        MessageType.APPEND,
        A,
        B,
        2,
        prev_log_index=Index(prev),
        prev_log_term=Term(prev_term),
        entries=tuple(entries),
        leader_commit=Index(commit),
    )


def test_heartbeat_alone_sets_no_target() -> None:
    """A heartbeat carries min(commit, match): 0 from a leader that knows we are
    empty, or a commit beyond our log from one that does not. Neither ends the state."""
    core = awaiting_core()
    for commit in (0, HISTORY):
        core.step(message(MessageType.HEARTBEAT, A, B, 2, leader_commit=Index(commit)))
        drain(core)
        assert core.status().awaiting_catch_up and core.catch_up_target is None
        assert core.log.committed == 0


def test_rejected_append_sets_target_and_catching_up_ends_the_state() -> None:
    core = awaiting_core()
    core.step(append(HISTORY, [], HISTORY))  # probe beyond our empty log
    drain(core)
    assert core.catch_up_target == HISTORY and core.status().awaiting_catch_up
    core.step(append(0, history(HISTORY - 10), HISTORY))
    drain(core)
    assert core.log.committed == HISTORY - 10 and core.status().awaiting_catch_up
    core.step(append(HISTORY - 10, history(first=HISTORY - 9), HISTORY))
    drain(core)
    # Reached the target, but the commit index is still on a term-1 entry: the
    # leader's own no-op is not known committed yet.
    assert core.log.committed == HISTORY and core.status().awaiting_catch_up
    core.step(message(MessageType.HEARTBEAT, A, B, 2, leader_commit=Index(HISTORY + 1)))
    drain(core)
    assert core.log.committed == HISTORY + 1 and not core.status().awaiting_catch_up
    # For good: a later campaign by a candidate with history is answered normally
    # (a forced one, as B just heard from its leader: leader stickiness).
    core.step(
        message(
            MessageType.VOTE,
            C,
            B,
            3,
            last_log_index=Index(HISTORY + 1),
            last_log_term=Term(2),
            context=CAMPAIGN_TRANSFER_CONTEXT,
        )
    )
    (vote,) = sent(drain(core), MessageType.VOTE_RESPONSE)
    assert vote.vote_granted


def test_new_leader_with_lagging_commit_index_must_commit_in_its_term_first() -> None:
    """A new leader's commit index can lag the entries committed before it (it
    learns them by committing its no-op): its first append's commit is not enough."""
    core = awaiting_core()
    core.step(append(0, history(HISTORY - 1), 5))
    drain(core)
    assert core.catch_up_target == 5 and core.log.committed == 5
    assert core.status().awaiting_catch_up
    core.step(append(HISTORY - 1, history(first=HISTORY), HISTORY + 1))
    drain(core)
    assert core.log.committed == HISTORY + 1 and not core.status().awaiting_catch_up


def test_snapshot_install_then_append_ends_the_state() -> None:
    core = awaiting_core()
    meta = SnapshotMeta(Index(60), Term(1), ids(3))
    core.step(message(MessageType.SNAPSHOT, A, B, 2, snapshot=meta))
    drain(core)
    assert core.log.committed == 60
    assert core.status().awaiting_catch_up and core.catch_up_target is None
    core.step(append(60, history(first=61), HISTORY + 1))
    drain(core)
    assert core.log.committed == HISTORY + 1 and not core.status().awaiting_catch_up


def test_append_from_a_leader_that_committed_nothing_ends_the_state_at_once() -> None:
    core = awaiting_core()
    core.step(append(0, log_of(1), 0))
    drain(core)
    assert core.catch_up_target == 0 and not core.status().awaiting_catch_up


def test_first_leader_failing_before_any_commit_does_not_block_a_fresh_cluster() -> None:
    """Every node started empty and holds the first leader's no-op, none committed:
    a node awaiting on such a leader would refuse all others forever."""
    net = WipingNetwork(3)
    net.drop_types = {MessageType.APPEND_RESPONSE}
    net.elect(A)
    assert all(holds_index(net.cores[node], 1) for node in net.voters)
    assert net.cores[A].log.committed == 0
    net.crash(A)
    net.drop_types.clear()
    net.tick(times=TICKS_TO_ELECT)
    leader = net.leader()
    assert leader is not None
    net.propose(leader, b"first")
    assert net.applied_data(B) == net.applied_data(C) == [b"first"]


def holds_index(core: RaftCore, index: int) -> bool:
    return core.log.last_index >= index


def test_wiped_node_caught_up_by_a_snapshot_of_an_idle_leader_leaves_the_state() -> None:
    """C is down while A writes and compacts, then comes back wiped: its first
    message from A is a snapshot at A's last index, and no write follows. A's
    empty append after the snapshot still tells C the leader's commit index."""
    net = WipingNetwork(3)
    net.elect(A)
    net.isolate(C)
    for number in range(5):
        net.propose(A, str(number).encode())
    leader = net.cores[A]
    last = leader.log.last_index
    assert leader.log.committed == last and net.disks[A].applied_index == last
    meta = SnapshotMeta(last, leader.term_of(last) or Term(0), net.voters)
    leader.compact(meta)
    net.disks[A].snapshot = meta
    net.disks[A].entries = []
    net.wipe(C)
    net.heal()
    assert net.cores[C].status().awaiting_catch_up
    since_wipe = len(net.delivered)
    net.tick(times=5)
    to_c = [
        m.type
        for m in net.delivered[since_wipe:]
        if m.to == C and m.type is not MessageType.HEARTBEAT
    ]
    assert to_c[0] is MessageType.SNAPSHOT, to_c
    assert net.cores[C].log.committed == last
    assert not net.cores[C].status().awaiting_catch_up, "still refusing votes after catching up"
