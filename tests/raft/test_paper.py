"""One test per rule of the Raft paper (Ongaro & Ousterhout, "In Search of an
Understandable Consensus Algorithm", extended version) and of Ongaro's
dissertation for PreVote, CheckQuorum, leadership transfer and ReadIndex.

Each docstring quotes the rule and cites its section.
"""

from __future__ import annotations

import pytest

from railyard.raft import (
    Entry,
    EntryKind,
    HardState,
    Index,
    MessageType,
    NodeId,
    ReadState,
    Role,
    SnapshotMeta,
    Term,
)
from tests.raft.helpers import (
    N1,
    N2,
    N3,
    N4,
    N5,
    ack_append,
    drain,
    elect,
    log_of,
    message,
    new_core,
    sent,
)
from tests.raft.network import Network

# ------------------------------------------------------------------ §5.1


@pytest.mark.parametrize("role", [Role.FOLLOWER, Role.CANDIDATE, Role.LEADER])
def test_update_term_from_message(role: Role) -> None:
    """ "If one server's current term is smaller than the other's, then it updates
    its current term to the larger value. If a candidate or leader discovers that
    its term is out of date, it immediately reverts to follower state." (§5.1)"""
    core = new_core(N1, pre_vote=False, check_quorum=False)
    if role is Role.CANDIDATE:
        core.campaign()
    elif role is Role.LEADER:
        elect(core)
    core.step(message(MessageType.APPEND, N2, N1, 7))
    assert core.current_term == 7 and core.role is Role.FOLLOWER


def test_reject_stale_term_message() -> None:
    """ "If a server receives a request with a stale term number, it rejects the
    request." (§5.1)"""
    core = new_core(N1, hard_state=HardState(Term(3)))
    core.step(message(MessageType.APPEND, N2, N1, 2, entries=tuple(log_of(2))))
    core.step(message(MessageType.VOTE, N2, N1, 2))
    assert core.log.last_index == 0 and core.voted_for is None
    assert all(not m.success and not m.vote_granted for m in sent(drain(core)))


# ------------------------------------------------------------------ §5.2


def test_start_as_follower() -> None:
    """ "When servers start up, they begin as followers." (§5.2)"""
    assert new_core().role is Role.FOLLOWER


def test_leader_broadcasts_heartbeats() -> None:
    """ "Leaders send periodic heartbeats (AppendEntries RPCs that carry no log
    entries) to all followers in order to maintain their authority." (§5.2)"""
    core = new_core(N1, heartbeat_ticks=2)
    elect(core)
    core.tick()
    assert not sent(drain(core), MessageType.HEARTBEAT)
    core.tick()
    beats = sent(drain(core), MessageType.HEARTBEAT)
    assert {b.to for b in beats} == {N2, N3} and all(not b.entries for b in beats)


def test_follower_starts_election() -> None:
    """ "If a follower receives no communication over a period of time called the
    election timeout, then it assumes there is no viable leader and begins an
    election... a follower increments its current term and transitions to
    candidate state. It then votes for itself and issues RequestVote RPCs in
    parallel to each of the other servers in the cluster." (§5.2)"""
    core = new_core(N1, pre_vote=False)
    for _ in range(20):
        core.tick()
    assert core.role is Role.CANDIDATE and core.current_term == 1 and core.voted_for == N1
    assert {m.to for m in sent(drain(core), MessageType.VOTE)} == {N2, N3}


@pytest.mark.parametrize(
    ("size", "granted", "rejected", "outcome"),
    [
        (1, [], [], Role.LEADER),
        (3, [N2], [], Role.LEADER),
        (3, [], [N2], Role.CANDIDATE),
        (3, [], [N2, N3], Role.FOLLOWER),
        (5, [N2], [N3], Role.CANDIDATE),
        (5, [N2, N3], [], Role.LEADER),
        (5, [N2], [N3, N4, N5], Role.FOLLOWER),
    ],
)
def test_candidate_wins_with_majority(
    size: int, granted: list[NodeId], rejected: list[NodeId], outcome: Role
) -> None:
    """ "A candidate wins an election if it receives votes from a majority of the
    servers in the full cluster for the same term." (§5.2)"""
    core = new_core(N1, size, pre_vote=False)
    core.campaign()
    for voter in granted:
        core.step(message(MessageType.VOTE_RESPONSE, voter, N1, 1, vote_granted=True))
    for voter in rejected:
        core.step(message(MessageType.VOTE_RESPONSE, voter, N1, 1, vote_granted=False))
    assert core.role is outcome


def test_vote_first_come_first_served() -> None:
    """ "Each server will vote for at most one candidate in a given term, on a
    first-come-first-served basis." (§5.2)"""
    core = new_core(N1)
    core.step(message(MessageType.VOTE, N2, N1, 1))
    core.step(message(MessageType.VOTE, N3, N1, 1))
    replies = {m.to: m.vote_granted for m in sent(drain(core))}
    assert replies == {N2: True, N3: False}


def test_candidate_falls_back_to_leader_of_same_term() -> None:
    """ "If the leader's term (included in its RPC) is at least as large as the
    candidate's current term, then the candidate recognizes the leader as
    legitimate and returns to follower state." (§5.2)"""
    core = new_core(N1, pre_vote=False)
    core.campaign()
    core.step(message(MessageType.APPEND, N2, N1, 1))
    assert core.role is Role.FOLLOWER and core.leader_id == N2


def test_randomized_election_timeouts() -> None:
    """ "Raft uses randomized election timeouts to ensure that split votes are rare...
    election timeouts are chosen randomly from a fixed interval." (§5.2)"""
    observed = set()
    for seed in range(40):
        core = new_core(N1, seed=seed, pre_vote=False)
        ticks = 0
        while core.role is Role.FOLLOWER:
            core.tick()
            ticks += 1
        observed.add(ticks)
    assert min(observed) >= 10 and max(observed) < 20 and len(observed) > 3


def test_candidate_retries_after_split_vote() -> None:
    """ "The candidate will time out and start a new election by incrementing its
    term and initiating another round of RequestVote RPCs." (§5.2)"""
    core = new_core(N1, pre_vote=False)
    core.campaign()
    for _ in range(20):
        core.tick()
    assert core.role is Role.CANDIDATE and core.current_term == 2


# ------------------------------------------------------------------ §5.3


def test_leader_starts_replication() -> None:
    """ "The leader appends the command to its log as a new entry, then issues
    AppendEntries RPCs in parallel to each of the other servers to replicate the
    entry." (§5.3)"""
    core = new_core(N1)
    ready = elect(core)
    for append in sent(ready, MessageType.APPEND):
        ack_append(core, append)
    drain(core)
    index = core.propose(b"cmd")
    ready = drain(core)
    assert [e.data for e in ready.entries] == [b"cmd"]
    appends = sent(ready, MessageType.APPEND)
    assert {m.to for m in appends} == {N2, N3}
    assert all(m.entries[-1].index == index and m.prev_log_index == index - 1 for m in appends)


def test_leader_commits_entry_on_majority() -> None:
    """ "A log entry is committed once the leader that created the entry has
    replicated it on a majority of the servers." (§5.3)"""
    core = new_core(N1, count=5)
    ready = elect(core)
    appends = sent(ready, MessageType.APPEND)
    ack_append(core, appends[0])
    assert core.log.committed == 0
    ack_append(core, appends[1])
    assert core.log.committed == 1


def test_leader_commits_preceding_entries() -> None:
    """ "This also commits all preceding entries in the leader's log, including
    entries created by previous leaders." (§5.3)"""
    core = new_core(N1, hard_state=HardState(Term(2)), entries=log_of(1, 2))
    ready = elect(core)
    for append in sent(ready, MessageType.APPEND):
        ack_append(core, append, match=3)
    assert core.log.committed == 3
    assert [e.index for e in drain(core).committed_entries] == [1, 2, 3]


def test_follower_applies_what_leader_committed() -> None:
    """ "The leader keeps track of the highest index it knows to be committed, and
    it includes that index in future AppendEntries RPCs (including heartbeats)...
    Once a follower learns that a log entry is committed, it applies the entry
    to its local state machine (in log order)." (§5.3)"""
    core = new_core(N2)
    core.step(message(MessageType.APPEND, N1, N2, 1, entries=tuple(log_of(1, 1, 1))))
    assert drain(core).committed_entries == ()
    core.step(message(MessageType.HEARTBEAT, N1, N2, 1, leader_commit=Index(2)))
    assert [e.index for e in drain(core).committed_entries] == [1, 2]


def test_follower_checks_consistency() -> None:
    """ "When sending an AppendEntries RPC, the leader includes the index and term of
    the entry in its log that immediately precedes the new entries. If the follower
    does not find an entry in its log with the same index and term, then it
    refuses the new entries." (§5.3)"""
    core = new_core(N2, hard_state=HardState(Term(2)), entries=log_of(1, 2))
    core.step(
        message(
            MessageType.APPEND,
            N1,
            N2,
            3,
            prev_log_index=Index(2),
            prev_log_term=Term(3),
            entries=tuple(log_of(3, start=3)),
        )
    )
    (reply,) = sent(drain(core))
    assert not reply.success and core.log.last_index == 2


@pytest.mark.parametrize(
    ("prev", "new_terms", "expected"),
    [
        (2, [3], [1, 2, 3]),  # append
        (1, [3], [1, 3]),  # conflict at 2: cut and replace
        (0, [1, 2], [1, 2]),  # all match: nothing removed
        (0, [1], [1, 2]),  # a shorter match never truncates
        (0, [1, 3, 3], [1, 3, 3]),
    ],
)
def test_follower_resolves_conflicts(prev: int, new_terms: list[int], expected: list[int]) -> None:
    """ "If an existing entry conflicts with a new one (same index but different
    terms), delete the existing entry and all that follow it; append any new
    entries not already in the log." (Figure 2, AppendEntries rule 3-4; §5.3)"""
    core = new_core(N2, hard_state=HardState(Term(2)), entries=log_of(1, 2))
    prev_term = Term([0, 1, 2][prev])
    core.step(
        message(
            MessageType.APPEND,
            N1,
            N2,
            3,
            prev_log_index=Index(prev),
            prev_log_term=prev_term,
            entries=tuple(log_of(*new_terms, start=prev + 1)),
        )
    )
    assert [e.term for e in core.log_entries(Index(1), Index(10))] == expected


FIGURE_7_LEADER = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]
FIGURE_7_FOLLOWERS = {
    "a": [1, 1, 1, 4, 4, 5, 5, 6, 6],
    "b": [1, 1, 1, 4],
    "c": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    "d": [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    "e": [1, 1, 1, 4, 4, 4, 4],
    "f": [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
}


@pytest.mark.parametrize("shape", sorted(FIGURE_7_FOLLOWERS))
def test_figure_7_follower_logs_converge(shape: str) -> None:
    """ "The leader handles inconsistencies by forcing the followers' logs to
    duplicate its own. ... the leader must find the latest log entry where the two
    logs agree, delete any entries in the follower's log after that point, and
    send the follower all of the leader's entries after that point." (§5.3, Figure 7)"""
    follower_terms = FIGURE_7_FOLLOWERS[shape]
    net = Network(3)
    net.disks[N1].entries = log_of(*FIGURE_7_LEADER)
    net.disks[N1].hard_state = HardState(Term(8))
    net.disks[N2].entries = log_of(*follower_terms)
    net.disks[N2].hard_state = HardState(Term(max(follower_terms)))
    net.disks[N3].entries = log_of(*FIGURE_7_LEADER)
    net.disks[N3].hard_state = HardState(Term(8))
    for node in net.voters:
        net.restart(node)
    net.elect(N1)
    net.propose(N1, b"x")
    leader_log = net.cores[N1].log_entries(Index(1), Index(20))
    assert net.cores[N2].log_entries(Index(1), Index(20)) == leader_log
    assert [e.term for e in leader_log[:10]] == FIGURE_7_LEADER
    assert net.cores[N2].log.committed == len(leader_log)


# ------------------------------------------------------------------ §5.4


@pytest.mark.parametrize(
    ("last_index", "last_term", "granted"),
    [
        (3, 2, True),  # same last term, same length
        (4, 2, True),  # same term, longer
        (2, 2, False),  # same term, shorter
        (1, 3, True),  # higher last term, though shorter
        (9, 1, False),  # lower last term, though longer
    ],
)
def test_election_restriction(last_index: int, last_term: int, granted: bool) -> None:
    """ "Raft determines which of two logs is more up-to-date by comparing the index
    and term of the last entries in the logs. If the logs have last entries with
    different terms, then the log with the later term is more up-to-date. If the
    logs end with the same term, then whichever log is longer is more up-to-date."
    The voter denies its vote if its own log is more up-to-date. (§5.4.1)"""
    core = new_core(N1, hard_state=HardState(Term(2)), entries=log_of(1, 2, 2))
    core.step(
        message(
            MessageType.VOTE,
            N2,
            N1,
            3,
            last_log_index=Index(last_index),
            last_log_term=Term(last_term),
        )
    )
    (reply,) = sent(drain(core))
    assert reply.vote_granted is granted


def test_election_restriction_in_a_cluster() -> None:
    """ "A candidate must contact a majority of the cluster in order to be elected,
    which means that every committed entry must be present in at least one of
    those servers." (§5.4.1) A node missing committed entries cannot win."""
    net = Network(3)
    net.elect(N1)
    net.isolate(N3)
    net.propose(N1, b"committed")
    net.heal()
    net.crash(N1)
    net.cores[N3].campaign()
    net.settle()
    assert net.cores[N3].role is not Role.LEADER
    net.tick([N2, N3], times=40)
    leader = net.leader()
    assert leader == N2
    assert net.applied_data(N3) == [b"committed"]


def test_figure_8_old_term_entries_not_committed_by_counting() -> None:
    """ "Raft never commits log entries from previous terms by counting replicas.
    Only log entries from the leader's current term are committed by counting
    replicas; once an entry from the current term has been committed in this way,
    then all prior entries are committed indirectly." (§5.4.2, Figure 8)

    Figure 8 (c): S1 leads again and has replicated its term-2 entry at index 2 to
    a majority (S1, S2, S3), but nothing of its new term yet.
    """
    s1 = new_core(N1, count=5, hard_state=HardState(Term(4)), entries=log_of(1, 2))
    ready = elect(s1)  # term 5, no-op at index 3
    appends = {m.to: m for m in sent(ready, MessageType.APPEND)}
    for follower in (N2, N3):
        ack_append(s1, appends[follower], match=2)
    assert s1.log.committed == 0  # index 2 is on 3 of 5 servers, yet not committed
    for follower in (N2, N3):
        ack_append(s1, appends[follower], match=3)
    assert s1.log.committed == 3  # the term-5 no-op commits index 2 with it


def test_figure_8_hazard_is_real() -> None:
    """Why the rule matters (§5.4.2, Figure 8 (d)): the term-2 entry stored on a
    majority can still be overwritten by S5, elected with votes from S2, S3, S4."""
    net = Network(5, pre_vote=False, check_quorum=False)
    logs = {N1: [1, 2], N2: [1, 2], N3: [1, 2], N4: [1], N5: [1, 3]}
    for node, terms in logs.items():
        net.disks[node].entries = log_of(*terms)
        net.disks[node].hard_state = HardState(Term(4), commit_index=Index(1))
        net.restart(node)
    net.crash(N1)
    for _ in range(5):
        net.cores[N5].campaign()
        net.settle()
        if net.cores[N5].role is Role.LEADER:
            break
    assert net.cores[N5].role is Role.LEADER
    for node in (N2, N3, N4):
        assert net.cores[node].term_of(Index(2)) == 3


def test_append_is_idempotent() -> None:
    """ "If a server crashes after completing an RPC but before responding, then it
    will receive the same RPC again after it restarts. Raft RPCs are idempotent,
    so this causes no harm." (§5.5)"""
    core = new_core(N2)
    append = message(MessageType.APPEND, N1, N2, 1, entries=tuple(log_of(1, 1)))
    core.step(append)
    drain(core)
    core.step(append)
    ready = drain(core)
    assert ready.entries == () and core.log.last_index == 2
    assert sent(ready)[0].success


def test_persistent_state_survives_restart() -> None:
    """ "Persistent state on all servers (Updated on stable storage before responding
    to RPCs): currentTerm, votedFor, log[]" (Figure 2)"""
    net = Network(3)
    net.elect(N2)
    net.propose(N2, b"a")
    before = {n: (net.cores[n].current_term, net.cores[n].voted_for) for n in net.voters}
    for node in net.voters:
        net.crash(node)
        net.restart(node)
    after = {n: (net.cores[n].current_term, net.cores[n].voted_for) for n in net.voters}
    assert before == after
    assert all(net.cores[n].log.last_index == 2 for n in net.voters)


def test_leader_appends_noop_at_term_start() -> None:
    """ "Raft handles this by having each leader commit a blank no-op entry into the
    log at the start of its term." (§8)"""
    core = new_core(N1)
    ready = elect(core)
    assert ready.entries == (Entry(Term(1), Index(1), EntryKind.NOOP),)


# ------------------------------------------------------------------ dissertation


def test_pre_vote_partitioned_node_rejoins_without_disruption() -> None:
    """ "The Pre-Vote algorithm solves the issue of a partitioned server disrupting
    the cluster when it rejoins... a candidate would first ask other servers
    whether its log was up-to-date enough to get their vote." (dissertation §9.6)"""
    net = Network(3)
    net.elect(N1)
    net.propose(N1, b"a")
    term = net.cores[N1].current_term
    net.isolate(N3)
    net.tick(times=100)
    assert net.cores[N3].current_term == term  # pre-votes never raised its term
    net.heal()
    net.tick(times=20)
    assert net.leader() == N1 and net.cores[N1].current_term == term
    net.propose(N1, b"b")
    assert net.applied_data(N3) == [b"a", b"b"]


def test_without_pre_vote_rejoining_node_disrupts() -> None:
    """The counterpart of the PreVote test: without it, the rejoining node's inflated
    term deposes the leader (dissertation §9.6)."""
    net = Network(3, pre_vote=False, check_quorum=False)
    net.elect(N1)
    term = net.cores[N1].current_term
    net.isolate(N3)
    net.tick(times=100)
    assert net.cores[N3].current_term > term
    net.heal()
    net.tick(times=30)
    assert net.cores[N1].current_term > term


def test_check_quorum_leader_steps_down() -> None:
    """ "A leader steps down if an election timeout elapses without a successful round
    of heartbeats to a majority of its cluster." (dissertation §6.2)"""
    net = Network(5)
    net.elect(N1)
    for node in (N3, N4, N5):
        net.cut(N1, node)
    net.tick([N1], times=10)
    assert net.cores[N1].role is Role.FOLLOWER


def test_leader_stickiness() -> None:
    """ "If a server receives a RequestVote request within the minimum election
    timeout of hearing from a current leader, it does not update its term or grant
    its vote." (dissertation §4.2.3)"""
    core = new_core(N1)
    core.step(message(MessageType.HEARTBEAT, N2, N1, 1))
    core.step(message(MessageType.VOTE, N3, N1, 5, last_log_index=Index(9), last_log_term=Term(5)))
    assert core.current_term == 1 and core.voted_for is None


def test_leadership_transfer() -> None:
    """ "The prior leader sends its log entries to the target server... The prior
    leader sends a TimeoutNow request to the target server. This request has the
    same effect as the target server's election timer firing." (dissertation §3.10)"""
    net = Network(3)
    net.elect(N1)
    net.isolate(N2)
    net.propose(N1, b"a")
    net.heal()
    net.cores[N1].transfer_leadership(N2)
    net.settle()
    assert net.leader() == N2 and net.applied_data(N2) == [b"a"]


def test_read_index() -> None:
    """ "The leader records its current commit index in a local variable readIndex...
    sends a new round of heartbeats, and waits for their acknowledgments from a
    majority of the cluster... the leader can then process the read." (dissertation §6.4)"""
    net = Network(3)
    net.elect(N1)
    net.propose(N1, b"a")
    net.cores[N1].read_index(11)
    net.cores[N3].read_index(12)
    net.settle()
    assert net.read_states[N1] == [ReadState(Index(2), 11)]
    assert net.read_states[N3] == [ReadState(Index(2), 12)]


def test_snapshot_catch_up() -> None:
    """ "The leader must occasionally send snapshots to followers that lag behind.
    This happens when the leader has already discarded the next log entry that it
    needs to send to a follower." (§7)"""
    net = Network(3)
    net.elect(N1)
    net.crash(N3)
    net.propose(N1, b"a", b"b", b"c")
    applied = net.disks[N1].applied_index
    meta = SnapshotMeta(applied, net.cores[N1].term_of(applied) or Term(0), net.voters)
    net.cores[N1].compact(meta)
    net.restart(N3)
    net.tick(times=3)
    assert net.disks[N3].snapshot == meta
    net.propose(N1, b"d")
    assert net.cores[N3].log.committed == net.cores[N1].log.committed
