"""The driver: the one task that owns the Raft core.

Everything that changes the core goes through the driver's inbox: messages
from peers, ticks, proposals, read requests, leadership transfers, and the
completions of background work (a snapshot written, a peer unreachable).
The driver takes whatever has queued up, steps the core with all of it
(proposals that arrived together become one `propose_batch`, i.e. one
fsync), then handles every `Ready` in the order its docstring prescribes:

1. install a received snapshot (restore the state machine, reset the log);
2. send `messages`;
3. persist entries and hard state in ONE `LogStore.save` (a worker thread);
4. send `persisted_messages`;
5. apply committed entries (one state-machine transaction per batch);
6. answer the proposals waiting on those entries and the reads whose
   index is now applied;
7. take a snapshot if enough was applied since the last one;
8. `advance`.

Two liberties, both safe: committed entries that earlier Readys already
persisted are applied while this Ready's entries are written (disk and
apply overlap, Raft dissertation §10.2.1), and a hard state that changed
only its commit index is not fsync'd on its own (the commit index is
volatile in Raft; it rides along with the next write).

Snapshots (taking, compacting, installing a received one, deleting refused
ones) are `snapshotting.Snapshotter`'s; the disk's free space is
`disk_space.DiskGuard`'s. The driver owns one of each and calls them at
fixed points of the loop.

Invariants:
- Only this task calls a mutating method of the core. Request handlers may
  read `core.status()` between steps (the loop is single-threaded and core
  methods never yield), nothing more.
- Log-store calls run on one worker thread, in submission order. Committed
  entries are applied one batch at a time: on the loop when the batch is
  small (a hand-off to a thread and back costs more than applying a few
  single-record puts), on an apply thread when it is large (SQLite lets go
  of the GIL while it inserts, so the loop keeps sending meanwhile).
  State-machine queries run on a reads thread with their own connection
  and see every apply that finished before they were submitted; snapshots
  are copied on a thread of their own, so neither reads nor snapshots hold
  up applying.
- A storage error is fatal (`FatalError`): the node stops rather than
  acknowledge what might not be on disk. One exception: a full disk. Writes
  are refused before they are proposed while the disk is below a reserve
  (`DiskFull`, checked in `propose`), followers drop appends below part of
  it (checked as messages are taken), and a log save that meets a full disk
  anyway (its transaction rolled back, nothing acknowledged) rebuilds the
  core from the store, as a restart would, so reads go on
  (`_restart_core`).
- A proposal is answered with its entry's result only if the entry was
  proposed in the term it committed in; otherwise, or when leadership
  changes first, with `LeadershipLost` (its outcome is unknown).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

from railyard.node.disk_space import DiskGuard, is_disk_full
from railyard.node.fatal import FatalError
from railyard.node.snapshotting import Snapshotter
from railyard.raft import (
    Entry,
    EntryKind,
    HardState,
    Index,
    Message,
    MessageType,
    NodeId,
    NotLeader,
    ProposalDropped,
    RaftCore,
    Ready,
    Role,
    SnapshotMeta,
    SoftState,
    Term,
)
from railyard.storage import LogStore, SnapshotReceiver, SnapshotStore
from railyard.streams import CorruptState, StreamsMachine

# FatalError is what `Driver.run` ends with; callers import it with the Driver.
__all__ = ["Driver", "FatalError", "LeadershipLost", "NodeStopped", "Outbox"]

T = TypeVar("T")

# Inbox items handled per round before the core's Ready is processed: large
# enough to batch a burst of proposals into one fsync, small enough that a
# flood of messages cannot starve persistence.
MAX_EVENTS_PER_ROUND = 4096
# Bounded inbox: a peer or client that floods the node waits (gRPC flow
# control pushes back) instead of growing memory without limit.
INBOX_SIZE = 65536
# Core restarts after a save that met a full disk, in a row (no successful
# save in between), before the node gives up and stops.
MAX_RESTARTS_ON_FULL_DISK = 20
# Committed entries holding at most this many bytes of data are applied on
# the loop; larger batches on the apply thread (see the module docstring).
# Around a hundred single-record puts fit; one 500-record batch does not.
APPLY_INLINE_MAX_BYTES = 16 << 10

# Message types not worth a debug line each.
_ROUTINE = frozenset(
    {
        MessageType.APPEND,
        MessageType.APPEND_RESPONSE,
        MessageType.HEARTBEAT,
        MessageType.HEARTBEAT_RESPONSE,
    }
)


class _SaveFailedDiskFull(Exception):
    """A log save met a full disk: nothing of it is durable (the transaction rolled back)."""


class NodeStopped(Exception):
    """The driver stopped (shutdown or fatal error) before the request was answered."""


class LeadershipLost(Exception):
    """The proposal's outcome is unknown: leadership changed before it was applied."""

    def __init__(self, leader_id: NodeId | None) -> None:
        super().__init__(f"leadership changed (leader: {leader_id or 'unknown'})")
        self.leader_id = leader_id


class Outbox(Protocol):
    """Where the driver hands messages for peers (the transport)."""

    def send(self, messages: Sequence[Message]) -> None: ...


@dataclass(slots=True)
class _Proposal:
    data: bytes
    future: asyncio.Future[Any]


@dataclass(slots=True)
class _ReadRequest:
    future: asyncio.Future[None]


@dataclass(slots=True)
class _Call:
    fn: Callable[[], Any]
    future: asyncio.Future[Any] | None = None


@dataclass(slots=True)
class _Waiter:
    term: Term
    future: asyncio.Future[Any]


@dataclass
class _Pending:
    """Work collected in one round, handed to the core at its end."""

    proposals: list[_Proposal] = field(default_factory=list)
    reads: list[_ReadRequest] = field(default_factory=list)


class Driver:
    """Owns the core; see the module docstring."""

    def __init__(
        self,
        *,
        node_id: NodeId,
        voters: tuple[NodeId, ...],
        core: RaftCore,
        log_store: LogStore,
        snapshots: SnapshotStore,
        machine: StreamsMachine,
        outbox: Outbox,
        snapshot_every: int,
        election_ticks: int,
        applied: Index,
        applied_term: Term,
        snapshot_index: Index,
        log: logging.Logger,
        data_dir: Path | None = None,
    ) -> None:
        self.node_id = node_id
        self.core = core
        self.log_store = log_store
        self.machine = machine
        self.outbox = outbox
        self.election_ticks = election_ticks
        self._skipped_timeout_for: tuple[NodeId, Term] | None = None
        self.log = log
        self.inbox: asyncio.Queue[Message | _Proposal | _ReadRequest | _Call] = asyncio.Queue(
            INBOX_SIZE
        )
        self.log_io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="raft-log")
        self.sm_io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="streams")
        self.apply_io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="apply")
        self.applied = applied
        self.applied_term = applied_term
        self.soft_state = SoftState()
        # The hard state last written, and a newer one that differs from it
        # only in commit_index (not worth an fsync of its own, see _start_save).
        self._saved_hard_state = log_store.hard_state()
        self._unsaved_hard_state: HardState | None = None
        self._waiters: dict[Index, _Waiter] = {}
        self._read_contexts = itertools.count(1)
        self._reads_by_context: dict[int, list[asyncio.Future[None]]] = {}
        self._reads_by_index: list[tuple[Index, list[asyncio.Future[None]]]] = []
        self._tg: asyncio.TaskGroup | None = None
        self._restarts_on_full_disk = 0
        self.disk = DiskGuard(node_id, data_dir, log)
        self.snapshotter = Snapshotter(
            driver=self,
            # Looked up at each call: `_restart_core` may have replaced the core.
            compact_core=lambda meta: self.core.compact(meta),
            voters=voters,
            snapshots=snapshots,
            machine=machine,
            log_store=log_store,
            snapshot_every=snapshot_every,
            snapshot_index=snapshot_index,
            disk=self.disk,
            log=log,
        )
        # Counters for Status (all about snapshots, so far).
        self.stats = self.snapshotter.stats

    # ------------------------------------------------------------ API for handlers

    async def deliver(self, message: Message) -> None:
        """Queue a message from a peer (waits while the inbox is full)."""
        await self.inbox.put(message)

    async def propose(self, data: bytes) -> Any:
        """Replicate `data`; returns the state machine's result for its entry.

        Raises NotLeader, ProposalDropped, LeadershipLost, or
        `disk_space.DiskFull` (before proposing anything) when the data
        directory's disk is full.
        """
        self.check_writable(len(data))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self.inbox.put(_Proposal(data, future))
        return await future

    def check_writable(self, size: int = 0) -> None:
        """Raise DiskFull unless the disk has room for a write of `size` bytes and the reserve."""
        self.disk.check_writable(size)

    async def read_barrier(self) -> None:
        """Return once this node's state machine reflects every write committed
        before the call (ReadIndex, Raft §6.4). Raises NotLeader when no
        leader is known."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self.inbox.put(_ReadRequest(future))
        await future

    async def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` inside the driver, between steps; its exception is re-raised here."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        await self.inbox.put(_Call(fn, future))
        return await future

    def post(self, fn: Callable[[], object]) -> None:
        """Run `fn` inside the driver later, without waiting (never blocks the caller)."""
        try:
            self.inbox.put_nowait(_Call(fn))
        except asyncio.QueueFull:
            self.log.warning("inbox full; dropped an internal event")

    async def machine_call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a state-machine query (or a restore) on the reads thread.

        A state found damaged (a record failing its checksum) stops the node:
        a replica must not serve, nor snapshot to others, a state that differs
        from the log. At the next start `verify` refuses the file, naming it.
        """
        try:
            return await asyncio.get_running_loop().run_in_executor(self.sm_io, fn, *args)
        except CorruptState as exc:
            self.log.error("%s; stopping the node", exc)
            self.post(functools.partial(_stop_on, FatalError(f"damaged state: {exc}")))
            raise

    async def log_call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a log-store call on its worker thread, after queued writes."""
        return await asyncio.get_running_loop().run_in_executor(self.log_io, fn, *args)

    async def deliver_snapshot(self, message: Message, receiver: SnapshotReceiver) -> None:
        """Step a SNAPSHOT message whose bytes `receiver` has staged.

        The staged file becomes the node's latest snapshot only if the core
        accepts the message (its meta comes back in `Ready.snapshot`); a
        message the core refuses (stale term, older than the log) has its
        file deleted at the end of the round, so it can never be taken for
        the node's own snapshot at the next start.
        """

        def step() -> None:
            assert message.snapshot is not None
            self.snapshotter.receive(message.snapshot, receiver)
            self.core.step(message)

        await self.inbox.put(_Call(step))

    def leader_refuses_connections(self, peer: NodeId) -> None:
        """Called in the driver when connecting to `peer` was refused: its process is gone.

        A follower of that leader skips the fixed part of its election timeout
        (`election_ticks` ticks at once), keeping the randomized part, so the
        followers of a crashed leader still campaign at staggered times, and
        no sooner than Raft would let them win a (pre-)vote: every follower
        of the dead leader sees the refusal and leaves its lease too. Safety
        never depends on timing; a false alarm costs at most an election.
        """
        status = self.core.status()
        if status.role is not Role.FOLLOWER or status.leader_id != peer:
            return
        if self._skipped_timeout_for == (peer, status.term):
            return  # once per leader and term, or the randomization would be lost
        self._skipped_timeout_for = (peer, status.term)
        self.log.info("leader %s refuses connections; not waiting out its lease", peer)
        for _ in range(self.election_ticks):
            self.core.tick()

    def shutdown_workers(self) -> None:
        """Wait for the write or apply in progress to finish (called at exit)."""
        self.log_io.shutdown(wait=True, cancel_futures=True)
        self.sm_io.shutdown(wait=True, cancel_futures=True)
        self.snapshotter.shutdown()
        self.apply_io.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------ the loop

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            # Whatever ended the loop (a stop, a fatal error), nobody waits
            # on it forever: request handlers answer and the server can stop.
            self._fail_everything(NodeStopped(f"node {self.node_id} is stopping"))

    def _fail_everything(self, exc: Exception) -> None:
        for waiter in self._waiters.values():
            if not waiter.future.done():
                waiter.future.set_exception(exc)
        self._waiters.clear()
        for futures in [*self._reads_by_context.values(), *(f for _, f in self._reads_by_index)]:
            _fail_all(futures, exc)
        self._reads_by_context.clear()
        self._reads_by_index.clear()
        while not self.inbox.empty():
            event = self.inbox.get_nowait()
            future = getattr(event, "future", None)
            if future is not None and not future.done():
                future.set_exception(exc)
        self.snapshotter.abort_received()

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            while True:
                pending = _Pending()
                self._take(await self.inbox.get(), pending)
                for _ in range(MAX_EVENTS_PER_ROUND):
                    try:
                        event = self.inbox.get_nowait()
                    except asyncio.QueueEmpty:
                        break
                    self._take(event, pending)
                self._submit(pending)
                while self.core.has_ready():
                    ready = self.core.ready()
                    try:
                        await self._handle_ready(ready)
                    except _SaveFailedDiskFull as exc:
                        await self._restart_core(exc)
                        continue
                    self.core.advance(ready)
                self.snapshotter.discard_refused()

    def _take(self, event: Message | _Proposal | _ReadRequest | _Call, pending: _Pending) -> None:
        if isinstance(event, Message):
            if event.type is MessageType.APPEND and not self.disk.follower_has_room(event):
                return  # unanswered: the leader sends it again later
            if self.log.isEnabledFor(logging.DEBUG) and event.type not in _ROUTINE:
                self.log.debug(
                    "step %s from %s term=%d granted=%s",
                    event.type.value,
                    event.sender,
                    event.term,
                    event.vote_granted,
                )
            self.core.step(event)
        elif isinstance(event, _Proposal):
            pending.proposals.append(event)
        elif isinstance(event, _ReadRequest):
            pending.reads.append(event)
        else:
            self._run_call(event)

    def _run_call(self, call: _Call) -> None:
        try:
            result = call.fn()
        except Exception as exc:
            if call.future is None:
                raise
            if not call.future.done():
                call.future.set_exception(exc)
            return
        if call.future is not None and not call.future.done():
            call.future.set_result(result)

    def _submit(self, pending: _Pending) -> None:
        proposals = [p for p in pending.proposals if not p.future.done()]
        if proposals:
            self._propose_batch(proposals)
        reads = [r.future for r in pending.reads if not r.future.done()]
        if reads:
            self._start_read(reads)

    def _propose_batch(self, proposals: list[_Proposal]) -> None:
        try:
            first = self.core.propose_batch([p.data for p in proposals])
        except (NotLeader, ProposalDropped) as exc:
            for p in proposals:
                p.future.set_exception(exc)
            return
        term = self.core.status().term
        for offset, p in enumerate(proposals):
            self._waiters[Index(first + offset)] = _Waiter(term, p.future)

    def _start_read(self, futures: list[asyncio.Future[None]]) -> None:
        # Forget rounds whose callers all gave up (a lost READ_INDEX is never answered).
        for stale in [c for c, fs in self._reads_by_context.items() if all(f.done() for f in fs)]:
            del self._reads_by_context[stale]
        context = next(self._read_contexts)
        try:
            self.core.read_index(context)
        except NotLeader as exc:
            for f in futures:
                f.set_exception(exc)
            return
        self._reads_by_context[context] = futures

    # ------------------------------------------------------------ Ready

    async def _handle_ready(self, ready: Ready) -> None:
        if ready.soft_state is not None:
            self._on_soft_state(ready.soft_state)
        if ready.snapshot is not None:
            await self._install_snapshot(ready.snapshot)
        if ready.messages:
            self.outbox.send(ready.messages)
        committed = ready.committed_entries
        saving = self._start_save(ready.hard_state, ready.entries)
        entries = ready.entries
        if saving is not None and committed and entries and committed[-1].index >= entries[0].index:
            # Committed counting this node's copy (a single-node cluster, or
            # entries a Ready both writes and commits): durable here first.
            await self._finish_save(*saving)
            saving = None
        if committed:
            # Otherwise the committed entries were persisted by earlier Readys
            # and are applied while this Ready's save runs on the log thread:
            # disk and apply overlap (Raft dissertation §10.2.1), and the
            # order of effects others can see is unchanged.
            try:
                await self._apply(committed)
            except BaseException:
                # The save runs to its end before the failure is raised, so
                # nothing is left writing behind a stopping node.
                if saving is not None:
                    await asyncio.wait([saving[0]])
                raise
        if saving is not None:
            await self._finish_save(*saving)
        if ready.persisted_messages:
            self.outbox.send(ready.persisted_messages)
        for read_state in ready.read_states:
            futures = self._reads_by_context.pop(read_state.context, None)
            if futures:
                self._reads_by_index.append((read_state.index, futures))
        self._serve_reads()
        self.snapshotter.maybe_snapshot(self._tg, self.applied, self.applied_term)

    def _on_soft_state(self, soft: SoftState) -> None:
        previous = self.soft_state
        self.soft_state = soft
        term = self.core.status().term
        if soft.role != previous.role:
            if soft.role is Role.LEADER:
                self.log.info("became leader term=%d", term)
            else:
                self.log.info(
                    "became %s term=%d leader=%s", soft.role.value, term, soft.leader_id or "-"
                )
        elif soft.leader_id != previous.leader_id:
            self.log.info("leader is %s term=%d", soft.leader_id or "unknown", term)
        if previous.role is Role.LEADER and soft.role is not Role.LEADER:
            # NB: an entry proposed here may still commit under the next leader;
            # clients retry with their producer id, so failing fast is safe.
            self._fail_waiters(lambda _index: True, soft.leader_id)
        if soft.leader_id != previous.leader_id:
            # Read contexts in flight were addressed to the old leader.
            for futures in self._reads_by_context.values():
                _fail_all(futures, NotLeader(soft.leader_id))
            self._reads_by_context.clear()

    def _start_save(
        self, hard_state: HardState | None, entries: Sequence[Entry]
    ) -> tuple[asyncio.Future[None], HardState | None, int, float] | None:
        """Hand entries and hard state to the log thread as one transaction (one fsync).

        Returns what `_finish_save` waits on, or None when nothing needs
        writing. A hard state that changed only its commit index is not
        written on its own: the commit index is volatile in Raft (Figure 2)
        and a restart learns it again from the leader (etcd's MustSync makes
        the same call). It rides along with the next write instead.
        """
        if hard_state is not None:
            saved = self._saved_hard_state
            if not entries and (hard_state.current_term, hard_state.voted_for) == (
                saved.current_term,
                saved.voted_for,
            ):
                self._unsaved_hard_state = hard_state
                return None
        elif self._unsaved_hard_state is not None and entries:
            hard_state = self._unsaved_hard_state
        if hard_state is None and not entries:
            return None
        future = asyncio.get_running_loop().run_in_executor(
            self.log_io, self.log_store.save, hard_state, entries
        )
        return future, hard_state, len(entries), time.perf_counter()

    async def _finish_save(
        self, future: asyncio.Future[None], hard_state: HardState | None, count: int, started: float
    ) -> None:
        try:
            await future
        except Exception as exc:
            if is_disk_full(exc):
                raise _SaveFailedDiskFull(f"cannot persist the raft log: {exc}") from exc
            raise FatalError(f"cannot persist the raft log: {exc}") from exc
        self._restarts_on_full_disk = 0
        if hard_state is not None:
            self._saved_hard_state = hard_state
            self._unsaved_hard_state = None
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug(
                "persisted %d entries in %.1f ms", count, (time.perf_counter() - started) * 1e3
            )

    async def _apply(self, entries: Sequence[Entry]) -> None:
        started = time.perf_counter()
        batch = [(e.index, e.data if e.kind is EntryKind.NORMAL else None) for e in entries]
        size = sum(len(e.data) for e in entries)
        try:
            if size <= APPLY_INLINE_MAX_BYTES:
                results = self.machine.apply(batch)
            else:
                results = await asyncio.get_running_loop().run_in_executor(
                    self.apply_io, self.machine.apply, batch
                )
        except Exception as exc:
            raise FatalError(f"cannot apply entries {entries[0].index}..: {exc}") from exc
        for entry, result in zip(entries, results, strict=True):
            waiter = self._waiters.pop(entry.index, None)
            if waiter is None or waiter.future.done():
                continue
            if waiter.term == entry.term:
                waiter.future.set_result(result)
            else:
                waiter.future.set_exception(LeadershipLost(self.soft_state.leader_id))
        self.applied = entries[-1].index
        self.applied_term = entries[-1].term
        self.snapshotter.note_applied(size)
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug(
                "applied %d entries in %.1f ms", len(entries), (time.perf_counter() - started) * 1e3
            )

    async def _restart_core(self, failure: _SaveFailedDiskFull) -> None:
        """After a save met a full disk: rebuild the core from what is durable, keep serving.

        The failed transaction rolled back, so the log store holds exactly
        what was durable before it; nothing of that Ready was acknowledged
        (persisted messages leave only after the save). A core rebuilt from
        the store is the core of a node that crashed and restarted at this
        point -- a case Raft handles at any moment -- without losing the
        process: reads go on, the leader (if this node was it) steps down,
        and writes resume when space returns. Exiting instead would also be
        safe, but would take reads away from a node whose only fault is a
        full disk. A disk that stays full after many restarts in a row is
        fatal.
        """
        self._restarts_on_full_disk += 1
        if self._restarts_on_full_disk > MAX_RESTARTS_ON_FULL_DISK:
            raise FatalError(f"{failure} ({MAX_RESTARTS_ON_FULL_DISK} times in a row)") from failure
        self.log.error("%s; restarting the core from what is on disk", failure)
        hard_state, snapshot, entries = await self.log_call(self._durable_state)
        if hard_state.commit_index < self.applied:
            hard_state = replace(hard_state, commit_index=self.applied)
        old = self.core
        self.core = RaftCore(
            old.config,
            old.rng,
            hard_state=hard_state,
            snapshot=snapshot,
            entries=entries,
            applied=self.applied,
            # A node still catching up after starting empty keeps waiting.
            started_empty=old.status().awaiting_catch_up,
        )
        self._saved_hard_state = self.log_store.hard_state()
        self._unsaved_hard_state = None
        self._on_soft_state(SoftState())  # what a fresh core starts from
        # Outcome unknown: an entry proposed here may still commit elsewhere.
        self._fail_waiters(lambda _index: True, None)
        for futures in self._reads_by_context.values():
            _fail_all(futures, NotLeader(None))
        self._reads_by_context.clear()

    def _durable_state(self) -> tuple[HardState, SnapshotMeta | None, list[Entry]]:
        store = self.log_store
        entries = store.entries(store.first_index(), Index(store.last_index() + 1))
        return store.hard_state(), store.snapshot_meta(), entries

    def _serve_reads(self) -> None:
        still: list[tuple[Index, list[asyncio.Future[None]]]] = []
        for index, futures in self._reads_by_index:
            if all(f.done() for f in futures):
                continue  # the callers gave up (deadline)
            if index <= self.applied:
                for f in futures:
                    if not f.done():
                        f.set_result(None)
            else:
                still.append((index, futures))
        self._reads_by_index = still

    def _fail_waiters(self, which: Callable[[Index], bool], leader: NodeId | None) -> None:
        for index in [i for i in self._waiters if which(i)]:
            waiter = self._waiters.pop(index)
            if not waiter.future.done():
                waiter.future.set_exception(LeadershipLost(leader))

    # ------------------------------------------------------------ snapshots

    async def _install_snapshot(self, meta: SnapshotMeta) -> None:
        """Install the snapshot the core accepted (see `Snapshotter.install`).

        The entries it covers count as applied; proposals waiting on them
        learn only that their outcome is unknown (their results were computed
        elsewhere).
        """
        await self.snapshotter.install(meta)
        self._fail_waiters(lambda index: index <= meta.index, self.soft_state.leader_id)
        self.applied = meta.index
        self.applied_term = meta.term


def _stop_on(error: FatalError) -> None:
    raise error


def _fail_all(futures: Sequence[asyncio.Future[Any]], exc: BaseException) -> None:
    for f in futures:
        if not f.done():
            f.set_exception(exc)
