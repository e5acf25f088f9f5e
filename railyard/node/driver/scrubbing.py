"""The state's whole-file check, in the background while the node serves.

A start checks only what is bounded by the streams, not the records
(`StreamsMachine.verify_ends`, in `recovery.open_state`), so a restart
costs the same whatever the streams hold. The rest of the check, every
record against its checksum, the producer tables and SQLite's
`quick_check`, is this scrub: the driver runs one `Scrubber` as a task of
its task group from the start, and again after each snapshot installed
(`StreamsMachine.generation`: the state file was replaced).

Invariants:
- It never holds up an apply or a read: each step runs on a thread of its
  own with its own connection, in one read transaction of at most
  `SCRUB_STEP_ROWS` rows (SQLite's WAL readers take no lock a writer waits
  on), and after each step it sleeps so that it is busy at most
  `SCRUB_SHARE` of the time, measured in wall time (the GIL it holds while
  it checks a step's rows is shared with the loop).
- Damage found stops the node, as a damaged read does (`threads.py`): the
  error naming the file and the row is logged and raised as a `FatalError`
  from this task, which ends the driver's task group. A replica must not
  serve, nor send in snapshots, a state that differs from the log; the
  operator restores the node from its peers (wipe the data directory: it
  rejoins by snapshot). At the next start the damage is found again by the
  scrub, shortly after the start instead of before it.
- Progress is counted for operators (`railyard_disk_state_scrubbed_rows`,
  `railyard_disk_state_scrubs`, and in Status: `state_scrub_passes`,
  `state_scrub_rows`) and each pass ends with a log line.

It knows nothing of the core, peers or clients.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time

from railyard.node.driver.fatal import FatalError
from railyard.node.observability import NodeMetrics, event
from railyard.streams import CorruptState, ScrubPosition, StreamsMachine

# Rows checked per step: about 3 ms of CPU here (1.5 us a record), so the
# loop waits at most that long for the GIL at a time, and the read
# transaction, which keeps the WAL from starting over, is as short.
SCRUB_STEP_ROWS = 2000
# Busy at most a quarter of the time: a pass over 10 million records (15 s
# of CPU here) takes about a minute and leaves the loop its share of a core.
SCRUB_SHARE = 0.25
# After a pass, how often to look whether a snapshot replaced the state file.
SCRUB_IDLE_POLL_S = 1.0


class Scrubber:
    """Scrubs one node's state in the background; see the module docstring."""

    def __init__(
        self,
        machine: StreamsMachine,
        log: logging.Logger,
        metrics: NodeMetrics,
        *,
        step_rows: int = SCRUB_STEP_ROWS,
        share: float = SCRUB_SHARE,
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"scrub share must be in (0, 1], not {share}")
        self.machine = machine
        self.log = log
        self.metrics = metrics
        self.step_rows = step_rows
        self.share = share
        self.io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="scrub")
        self.passes = 0
        # Rows checked by the pass under way (0 between passes), for Status.
        self.rows = 0

    async def run(self) -> None:
        """Scrub the state, then again whenever it is replaced; raises FatalError on damage."""
        while True:
            generation = self.machine.generation
            await self._scrub_pass(generation)
            while self.machine.generation == generation:
                await asyncio.sleep(SCRUB_IDLE_POLL_S)

    async def _scrub_pass(self, generation: int) -> None:
        loop = asyncio.get_running_loop()
        position: ScrubPosition | None = ScrubPosition(generation)
        began = time.monotonic()
        rows = 0
        while position is not None:
            started = time.monotonic()
            try:
                step = await loop.run_in_executor(
                    self.io, self.machine.scrub, position, self.step_rows
                )
            except CorruptState as exc:
                self.log.error(
                    "%s; stopping the node (restore it from its peers: wipe its data "
                    "directory and start it, it rejoins by snapshot)",
                    exc,
                    extra=event("state_damaged", path=str(exc.path), problem=exc.problem),
                )
                raise FatalError(f"damaged state found by the scrub: {exc}") from exc
            rows += step.checked
            self.metrics.scrubbed(step.checked)
            if step.next is not None and step.next.generation != position.generation:
                rows = 0  # the file was replaced: the pass started over
                began = time.monotonic()
            self.rows = rows
            position = step.next
            busy = time.monotonic() - started
            await asyncio.sleep(busy * (1 - self.share) / self.share)
        self.passes += 1
        self.rows = 0
        self.metrics.scrub_finished()
        seconds = time.monotonic() - began
        self.log.info(
            "state scrubbed: %d rows checked in %.1f s",
            rows,
            seconds,
            extra=event("state_scrubbed", rows=rows, seconds=round(seconds, 3)),
        )

    def shutdown(self) -> None:
        """Wait for the step in progress (called at exit, before the machine is closed)."""
        self.io.shutdown(wait=True, cancel_futures=True)
