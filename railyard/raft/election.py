"""Leader election: timeouts, PreVote, votes and their tally (Raft §5.2, §5.4.1; dissertation §9.6).

A follower that hears nothing from a leader for its randomized election
timeout first runs a PreVote round (asking "would you vote for me at term+1?"
without changing any state), and only if a quorum would, a real election.
A node partitioned away therefore never inflates its term and cannot disrupt
a healthy leader when it rejoins.

Leader stickiness (with CheckQuorum): a node that heard from a leader within
the election timeout ignores vote requests of higher terms, unless they carry
`CAMPAIGN_TRANSFER_CONTEXT` (a campaign asked for by the leader itself through
TIMEOUT_NOW, or forced by an operator).

Voting after a lost store. Raft assumes stable storage: a server's log,
`current_term` and `voted_for` survive its restarts (Figure 2, "persistent
state"; §5.2), and the safety argument of §5.4.3 rests on it: a committed
entry is held by a majority, every leader is elected by a majority, so some
voter of the winner holds the entry and, by the election restriction (§5.4.1),
votes only for a candidate whose log has it. A node whose data directory was
wiped has forgotten the entries it acknowledged, and its vote can complete
such a majority anyway. Example: A and B store a committed entry e, C lags;
B is wiped and restarts empty, A is down; C campaigns, B (empty log) finds C
up to date and grants, and C leads without e: e is lost. etcd's answer is
operational: a member that lost its data is removed and added back as a new
member. The core narrows the window itself:

- A core told `started_empty` (its store held no entry and no snapshot) starts
  `awaiting_catch_up`. It then grants neither votes nor pre-votes to a
  candidate whose log is non-empty (`last_log_index > 0`): that candidate
  proves the cluster has a history, part of which this node may have held.
  A candidate with an empty log is answered as usual, so a brand-new cluster,
  whose stores all start empty, still elects its first leader. The node may
  campaign; a voter holding any entry rejects it (§5.4.1).
- It leaves the state for good when it wins an election (a majority found its
  log up to date, as §5.4.1 asks) or when it has caught up with a leader L of
  term U (`follower`): its commit index reached `catch_up_target`, the
  `leader_commit` of the first APPEND since it started, and the entry at its
  commit index is of its current term U, unless the target is 0 (see below).
  Only an append sets the target: it carries L's whole commit index, while a
  heartbeat carries min(commit, match), 0 for a follower L just found empty,
  and a snapshot carries none (installing one only raises the commit index
  towards the target). A leader follows an accepted snapshot with an
  append, empty if it has nothing newer (`replication`), so a node caught
  up by a snapshot alone still learns the target.
- Why that suffices: (a) every entry L had counted as committed when it first
  appended to us, those counted with our acknowledgements before the wipe
  included, lies at or below the target, and a commit index that reached it
  means we hold those entries as L does (Log Matching, §5.3); (b) entries
  committed in earlier terms are in L's log (Leader Completeness) before its
  first entry of term U, and we hold L's log up to a committed entry of term U,
  which L commits as soon as it has a majority (§5.4.2, its no-op). Holding
  every entry committed before the loss, the node votes as if it had never
  lost its store, and the §5.4.3 argument applies again. The commit index is
  the measure, not the log's end: entries past it may still be replaced.
- A target of 0 (L had committed nothing) ends the state at once, without (b):
  in a brand-new cluster whose first leader failed before committing its
  no-op, every node holds some of its entries and still awaits, each would
  refuse the others, and no leader could ever be elected. The price is (b)
  for a leader that never learned of any commit though it holds committed
  entries.
- The cost: while a node awaits, a candidate with history needs a majority
  without it. With one more node down in a 3-node cluster no leader is
  elected until that node returns, which is the point when the node was
  wiped, and a loss of availability when it is merely new and has not yet
  heard from a leader.

NB, holes that remain (all come from the lost store, which Raft does not
model; the complete answer is etcd's remove-and-re-add, which needs
membership changes):
- An empty-log candidate is granted: a wiped node cannot tell a brand-new
  cluster from one whose history lives only on nodes that are down. A node
  wiped during the very first election may vote twice in one term, and a wiped
  node with a node that never received any entry can elect an empty leader.
- The node also forgot its `current_term` and `voted_for`: before catching up
  it accepts appends from a deposed leader of an older term (which then counts
  its acknowledgements), and (a) holds only if L is not such a leader; after
  catching up with a leader of a term older than one it voted in before the
  wipe, it may vote a second time in that term.
- The state lives in memory: a node that crashes mid catch-up with entries
  on disk would restart with a non-empty log and vote at once. The node
  layer closes this with a marker file (`node/driver/catch_up.py`), created before
  the first step and removed once `awaiting_catch_up` clears, which passes
  `started_empty` again at every start while it exists; the driver passes it
  again when it rebuilds the core after a full disk.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from railyard.raft.quorum import VoteResult, vote_result
from railyard.raft.roles import (
    become_candidate,
    become_follower,
    become_leader,
    become_pre_candidate,
)
from railyard.raft.types import NO_INDEX, Message, MessageType, NodeId, Role, Term

if TYPE_CHECKING:
    from railyard.raft.core import RaftCore

# Marks vote requests of a campaign the leader asked for (TIMEOUT_NOW) or an
# operator forced: voters grant them even while they follow a live leader.
CAMPAIGN_TRANSFER_CONTEXT = 1


def tick_election(core: RaftCore) -> None:
    """Followers and candidates: campaign when the election timeout elapses."""
    core.election_elapsed += 1
    if core.election_elapsed >= core.randomized_election_timeout and core.is_promotable():
        core.election_elapsed = 0
        hup(core)


def hup(core: RaftCore) -> None:
    """Start an election as the paper's timeout would (PreVote first when enabled)."""
    if core.role is Role.LEADER or not core.is_promotable():
        return
    campaign(core, pre_vote=core.config.pre_vote, transfer=False)


def campaign(core: RaftCore, *, pre_vote: bool, transfer: bool) -> None:
    if pre_vote:
        become_pre_candidate(core)
        vote_term = Term(core.current_term + 1)
        request_type = MessageType.PRE_VOTE
    else:
        become_candidate(core)
        vote_term = core.current_term
        request_type = MessageType.VOTE
    # The candidate's own vote counts (Raft §5.2).
    if _record_vote(core, core.node_id, granted=True):
        return
    log = core.log
    context = CAMPAIGN_TRANSFER_CONTEXT if transfer else 0
    # A VOTE request implies our own vote is durable: send it after the persist.
    outbox = core.messages if pre_vote else core.persisted_messages
    for peer in core.peers:
        outbox.append(
            Message(
                request_type,
                peer,
                core.node_id,
                vote_term,
                last_log_index=log.last_index,
                last_log_term=log.last_term,
                context=context,
            )
        )


def _record_vote(core: RaftCore, voter: NodeId, *, granted: bool) -> bool:
    """Tally one vote; returns True when the election is decided."""
    core.votes.setdefault(voter, granted)
    result = vote_result(core.voters, core.votes)
    if result is VoteResult.PENDING:
        return False
    if result is VoteResult.LOST:
        become_follower(core, core.current_term, None)
    elif core.role is Role.PRE_CANDIDATE:
        campaign(core, pre_vote=False, transfer=False)
    else:
        become_leader(core)
        core.awaiting_catch_up = False  # its log is now the one the cluster follows
    return True


def in_lease(core: RaftCore) -> bool:
    """Leader stickiness: we heard from a leader within the election timeout."""
    return (
        core.config.check_quorum
        and core.leader_id is not None
        and core.election_elapsed < core.config.election_ticks
    )


def handle_vote_request(core: RaftCore, message: Message) -> None:
    """RequestVote receiver (Raft Figure 2) for VOTE and PRE_VOTE."""
    pre_vote = message.type is MessageType.PRE_VOTE
    can_vote = (
        core.voted_for == message.sender
        or (core.voted_for is None and core.leader_id is None)
        or (pre_vote and message.term > core.current_term)
    )
    granted = (
        can_vote
        and not _may_lack_what_we_lost(core, message)
        and core.log.is_up_to_date(message.last_log_index, message.last_log_term)
    )
    if pre_vote:
        reply_type, outbox = MessageType.PRE_VOTE_RESPONSE, core.messages
    else:
        reply_type, outbox = MessageType.VOTE_RESPONSE, core.persisted_messages
    if granted and not pre_vote:
        core.voted_for = message.sender
        core.election_elapsed = 0
    # A grant carries the term asked for; a rejection our own, so a stale candidate learns it.
    reply_term = message.term if granted else core.current_term
    outbox.append(
        Message(reply_type, message.sender, core.node_id, reply_term, vote_granted=granted)
    )


def _may_lack_what_we_lost(core: RaftCore, message: Message) -> bool:
    """Awaiting catch-up, a candidate with history is refused: it may lack entries
    this node acknowledged before its store was lost (module docstring)."""
    return core.awaiting_catch_up and message.last_log_index > NO_INDEX


def handle_vote_response(core: RaftCore, message: Message) -> None:
    if core.role is Role.PRE_CANDIDATE:
        if message.type is not MessageType.PRE_VOTE_RESPONSE:
            return
        if message.vote_granted and message.term != core.current_term + 1:
            return  # a grant from an earlier pre-vote round
    elif message.type is not MessageType.VOTE_RESPONSE:
        return
    _record_vote(core, message.sender, granted=message.vote_granted)


def handle_timeout_now(core: RaftCore, message: Message) -> None:
    """The leader hands over leadership: campaign at once, bypassing PreVote and leases."""
    if core.is_promotable():
        campaign(core, pre_vote=False, transfer=True)
