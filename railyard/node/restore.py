"""Lay out fresh data directories from a backup (`railyard snapshot restore`).

The disaster-recovery path, as `etcdctl snapshot restore`: a backup taken by
`railyard snapshot save` becomes, in every node's data directory of a
cluster file, what a node that had installed that snapshot would hold:

- the snapshot file and its metadata (`snapshots/`), whose configuration is
  the new file's nodes, all voters, with their addresses: the new cluster's
  membership comes from the log, not from the cluster it was taken from;
- a log (`raft.db`) compacted to the snapshot, with a hard state whose term
  is the snapshot's: the first leader's entries then come after the
  snapshot's in term as in index (terms never go down along a log);
- the state database (`streams.db`) restored from it.

So every node starts with a snapshot and is not `started_empty` (see
`recovery.py`): they vote for each other at once and elect a leader whose
log starts at the snapshot's index, and every stream keeps its records and
sequence numbers.

Nothing is written until the backup's checksum is verified, its state
database passes `storage.sqlite_problem` and `streams.snapshot_problem`, and
every target data directory is absent or empty.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from railyard.config import ClusterConfig
from railyard.node.recovery import LOG_FILE, SNAPSHOT_DIR, STATE_FILE, limits_of
from railyard.raft import HardState, Index, Member, Membership, NodeId, SnapshotMeta, Term
from railyard.storage import (
    BackupHeader,
    DataDirLock,
    SnapshotStore,
    SqliteLogStore,
    extract_state,
    read_backup,
    sqlite_problem,
)
from railyard.storage.lock import LOCK_FILE_NAME
from railyard.streams import StreamsMachine, snapshot_problem


class RestoreRefused(Exception):
    """The backup or a target directory is unfit; nothing was written. The message says why."""


@dataclass(frozen=True)
class Restored:
    """What `restore_backup` wrote: the backup's header and each node's data directory."""

    header: BackupHeader
    data_dirs: dict[str, Path]


def membership_of(config: ClusterConfig) -> Membership:
    """The configuration a restored cluster starts with: every node of the file, a voter."""
    return Membership(
        tuple(
            Member(NodeId(node.id), node.address, node.peer_address or "") for node in config.nodes
        )
    )


def check_empty(config: ClusterConfig) -> dict[str, Path]:
    """Every node's data directory, once each is absent or empty; else `RestoreRefused`."""
    data_dirs = {node.id: config.node_data_dir(node.id) for node in config.nodes}
    for node_id, data_dir in data_dirs.items():
        if data_dir.exists() and not data_dir.is_dir():
            raise RestoreRefused(f"{data_dir}: data directory of {node_id} is not a directory")
        if data_dir.is_dir() and any(data_dir.iterdir()):
            raise RestoreRefused(
                f"{data_dir}: data directory of {node_id} is not empty; restore writes only "
                "into new or empty directories (move it away, or set another [cluster] data_dir)"
            )
    return data_dirs


def restore_backup(backup: Path, config: ClusterConfig) -> Restored:
    """Verify `backup`, then lay out every node's data directory of `config` from it."""
    data_dirs = check_empty(config)
    with tempfile.TemporaryDirectory(prefix="railyard-restore-") as scratch:
        state = Path(scratch) / STATE_FILE
        header = read_backup(backup)
        extract_state(backup, state)
        problem = sqlite_problem(state) or snapshot_problem(state, header.index)
        if problem is not None:
            raise RestoreRefused(f"{backup}: the state it holds {problem}")
        meta = SnapshotMeta.of(Index(header.index), Term(header.term), membership_of(config))
        # Checked again: a node started meanwhile must not be written over.
        check_empty(config)
        for node_id, data_dir in data_dirs.items():
            _lay_out(data_dir, config, NodeId(node_id), meta, state)
    return Restored(header, data_dirs)


def _lay_out(
    data_dir: Path, config: ClusterConfig, node_id: NodeId, meta: SnapshotMeta, state: Path
) -> None:
    """One node's directory: snapshot, then log and hard state, then the state database."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with DataDirLock(data_dir):
        if any(p.name != LOCK_FILE_NAME for p in data_dir.iterdir()):
            raise RestoreRefused(f"{data_dir}: data directory of {node_id} is no longer empty")
        snapshot = SnapshotStore(data_dir / SNAPSHOT_DIR).create(
            meta, lambda path: _copy(state, path)
        )
        log_store = SqliteLogStore.open(data_dir / LOG_FILE, cluster=config.name, node_id=node_id)
        try:
            log_store.compact(meta)
            log_store.save(HardState(meta.term, None, meta.index), ())
        finally:
            log_store.close()
        machine = StreamsMachine.open(data_dir / STATE_FILE, limits_of(config))
        try:
            machine.restore_from(snapshot)
        finally:
            machine.close()


def _copy(source: Path, dest: Path) -> None:
    shutil.copyfile(source, dest)
