"""ReadIndex: linearizable reads without writing to the log (Raft §6.4).

The leader records its commit index as the read index, then confirms it is
still leader with a heartbeat round: once a quorum acknowledged a heartbeat
sent after the request, no other leader can have committed anything newer, so
serving the read at `applied >= read index` is linearizable.

Rounds are numbered by the leader (the heartbeat's `context`), so requests
from different nodes never collide whatever contexts they chose; an
acknowledgement of round r confirms every request of rounds <= r. A leader
answers only once it has committed an entry of its own term (§6.4 step 1);
earlier requests wait for that.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from railyard.raft.errors import NotLeader
from railyard.raft.quorum import quorum_size
from railyard.raft.replication import broadcast_heartbeat
from railyard.raft.types import Index, Message, MessageType, NodeId, ReadState, Role

if TYPE_CHECKING:
    from railyard.raft.core import RaftCore


@dataclass(frozen=True, slots=True)
class PendingRead:
    round: int
    index: Index
    requester: NodeId
    context: int


class ReadTracker:
    """The leader's outstanding ReadIndex requests and heartbeat acknowledgements.

    Requests arriving between two Readies share one round: its heartbeats leave
    with the next Ready (`flush`), after every request of the round was recorded.
    """

    __slots__ = ("_acked", "_queue", "_round_open", "_waiting", "current_round")

    def __init__(self) -> None:
        self.current_round = 0  # monotonic for the core's lifetime: old acks never match
        self._round_open = False  # current_round has requests but its heartbeats have not left
        self._acked: dict[NodeId, int] = {}
        self._queue: deque[PendingRead] = deque()
        self._waiting: list[tuple[NodeId, int]] = []

    def reset(self) -> None:
        self._acked.clear()
        self._queue.clear()
        self._waiting.clear()
        self._round_open = False

    def pending_count(self) -> int:
        return len(self._queue) + len(self._waiting)

    def has_unsent_round(self) -> bool:
        return self._round_open

    def request(self, core: RaftCore, requester: NodeId, context: int) -> None:
        """Serve a read for `requester` (ourselves or a follower), now or after a round."""
        log = core.log
        if log.term(log.committed) != core.current_term:
            self._waiting.append((requester, context))
        elif core.voters == (core.node_id,):
            deliver(core, requester, context, log.committed)
        else:
            self._join_open_round(core, requester, context)

    def _join_open_round(self, core: RaftCore, requester: NodeId, context: int) -> None:
        if not self._round_open:
            # A request never joins a round whose heartbeats already left: their
            # acknowledgements could predate it.
            self.current_round += 1
            self._acked[core.node_id] = self.current_round
            self._round_open = True
        self._queue.append(PendingRead(self.current_round, core.log.committed, requester, context))

    def heartbeat_context(self) -> int:
        """The round a heartbeat leaving now confirms; the round is then no longer open."""
        self._round_open = False
        return self.current_round

    def flush(self, core: RaftCore) -> None:
        """Send the open round's heartbeats (called when a Ready is taken)."""
        if self._round_open:
            broadcast_heartbeat(core, self.heartbeat_context())

    def release_waiting(self, core: RaftCore) -> None:
        """The leader just committed in its own term: serve the reads that waited."""
        if not self._waiting:
            return
        waiting, self._waiting = self._waiting, []
        for requester, context in waiting:
            self.request(core, requester, context)

    def acknowledge(self, core: RaftCore, peer: NodeId, round_acked: int) -> None:
        """A heartbeat response for `round_acked`: release the reads a quorum confirmed."""
        if round_acked <= self._acked.get(peer, 0):
            return
        self._acked[peer] = round_acked
        queue = self._queue
        if not queue:
            return
        acked = sorted((self._acked.get(voter, 0) for voter in core.voters), reverse=True)
        confirmed = acked[quorum_size(len(acked)) - 1]
        while queue and queue[0].round <= confirmed:
            read = queue.popleft()
            deliver(core, read.requester, read.context, read.index)


def deliver(core: RaftCore, requester: NodeId, context: int, index: Index) -> None:
    if requester == core.node_id:
        core.read_states.append(ReadState(index, context))
        return
    core.messages.append(
        Message(
            MessageType.READ_INDEX_RESPONSE,
            requester,
            core.node_id,
            core.current_term,
            context=context,
            read_index=index,
            success=True,
        )
    )


def read_index(core: RaftCore, context: int) -> None:
    """The public entry point: a leader starts a round, a follower asks its leader."""
    if core.role is Role.LEADER:
        core.reads.request(core, core.node_id, context)
        return
    if core.leader_id is None:
        raise NotLeader(None)
    core.messages.append(
        Message(
            MessageType.READ_INDEX, core.leader_id, core.node_id, core.current_term, context=context
        )
    )


def handle_read_index(core: RaftCore, message: Message) -> None:
    """Leader: a follower forwards a client's read."""
    if message.sender in core.progress:
        core.reads.request(core, message.sender, message.context)


def handle_read_index_response(core: RaftCore, message: Message) -> None:
    if message.success:
        core.read_states.append(ReadState(message.read_index, message.context))
