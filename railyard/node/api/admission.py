"""What one node admits at once: the per-node ``[limits]`` of the cluster file.

A client that asks for more than a limit allows is refused with
RESOURCE_EXHAUSTED (`status_codes.over_limit`: the limit, its value, the key
that raises it) before anything is held for it, so other clients go on
being served and the node's memory stays bounded:

- ``max_client_streams``: long-lived calls open at once (PutRecordStream and
  WatchStatus, the client-facing streaming RPCs);
- ``max_watch_subscribers``: WatchStatus calls among them;
- ``max_inflight_per_connection``: unary puts under way per client
  connection (a PutRecordStream counts its own window, see the Streams
  service). A put forwarded by a follower is counted by that follower, where
  its client is connected, and not again by the leader. NB: without TLS
  any caller may mark its calls forwarded and so escape the count, as a
  plaintext node trusts its network for everything else; under TLS only a
  member node's certificate is exempt.

Counters only, changed on the event loop (every handler runs there), so no
lock. It knows nothing of the services that call it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from railyard.config import LimitsConfig
from railyard.node.api.status_codes import ServiceError, over_limit


class Admission:
    """Counts what clients hold on this node and refuses what a limit does not allow."""

    def __init__(self, limits: LimitsConfig, node_id: str) -> None:
        self.limits = limits
        self.node_id = node_id
        self.client_streams = 0
        self.watchers = 0
        self._puts: dict[str, int] = {}

    @contextmanager
    def client_stream(self) -> Iterator[None]:
        """Hold one of ``max_client_streams`` for the life of a streaming call."""
        limit = self.limits.max_client_streams
        if self.client_streams >= limit:
            raise over_limit(
                f"node {self.node_id} serves {self.client_streams} streaming calls "
                "(PutRecordStream, WatchStatus) already",
                "max_client_streams",
                limit,
            )
        self.client_streams += 1
        try:
            yield
        finally:
            self.client_streams -= 1

    @contextmanager
    def watcher(self) -> Iterator[None]:
        """Hold one of ``max_watch_subscribers`` (and a client stream) for a WatchStatus call."""
        limit = self.limits.max_watch_subscribers
        if self.watchers >= limit:
            raise over_limit(
                f"node {self.node_id} has {self.watchers} WatchStatus subscribers already",
                "max_watch_subscribers",
                limit,
            )
        with self.client_stream():
            self.watchers += 1
            try:
                yield
            finally:
                self.watchers -= 1

    @contextmanager
    def put(self, connection: str) -> Iterator[None]:
        """Hold one of ``max_inflight_per_connection`` of `connection` for a unary put."""
        held = self._puts.get(connection, 0)
        limit = self.limits.max_inflight_per_connection
        if held >= limit:
            raise self.too_many_puts(held)
        self._puts[connection] = held + 1
        try:
            yield
        finally:
            left = self._puts[connection] - 1
            if left:
                self._puts[connection] = left
            else:
                del self._puts[connection]

    def too_many_puts(self, held: int) -> ServiceError:
        return over_limit(
            f"{held} puts of this connection are in flight on node {self.node_id} already",
            "max_inflight_per_connection",
            self.limits.max_inflight_per_connection,
        )
