"""Crash tests with real processes and kill -9.

A child process (tests/storage/crash_child.py, forked from the test so it
starts in milliseconds) appends batches to the log
store and applies them to the streams machine, reporting each batch only
after both committed. The test kills it with SIGKILL at random moments,
sometimes appends garbage to the databases' WAL files (a torn tail: frames
that were being written when the power went), reopens both stores and
checks that every reported batch is there, nothing is duplicated, and both
open cleanly; then restarts the child, which recovers like a node.
"""

from __future__ import annotations

import os
import random
import selectors
import signal
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from railyard.raft import Index
from railyard.storage import SqliteLogStore
from railyard.streams import ReadResult, StreamsMachine
from tests.storage import crash_child
from tests.storage.crash_child import CLUSTER, NODE, RECORDS_PER_ENTRY, STREAM, entry_data

CHILD = Path(crash_child.__file__)
KILLS = 50
# Each kill waits for up to this many reported batches, then a random moment more.
MAX_REPORTS_BEFORE_KILL = 10
MAX_EXTRA_WAIT_S = 0.015
# Every TORN_EVERY-th kill also leaves a garbage tail on both WAL files.
TORN_EVERY = 4
# Bounds so a hung child cannot hang the suite.
CHILD_STEP_TIMEOUT_S = 20.0
TOTAL_TIMEOUT_S = 120.0


@dataclass
class Reported:
    """What the child said was committed: index -> entry number n."""

    n_by_index: dict[int, int] = field(default_factory=dict)
    last_index: int = 0
    last_n: int = 0
    batches: int = 0

    def add(self, line: str) -> None:
        word, *numbers = line.split()
        if word != "committed":
            return
        first_index, last_index, first_n, last_n = map(int, numbers)
        assert last_index - first_index == last_n - first_n, line
        for k in range(last_index - first_index + 1):
            self.n_by_index[first_index + k] = first_n + k
        self.last_index = max(self.last_index, last_index)
        self.last_n = max(self.last_n, last_n)
        self.batches += 1


class ChildOutput:
    """The child's stdout, split into complete lines (a line is printed after its commit)."""

    def __init__(self, fd: int, reported: Reported) -> None:
        self._fd = fd
        self._buffer = b""
        self._reported = reported

    def _feed(self, chunk: bytes) -> None:
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            text = line.decode()
            assert text.startswith(("committed ", "ready ")), f"unexpected output: {text!r}"
            self._reported.add(text)

    def read_until(self, more_batches: int, deadline: float) -> None:
        """Collect reports until `more_batches` more arrived or `deadline` passed."""
        target = self._reported.batches + more_batches
        with selectors.DefaultSelector() as sel:
            sel.register(self._fd, selectors.EVENT_READ)
            while self._reported.batches < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not sel.select(remaining):
                    return
                chunk = os.read(self._fd, 65536)
                if not chunk:
                    return
                self._feed(chunk)

    def drain(self) -> None:
        """After the kill: every complete line left in the pipe was committed before it."""
        while chunk := os.read(self._fd, 65536):
            self._feed(chunk)


def tear_wal_tails(data_dir: Path, rng: random.Random) -> int:
    torn = 0
    for name in ("log.db-wal", "state.db-wal"):
        wal = data_dir / name
        if wal.exists():
            with wal.open("ab") as f:
                f.write(rng.randbytes(rng.randint(1, 3 * 4096 + 100)))
            torn += 1
    return torn


def verify(data_dir: Path, reported: Reported) -> None:
    """Both stores open cleanly and hold every reported batch exactly once."""
    log = SqliteLogStore.open(data_dir / "log.db", cluster=CLUSTER, node_id=NODE)
    sm = StreamsMachine.open(data_dir / "state.db")
    try:
        first, last = log.first_index(), log.last_index()
        assert last >= reported.last_index, "the log lost reported entries"
        assert log.hard_state().commit_index >= reported.last_index
        for entry in log.entries(first, Index(last + 1)):
            n = reported.n_by_index.get(entry.index)
            if n is not None:
                assert entry.data == entry_data(n), f"entry {entry.index} changed"
        assert reported.last_index <= sm.last_applied <= last
        sm.verify()
        result = sm.read(STREAM, 0, 10**9, 0)
        if reported.last_n == 0:
            return
        assert isinstance(result, ReadResult)
        datas = [r.data for r in result.records]
        applied_n = len(datas) // RECORDS_PER_ENTRY
        assert applied_n >= reported.last_n, "the state machine lost reported batches"
        expected = [
            b"%d:%d" % (n, r) for n in range(1, applied_n + 1) for r in range(RECORDS_PER_ENTRY)
        ]
        assert datas == expected, "records duplicated, lost or out of order"
        assert [r.sequence for r in result.records] == list(range(1, len(datas) + 1))
    finally:
        log.close()
        sm.close()


class Child:
    """A forked process running `crash_child.main`, its stdout on a pipe."""

    def __init__(self, data_dir: Path, seed: int) -> None:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns into the test
            code = 0
            try:
                os.close(read_fd)
                crash_child.main(data_dir, seed, os.fdopen(write_fd, "w"))
            except BaseException:
                traceback.print_exc()
                code = 3
            finally:
                os._exit(code)
        os.close(write_fd)
        self.pid = pid
        self.stdout_fd = read_fd
        self.status: int | None = None

    def running(self) -> bool:
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
        return self.status is None

    def kill(self) -> None:
        if self.running():
            os.kill(self.pid, signal.SIGKILL)
            _, self.status = os.waitpid(self.pid, 0)

    def close(self) -> None:
        self.kill()
        os.close(self.stdout_fd)


def test_kill_9_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    rng = random.Random(20261126)
    reported = Reported()
    data_dir = tmp_path / "node"
    started = time.monotonic()
    kills = torn = 0
    child: Child | None = None
    try:
        while kills < KILLS:
            assert time.monotonic() - started < TOTAL_TIMEOUT_S, f"only {kills} kills in time"
            child = Child(data_dir, rng.randrange(1 << 30))
            output = ChildOutput(child.stdout_fd, reported)
            deadline = time.monotonic() + CHILD_STEP_TIMEOUT_S
            output.read_until(rng.randint(0, MAX_REPORTS_BEFORE_KILL), deadline)
            if rng.random() < 0.5:  # and a random moment more, mid-batch
                output.read_until(1, time.monotonic() + rng.uniform(0, MAX_EXTRA_WAIT_S))
            assert child.running(), f"the child exited by itself: status {child.status}"
            child.kill()
            assert child.status is not None and os.WTERMSIG(child.status) == signal.SIGKILL
            output.drain()
            child.close()
            child = None
            kills += 1
            if kills % TORN_EVERY == 0:
                torn += tear_wal_tails(data_dir, rng)
            verify(data_dir, reported)
    finally:
        if child is not None:
            child.close()
    assert kills >= KILLS and torn > 0
    assert reported.batches > KILLS  # the kills landed while work was under way
    print(f"{kills} kills, {reported.batches} batches reported, {torn} torn WAL tails: all there")
