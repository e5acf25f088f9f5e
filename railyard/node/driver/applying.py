"""Applying committed entries to the state machine, on the loop or on the apply thread.

The driver owns one `Applier` and hands it each batch of committed entries
in log order; it returns the state machine's result for each entry.

Invariants:
- Batches are applied one at a time, each in one state-machine transaction.
- A small batch (at most `APPLY_INLINE_MAX_BYTES` of data) is applied on the
  loop: a hand-off to a thread and back costs more than applying a few
  single-record puts. A large one is applied on the apply thread: SQLite
  lets go of the GIL while it inserts, so the loop keeps sending meanwhile.
- An exception inside `apply` is fatal (`FatalError`): every replica must
  compute the same outcome, so a replica that cannot stops.
- The state database's WAL is checkpointed on a thread of its own, at most
  one checkpoint at a time, after about `CHECKPOINT_EVERY_BYTES` applied
  since the last one; no apply waits for it (SQLite would run it inside a
  commit: milliseconds on the loop every few hundred puts; see
  `streams/schema.py` for the writer's own, rarer ones). A failed
  checkpoint is fatal at the next apply: the database cannot be written.

It knows nothing of the core, proposals or reads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Sequence

from railyard.node.driver.fatal import FatalError
from railyard.raft import Entry, EntryKind
from railyard.streams import ApplyResult, StreamsMachine

# Committed entries holding at most this many bytes of data are applied on
# the loop; larger batches on the apply thread (see the module docstring).
# Around a hundred single-record puts fit; one 500-record batch does not.
APPLY_INLINE_MAX_BYTES = 16 << 10
# Applied bytes between checkpoints of the state database: SQLite's own
# default is 1,000 pages (4 MiB) of WAL, and every commit also rewrites a
# few pages (state row, stream row, index pages) besides its records.
CHECKPOINT_EVERY_BYTES = 2 << 20
COMMIT_PAGES_BYTES = 3 * 4096


class Applier:
    """Applies one driver's committed entries; see the module docstring."""

    def __init__(self, machine: StreamsMachine) -> None:
        self.machine = machine
        self.io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="apply")
        self.checkpoint_io = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="checkpoint"
        )
        self._checkpointing: concurrent.futures.Future[None] | None = None
        self._since_checkpoint = 0

    async def apply(self, entries: Sequence[Entry], size: int) -> list[ApplyResult | None]:
        """Apply `entries` (holding `size` bytes of data); their results, in order."""
        batch = [(e.index, e.data if e.kind is EntryKind.NORMAL else None) for e in entries]
        try:
            if size <= APPLY_INLINE_MAX_BYTES:
                results = self.machine.apply(batch)
            else:
                results = await asyncio.get_running_loop().run_in_executor(
                    self.io, self.machine.apply, batch
                )
        except Exception as exc:
            raise FatalError(f"cannot apply entries {entries[0].index}..: {exc}") from exc
        self._since_checkpoint += size + COMMIT_PAGES_BYTES
        self._maybe_checkpoint()
        return results

    def _maybe_checkpoint(self) -> None:
        running = self._checkpointing
        if running is not None:
            if not running.done():
                return  # the next apply looks again
            self._checkpointing = None
            failure = running.exception()
            if failure is not None:
                raise FatalError(f"cannot checkpoint the state database: {failure}") from failure
        if self._since_checkpoint >= CHECKPOINT_EVERY_BYTES:
            self._since_checkpoint = 0
            self._checkpointing = self.checkpoint_io.submit(self.machine.checkpoint)

    def shutdown(self) -> None:
        """Wait for the apply in progress to finish (called at exit)."""
        self.io.shutdown(wait=True, cancel_futures=True)
        self.checkpoint_io.shutdown(wait=True, cancel_futures=True)
