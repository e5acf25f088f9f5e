"""One simulated node: a Raft core, its simulated disk and state machine, and its driver.

The driver follows the `Ready` contract step by step, and splits it where a
real crash could split it:

- front (when the Ready is taken): install a snapshot into memory, record
  the new entries and hard state, send `messages`;
- persist (possibly some time later, as an fsync takes time): write entries,
  hard state and snapshot to the simulated disk;
- back (right after persist, unless the node crashed in between): send
  `persisted_messages`, apply `committed_entries`, take `read_states`, and
  `advance`.

A crash discards everything but the disk: entries and hard state of a Ready
not yet persisted are lost, exactly as on a machine that loses power before
its fsync. The state machine (the list of applied entries) is durable once
applied, like the streams database that records `last_applied` with every
apply transaction.

The node never decides anything by chance: the simulation passes in every
choice (persist delay, crash points), so one seed gives one history.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from railyard.raft import (
    NO_INDEX,
    NO_MEMBERSHIP,
    NO_TERM,
    Entry,
    EntryKind,
    HardState,
    Index,
    Membership,
    Message,
    MessageType,
    NodeId,
    RaftConfig,
    RaftCore,
    ReadState,
    Ready,
    Role,
    SnapshotMeta,
    Term,
    decode_membership,
)
from railyard.sim.checker import DURABILITY, MONOTONICITY, READY_CONTRACT, Checker, Violation
from railyard.sim.logview import LogView

ACKNOWLEDGEMENTS = frozenset({MessageType.APPEND_RESPONSE, MessageType.SNAPSHOT_RESPONSE})
# An input waiting for the driver: ("msg", Message, payload), ("tick",),
# ("propose", values), ("campaign",), ("transfer", to), ("read", ctx),
# ("compact", index), ("snap_report", peer, ok), ("unreachable", peer).
Event = tuple[Any, ...]


@dataclass
class Disk:
    """What survives a crash."""

    hard_state: HardState = field(default_factory=HardState)
    log: LogView = field(default_factory=LogView)
    snapshot: SnapshotMeta | None = None
    snapshot_data: tuple[Entry, ...] = ()
    state_machine: list[Entry] = field(default_factory=list)  # applied entries, from index 1


@dataclass
class SimNode:
    node_id: NodeId
    config: RaftConfig
    checker: Checker
    disk: Disk = field(default_factory=Disk)
    core: RaftCore | None = None
    incarnation: int = 0
    # The driver's view of the core, built only from what Ready reported.
    log: LogView = field(default_factory=LogView)
    term: Term = NO_TERM
    commit: Index = NO_INDEX
    role: Role = Role.FOLLOWER
    leader: NodeId | None = None
    membership: Membership = NO_MEMBERSHIP  # the configuration in force, as Ready reported
    snapshot: SnapshotMeta | None = None
    # Snapshot files this incarnation can stream, by meta: a SNAPSHOT message
    # produced before a compaction may leave in a Ready taken after it, so the
    # previous file must still be there (a store keeping only the latest is not enough).
    files: dict[SnapshotMeta, tuple[Entry, ...]] = field(default_factory=dict)
    restored: tuple[Entry, ...] | None = None  # a snapshot installed, not yet on disk
    pending: Ready | None = None  # taken, front done, waiting for persist
    paused_until: int = -1
    inbox: deque[Event] = field(default_factory=deque)
    received: dict[tuple[int, int], tuple[Entry, ...]] = field(default_factory=dict)
    waiting_reads: list[ReadState] = field(default_factory=list)
    reads_served: int = 0

    @property
    def alive(self) -> bool:
        return self.core is not None

    @property
    def applied(self) -> Index:
        if self.restored is not None:
            return Index(len(self.restored))
        return Index(len(self.disk.state_machine))

    # --- life cycle ----------------------------------------------------------

    def boot(self, rng: random.Random) -> None:
        """Start a core from the disk (first start or restart after a crash)."""
        disk = self.disk
        self.incarnation += 1
        self.log = disk.log.copy()
        self.term = disk.hard_state.current_term
        self.commit = disk.hard_state.commit_index
        self.role, self.leader = Role.FOLLOWER, None
        self.snapshot = disk.snapshot
        self.files = {disk.snapshot: disk.snapshot_data} if disk.snapshot else {}
        self.restored = None
        self.pending = None
        self.inbox.clear()
        self.received.clear()
        self.waiting_reads.clear()
        self.core = RaftCore(
            self.config,
            rng,
            hard_state=disk.hard_state,
            snapshot=disk.snapshot,
            entries=tuple(disk.log.entries),
            applied=Index(len(disk.state_machine)),
            started_empty=disk.snapshot is None and not disk.log.entries,
        )
        status = self.core.status()
        self.membership = status.membership
        if (
            status.term < disk.hard_state.current_term
            or status.commit_index < disk.hard_state.commit_index
            or status.applied_index < len(disk.state_machine)
        ):
            raise Violation(
                MONOTONICITY,
                f"{self.node_id} restarts at term {status.term} commit {status.commit_index} "
                f"applied {status.applied_index} below its disk: {disk.hard_state}, "
                f"applied {len(disk.state_machine)}",
            )

    def crash(self) -> None:
        self.core = None
        self.pending = None
        self.restored = None
        self.inbox.clear()
        self.waiting_reads.clear()

    # --- the Ready, front half -----------------------------------------------

    def take_ready(self) -> Ready:
        """Take a Ready and do what may happen before the fsync; returns it."""
        assert self.core is not None
        ready = self.core.ready()
        checker = self.checker
        before = self.membership
        if ready.membership is not None:
            self.membership = ready.membership
        led_throughout = self.role is Role.LEADER and (
            ready.soft_state is None or ready.soft_state.role is Role.LEADER
        )
        if ready.snapshot is not None:
            self._install(ready.snapshot)
        if ready.entries:
            term = ready.hard_state.current_term if ready.hard_state else self.term
            checker.check_entries(self, ready.entries, term)
            self.log.write(ready.entries)
            if led_throughout:
                commit = ready.hard_state.commit_index if ready.hard_state else self.commit
                self._check_config_entries(ready.entries, before, commit, term)
        if ready.hard_state is not None:
            checker.check_hard_state(self, ready.hard_state)
            if led_throughout:
                checker.check_leader_commit(self, ready.hard_state)
                checker.check_commit_quorum(self, ready.hard_state, (before, self.membership))
            self.term = ready.hard_state.current_term
            self.commit = ready.hard_state.commit_index
        if ready.soft_state is not None:
            self.role = ready.soft_state.role
            self.leader = ready.soft_state.leader_id
            if self.role == Role.LEADER:
                checker.check_leader(self)
        self.pending = ready
        return ready

    def _check_config_entries(
        self, entries: tuple[Entry, ...], before: Membership, commit: Index, term: Term
    ) -> None:
        """The leader appended these: each CONFIG entry must obey the change rules."""
        previous = before
        for entry in entries:
            if entry.kind is not EntryKind.CONFIG or entry.term != term:
                continue
            self.checker.check_config_change(
                self, entry, previous, self._config_index_before(entry.index), commit
            )
            previous = decode_membership(entry.data)

    def _config_index_before(self, index: Index) -> Index:
        """The index of the latest CONFIG entry before `index` still in the log (0: none)."""
        log = self.log
        for earlier in range(index - 1, log.offset, -1):
            entry = log.entry_at(earlier)
            if entry is not None and entry.kind is EntryKind.CONFIG:
                return entry.index
        return NO_INDEX

    def disk_holds(self, index: Index, term: Term) -> bool:
        """The disk holds the entry (index, term), in its log or under its snapshot."""
        log = self.disk.log
        return index <= log.offset or log.term_at(index) == term

    def _install(self, meta: SnapshotMeta) -> None:
        payload = self.received.get((meta.index, meta.term))
        if payload is None:
            raise Violation(
                READY_CONTRACT, f"{self.node_id} installs snapshot {meta} it never received"
            )
        self.checker.check_snapshot(self, payload, "installs")
        self.log.reset(meta.index, meta.term)
        self.snapshot = meta
        self.files[meta] = payload
        self.restored = payload

    # --- the Ready, back half ------------------------------------------------

    def persist(self) -> None:
        """The fsync of the pending Ready completes: its state is on disk now."""
        ready = self.pending
        assert ready is not None
        disk = self.disk
        if ready.snapshot is not None:
            meta = ready.snapshot
            assert self.restored is not None
            disk.snapshot, disk.snapshot_data = meta, self.restored
            disk.log.reset(meta.index, meta.term)
            disk.state_machine = list(self.restored)
            self.restored = None
        if ready.entries:
            disk.log.write(ready.entries)
        if ready.hard_state is not None:
            disk.hard_state = ready.hard_state

    def finish(self) -> list[ReadState]:
        """Apply, collect read states, advance; returns the reads now servable."""
        ready = self.pending
        core = self.core
        assert ready is not None and core is not None
        machine = self.disk.state_machine
        for entry in ready.committed_entries:
            self.checker.check_apply(self, entry)
            machine.append(entry)
        for read in ready.read_states:
            self.checker.check_read_state(self, read)
            self.waiting_reads.append(read)
        self.pending = None
        core.advance(ready)
        return self._servable_reads()

    def _servable_reads(self) -> list[ReadState]:
        applied = self.applied
        ready = [r for r in self.waiting_reads if r.index <= applied]
        if ready:
            self.waiting_reads = [r for r in self.waiting_reads if r.index > applied]
            self.reads_served += len(ready)
        return ready

    # --- compaction ----------------------------------------------------------

    def compact(self, index: Index) -> SnapshotMeta:
        """Save a snapshot of the state machine at `index` and tell the core."""
        assert self.core is not None and self.pending is None
        machine = self.disk.state_machine
        payload = tuple(machine[:index])
        meta = self.core.snapshot_meta(index)
        disk = self.disk
        disk.snapshot, disk.snapshot_data = meta, payload
        disk.log.compact(meta.index, meta.term)
        self.log.compact(meta.index, meta.term)
        self.snapshot = meta
        self.files[meta] = payload
        self.core.compact(meta)
        return meta

    def check_promise(self, msg: Message) -> None:
        """A vote or an acknowledgement leaves only once the disk holds what it promises."""
        kind = msg.type
        if kind is MessageType.VOTE or (kind is MessageType.VOTE_RESPONSE and msg.vote_granted):
            voted = self.node_id if kind is MessageType.VOTE else msg.to
            hs = self.disk.hard_state
            # A higher term on disk keeps the promise too: no vote in msg.term is possible.
            if hs.current_term < msg.term or (
                hs.current_term == msg.term and hs.voted_for != voted
            ):
                raise Violation(
                    DURABILITY,
                    f"{self.node_id} sends {kind.value} for {voted} in term {msg.term} "
                    f"while its disk holds {hs}",
                )
        elif kind in ACKNOWLEDGEMENTS and msg.success:
            # The core withdraws an acknowledgement whose entries a later step of
            # the same Ready replaced, so every one that leaves must hold.
            log = self.disk.log
            if msg.match_index > max(log.last_index, log.offset):
                raise Violation(
                    DURABILITY,
                    f"{self.node_id} acknowledges entries up to {msg.match_index} to "
                    f"{msg.to} while its disk holds up to {log.last_index}",
                )

    def snapshot_payload(self, message: Message) -> tuple[Entry, ...]:
        """The snapshot file that travels beside a SNAPSHOT message this node sends."""
        payload = self.files.get(message.snapshot) if message.snapshot else None
        if payload is None:
            raise Violation(
                READY_CONTRACT,
                f"{self.node_id} sends snapshot {message.snapshot} it never had; "
                f"its latest snapshot is {self.snapshot}",
            )
        return payload
