"""Role transitions: become_follower / pre_candidate / candidate / leader (Raft §5.2, §9.6).

Each transition resets the volatile per-role state (votes, progress, election
timer, pending leadership transfer and reads) so no role sees leftovers of
the previous one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from railyard.raft.errors import InvariantViolation
from railyard.raft.progress import Inflights, Progress, ProgressState
from railyard.raft.types import NO_INDEX, Entry, EntryKind, Index, NodeId, Role, Term

if TYPE_CHECKING:
    from railyard.raft.core import RaftCore


def reset(core: RaftCore, term: Term) -> None:
    """Common reset of every transition; a new term clears the vote (Raft Figure 2)."""
    if term != core.current_term:
        core.current_term = term
        core.voted_for = None
    core.leader_id = None
    core.election_elapsed = 0
    core.heartbeat_elapsed = 0
    core.randomize_election_timeout()
    core.votes.clear()
    core.progress.clear()
    core.lead_transferee = None
    core.commit_to_announce = False
    core.reads.reset()


def become_follower(core: RaftCore, term: Term, leader_id: NodeId | None) -> None:
    reset(core, term)
    core.role = Role.FOLLOWER
    core.leader_id = leader_id
    core.adopt_membership(core.membership)


def new_progress(core: RaftCore) -> Progress:
    """A leader's fresh view of a peer: probing from the leader's log end, with a
    full election timeout to answer before CheckQuorum counts it silent."""
    log = core.log
    return Progress(
        NO_INDEX,
        Index(log.last_index + 1),
        Inflights(core.config.max_inflight_appends, core.config.max_inflight_bytes),
        last_contact_tick=core.tick_count,
        round_target=log.last_index,
        round_start_tick=core.tick_count,
    )


def become_pre_candidate(core: RaftCore) -> None:
    """PreVote (dissertation §9.6): ask for votes without touching term or vote."""
    if core.role is Role.LEADER:
        raise InvariantViolation("a leader cannot become a pre-candidate")
    # Unlike the other transitions, the term and vote stay: nothing is persisted.
    core.votes.clear()
    core.progress.clear()
    core.leader_id = None
    core.election_elapsed = 0
    core.randomize_election_timeout()
    core.role = Role.PRE_CANDIDATE


def become_candidate(core: RaftCore) -> None:
    if core.role is Role.LEADER:
        raise InvariantViolation("a leader cannot become a candidate")
    reset(core, Term(core.current_term + 1))
    core.voted_for = core.node_id
    core.role = Role.CANDIDATE


def become_leader(core: RaftCore) -> None:
    """Take office: fresh progress for every follower and a no-op entry (Raft §8)."""
    if core.role is Role.FOLLOWER:
        raise InvariantViolation("a follower cannot become leader without an election")
    reset(core, core.current_term)
    core.role = Role.LEADER
    core.leader_id = core.node_id
    log = core.log
    next_index = Index(log.last_index + 1)
    core.progress[core.node_id] = new_progress(core)
    core.adopt_membership(core.membership)  # progress for every other member
    own = core.progress[core.node_id]
    own.state = ProgressState.REPLICATE
    own.recent_active = True
    # The leader counts only entries it has made durable (Raft §10.2.1).
    own.match_index = log.stable_index
    noop = Entry(core.current_term, next_index, EntryKind.NOOP)
    log.append((noop,))
    core.after_leader_append()
