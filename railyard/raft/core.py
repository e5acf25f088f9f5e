"""RaftCore: the Raft protocol as a pure state machine (etcd-io/raft's RawNode design).

The driver feeds it time (`tick`), peer messages (`step`) and requests
(`propose`, `read_index`, `transfer_leadership`, `campaign`), then collects a
`Ready` of work (persist, send, apply) and calls `advance` when that work is
done. The core performs no I/O, reads no clock and draws randomness only from
the injected `random.Random`, so a schedule replays exactly from its seed.

This module holds the state and the public API; the protocol rules live in
`election` (votes), `replication` (the leader), `follower` (appends received),
`reads` (ReadIndex) and `roles` (transitions). `step` applies the term rules
shared by every message, then dispatches on (role, message type).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import replace

from railyard.raft import bounds, election, follower, membership, reads, replication
from railyard.raft.config import RaftConfig
from railyard.raft.errors import (
    InvariantViolation,
    NotLeader,
    ProposalDropped,
    UnknownPeer,
)
from railyard.raft.log import RaftLog
from railyard.raft.membership import ConfChange
from railyard.raft.progress import Progress, ProgressState
from railyard.raft.roles import become_follower
from railyard.raft.status import CoreStatus, PeerStatus
from railyard.raft.types import (
    NO_INDEX,
    Entry,
    EntryKind,
    HardState,
    Index,
    Membership,
    Message,
    MessageType,
    NodeId,
    ReadState,
    Ready,
    Role,
    SnapshotMeta,
    SoftState,
    Term,
)

Handler = Callable[["RaftCore", Message], None]

# Messages a leader sends; a candidate or pre-candidate receiving one at its
# own term learns a leader exists and becomes its follower (Raft §5.2).
_FROM_LEADER = frozenset({MessageType.APPEND, MessageType.HEARTBEAT, MessageType.SNAPSHOT})
_VOTE_REQUESTS = frozenset({MessageType.VOTE, MessageType.PRE_VOTE})

_FOLLOWER_HANDLERS: dict[MessageType, Handler] = {
    MessageType.APPEND: follower.handle_append,
    MessageType.HEARTBEAT: follower.handle_heartbeat,
    MessageType.SNAPSHOT: follower.handle_snapshot,
    MessageType.TIMEOUT_NOW: election.handle_timeout_now,
    MessageType.READ_INDEX_RESPONSE: reads.handle_read_index_response,
}
_CANDIDATE_HANDLERS: dict[MessageType, Handler] = {
    MessageType.VOTE_RESPONSE: election.handle_vote_response,
    MessageType.PRE_VOTE_RESPONSE: election.handle_vote_response,
}
_LEADER_HANDLERS: dict[MessageType, Handler] = {
    MessageType.APPEND_RESPONSE: replication.handle_append_response,
    MessageType.HEARTBEAT_RESPONSE: replication.handle_heartbeat_response,
    MessageType.SNAPSHOT_RESPONSE: replication.handle_snapshot_response,
    MessageType.READ_INDEX: reads.handle_read_index,
}
_HANDLERS: dict[Role, dict[MessageType, Handler]] = {
    Role.FOLLOWER: _FOLLOWER_HANDLERS,
    Role.PRE_CANDIDATE: _CANDIDATE_HANDLERS,
    Role.CANDIDATE: _CANDIDATE_HANDLERS,
    Role.LEADER: _LEADER_HANDLERS,
}


class RaftCore:
    """One Raft peer. Attributes are the package's internal state: drivers use the methods."""

    def __init__(
        self,
        config: RaftConfig,
        rng: random.Random,
        *,
        hard_state: HardState = HardState(),  # noqa: B008 - frozen value
        snapshot: SnapshotMeta | None = None,
        entries: Sequence[Entry] = (),
        applied: Index = NO_INDEX,
        started_empty: bool = False,
    ) -> None:
        """`started_empty`: the node's store held no entry and no snapshot when it
        opened (a new node, or one whose store was lost): it then awaits catching
        up with a leader before voting for candidates with history (`election`)."""
        self.config = config
        self.rng = rng
        self.node_id = config.node_id
        self.log = RaftLog(
            snapshot, entries, hard_state.commit_index, applied, bootstrap=config.bootstrap
        )
        # The latest configuration in the log (in force as soon as appended, §4.1)
        # and what follows from it; `adopt_membership` keeps them in step.
        self.membership = self.log.memberships.latest
        self.voters: tuple[NodeId, ...] = ()
        self.learners: tuple[NodeId, ...] = ()
        self.peers: tuple[NodeId, ...] = ()  # who the leader replicates to
        self.current_term = hard_state.current_term
        self.voted_for = hard_state.voted_for
        self.role = Role.FOLLOWER
        self.leader_id: NodeId | None = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = config.election_ticks
        self.tick_count = 0
        self.leader_contact_tick = 0  # tick_count when a leader was last heard from
        self.votes: dict[NodeId, bool] = {}
        self.progress: dict[NodeId, Progress] = {}
        self.lead_transferee: NodeId | None = None
        self.transfer_notice: tuple[Term, int] | None = None  # see election.transfer_vouched
        self.commit_to_announce = False  # leader: followers have not been sent the commit
        self.reads = reads.ReadTracker()
        self.messages: list[Message] = []
        self.persisted_messages: list[Message] = []
        self.read_states: list[ReadState] = []
        self.pending_snapshot: SnapshotMeta | None = None  # received; not yet handed out
        self.latest_snapshot = snapshot  # what a lagging follower is sent
        self.awaiting_catch_up = started_empty  # see election: voting after a lost store
        self.catch_up_target: Index | None = None  # leader's commit at first append
        self._handed_soft = SoftState()
        self._handed_hard = hard_state
        self._handed_membership = self.membership
        self.adopt_membership(self.membership)
        self.randomize_election_timeout()

    # ------------------------------------------------------------ internals

    def randomize_election_timeout(self) -> None:
        """A fresh timeout in [election_ticks, 2 * election_ticks) (Raft §5.2)."""
        ticks = self.config.election_ticks
        self.randomized_election_timeout = ticks + self.rng.randrange(ticks)

    def is_promotable(self) -> bool:
        """Only a voter of its own latest configuration campaigns: never a learner,
        a removed node or one that joins and has not been sent a configuration."""
        return self.node_id in self.voters

    def after_leader_append(self) -> None:
        """The leader appended entries: replicate them (its own copy counts once durable)."""
        if self.peers:
            replication.broadcast_append(self, send_if_empty=False)

    def adopt_membership(self, latest: Membership) -> None:
        """Put `latest` in force (see `membership.adopt`)."""
        membership.adopt(self, latest)

    def _after_step(self) -> None:
        membership.after_step(self)

    def on_commit_advanced(self) -> None:
        """The leader's commit index moved: serve waiting reads, tell followers soon."""
        self.reads.release_waiting(self)
        # Followers learn the new commit index with the next Ready: one append per
        # follower for all the acknowledgements stepped in between, not one per ack.
        self.commit_to_announce = bool(self.peers)

    # ------------------------------------------------------------ inputs

    def tick(self) -> None:
        self.tick_count += 1
        if self.role is Role.LEADER:
            replication.tick_leader(self)
        else:
            election.tick_election(self)

    def step(self, message: Message) -> str | None:
        """Apply one message from a peer. Never raises for what a peer sends.

        Returns why the message was refused as absurd (`bounds`), for the driver
        to log; None otherwise, including for messages dropped as stale.

        Messages from any sender are handled: a leader's messages reach a
        learner or a joining node before it holds the configuration that
        names that leader. Vote requests are the exception: one from a node
        that is not a voter of our latest configuration is dropped before its
        term is looked at, so a removed node that never learned of its
        removal cannot raise our term and depose a leader (§4.2.3).
        """
        if message.to != self.node_id:
            return None  # misrouted
        if message.type in _VOTE_REQUESTS and message.sender not in self.voters:
            return None
        absurd = bounds.refusal(message, self.current_term)
        if absurd is not None:
            return absurd
        if not self._check_term(message):
            return None
        if message.type in _VOTE_REQUESTS:
            election.handle_vote_request(self, message)
            return None
        if self.role in (Role.CANDIDATE, Role.PRE_CANDIDATE) and message.type in _FROM_LEADER:
            become_follower(self, self.current_term, message.sender)
        handler = _HANDLERS[self.role].get(message.type)
        if handler is not None:
            handler(self, message)
            self._after_step()
        return None

    def _check_term(self, message: Message) -> bool:
        """The term rules every message obeys first; False when the message is dropped."""
        if message.term > self.current_term:
            return self._on_higher_term(message)
        if message.term < self.current_term:
            self._on_lower_term(message)
            return False
        return True

    def _on_higher_term(self, message: Message) -> bool:
        kind = message.type
        if kind is MessageType.TIMEOUT_NOW:
            return False  # only the leader of our own term may ask (`election`)
        if kind in (MessageType.VOTE, MessageType.PRE_VOTE):
            forced = election.transfer_vouched(self, message)
            if not forced and election.in_lease(self):
                return False  # leader stickiness: a live leader is not disrupted
        if kind is MessageType.PRE_VOTE:
            return True  # a pre-vote changes nothing, not even our term
        if kind is MessageType.PRE_VOTE_RESPONSE and message.vote_granted:
            return True  # grants carry the term we would campaign in
        leader = message.sender if kind in _FROM_LEADER else None
        become_follower(self, message.term, leader)
        return True

    def _on_lower_term(self, message: Message) -> None:
        kind = message.type
        if kind in (MessageType.APPEND, MessageType.HEARTBEAT):
            # Tell a stale leader our term (Figure 2), so it steps down. Without it
            # the term would travel only in vote requests, which PreVote,
            # CheckQuorum and the drop of vote requests from non-voters hold back:
            # a learner that campaigned while it still believed itself a voter
            # would refuse the leader's appends forever.
            self.messages.append(
                Message(
                    MessageType.APPEND_RESPONSE, message.sender, self.node_id, self.current_term
                )
            )
        elif kind is MessageType.PRE_VOTE:
            self.messages.append(
                Message(
                    MessageType.PRE_VOTE_RESPONSE, message.sender, self.node_id, self.current_term
                )
            )

    # ------------------------------------------------------------ requests

    def propose(self, data: bytes) -> Index:
        """Append one command; returns its index. Raises NotLeader or ProposalDropped."""
        return self.propose_batch((data,))

    def propose_batch(self, datas: Sequence[bytes]) -> Index:
        """Append many commands in one append; returns the index of the first.

        An empty batch appends nothing and returns the index the next entry would get.
        """
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader_id)
        if self.lead_transferee is not None:
            raise ProposalDropped()
        log = self.log
        first = log.last_index + 1
        term = self.current_term
        normal = EntryKind.NORMAL
        log.append(
            [Entry(term, Index(first + offset), normal, data) for offset, data in enumerate(datas)]
        )
        if datas:
            self.after_leader_append()
        return Index(first)

    def propose_conf_change(self, change: ConfChange) -> Index:
        """Append the configuration `change` leads to; returns its index.

        It is in force at once (§4.1) and the driver learns it from the next
        Ready's `membership`. Raises NotLeader, ProposalDropped, or a
        `ConfChangeError`: ChangeInProgress (one change at a time, and none
        before the leader committed in its term), UnknownMember, AlreadyMember,
        AddressInUse, NotALearner, NotCaughtUp (a promotion waits until the
        learner has caught up, §4.2.1), LastVoter.
        """
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader_id)
        if self.lead_transferee is not None:
            raise ProposalDropped()
        return membership.propose(self, change)

    def keeps_live_quorum(self, change: ConfChange) -> bool:
        """Leader: whether the voters after `change` that answered within an election
        timeout still form a quorum (the guard behind `member remove --force`).
        Raises NotLeader, or a `ConfChangeError` if `change` cannot apply."""
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader_id)
        return membership.keeps_live_quorum(self, change)

    def committed_membership(self) -> tuple[Index, Membership]:
        """The latest committed configuration and the index it was appended at.

        With one change at a time this is the latest configuration or the one
        before it.
        """
        return self.log.memberships.at(self.log.committed)

    def snapshot_meta(self, index: Index) -> SnapshotMeta:
        """The metadata of a snapshot of the state machine at `index` (<= applied):
        its term and the configuration in force there, for the driver to store."""
        term = self.log.term(index)
        if term is None or index > self.log.applying:
            raise InvariantViolation(f"no snapshot possible at {index}")
        return SnapshotMeta.of(index, term, self.log.memberships.at(index)[1])

    def read_index(self, context: int) -> None:
        """Request a linearizable read; its ReadState(index, context) comes in a later Ready."""
        reads.read_index(self, context)

    def transfer_leadership(self, to: NodeId | None) -> None:
        """Hand leadership to `to` (None: the most up-to-date follower)."""
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader_id)
        if to is None:
            to = replication.most_up_to_date_follower(self)
            if to is None:
                return  # a single-node cluster has no one to hand over to
        if to not in self.voters:
            raise UnknownPeer(to)
        if to == self.node_id:
            return
        replication.transfer_leadership(self, to)

    def campaign(self) -> None:
        """Campaign now, skipping PreVote. Voters in a lease with a live leader
        still refuse: only a transfer the leader asked for breaks leases."""
        if self.role is Role.LEADER or not self.is_promotable():
            return
        election.campaign(self, pre_vote=False, transfer=True)

    def compact(self, snapshot: SnapshotMeta) -> None:
        """The driver saved a snapshot at `snapshot.index` (<= applied): drop older entries."""
        if snapshot.index <= self.log.snapshot_index:
            return
        if snapshot.membership is None:
            # A driver that built the metadata itself knows only the voters: what
            # is sent to followers carries the whole configuration, unless the
            # voters alone are all of it.
            full = self.snapshot_meta(snapshot.index)
            if full.configuration != snapshot.configuration:
                snapshot = full
        self.log.compact(snapshot)
        self.latest_snapshot = snapshot
        self._refresh_unsent_snapshots(snapshot)

    def _refresh_unsent_snapshots(self, snapshot: SnapshotMeta) -> None:
        """SNAPSHOT messages not yet handed out now name the newer snapshot: the
        driver keeps only the latest snapshot file, so that is the one it can send."""
        for position, queued in enumerate(self.messages):
            if queued.type is MessageType.SNAPSHOT:
                self.messages[position] = replace(queued, snapshot=snapshot)
                progress = self.progress.get(queued.to)
                if progress is not None and progress.state is ProgressState.SNAPSHOT:
                    progress.pending_snapshot = snapshot.index

    def report_unreachable(self, peer: NodeId) -> None:
        """A message to `peer` could not be sent: stop streaming to it, probe instead."""
        if self.role is Role.LEADER:
            replication.report_unreachable(self, peer)

    def report_snapshot(self, peer: NodeId, success: bool) -> None:
        """How sending a SNAPSHOT to `peer` ended. The driver must report every
        snapshot it was asked to send: until then the leader sends that peer nothing."""
        if self.role is Role.LEADER:
            replication.report_snapshot(self, peer, success)

    # ------------------------------------------------------------ Ready / advance

    def _soft_changed(self) -> bool:
        handed = self._handed_soft
        return handed.role is not self.role or handed.leader_id != self.leader_id

    def _hard_changed(self) -> bool:
        handed = self._handed_hard
        return (
            handed.current_term != self.current_term
            or handed.voted_for != self.voted_for
            or handed.commit_index != self.log.committed
        )

    def has_ready(self) -> bool:
        log = self.log
        return bool(
            self.commit_to_announce
            or self.reads.has_unsent_round()
            or self.messages
            or self.persisted_messages
            or self.read_states
            or self.pending_snapshot
            or log.has_unhanded_entries()
            or log.has_committed_to_hand()
            or self._soft_changed()
            or self._hard_changed()
            or self.membership is not self._handed_membership
        )

    def ready(self) -> Ready:
        """Collect the work accumulated since the last Ready; see `Ready` for the order."""
        log = self.log
        if self.commit_to_announce:
            self.commit_to_announce = False
            if self.role is Role.LEADER:
                replication.broadcast_append(self, send_if_empty=True)
        self.reads.flush(self)
        soft_state = hard_state = None
        if self._soft_changed():
            soft_state = self._handed_soft = SoftState(self.role, self.leader_id)
        if self._hard_changed():
            hard_state = HardState(self.current_term, self.voted_for, log.committed)
            self._handed_hard = hard_state
        ready = Ready(
            soft_state=soft_state,
            hard_state=hard_state,
            entries=log.take_unhanded_entries() if log.has_unhanded_entries() else (),
            snapshot=self.pending_snapshot,
            messages=tuple(self.messages),
            persisted_messages=tuple(self.persisted_messages),
            committed_entries=log.take_committed_entries() if log.has_committed_to_hand() else (),
            read_states=tuple(self.read_states),
            membership=self._take_membership(),
        )
        self.pending_snapshot = None
        self.messages.clear()
        self.persisted_messages.clear()
        self.read_states.clear()
        return ready

    def _take_membership(self) -> Membership | None:
        if self.membership is self._handed_membership:
            return None
        self._handed_membership = self.membership
        return self.membership

    def advance(self, ready: Ready) -> None:
        """The driver handled `ready`: its entries are durable, its committed entries applied."""
        log = self.log
        if ready.entries:
            last = ready.entries[-1]
            log.stable_to(last.index, last.term)
        if ready.committed_entries:
            log.applied_to(ready.committed_entries[-1].index)
        if ready.snapshot is not None:
            log.applied_to(ready.snapshot.index)
        if self.role is Role.LEADER and ready.entries:
            own = self.progress[self.node_id]
            if own.maybe_update(log.stable_index):
                replication.maybe_commit(self)
                self._after_step()

    # ------------------------------------------------------------ inspection

    def status(self) -> CoreStatus:
        log = self.log
        progress = {
            peer: PeerStatus(
                p.match_index,
                p.next_index,
                p.state.value,
                p.recent_active,
                p.lost_log_count,
                learner=peer in self.learners,
                caught_up=replication.is_caught_up(self, p),
            )
            for peer, p in self.progress.items()
        }
        leading = self.role is Role.LEADER
        memberships = log.memberships
        return CoreStatus(
            node_id=self.node_id,
            term=self.current_term,
            role=self.role,
            leader_id=self.leader_id,
            voted_for=self.voted_for,
            commit_index=log.committed,
            applied_index=log.applied,
            last_index=log.last_index,
            snapshot_index=log.snapshot_index,
            progress=progress,
            ticks_since_leader_contact=0 if leading else self.tick_count - self.leader_contact_tick,
            ticks_since_quorum_contact=replication.ticks_since_quorum_contact(self)
            if leading
            else 0,
            awaiting_catch_up=self.awaiting_catch_up,
            membership=self.membership,
            membership_index=memberships.latest_index,
            membership_committed=memberships.latest_index <= log.committed,
        )

    def log_entries(self, lo: Index, hi: Index) -> tuple[Entry, ...]:
        """Entries [lo, hi) still in memory (compacted ones are omitted)."""
        return tuple(self.log.slice(lo, hi))

    def term_of(self, index: Index) -> Term | None:
        """The term of the entry at `index` if this core still knows it."""
        return self.log.term(index)

    def check_invariants(self) -> None:
        log = self.log
        if not (log.applied <= log.applying <= log.committed <= log.last_index):
            raise InvariantViolation("log watermarks out of order")
