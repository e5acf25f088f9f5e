"""The driver's inbox: what others ask of the core, queued and taken a round at a time.

Request handlers, the transport and the driver's own background tasks never
touch the core: they queue an event here (a peer's message, a proposal, a
read barrier, a call to run inside the driver) and the driver takes them a
round at a time (`take_round`). Messages are stepped and calls run as they
are taken, in arrival order; proposals and read barriers are collected and
handed to the core at the round's end, so proposals that arrived together
become one `propose_batch` (one fsync) and reads one ReadIndex round.

Invariants:
- The inbox is bounded (`INBOX_SIZE`): a peer or client that floods the node
  waits; only `post`, which must never block its caller, drops an event
  when the inbox is full (with a warning).
- A round takes at most `MAX_EVENTS_PER_ROUND` events, so a flood of
  messages cannot starve persistence.
- Every queued event that carries a future is answered: by the driver, or
  with the stop's exception by `fail_queued` when the driver stops.
- A call's exception goes to its caller; the exception of a call nobody
  waits on (`post`, `queue_call`) raises out of `take_round` and stops the
  driver.

It knows nothing of the core: the driver steps messages through a callable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from railyard.raft import Message, MessageType
from railyard.streams import ApplyResult

T = TypeVar("T")

# Inbox items handled per round before the core's Ready is processed: large
# enough to batch a burst of proposals into one fsync, small enough that a
# flood of messages cannot starve persistence.
MAX_EVENTS_PER_ROUND = 4096
# Proposal bytes per round: a round's proposals are one log save, and the
# driver takes no message and no tick while it waits for that save; 8 writers
# of 5 MiB batches made one 40 MiB save, long enough that the leader sent no
# heartbeat for an election timeout (issue 14). A round ends once its
# proposals hold this much (one larger proposal still goes alone).
MAX_PROPOSAL_BYTES_PER_ROUND = 8 << 20
# Bounded inbox: a peer or client that floods the node waits (gRPC flow
# control pushes back) instead of growing memory without limit.
INBOX_SIZE = 65536
# Message types not worth a debug line each.
_ROUTINE = frozenset(
    {
        MessageType.APPEND,
        MessageType.APPEND_RESPONSE,
        MessageType.HEARTBEAT,
        MessageType.HEARTBEAT_RESPONSE,
    }
)


@dataclass(slots=True)
class Proposal:
    """Data to replicate; `future` gets the state machine's result for its entry."""

    data: bytes
    future: asyncio.Future[ApplyResult | None]


@dataclass(slots=True)
class _ReadRequest:
    future: asyncio.Future[None]


@dataclass(slots=True)
class _Call:
    fn: Callable[[], Any]
    future: asyncio.Future[Any] | None = None


@dataclass
class Round:
    """Work collected in one round, handed to the core at its end."""

    proposals: list[Proposal] = field(default_factory=list)
    reads: list[asyncio.Future[None]] = field(default_factory=list)
    proposal_bytes: int = 0


class Inbox:
    """One driver's inbox; see the module docstring."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self._queue: asyncio.Queue[Message | Proposal | _ReadRequest | _Call] = asyncio.Queue(
            INBOX_SIZE
        )

    async def deliver(self, message: Message) -> None:
        """Queue a message from a peer (waits while the inbox is full)."""
        await self._queue.put(message)

    async def propose(self, data: bytes) -> ApplyResult | None:
        """Queue a proposal of `data` and wait for its answer."""
        future: asyncio.Future[ApplyResult | None] = asyncio.get_running_loop().create_future()
        await self._queue.put(Proposal(data, future))
        return await future

    async def read_barrier(self) -> None:
        """Queue a read barrier and wait for its answer."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put(_ReadRequest(future))
        await future

    async def call(self, fn: Callable[[], T]) -> T:
        """Queue `fn` and wait for its result; its exception is re-raised here."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Call(fn, future))
        return await future

    async def queue_call(self, fn: Callable[[], object]) -> None:
        """Queue `fn` without waiting for it to run (waits while the inbox is full)."""
        await self._queue.put(_Call(fn))

    def post(self, fn: Callable[[], object]) -> None:
        """Queue `fn` without waiting (never blocks the caller; dropped if the inbox is full)."""
        try:
            self._queue.put_nowait(_Call(fn))
        except asyncio.QueueFull:
            self.log.warning("inbox full; dropped an internal event")

    async def take_round(self, step: Callable[[Message], None]) -> Round:
        """Wait for an event, then take what queued up (at most MAX_EVENTS_PER_ROUND
        more, and no more once its proposals hold MAX_PROPOSAL_BYTES_PER_ROUND).

        Messages go to `step` and calls run as they are taken; proposals and
        read barriers come back in the `Round`.
        """
        collected = Round()
        self._take(await self._queue.get(), step, collected)
        for _ in range(MAX_EVENTS_PER_ROUND):
            if collected.proposal_bytes >= MAX_PROPOSAL_BYTES_PER_ROUND:
                break
            try:
                event = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            self._take(event, step, collected)
        return collected

    def fail_queued(self, exc: Exception) -> None:
        """Answer every queued event that carries a future with `exc` (the driver stopped)."""
        while not self._queue.empty():
            event = self._queue.get_nowait()
            future = getattr(event, "future", None)
            if future is not None and not future.done():
                future.set_exception(exc)

    def _take(
        self,
        event: Message | Proposal | _ReadRequest | _Call,
        step: Callable[[Message], None],
        collected: Round,
    ) -> None:
        if isinstance(event, Message):
            if self.log.isEnabledFor(logging.DEBUG) and event.type not in _ROUTINE:
                self.log.debug(
                    "step %s from %s term=%d granted=%s",
                    event.type.value,
                    event.sender,
                    event.term,
                    event.vote_granted,
                )
            step(event)
        elif isinstance(event, Proposal):
            collected.proposals.append(event)
            collected.proposal_bytes += len(event.data)
        elif isinstance(event, _ReadRequest):
            collected.reads.append(event.future)
        else:
            _run_call(event)


def _run_call(call: _Call) -> None:
    try:
        result = call.fn()
    except Exception as exc:
        if call.future is None:
            raise
        if not call.future.done():
            call.future.set_exception(exc)
        return
    if call.future is not None and not call.future.done():
        call.future.set_result(result)
