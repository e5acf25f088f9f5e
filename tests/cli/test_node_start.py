"""`railyard node start` without --id: every node of the file as a child, all stopped on Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.cluster import LocalCluster

STOP_TIMEOUT_S = 20.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose; it only waits for its parent to reap it.
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return state != "Z"
    return True


def test_supervisor_runs_every_node_prefixes_logs_and_stops_them_all(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, name="sup")  # writes the file; the supervisor starts nodes
    log_path = tmp_path / "supervisor.log"
    child_pids: list[int] = []
    with log_path.open("wb") as log:
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "railyard", "node", "start", "-c", str(cluster.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    try:
        leader = cluster.wait_for_leader(timeout_s=30)
        text = log_path.read_text()
        child_pids = [int(p) for p in re.findall(r"started n\d \(pid (\d+)\)", text)]
        assert len(child_pids) == 3
        assert re.search(rf"^{leader} +\| .*{leader}", text, re.MULTILINE), text[-2000:]

        supervisor.send_signal(signal.SIGINT)
        assert supervisor.wait(timeout=STOP_TIMEOUT_S) == 0
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while any(_alive(pid) for pid in child_pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [pid for pid in child_pids if _alive(pid)]
        assert "stopping 3 node(s)" in log_path.read_text()
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait(timeout=STOP_TIMEOUT_S)
        for pid in child_pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
