"""Start-up reconciliation of the data directory after a crash (node/recovery.py).

Finding F7 of docs/FINDINGS.md; the refusals of a whole node are in
tests/cluster/test_startup_checks.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from railyard.node.recovery import LOG_FILE, STATE_FILE, reconcile
from railyard.raft import Entry, EntryKind, HardState, Index, NodeId, SnapshotMeta, Term
from railyard.storage import SnapshotStore, SqliteLogStore
from railyard.streams import StreamsMachine


def _opened(tmp_path: Path) -> tuple[SqliteLogStore, SnapshotStore, StreamsMachine]:
    log_store = SqliteLogStore.open(tmp_path / LOG_FILE, cluster="c", node_id="n1")
    # Entries 1..6, terms 1,1,1,2,2,2; the hard state counts 1..4 as committed.
    log_store.save(
        HardState(Term(2), NodeId("n1"), Index(4)),
        [Entry(Term(1 if i <= 3 else 2), Index(i), EntryKind.NOOP) for i in range(1, 7)],
    )
    machine = StreamsMachine.open(tmp_path / STATE_FILE)
    return log_store, SnapshotStore(tmp_path / "snapshots"), machine


@pytest.mark.parametrize(
    ("index", "term", "used", "last_index"),
    [
        (3, 1, True, 6),  # this node's own snapshot, the log not compacted yet (a crash)
        (8, 3, True, 8),  # installed from a leader, the log not reset yet (a crash)
        (5, 3, True, 5),  # installed from a leader over uncommitted entries of an older term
        (3, 0, False, 6),  # contradicts committed entry 3 (term 1): not this cluster's history
    ],
)
def test_only_a_snapshot_consistent_with_the_log_is_used_at_start(
    tmp_path: Path, index: int, term: int, used: bool, last_index: int
) -> None:
    """F7: a snapshot newer than the log's compaction replaces the log's prefix only if it
    can be part of the same history."""
    log_store, snapshots, machine = _opened(tmp_path)
    try:
        meta = SnapshotMeta(Index(index), Term(term), (NodeId("n1"),))
        snapshots.create(meta, machine.snapshot_to)
        found = reconcile(log_store, snapshots, machine, logging.getLogger("test.startup"))
        if used:
            assert found == meta and log_store.snapshot_meta() == meta
        else:
            assert found is None and log_store.snapshot_meta() is None
        assert log_store.last_index() == last_index
    finally:
        machine.close()
        log_store.close()
