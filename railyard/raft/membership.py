"""Membership changes: single-server steps between configurations (dissertation §4.1).

A configuration (`Membership`) lives in the log as the data of a CONFIG
entry and in snapshot metadata. Every server uses the latest configuration
its log holds, committed or not, from the moment the entry is appended; when
a conflicting suffix is cut off, the configuration falls back to the latest
one left (`MembershipLog`).

Each change adds a learner, promotes a learner, or removes one member. A
learner is never counted in a quorum, so adding or removing one cannot
change any majority; a promotion or a voter's removal changes the voter set
by exactly one server, so any majority of the old set and any majority of the
new set share a server (§4.1). Two rules keep that argument true across
leaders (`check_can_change`, enforced by the leader):

- at most one change is uncommitted: a new one is proposed only once the
  latest configuration entry in the leader's log is committed;
- a new leader proposes no change until it has committed an entry of its own
  term (the fix Ongaro published in 2015: otherwise a change appended by a
  deposed leader and one by its successor can both take effect, and their
  configurations need not overlap).

This module knows nothing of messages or roles; `RaftCore` calls it.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from railyard.raft import replication
from railyard.raft.errors import (
    AddressInUse,
    AlreadyMember,
    ChangeInProgress,
    InvariantViolation,
    LastVoter,
    NotALearner,
    NotCaughtUp,
    UnknownMember,
)
from railyard.raft.roles import new_progress
from railyard.raft.types import (
    NO_INDEX,
    Entry,
    EntryKind,
    Index,
    Member,
    Membership,
    NodeId,
    Role,
    SnapshotMeta,
)

if TYPE_CHECKING:
    from railyard.raft.core import RaftCore


class ConfChangeKind(enum.Enum):
    ADD_LEARNER = "add_learner"
    PROMOTE = "promote"
    REMOVE = "remove"


@dataclass(frozen=True, slots=True)
class ConfChange:
    """One single-server change. Addresses matter only to ADD_LEARNER."""

    kind: ConfChangeKind
    node_id: NodeId
    address: str = ""
    peer_address: str = ""


# ------------------------------------------------------------------ encoding


def _member_record(member: Member) -> dict[str, str]:
    return {"id": member.node_id, "address": member.address, "peer_address": member.peer_address}


def membership_to_record(membership: Membership) -> dict[str, list[dict[str, str]]]:
    """The JSON shape of a configuration, as CONFIG entries and stores hold it."""
    return {
        "voters": [_member_record(m) for m in membership.voters],
        "learners": [_member_record(m) for m in membership.learners],
    }


def encode_membership(membership: Membership) -> bytes:
    """The bytes of a CONFIG entry: compact JSON, the same on every server."""
    record = membership_to_record(membership)
    return json.dumps(record, separators=(",", ":"), sort_keys=True).encode()


def membership_from_record(record: Any) -> Membership:
    """A `Membership` from the JSON shape `encode_membership` writes; ValueError if malformed."""
    if not isinstance(record, dict):
        raise ValueError("a configuration must be a JSON object")

    def members(key: str) -> tuple[Member, ...]:
        items = record.get(key, [])
        if not isinstance(items, list):
            raise ValueError(f"{key!r} must be a list")
        found = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                raise ValueError(f"each of {key!r} needs a string 'id'")
            address, peer_address = item.get("address", ""), item.get("peer_address", "")
            if not isinstance(address, str) or not isinstance(peer_address, str):
                raise ValueError("addresses must be strings")
            found.append(Member(NodeId(item["id"]), address, peer_address))
        return tuple(found)

    membership = Membership(members("voters"), members("learners"))
    ids = membership.voter_ids + membership.learner_ids
    if len(set(ids)) != len(ids):
        raise ValueError(f"a member is listed twice: {ids}")
    return membership


def decode_membership(data: bytes) -> Membership:
    """The configuration a CONFIG entry carries; a malformed one breaks an invariant,
    as every server appended the same bytes and the leader encoded them."""
    try:
        return membership_from_record(json.loads(data))
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise InvariantViolation(f"malformed configuration entry: {exc}") from exc


# ------------------------------------------------------------------ changes


def apply_change(membership: Membership, change: ConfChange) -> Membership:
    """The configuration after `change`; raises a `ConfChangeError` if it cannot apply."""
    node_id = change.node_id
    if change.kind is ConfChangeKind.ADD_LEARNER:
        existing = membership.member(node_id)
        if existing is not None:
            role = "voter" if membership.is_voter(node_id) else "learner"
            raise AlreadyMember(node_id, role)
        for address in (change.address, change.peer_address):
            owner = _owner_of(membership, address)
            if owner is not None:
                raise AddressInUse(address, owner)
        added = Member(node_id, change.address, change.peer_address)
        return Membership(membership.voters, (*membership.learners, added))
    member = membership.member(node_id)
    if member is None:
        raise UnknownMember(node_id)
    if change.kind is ConfChangeKind.PROMOTE:
        if not membership.is_learner(node_id):
            raise NotALearner(node_id)
        learners = tuple(m for m in membership.learners if m.node_id != node_id)
        return Membership((*membership.voters, member), learners)
    if membership.voter_ids == (node_id,):
        raise LastVoter(node_id)
    return Membership(
        tuple(m for m in membership.voters if m.node_id != node_id),
        tuple(m for m in membership.learners if m.node_id != node_id),
    )


def _owner_of(membership: Membership, address: str) -> NodeId | None:
    if not address:
        return None
    for member in membership.voters + membership.learners:
        if address in (member.address, member.peer_address):
            return member.node_id
    return None


def propose(core: RaftCore, change: ConfChange) -> Index:
    """The leader appends the configuration `change` leads to (`RaftCore.propose_conf_change`)."""
    check_can_change(core)
    new = apply_change(core.membership, change)
    if change.kind is ConfChangeKind.PROMOTE:
        progress = core.progress[change.node_id]
        if not replication.is_caught_up(core, progress):
            raise NotCaughtUp(change.node_id, progress.match_index, core.log.last_index)
    log = core.log
    index = Index(log.last_index + 1)
    log.append((Entry(core.current_term, index, EntryKind.CONFIG, encode_membership(new)),))
    adopt(core, log.memberships.latest)
    core.after_leader_append()
    return index


def adopt(core: RaftCore, latest: Membership) -> None:
    """Put `latest` in force: who votes, who learns, whom the leader replicates to."""
    core.membership = latest
    core.voters = latest.voter_ids
    core.learners = latest.learner_ids
    members = core.voters + core.learners
    if core.role is Role.LEADER:
        # New members get progress at once; removed ones keep theirs until the
        # change commits, so they receive the entry that removes them.
        for member in members:
            if member not in core.progress:
                core.progress[member] = new_progress(core)
        core.peers = tuple(peer for peer in core.progress if peer != core.node_id)
    else:
        core.peers = tuple(member for member in members if member != core.node_id)


def after_step(core: RaftCore) -> None:
    """Put in force a configuration the log just received; once the latest one is
    committed, the leader forgets removed members, and steps down if it removed
    itself (dissertation §4.2.2)."""
    latest = core.log.memberships.latest
    if latest is not core.membership:
        adopt(core, latest)
    if core.role is not Role.LEADER or pending_change_index(core) is not None:
        return
    members = set(core.voters + core.learners)
    gone = [peer for peer in core.peers if peer not in members]
    for peer in gone:
        del core.progress[peer]
    if gone:
        core.peers = tuple(peer for peer in core.progress if peer != core.node_id)
    if core.node_id not in core.voters:
        replication.hand_over_on_removal(core)


def check_can_change(core: RaftCore) -> None:
    """The leader's two rules of the module docstring; raises ChangeInProgress."""
    log = core.log
    if log.term(log.committed) != core.current_term:
        raise ChangeInProgress("the leader has not yet committed an entry of its term")
    pending = pending_change_index(core)
    if pending is not None:
        raise ChangeInProgress(f"the change at index {pending} is not yet committed")


def keeps_live_quorum(core: RaftCore, change: ConfChange) -> bool:
    """True when the voters after `change` that the leader heard from within an
    election timeout (the leader itself included) form a quorum of them.

    Not a safety rule: an operator's guard (`member remove` refuses otherwise
    unless forced), as removing a voter while others are down can leave a
    configuration that cannot commit, not even its own entry.
    """
    voters = apply_change(core.membership, change).voter_ids
    timeout = core.config.election_ticks
    live = 0
    for voter in voters:
        progress = core.progress.get(voter)
        heard = (
            progress is not None
            and progress.answered
            and core.tick_count - progress.last_contact_tick < timeout
        )
        live += voter == core.node_id or heard
    return 2 * live > len(voters)


def pending_change_index(core: RaftCore) -> Index | None:
    """The index of the latest configuration entry if it is not committed yet."""
    latest = core.log.memberships.latest_index
    return latest if latest > core.log.committed else None


# ------------------------------------------------------------------ history


class MembershipLog:
    """The configurations the in-memory log holds, for 'latest' and 'as of index i'.

    `base` is the configuration at `base_index`: the snapshot's, or the
    bootstrap configuration (index 0) for a log that never held one.
    `changes` are the CONFIG entries after it, in index order.
    """

    __slots__ = ("base", "base_index", "changes", "from_bootstrap")

    def __init__(self, bootstrap: Membership, snapshot: SnapshotMeta | None) -> None:
        # A snapshot of a store written before snapshots carried a configuration
        # says nothing of learners and addresses: the bootstrap configuration
        # (the node's cluster file) stands in, as for a log with no CONFIG entry.
        self.from_bootstrap = snapshot is None or snapshot.membership is None
        if snapshot is not None and snapshot.membership is not None:
            self.base, self.base_index = snapshot.membership, snapshot.index
        elif snapshot is not None:
            self.base = _with_addresses(snapshot.configuration, bootstrap)
            self.base_index = snapshot.index
        else:
            self.base, self.base_index = bootstrap, NO_INDEX
        self.changes: list[tuple[Index, Membership]] = []

    @property
    def latest(self) -> Membership:
        return self.changes[-1][1] if self.changes else self.base

    @property
    def latest_index(self) -> Index:
        return self.changes[-1][0] if self.changes else self.base_index

    def at(self, index: Index) -> tuple[Index, Membership]:
        """The configuration in force at `index` and the index it was appended at."""
        for changed_at, membership in reversed(self.changes):
            if changed_at <= index:
                return changed_at, membership
        return self.base_index, self.base

    def appended(self, entries: Iterable[Entry]) -> None:
        for entry in entries:
            if entry.kind is EntryKind.CONFIG:
                self.changes.append((entry.index, decode_membership(entry.data)))
                self.from_bootstrap = False

    def truncated(self, after: Index) -> None:
        """Entries after `after` were cut off: their configurations no longer hold."""
        while self.changes and self.changes[-1][0] > after:
            self.changes.pop()

    def compacted(self, index: Index) -> None:
        """Entries up to `index` now live in a snapshot: fold their configurations in."""
        changed_at, membership = self.at(index)
        self.base, self.base_index = membership, changed_at
        self.changes = [(i, m) for i, m in self.changes if i > index]

    def restored(self, snapshot: SnapshotMeta) -> None:
        """The whole log was replaced by `snapshot`."""
        self.base = _with_addresses(snapshot.configuration, self.latest)
        self.base_index = snapshot.index
        self.changes = []


def _with_addresses(membership: Membership, known: Membership) -> Membership:
    """Fill in the addresses a configuration known only by ids lacks, from `known`."""

    def filled(member: Member) -> Member:
        if member.address or member.peer_address:
            return member
        return known.member(member.node_id) or member

    return Membership(
        tuple(filled(m) for m in membership.voters), tuple(filled(m) for m in membership.learners)
    )
