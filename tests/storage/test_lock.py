"""The data-directory lock: one process per directory, released even by kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from railyard.storage import DataDirLock, DirectoryLocked

# Bound on how long a helper process may take to start and report.
CHILD_TIMEOUT_S = 30

HOLD_LOCK = """
import sys
from pathlib import Path
from railyard.storage import DataDirLock
lock = DataDirLock(Path(sys.argv[1]))
lock.acquire()
print("locked", flush=True)
sys.stdin.read()
"""


def test_second_holder_in_process_gets_a_clear_error(tmp_path: Path) -> None:
    with DataDirLock(tmp_path):
        other = DataDirLock(tmp_path)
        with pytest.raises(DirectoryLocked) as info:
            other.acquire()
        assert info.value.pid == os.getpid()
        assert str(tmp_path) in str(info.value)
        assert str(os.getpid()) in str(info.value)
    with DataDirLock(tmp_path) as again:  # released on exit
        assert again.held


def test_another_process_names_the_directory_and_holder(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(DirectoryLocked) as info:
            DataDirLock(tmp_path).acquire()
        assert info.value.pid == child.pid
        assert str(tmp_path) in str(info.value) and str(child.pid) in str(info.value)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=CHILD_TIMEOUT_S)
        with DataDirLock(tmp_path) as lock:  # the kernel released it with the process
            assert lock.held
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=CHILD_TIMEOUT_S)


def test_lock_creates_the_directory(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    with DataDirLock(target):
        assert (target / "LOCK").exists()
