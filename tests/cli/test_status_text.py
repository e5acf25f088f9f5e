"""`railyard status` as text: what the table leaves out is said under it."""

from __future__ import annotations

from typing import Any

import pytest

from railyard.cli.cluster import print_status


def node(node_id: str, passes: int, rows: int, reachable: bool = True) -> dict[str, Any]:
    return {
        "id": node_id,
        "address": f"127.0.0.1:5005{node_id[-1]}",
        "reachable": reachable,
        "member": "voter",
        "role": "follower",
        "awaiting_catch_up": False,
        "term": 3,
        "leader": "n1",
        "commit_index": 10,
        "applied_index": 10,
        "last_log_index": 10,
        "snapshot_index": 0,
        "cert_days_left": None,
        "state_scrub_passes": passes if reachable else None,
        "state_scrub_rows": rows if reachable else None,
    }


def doc(*nodes: dict[str, Any]) -> dict[str, Any]:
    members = [{"id": n["id"], "last_index": 10} for n in nodes]
    return {
        "cluster": "c",
        "leader": "n1",
        "term": 3,
        "security": "plaintext",
        "members": members,
        "nodes": list(nodes),
    }


def test_a_scrub_under_way_is_named_with_its_rows(capsys: pytest.CaptureFixture[str]) -> None:
    print_status(doc(node("n1", 1, 0), node("n2", 0, 12000), node("n3", 0, 0, reachable=False)))
    out = capsys.readouterr().out
    assert "state scrub under way" in out
    assert "n2 (12,000 rows checked)" in out
    assert "n1 (" not in out and "n3 (" not in out


def test_no_scrub_line_once_every_node_finished_a_pass(capsys: pytest.CaptureFixture[str]) -> None:
    print_status(doc(node("n1", 1, 0), node("n2", 2, 500)))
    assert "scrub" not in capsys.readouterr().out
