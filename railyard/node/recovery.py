"""Open a node's data directory and reconcile what a crash left behind.

`open_state` takes the data directory's lock, opens the log store, the
snapshot store and the state machine, checks what of the state a start can
afford (`StreamsMachine.verify_ends`: the state row, every stream row, the
first and last record of every stream; every record is checked by the
driver's background scrub, `driver/scrubbing.py`), and reconciles them
after a crash (a snapshot written or installed but the log
not yet compacted; a state machine behind a compacted log is restored from
the snapshot). A snapshot that contradicts committed log entries is ignored
(`fits_log`), and a log that no longer reaches what the state machine
applied (it lost committed entries, e.g. a damaged WAL) is refused
(`check_log_reaches_applied`): the node would otherwise vote from a
forgotten term. Then it builds the Raft core from the hard state, the
snapshot metadata, the entries after it, and the state machine's
`last_applied` (entries between `last_applied` and the commit index are
applied again).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

from railyard.config import ClusterConfig
from railyard.node.driver import FatalError
from railyard.node.driver.catch_up import marker_path, note_awaiting
from railyard.node.driver.persistence import build_core
from railyard.raft import NO_TERM, Index, Member, NodeId, RaftConfig, RaftCore, SnapshotMeta, Term
from railyard.storage import DataDirLock, SnapshotStore, SqliteLogStore
from railyard.streams import Limits, StreamsMachine

LOG_FILE = "raft.db"
STATE_FILE = "streams.db"
SNAPSHOT_DIR = "snapshots"


class LogBehindState(Exception):
    """The raft log lost entries the state machine already applied."""


@dataclass
class NodeState:
    """What was opened from the data directory, ready to build the core from."""

    lock: DataDirLock
    log_store: SqliteLogStore
    snapshots: SnapshotStore
    machine: StreamsMachine
    core: RaftCore
    core_config: RaftConfig
    applied_term: Term
    snapshot_index: Index

    def close(self) -> None:
        try:
            self.machine.close()
            self.log_store.close()
        finally:
            self.lock.release()


def limits_of(config: ClusterConfig) -> Limits:
    return Limits(
        max_record_bytes=config.max_record_bytes,
        max_batch_records=config.max_batch_records,
        max_batch_bytes=config.max_batch_bytes,
    )


def raft_config(config: ClusterConfig, node_id: NodeId, *, join: bool = False) -> RaftConfig:
    """The core's configuration: the file's nodes are the bootstrap voters, used only
    while the store holds no configuration; a joining node has none (it never
    campaigns and waits for a leader to send it one)."""
    # One tick per heartbeat interval: the core counts ticks, the node owns time.
    election_ticks = max(2, config.election_timeout_ms // config.heartbeat_interval_ms)
    nodes = () if join else config.nodes
    return RaftConfig(
        node_id=node_id,
        voters=tuple(NodeId(n.id) for n in nodes),
        election_ticks=election_ticks,
        heartbeat_ticks=1,
        members=tuple(Member(NodeId(n.id), n.address, n.peer_address or "") for n in nodes),
    )


def open_state(
    config: ClusterConfig, node_id: NodeId, log: logging.Logger, *, join: bool = False
) -> NodeState:
    """Open and reconcile the data directory (blocking; runs before serving)."""
    data_dir = config.node_data_dir(node_id)
    lock = DataDirLock(data_dir)
    lock.acquire()
    try:
        log_store = SqliteLogStore.open(data_dir / LOG_FILE, cluster=config.name, node_id=node_id)
        snapshots = SnapshotStore(data_dir / SNAPSHOT_DIR)
        # Without SQLite's quick_check: it reads every page, and the scrub
        # runs it once the node serves.
        machine = StreamsMachine.open(data_dir / STATE_FILE, limits_of(config), quick_check=False)
        try:
            # What is bounded by the streams, not the records: a wrong or
            # cut-short file is refused at once, naming it. A flipped byte
            # in a record is found by the scrub shortly after the start (and
            # by any read of it before that), and stops the node.
            machine.verify_ends()
            meta = reconcile(log_store, snapshots, machine, log)
            check_log_reaches_applied(log_store, machine, meta, data_dir / LOG_FILE)
        except BaseException:
            machine.close()
            log_store.close()
            raise
        applied = Index(machine.last_applied)
        applied_term = log_store.term(applied)
        core_config = raft_config(config, node_id, join=join)
        # New, or its store was lost: no vote for history it may have held;
        # the marker keeps a node that crashed while catching up waiting.
        no_entries = log_store.last_index() < log_store.first_index()
        started_empty = (meta is None and no_entries) or marker_path(data_dir).exists()
        if started_empty:
            note_awaiting(data_dir)
        core = build_core(
            log_store, core_config, random.Random(), applied, started_empty=started_empty
        )
        if started_empty:
            log.info("empty store: no vote for a candidate with a log until caught up")
    except BaseException:
        lock.release()
        raise
    log.info(
        "opened %s: term=%d commit=%d applied=%d log=%d..%d snapshot=%d",
        data_dir,
        core.status().term,
        core.status().commit_index,
        applied,
        log_store.first_index(),
        log_store.last_index(),
        meta.index if meta else 0,
    )
    return NodeState(
        lock=lock,
        log_store=log_store,
        snapshots=snapshots,
        machine=machine,
        core=core,
        core_config=core_config,
        applied_term=applied_term if applied_term is not None else NO_TERM,
        snapshot_index=meta.index if meta else Index(0),
    )


def reconcile(
    log_store: SqliteLogStore,
    snapshots: SnapshotStore,
    machine: StreamsMachine,
    log: logging.Logger,
) -> SnapshotMeta | None:
    """Bring the log and the state machine in line with the newest snapshot."""
    meta = log_store.snapshot_meta()
    latest = snapshots.latest()
    if latest is not None and (meta is None or latest[0].index > meta.index):
        if fits_log(log_store, latest[0]):
            # Crashed after writing (or installing) a snapshot, before
            # compacting (or resetting) the log.
            log.info("compacting the log to snapshot index=%d", latest[0].index)
            log_store.compact(latest[0])  # keeps the entries after it if the terms match
            meta = latest[0]
        else:
            log.warning(
                "ignoring snapshot index=%d term=%d: it contradicts committed entries of the log",
                latest[0].index,
                latest[0].term,
            )
            latest = None
    if meta is not None and machine.last_applied < meta.index:
        if latest is None or latest[0].index != meta.index:
            raise FatalError(
                f"state machine at {machine.last_applied} is behind the compacted log "
                f"({meta.index}) and snapshot {meta.index} is missing"
            )
        log.info("restoring state machine from snapshot index=%d", meta.index)
        machine.restore_from(latest[1])
    return meta


def fits_log(log_store: SqliteLogStore, meta: SnapshotMeta) -> bool:
    """Whether a snapshot newer than the log's compaction may replace the log's prefix.

    Only a snapshot this node wrote or its core accepted is ever installed
    as the latest, so this guards against files from elsewhere: a snapshot
    whose term differs from a log entry at its index that the hard state
    already counts as committed cannot be part of the cluster's history.
    """
    term = log_store.term(meta.index)
    if term is None or term == meta.term:
        return True
    return meta.index > log_store.hard_state().commit_index


def check_log_reaches_applied(
    log_store: SqliteLogStore, machine: StreamsMachine, meta: SnapshotMeta | None, path: Path
) -> None:
    """Refuse a log that ends before what the state machine applied (Raft's durability).

    Applied entries were committed, i.e. durable in this log before they
    were applied; a log that no longer reaches them lost committed entries
    (a damaged or truncated WAL), and with them possibly this node's term
    and vote: voting again from it could elect a second leader in a term.
    """
    applied = machine.last_applied
    reaches = max(log_store.last_index(), meta.index if meta is not None else 0)
    if reaches < applied:
        raise LogBehindState(
            f"{path}: the raft log ends at index {reaches} but {STATE_FILE} applied up to "
            f"{applied}: {LOG_FILE} lost committed entries (damaged or truncated); "
            "restore this node's data directory or wipe it to rejoin by snapshot"
        )
