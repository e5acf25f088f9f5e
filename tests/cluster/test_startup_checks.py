"""A node refuses a data directory whose files disagree, in one line naming the file.

Finding F3 (node part) of docs/FINDINGS.md: a raft log that lost committed
entries (a damaged WAL, an old copy) must not start, or the node would vote again
from a forgotten term.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from railyard.proto import railyard_pb2 as pb
from tests.cluster.helpers import CALL_TIMEOUT_S, create_stream, read_all
from tests.support.cluster import LocalCluster, node_command

pytestmark = pytest.mark.timeout(120)

LOG_DB = "raft.db"
STATE_DB = "streams.db"
# A node that refuses its directory exits at once.
EXIT_TIMEOUT_S = 30


def _put(cluster: LocalCluster, leader: str, n: int, tag: bytes) -> None:
    stub = cluster.streams_stub(leader)
    for i in range(n):
        stub.PutRecord(
            pb.PutRecordRequest(stream="s", data=tag + b"%d" % i), timeout=CALL_TIMEOUT_S
        )


def _start_in_foreground(
    cluster: LocalCluster, *node_ids: str
) -> list[subprocess.CompletedProcess[str]]:
    """Start the nodes at once (each refusal costs an interpreter's start) and
    wait for every one to exit."""
    procs = [
        subprocess.Popen(
            node_command(cluster.config_path, node_id),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        for node_id in node_ids
    ]
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=EXIT_TIMEOUT_S)
            results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return results


def _refusal(result: subprocess.CompletedProcess[str]) -> str:
    """The one line of a node that refused to start (and checks it did so cleanly)."""
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "cannot start" in line]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_damaged_or_inconsistent_files_are_refused_in_one_line_naming_the_file(
    tmp_path: Path,
) -> None:
    """One follower's log goes back in time (an old copy of raft.db, as a lost WAL leaves
    it) while streams.db keeps what it applied since; another's streams.db is garbled."""
    c = LocalCluster(tmp_path)
    try:
        c.start()
        leader = c.wait_for_leader()
        behind, garbled = [n for n in c.node_ids if n != leader]
        create_stream(c, leader, "s")
        _put(c, leader, 5, b"early")
        c.wait_converged()
        assert c.stop_node(behind) == 0
        old_log = tmp_path / "old-log"
        old_log.mkdir()
        for f in c.data_dir(behind).glob(f"{LOG_DB}*"):
            shutil.copy2(f, old_log / f.name)
        c.start_node(behind)
        c.wait_ready(behind)
        _put(c, leader, 10, b"late")
        c.wait_converged()
        assert c.stop_node(behind) == 0
        assert c.stop_node(garbled) == 0
        for f in c.data_dir(behind).glob(f"{LOG_DB}*"):
            f.unlink()
        for f in old_log.iterdir():
            shutil.copy2(f, c.data_dir(behind) / f.name)
        state = c.data_dir(garbled) / STATE_DB
        data = bytearray(state.read_bytes())
        data[:16] = b"not sqlite, no!!"
        state.write_bytes(bytes(data))

        behind_result, garbled_result = _start_in_foreground(c, behind, garbled)
        line = _refusal(behind_result)
        assert LOG_DB in line and "lost committed entries" in line, line
        line = _refusal(garbled_result)
        assert STATE_DB in line, line
        # The leader was never at risk.
        assert len(read_all(c, leader, "s")) == 15
    finally:
        c.stop()
