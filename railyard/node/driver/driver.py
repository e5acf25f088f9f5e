"""The driver: the one task that owns the Raft core.

Everything that changes the core goes through the driver's inbox
(`inbox.Inbox`): messages from peers, ticks, proposals, read requests,
leadership transfers, and the completions of background work (a snapshot
written, a peer unreachable). The driver takes whatever has queued up,
steps the core with all of it (proposals that arrived together become one
`propose_batch`, i.e. one fsync), then handles every `Ready` in the order
its docstring prescribes:

1. install a received snapshot (restore the state machine, reset the log);
2. send `messages`;
3. persist entries and hard state in ONE `LogStore.save` (a worker thread);
4. send `persisted_messages`;
5. apply committed entries (one state-machine transaction per batch);
6. answer the proposals waiting on those entries and the reads whose
   index is now applied;
7. take a snapshot if enough was applied since the last one;
8. `advance`.

Some liberties, all safe: committed entries that earlier Readys already
persisted are applied while this Ready's entries are written (disk and
apply overlap, Raft dissertation §10.2.1); a hard state that changed
only its commit index is not fsync'd on its own (the commit index is
volatile in Raft; it rides along with the next write); a follower saves a
small append on the loop and sends `persisted_messages` as soon as it is
durable, before applying (`_saves_inline`); and a leader's Ready that
only commits sends its `messages` (commit notices, heartbeats) after the
proposals it answered (`_send_later`). The last three keep a single put's
path short: each removed a hop of about 0.1 ms at 1 in flight. And a
leader's commit notices wait a moment for the next append to carry them
(`notices.CommitNotices`): at 1 in flight that halves the peer messages.

The driver owns one helper per concern, each a module stating its own
invariants, and calls them at fixed points of the loop:
`snapshotting.Snapshotter` (steps 1 and 7, and refused snapshots at the end
of each round), `persistence.LogWriter` (step 3, and the core's rebuild
after a save met a full disk), `applying.Applier` (step 5),
`waiters.ProposalWaiters` and `reads.PendingReads` (step 6),
`disk_space.DiskGuard` (free space, checked before writes and appends),
`notices.CommitNotices` (step 2 and the commit notices of step 6),
`scrubbing.Scrubber` (the whole state checked in the background, a task
of the driver's task group),
`threads.Threads` (the log and reads threads) and `timing.Ticker` (ticks,
and a dead leader's lease cut short).
It reports to a `NodeMetrics` as it goes (save and apply durations,
committed and applied entries, failed proposals, leader changes, heartbeat
round trips; no-ops without a metrics_address), and logs role, leader and
term changes as events with their facts (`observability`).

Invariants:
- Only this task calls a mutating method of the core. Request handlers may
  read `core.status()` between steps (the loop is single-threaded and core
  methods never yield), nothing more.
- Log-store calls run on one worker thread, in submission order; committed
  entries are applied on the loop or on an apply thread, one batch at a
  time. State-machine queries run on a reads thread with their own
  connection and see every apply that finished before they were submitted;
  snapshots are copied on a thread of their own, so neither reads nor
  snapshots hold up applying.
- A storage error is fatal (`FatalError`): the node stops rather than
  acknowledge what might not be on disk. One exception: a full disk. Writes
  are refused before they are proposed while the disk is below a reserve
  (`DiskFull`, checked in `propose`), followers drop appends below part of
  it (checked as messages are stepped), and a log save that meets a full
  disk anyway rebuilds the core from the store, as a restart would, so
  reads go on (`_restart_core`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from railyard.node.driver.applying import Applier
from railyard.node.driver.disk_space import DiskGuard
from railyard.node.driver.inbox import Inbox, Proposal, Round
from railyard.node.driver.keepalive import Keepalive
from railyard.node.driver.notices import CommitNotices
from railyard.node.driver.persistence import LogWriter, SaveFailedDiskFull
from railyard.node.driver.reads import PendingReads
from railyard.node.driver.reporting import Reporter
from railyard.node.driver.scrubbing import Scrubber
from railyard.node.driver.snapshotting import Snapshotter
from railyard.node.driver.threads import Threads
from railyard.node.driver.timing import Ticker
from railyard.node.driver.waiters import ProposalWaiters
from railyard.node.observability import NodeMetrics
from railyard.node.observability.refusals import RefusalLog
from railyard.raft import (
    CoreStatus,
    Entry,
    Index,
    Membership,
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
from railyard.streams import ApplyResult, StreamsMachine

T = TypeVar("T")

# A follower's append of at most this many entry bytes is saved on the loop
# (`Driver._saves_inline`): about the fsync of a page or two, comparable
# with the hand-off to the log thread and back it saves.
INLINE_SAVE_MAX_BYTES = 64 << 10


class NodeStopped(Exception):
    """The driver stopped (shutdown or fatal error) before the request was answered."""


class Outbox(Protocol):
    """Where the driver hands messages for peers (the transport)."""

    def send(self, messages: Sequence[Message]) -> None: ...


class Driver:
    """Owns the core; see the module docstring."""

    def __init__(
        self,
        *,
        node_id: NodeId,
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
        metrics: NodeMetrics | None = None,
        on_membership: Callable[[Membership], None] | None = None,
    ) -> None:
        self.node_id = node_id
        # Told the configuration in force each time it changes or commits.
        self.on_membership = on_membership
        self._committed_config_index = Index(0)
        self.core = core
        self.log_store = log_store
        self.machine = machine
        self.outbox = outbox
        self.ticker = Ticker(election_ticks, log)
        self.log = log
        # Without a metrics_address: no registry, only what Status reports.
        self.metrics = metrics or NodeMetrics(peers=(), enabled=False)
        self.report = Reporter(log, self.metrics, core.status().term)
        self.inbox = Inbox(log)
        # A forger may send absurd messages without end: a few lines a minute.
        self.refusals = RefusalLog(log)
        # Looked up at each call: `_restart_core` may have replaced the core.
        self.keepalive = Keepalive(lambda: self.core, outbox)
        self.notices = CommitNotices(outbox)
        self.threads = Threads(self.inbox, log)
        self.applier = Applier(machine)
        self.applied = applied
        self.applied_term = applied_term
        self.soft_state = SoftState()
        self.leader_since_s: float | None = None  # wall clock, for Status only
        self.writer = LogWriter(
            log_store, self.threads.log_io, log, on_saved=self.metrics.observe_fsync
        )
        self.waiters = ProposalWaiters()
        self.reads = PendingReads()
        self._tg: asyncio.TaskGroup | None = None
        self.disk = DiskGuard(node_id, data_dir, log)
        self.snapshotter = Snapshotter(
            driver=self,
            # Looked up at each call: `_restart_core` may have replaced the core.
            compact_core=lambda meta: self.core.compact(meta),
            snapshot_meta=lambda index: self.core.snapshot_meta(index),
            snapshots=snapshots,
            machine=machine,
            log_store=log_store,
            snapshot_every=snapshot_every,
            snapshot_index=snapshot_index,
            disk=self.disk,
            log=log,
            on_snapshot=self.metrics.observe_snapshot,
        )
        # Counters for Status (all about snapshots, so far).
        self.stats = self.snapshotter.stats
        self.scrubber = Scrubber(machine, log, self.metrics)

    # ------------------------------------------------------------ API for handlers

    async def deliver(self, message: Message) -> None:
        """Queue a message from a peer (waits while the inbox is full)."""
        self.keepalive.answer(message)
        await self.inbox.deliver(message)

    async def propose(self, data: bytes) -> ApplyResult:
        """Replicate the command `data`; returns the state machine's result for its entry.

        Raises NotLeader, ProposalDropped, LeadershipLost, or
        `disk_space.DiskFull` (before proposing anything) when the data
        directory's disk is full.
        """
        try:
            self.check_writable(len(data))
            result = await self.inbox.propose(data)
        except Exception:
            self.metrics.proposal_failed()
            raise
        assert result is not None, "a command's entry always has a result"
        return result

    def status(self) -> CoreStatus:
        """The core's state now (a copy: handlers may read it between steps)."""
        return self.core.status()

    def log_entries(self, lo: Index, hi: Index) -> tuple[Entry, ...]:
        """The entries [lo, hi) the core still holds in memory, for display."""
        return self.core.log_entries(lo, hi)

    async def transfer_leadership(self, to: NodeId | None) -> None:
        """Ask the core to hand leadership to `to` (None: the most up-to-date follower)."""
        await self.call(lambda: self.core.transfer_leadership(to))

    def check_writable(self, size: int = 0) -> None:
        """Raise DiskFull unless the disk has room for a write of `size` bytes and the reserve."""
        self.disk.check_writable(size)

    async def read_barrier(self) -> None:
        """Return once this node's state machine reflects every write committed
        before the call (ReadIndex, Raft §6.4). Raises NotLeader when no
        leader is known."""
        await self.inbox.read_barrier()

    async def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` inside the driver, between steps; its exception is re-raised here."""
        return await self.inbox.call(fn)

    def post(self, fn: Callable[[], object]) -> None:
        """Run `fn` inside the driver later, without waiting (never blocks the caller)."""
        self.inbox.post(fn)

    async def machine_call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a state-machine query (or a restore) on the reads thread (`Threads`)."""
        return await self.threads.machine_call(fn, *args)

    async def log_call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a log-store call on its worker thread, after queued writes."""
        return await self.threads.log_call(fn, *args)

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
            self._step_core(message)

        await self.inbox.queue_call(step)

    def leader_refuses_connections(self, peer: NodeId) -> None:
        """Connecting to `peer` was refused: see `Ticker.leader_refuses_connections`."""
        self.post(lambda: self.ticker.leader_refuses_connections(self.core, peer))

    def shutdown_workers(self) -> None:
        """Wait for the write or apply in progress to finish (called at exit)."""
        self.threads.shutdown()
        self.snapshotter.shutdown()
        self.applier.shutdown()
        self.scrubber.shutdown()

    # ------------------------------------------------------------ the loop

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            # Whatever ended the loop (a stop, a fatal error), nobody waits
            # on it forever: request handlers answer and the server can stop.
            self._fail_everything(NodeStopped(f"node {self.node_id} is stopping"))
            self.notices.close()

    def _fail_everything(self, exc: Exception) -> None:
        self.waiters.fail_all(exc)
        self.reads.fail_all(exc)
        self.inbox.fail_queued(exc)
        self.snapshotter.abort_received()

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            tg.create_task(self.keepalive.run(lambda: self.ticker.interval_s))
            tg.create_task(self.scrubber.run())
            while True:
                self._submit(await self.inbox.take_round(self._step))
                while self.core.has_ready():
                    ready = self.core.ready()
                    try:
                        await self._handle_ready_held(ready)
                    except SaveFailedDiskFull as exc:
                        await self._restart_core(exc)
                        continue
                    self.core.advance(ready)
                self.snapshotter.discard_refused()

    def _step(self, message: Message) -> None:
        if message.type is MessageType.APPEND and not self.disk.follower_has_room(message):
            return  # unanswered: the leader sends it again later
        if message.type is MessageType.HEARTBEAT_RESPONSE:
            self.metrics.heartbeat_answered(message.sender, time.monotonic())
        self._step_core(message)

    def _step_core(self, message: Message) -> None:
        refusal = self.core.step(message)
        if refusal is not None:  # absurd numbers (raft.bounds): never taken in
            self.refusals.warning(
                "absurd message",
                "refused %s from %s: %s",
                message.type.value,
                message.sender,
                refusal,
            )

    def _submit(self, collected: Round) -> None:
        """Hand a round's proposals and read barriers to the core (those still awaited)."""
        proposals = [p for p in collected.proposals if not p.future.done()]
        if proposals:
            self._propose_batch(proposals)
        reads = [f for f in collected.reads if not f.done()]
        if reads:
            self.reads.start(self.core, reads)

    def _propose_batch(self, proposals: list[Proposal]) -> None:
        try:
            first = self.core.propose_batch([p.data for p in proposals])
        except (NotLeader, ProposalDropped) as exc:
            for p in proposals:
                p.future.set_exception(exc)
            return
        self.waiters.add(first, self.core.status().term, [p.future for p in proposals])

    # ------------------------------------------------------------ Ready

    async def _handle_ready_held(self, ready: Ready) -> None:
        """`_handle_ready`, with heartbeats kept going while it waits (`keepalive.py`)."""
        self.keepalive.busy_since = time.monotonic()
        try:
            await self._handle_ready(ready)
        finally:
            self.keepalive.busy_since = None

    async def _handle_ready(self, ready: Ready) -> None:
        if ready.hard_state is not None:
            self.report.maybe_term(ready.hard_state.current_term)
        if ready.soft_state is not None:
            self._on_soft_state(ready.soft_state)
        if ready.snapshot is not None:
            await self._install_snapshot(ready.snapshot)
        if self.on_membership is not None:
            committed_at = self.core.committed_membership()[0]
            if ready.membership is not None or committed_at != self._committed_config_index:
                # Before sending: a message may be for a member just added. A
                # commit matters too: a removed member is let go only then.
                self._committed_config_index = committed_at
                self.on_membership(self.core.membership)
        committed = ready.committed_entries
        # A leader's Ready that only commits carries, besides heartbeats, the
        # new commit index for the followers, which nobody's answer waits on:
        # it goes out after the proposals it answers (`_send_later`).
        later = self.soft_state.role is Role.LEADER and bool(committed) and not ready.entries
        if ready.messages and not later:
            self.notices.send(ready.messages)
        if committed:
            self.metrics.committed(len(committed), time.monotonic())
        saving = self.writer.start_save(
            ready.hard_state, ready.entries, inline=self._saves_inline(ready)
        )
        entries = ready.entries
        if saving is not None and (
            saving.future.done()
            or (committed and entries and committed[-1].index >= entries[0].index)
        ):
            # Saved inline already; or committed counting this node's copy (a
            # single-node cluster, or entries a Ready both writes and commits):
            # durable here first.
            await self.writer.finish_save(saving)
            saving = None
        acknowledged = saving is None
        if acknowledged and ready.persisted_messages:
            # Durable: acknowledged before the apply, which nobody waits on here.
            self.outbox.send(ready.persisted_messages)
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
                    await asyncio.wait([saving.future])
                raise
        if saving is not None:
            await self.writer.finish_save(saving)
        if ready.messages and later:
            self._send_later(ready.messages)
        if ready.persisted_messages and not acknowledged:
            self.outbox.send(ready.persisted_messages)
        self.reads.on_read_states(ready.read_states)
        self.reads.serve(self.applied)
        self.snapshotter.maybe_snapshot(self._tg, self.applied)

    def _saves_inline(self, ready: Ready) -> bool:
        """Save on the loop rather than the log thread: a follower's small append.

        A follower acknowledges only after the save, and its loop has
        nothing of its own to do meanwhile (the next append waits for this
        one's save either way), so the two thread hops would be pure delay
        on every put. A leader saves on the thread: its loop keeps taking
        requests and acknowledgements while the disk works. Never while a
        `log_call` may be using the store on the log thread.
        """
        return (
            self.soft_state.role is Role.FOLLOWER
            and self.threads.log_calls_pending == 0
            and sum(len(e.data) for e in ready.entries) <= INLINE_SAVE_MAX_BYTES
        )

    def _send_later(self, messages: Sequence[Message]) -> None:
        """Send `messages` after the request handlers that `waiters.resolve` woke
        have run: their callbacks were scheduled first, and the loop runs
        callbacks in order. Reordering with later messages is safe: Raft
        tolerates reordered messages, and these only announce a commit index
        (held a moment in case the next append carries it: `notices.py`)."""
        asyncio.get_running_loop().call_soon(self.notices.send_holding_notices, messages)

    def _on_soft_state(self, soft: SoftState) -> None:
        previous = self.soft_state
        self.soft_state = soft
        term = self.core.status().term
        if soft.role != previous.role:
            self.leader_since_s = time.time() if soft.role is Role.LEADER else None
        self.report.soft_state(previous, soft, term)
        if previous.role is Role.LEADER and soft.role is not Role.LEADER:
            # NB: an entry proposed here may still commit under the next leader;
            # clients retry with their producer id, so failing fast is safe.
            self.waiters.fail_all_unknown(soft.leader_id)
        if soft.leader_id != previous.leader_id:
            # Read contexts in flight were addressed to the old leader.
            self.reads.drop_in_flight(soft.leader_id)

    async def _apply(self, entries: Sequence[Entry]) -> None:
        started = time.perf_counter()
        size = sum(len(e.data) for e in entries)
        results = await self.applier.apply(entries, size)
        self.report.applied(len(entries), results, time.perf_counter() - started)
        self.waiters.resolve(entries, results, self.soft_state.leader_id)
        self.applied = entries[-1].index
        self.applied_term = entries[-1].term
        self.snapshotter.note_applied(size)
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug(
                "applied %d entries in %.1f ms", len(entries), (time.perf_counter() - started) * 1e3
            )

    async def _restart_core(self, failure: SaveFailedDiskFull) -> None:
        """After a save met a full disk: rebuild the core from what is durable, keep serving.

        See `LogWriter.rebuild_core` for why this is safe. The rebuilt core
        starts as a follower that knows no leader, so everything waiting on
        the old one learns that its outcome is unknown.
        """
        self.core = await self.writer.rebuild_core(
            failure, self.core, self.applied, self.disk.data_dir
        )
        self._on_soft_state(SoftState())  # what a fresh core starts from
        # Outcome unknown: an entry proposed here may still commit elsewhere.
        self.waiters.fail_all_unknown(None)
        self.reads.drop_in_flight(None)

    # ------------------------------------------------------------ snapshots

    async def _install_snapshot(self, meta: SnapshotMeta) -> None:
        """Install the snapshot the core accepted (see `Snapshotter.install`).

        The entries it covers count as applied; proposals waiting on them
        learn only that their outcome is unknown (their results were computed
        elsewhere).
        """
        await self.snapshotter.install(meta)
        self.waiters.fail_through(meta.index, self.soft_state.leader_id)
        self.applied = meta.index
        self.applied_term = meta.term
