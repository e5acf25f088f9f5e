"""The catch-up marker: a node that crashed while catching up still waits after a restart."""

from __future__ import annotations

import logging
from pathlib import Path

from railyard.config import parse_config
from railyard.node.driver.catch_up import forget_awaiting, marker_path
from railyard.node.recovery import open_state
from railyard.raft import Entry, EntryKind, HardState, Index, NodeId, Term

CONFIG = """
[cluster]
name = "marker"
data_dir = "data"

[[nodes]]
id = "n1"
address = "127.0.0.1:1"
[[nodes]]
id = "n2"
address = "127.0.0.1:2"
[[nodes]]
id = "n3"
address = "127.0.0.1:3"
"""
LOG = logging.getLogger("test")


def _awaiting_after_open(tmp_path: Path) -> bool:
    config = parse_config(CONFIG, source=None, base_dir=tmp_path)
    state = open_state(config, NodeId("n1"), LOG)
    try:
        return state.core.status().awaiting_catch_up
    finally:
        state.close()


def _write_entries(tmp_path: Path, count: int) -> None:
    config = parse_config(CONFIG, source=None, base_dir=tmp_path)
    state = open_state(config, NodeId("n1"), LOG)
    try:
        first = state.log_store.last_index() + 1
        entries = [
            Entry(term=Term(1), index=Index(i), kind=EntryKind.NORMAL)
            for i in range(first, first + count)
        ]
        state.log_store.save(HardState(Term(1), None, Index(0)), entries)
    finally:
        state.close()


def test_an_empty_store_leaves_a_marker_that_outlives_a_crash_mid_catch_up(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data" / "n1"
    assert _awaiting_after_open(tmp_path)
    assert marker_path(data_dir).exists()
    # Some entries arrived, then the node crashed before it caught up.
    _write_entries(tmp_path, 3)
    assert _awaiting_after_open(tmp_path), "a node with a marker must keep waiting"
    # Once it caught up the marker is removed; the next start votes at once.
    forget_awaiting(data_dir)
    assert not _awaiting_after_open(tmp_path)
    assert not marker_path(data_dir).exists()
