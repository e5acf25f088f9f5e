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

Voting after a lost store: the safety argument, its costs and the holes
that remain are in docs/ARCHITECTURE.md ("Voting after a lost store"). The
rules the code keeps:

- A core told `started_empty` (its store held no entry and no snapshot)
  starts `awaiting_catch_up`, and while it awaits grants neither votes nor
  pre-votes to a candidate whose log is non-empty (`last_log_index > 0`). A
  candidate with an empty log is answered as usual (a brand-new cluster
  must elect its first leader); the node may campaign.
- It leaves the state for good when it wins an election, or, as a follower
  (`follower`), when its commit index reached `catch_up_target` and the entry
  at its commit index is of its current term. Only an APPEND sets the target
  (the `leader_commit` of the first one since the start: a heartbeat's
  commit is clipped, a snapshot carries none); a target of 0 ends the state
  at once. A leader follows an accepted snapshot with an append
  (`replication`), so a node caught up by a snapshot alone learns the target.
- The state lives in memory: the node layer's marker file
  (`node/driver/catch_up.py`) passes `started_empty` again at every start
  while it exists, and the driver passes it when it rebuilds the core.
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
