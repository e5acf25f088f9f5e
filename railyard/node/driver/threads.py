"""The driver's worker threads: the log store's, and the state machine's reads.

Log-store calls run on one thread, in submission order (saves included, see
`persistence.py`); state-machine queries on another, with their own
connection, so reads never wait behind a save.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from railyard.node.driver.fatal import FatalError
from railyard.node.driver.inbox import Inbox
from railyard.streams import CorruptState

T = TypeVar("T")


class Threads:
    """One driver's worker threads; see the module docstring."""

    def __init__(self, inbox: Inbox, log: logging.Logger) -> None:
        self.inbox = inbox
        self.log = log
        self.log_io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="raft-log")
        self.sm_io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="streams")
        # `log_call`s submitted and not yet returned: while any is, the log
        # store is not used from the loop (`LogWriter.start_save`).
        self.log_calls_pending = 0

    async def machine_call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a state-machine query (or a restore) on the reads thread.

        A state found damaged (a record failing its checksum) stops the node:
        a replica must not serve, nor snapshot to others, a state that differs
        from the log. At the next start `verify` refuses the file, naming it.
        """
        try:
            return await asyncio.get_running_loop().run_in_executor(self.sm_io, fn, *args)
        except CorruptState as exc:
            self.log.error("%s; stopping the node", exc)
            # Queued even when the inbox is full (waiting for room): a stop
            # dropped here would leave the node serving a damaged state.
            await self.inbox.queue_call(
                functools.partial(_stop_on, FatalError(f"damaged state: {exc}"))
            )
            raise

    async def log_call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a log-store call on its worker thread, after queued writes."""
        self.log_calls_pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.log_io, fn, *args)
        finally:
            self.log_calls_pending -= 1

    def shutdown(self) -> None:
        """Wait for the call in progress on each thread; drop the queued ones."""
        self.log_io.shutdown(wait=True, cancel_futures=True)
        self.sm_io.shutdown(wait=True, cancel_futures=True)


def _stop_on(error: FatalError) -> None:
    raise error
