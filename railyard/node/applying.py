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

It knows nothing of the core, proposals or reads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Sequence

from railyard.node.fatal import FatalError
from railyard.raft import Entry, EntryKind
from railyard.streams import ApplyResult, StreamsMachine

# Committed entries holding at most this many bytes of data are applied on
# the loop; larger batches on the apply thread (see the module docstring).
# Around a hundred single-record puts fit; one 500-record batch does not.
APPLY_INLINE_MAX_BYTES = 16 << 10


class Applier:
    """Applies one driver's committed entries; see the module docstring."""

    def __init__(self, machine: StreamsMachine) -> None:
        self.machine = machine
        self.io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="apply")

    async def apply(self, entries: Sequence[Entry], size: int) -> list[ApplyResult | None]:
        """Apply `entries` (holding `size` bytes of data); their results, in order."""
        batch = [(e.index, e.data if e.kind is EntryKind.NORMAL else None) for e in entries]
        try:
            if size <= APPLY_INLINE_MAX_BYTES:
                return self.machine.apply(batch)
            return await asyncio.get_running_loop().run_in_executor(
                self.io, self.machine.apply, batch
            )
        except Exception as exc:
            raise FatalError(f"cannot apply entries {entries[0].index}..: {exc}") from exc

    def shutdown(self) -> None:
        """Wait for the apply in progress to finish (called at exit)."""
        self.io.shutdown(wait=True, cancel_futures=True)
