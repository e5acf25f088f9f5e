"""Raft's safety properties, checked incrementally as the simulator runs.

The checker sees every node the way its driver does: the entries, hard state,
soft state, committed entries, snapshots and read states each `Ready` hands
out. From that it keeps a history of the whole cluster and raises `Violation`
the moment a property of Raft (§5.2-§5.4, Figure 3) breaks:

- Election Safety: at most one leader per term, over the whole history.
- Log Matching: two logs holding an entry with the same index and term hold
  the same entries up to it. Checked through a registry keyed by (index,
  term) that remembers the entry and the term before it: every log must
  agree with the registry, which by induction is the property itself.
- Leader Completeness: an entry committed in term U is in the log (or the
  snapshot) of every leader of a term above U. U is the term of the node
  that first reported the entry committed, an upper bound of the true commit
  term, so the check never blames a correct core.
- Leader Commit Rule: a leader moves its commit index only onto an entry of
  its own term (§5.4.2). Checked directly, because the Figure 8 history that
  turns a violation into lost data needs a rare run of elections.
- State Machine Safety: every node applies the same entry at an index, in
  index order, without gaps; a committed entry is never truncated.
- Monotonicity: term, commit index and applied index never decrease on a
  node, and a restarted node never comes back below what it persisted.
- Linearizable reads: a ReadState's index is at least the highest commit
  index any node had reported when the read was issued (Raft §6.4).
- Durability: a message that promises durable state (a vote request or
  grant, an append or snapshot acknowledgement) leaves only once the disk
  holds what it promises (checked by the simulated node, which owns the disk).
- Integrity: every NORMAL entry carries a value some client proposed, and a
  value is committed at one index at most.

Across configurations (membership changes, dissertation §4.1):

- Configuration Change Rule: a leader appends a CONFIG entry only when the
  previous one in its log is committed and it has committed an entry of its
  own term, and the new configuration differs from the previous one by one
  single-server step (add a learner, promote a learner, remove a member).
- Commit Quorum: when a leader reports a new commit index, a majority of the
  voters of its configuration (before or after that Ready's change) hold the
  entry on disk: learners and removed nodes never make a quorum.
- Voters lead: a node that becomes leader is a voter of its configuration.

The checker only reads values; it never calls the core.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from railyard.raft import (
    Entry,
    EntryKind,
    HardState,
    Index,
    Membership,
    Message,
    NodeId,
    ReadState,
    Role,
    Term,
    decode_membership,
)
from railyard.sim.logview import LogView

ELECTION_SAFETY = "Election Safety"
LOG_MATCHING = "Log Matching"
LEADER_COMPLETENESS = "Leader Completeness"
STATE_MACHINE_SAFETY = "State Machine Safety"
MONOTONICITY = "Monotonicity"
LIVENESS = "Liveness"
LINEARIZABLE_READS = "Linearizable Reads"
DURABILITY = "Durability"  # a node promises only what its disk holds
INTEGRITY = "Integrity"
LEADER_COMMIT_RULE = "Leader Commit Rule"  # §5.4.2, checked directly
CONFIG_CHANGE_RULE = "Configuration Change Rule"  # one single-server change at a time
COMMIT_QUORUM = "Commit Quorum"  # a commit is held by a majority of the configuration's voters
VOTERS_LEAD = "Voters Lead"  # learners, removed and joining nodes never lead
READY_CONTRACT = "Ready Contract"  # the core's reports contradict each other
CORE_ERROR = "Core Error"  # the core raised where it must not


class Violation(Exception):
    """A property of Raft does not hold; `prop` names it, `detail` says where."""

    def __init__(self, prop: str, detail: str) -> None:
        super().__init__(prop, detail)  # both in args: it pickles to --jobs workers and back
        self.prop = prop
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.prop}: {self.detail}"


class NodeState(Protocol):
    """What the checker reads of a simulated node (its driver's view of the core)."""

    node_id: NodeId
    log: LogView  # the core's in-memory log as reported by Ready
    term: Term
    commit: Index
    role: Role
    membership: Membership  # the configuration in force, as reported by Ready

    @property
    def alive(self) -> bool: ...

    @property
    def applied(self) -> Index: ...

    def disk_holds(self, index: Index, term: Term) -> bool: ...


@dataclass
class Checker:
    proposed: set[bytes] = field(default_factory=set)
    leaders: dict[Term, NodeId] = field(default_factory=dict)
    # (index, term) -> (entry, term of the entry before it)
    registry: dict[tuple[int, int], tuple[Entry, int]] = field(default_factory=dict)
    committed: list[Entry] = field(default_factory=list)  # committed[i - 1] is index i
    commit_term: list[int] = field(default_factory=list)  # upper bound of the term it committed in
    value_index: dict[bytes, int] = field(default_factory=dict)
    reads: dict[int, tuple[NodeId, int]] = field(default_factory=dict)  # ctx -> (node, floor)
    nodes: list[NodeState] = field(default_factory=list)

    # --- log -----------------------------------------------------------------

    def check_entries(self, node: NodeState, new: tuple[Entry, ...], current_term: int) -> None:
        """`new` is about to be written into `node.log`, cutting it at new[0].index;
        `current_term` is the node's term in the same Ready."""
        log = node.log
        first = new[0].index
        if first <= log.offset or first > log.last_index + 1:
            raise Violation(
                READY_CONTRACT,
                f"{node.node_id} got entries from {first} but its log covers "
                f"({log.offset}, {log.last_index}]",
            )
        if first <= node.commit and log.entry_at(first) != new[0]:
            raise Violation(
                STATE_MACHINE_SAFETY,
                f"{node.node_id} overwrites committed entry {first} (commit {node.commit}): "
                f"{log.entry_at(first)} -> {new[0]}",
            )
        prev_term = log.term_at(first - 1)
        assert prev_term is not None  # first - 1 is within [offset, last_index]
        for k, entry in enumerate(new):
            if entry.index != first + k:
                raise Violation(READY_CONTRACT, f"{node.node_id} got a gap at {entry.index}")
            if entry.term < prev_term or entry.term > current_term:
                raise Violation(
                    LOG_MATCHING,
                    f"{node.node_id} log term goes {prev_term} -> {entry.term} at {entry.index}"
                    f" (current term {current_term})",
                )
            self._register(node, entry, prev_term)
            prev_term = entry.term

    def _register(self, node: NodeState, entry: Entry, prev_term: int) -> None:
        key = (entry.index, entry.term)
        known = self.registry.get(key)
        if known is None:
            if entry.kind == EntryKind.NORMAL and entry.data not in self.proposed:
                raise Violation(
                    INTEGRITY, f"{node.node_id} holds entry {entry} that nobody proposed"
                )
            self.registry[key] = (entry, prev_term)
        elif known != (entry, prev_term):
            raise Violation(
                LOG_MATCHING,
                f"{node.node_id} has {entry} after term {prev_term}; another log has "
                f"{known[0]} after term {known[1]} at the same index and term",
            )

    # --- hard and soft state -------------------------------------------------

    def check_hard_state(self, node: NodeState, hs: HardState) -> None:
        """`hs` was just reported by `node`; its log already holds the new entries."""
        if hs.current_term < node.term or hs.commit_index < node.commit:
            raise Violation(
                MONOTONICITY,
                f"{node.node_id} goes from term {node.term} commit {node.commit} to "
                f"term {hs.current_term} commit {hs.commit_index}",
            )
        if hs.commit_index > node.log.last_index:
            raise Violation(
                READY_CONTRACT,
                f"{node.node_id} commits {hs.commit_index} beyond its last index "
                f"{node.log.last_index}",
            )
        if hs.commit_index > node.commit:
            self._record_commits(node, node.commit, hs.commit_index, hs.current_term)

    def _record_commits(self, node: NodeState, old: int, new: int, term: int) -> None:
        log = node.log
        for index in range(max(old, log.offset) + 1, new + 1):
            entry = log.entry_at(index)
            assert entry is not None  # new <= last_index, index > offset
            self.record_committed(node, entry, term)

    def record_committed(self, node: NodeState, entry: Entry, term: int) -> None:
        index = entry.index
        if index <= len(self.committed):
            known = self.committed[index - 1]
            if known != entry:
                raise Violation(
                    STATE_MACHINE_SAFETY,
                    f"{node.node_id} commits {entry} but {known} was committed at {index}",
                )
            self.commit_term[index - 1] = min(self.commit_term[index - 1], term)
            return
        if index != len(self.committed) + 1:
            raise Violation(
                READY_CONTRACT,
                f"{node.node_id} commits {index} while only {len(self.committed)} "
                "entries are known committed (a gap)",
            )
        if entry.kind == EntryKind.NORMAL:
            other = self.value_index.setdefault(entry.data, index)
            if other != index:
                raise Violation(
                    INTEGRITY, f"value {entry.data!r} committed at {other} and at {index}"
                )
        self.committed.append(entry)
        self.commit_term.append(term)
        for leader in self.nodes:
            if leader.alive and leader.role == Role.LEADER and leader.term > term:
                self._leader_has(leader, index)

    def check_leader_commit(self, node: NodeState, hs: HardState) -> None:
        """A leader advances its commit index only onto an entry of its own term (§5.4.2).

        `node` led since its previous Ready; `hs` is its new hard state.
        """
        if hs.commit_index <= node.commit:
            return
        entry = node.log.entry_at(hs.commit_index)
        if entry is not None and entry.term != hs.current_term:
            raise Violation(
                LEADER_COMMIT_RULE,
                f"leader {node.node_id} of term {hs.current_term} commits up to {entry} "
                "by counting replicas of an older term's entry",
            )

    def check_leader(self, node: NodeState) -> None:
        """`node` reports it leads `node.term`: one leader per term, holding all commits."""
        if node.node_id not in node.membership.voter_ids:
            raise Violation(
                VOTERS_LEAD,
                f"{node.node_id} leads term {node.term} but is not a voter of {node.membership}",
            )
        holder = self.leaders.setdefault(node.term, node.node_id)
        if holder != node.node_id:
            raise Violation(
                ELECTION_SAFETY, f"term {node.term} has two leaders: {holder} and {node.node_id}"
            )
        for index in range(node.log.offset + 1, len(self.committed) + 1):
            if self.commit_term[index - 1] < node.term:
                self._leader_has(node, index)

    def check_config_change(
        self,
        leader: NodeState,
        entry: Entry,
        previous: Membership,
        previous_index: Index,
        commit: Index,
    ) -> None:
        """Leader `leader` appended CONFIG `entry` after `previous` (appended at
        `previous_index`), its commit index then being `commit`."""
        if previous_index > commit:
            raise Violation(
                CONFIG_CHANGE_RULE,
                f"leader {leader.node_id} appends a change at {entry.index} while the change "
                f"at {previous_index} is not committed (commit {commit})",
            )
        committed_term = leader.log.term_at(commit)
        if committed_term is not None and committed_term != entry.term:
            raise Violation(
                CONFIG_CHANGE_RULE,
                f"leader {leader.node_id} of term {entry.term} appends a change at "
                f"{entry.index} before committing an entry of its term (commit {commit})",
            )
        new = decode_membership(entry.data)
        if not _one_step(previous, new):
            raise Violation(
                CONFIG_CHANGE_RULE,
                f"leader {leader.node_id} changes {previous} to {new} at {entry.index}: "
                "not one single-server step",
            )

    def check_commit_quorum(
        self, leader: NodeState, hs: HardState, configurations: tuple[Membership, ...]
    ) -> None:
        """`leader` led since its previous Ready and now reports `hs`."""
        index = hs.commit_index
        if index <= leader.commit:
            return
        entry = leader.log.entry_at(index)
        if entry is None:
            return  # beyond what the driver saw: caught as a Ready contract breach
        holders = {n.node_id for n in self.nodes if n.disk_holds(index, entry.term)}
        for configuration in configurations:
            voters = configuration.voter_ids
            if 2 * sum(1 for voter in voters if voter in holders) > len(voters):
                return
        raise Violation(
            COMMIT_QUORUM,
            f"leader {leader.node_id} commits {index} held on disk by {sorted(holders)} only, "
            f"not a majority of the voters of {configurations[-1]}",
        )

    def check_sent_by_leader(self, msg: Message) -> None:
        """`msg` is of a kind only a leader sends: its sender led `msg.term`."""
        holder = self.leaders.setdefault(msg.term, msg.sender)
        if holder != msg.sender:
            raise Violation(
                ELECTION_SAFETY,
                f"term {msg.term} has two leaders: {holder} and {msg.sender} "
                f"(which sends {msg.type.value} to {msg.to})",
            )

    def _leader_has(self, leader: NodeState, index: int) -> None:
        if index <= leader.log.offset:
            return  # covered by the leader's snapshot, itself checked against commits
        entry = self.committed[index - 1]
        if leader.log.entry_at(index) != entry:
            raise Violation(
                LEADER_COMPLETENESS,
                f"leader {leader.node_id} of term {leader.term} lacks {entry} committed in "
                f"term <= {self.commit_term[index - 1]}; it has {leader.log.entry_at(index)}",
            )

    # --- state machine -------------------------------------------------------

    def check_apply(self, node: NodeState, entry: Entry) -> None:
        index = entry.index
        if index != node.applied + 1:
            raise Violation(
                STATE_MACHINE_SAFETY,
                f"{node.node_id} applies {index} after {node.applied} (not in order)",
            )
        if index > node.commit:
            raise Violation(
                STATE_MACHINE_SAFETY,
                f"{node.node_id} applies {index} beyond its commit index {node.commit}",
            )
        if index > len(self.committed) or self.committed[index - 1] != entry:
            known = self.committed[index - 1] if index <= len(self.committed) else None
            raise Violation(
                STATE_MACHINE_SAFETY,
                f"{node.node_id} applies {entry}; committed at {index}: {known}",
            )

    def check_snapshot(self, node: NodeState, payload: tuple[Entry, ...], why: str) -> None:
        """`payload` (entries 1..n) becomes the state of `node`'s state machine."""
        if len(payload) < node.applied:
            raise Violation(
                MONOTONICITY,
                f"{node.node_id} {why} a snapshot at {len(payload)} below applied {node.applied}",
            )
        for entry in payload[len(self.committed) :]:
            self.record_committed(node, entry, node.term)
        mismatch = next(
            (e for e in payload[: len(self.committed)] if self.committed[e.index - 1] != e), None
        )
        if mismatch is not None:
            raise Violation(
                STATE_MACHINE_SAFETY,
                f"{node.node_id} {why} a snapshot with {mismatch}; committed: "
                f"{self.committed[mismatch.index - 1]}",
            )

    # --- reads ---------------------------------------------------------------

    def begin_read(self, node: NodeId, context: int) -> None:
        self.reads[context] = (node, len(self.committed))

    def check_read_state(self, node: NodeState, rs: ReadState) -> None:
        # A duplicated request may be answered twice: the driver serves the first.
        began = self.reads.get(rs.context)
        if began is None or began[0] != node.node_id:
            raise Violation(
                LINEARIZABLE_READS,
                f"{node.node_id} answers read context {rs.context} it was not asked",
            )
        if rs.index < began[1]:
            raise Violation(
                LINEARIZABLE_READS,
                f"{node.node_id} answers read {rs.context} at index {rs.index}, below "
                f"commit index {began[1]} known when the read began",
            )


def _one_step(old: Membership, new: Membership) -> bool:
    """`new` is `old` with one learner added, one learner promoted or one member removed."""
    old_voters, new_voters = set(old.voter_ids), set(new.voter_ids)
    old_all = old_voters | set(old.learner_ids)
    new_all = new_voters | set(new.learner_ids)
    added, removed = new_all - old_all, old_all - new_all
    promoted = (new_voters - old_voters) & old_all
    if added:  # a newcomer is a learner
        return len(added) == 1 and not removed and new_voters == old_voters
    if removed:
        return len(removed) == 1 and new_voters == old_voters - removed
    return len(promoted) == 1 and new_voters == old_voters | promoted
