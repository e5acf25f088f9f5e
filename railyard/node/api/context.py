"""What the node's services share: the node's facts and the hop to its leader.

`NodeContext` is what every service reads about this node (its id,
addresses, limits, the driver). `Forwarder` keeps one long-lived channel per
other node, so a follower can send a write to the leader in one hop: a
forwarded request carries `FORWARDED_KEY` and is never forwarded again (no
forwarding loops); with no leader known the answer is UNAVAILABLE.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import grpc

from railyard.config import LimitsConfig
from railyard.node.api.admission import Admission
from railyard.node.api.status_codes import (
    LEADER_ADDRESS_KEY,
    LEADER_ID_KEY,
    ServiceError,
    unavailable,
)
from railyard.node.driver import Driver
from railyard.node.grpc_options import CHANNEL_OPTIONS
from railyard.node.security import NodeTls
from railyard.proto import railyard_pb2_grpc as pb_grpc
from railyard.raft import NodeId
from railyard.streams import Limits

# Metadata that marks a request forwarded by a follower: the receiver serves
# it or refuses it, never forwards it again (no forwarding loops).
FORWARDED_KEY = "railyard-forwarded"
# Metadata of a put that must not create its stream even where the cluster's
# `auto_create_streams` would (a Kinesis shard's stream exists only through
# CreateStream: a put racing a DeleteStream must not bring one shard back).
NO_CREATE_KEY = "railyard-no-create"
# A request without a deadline still gets one (every call is bounded).
DEFAULT_REQUEST_TIMEOUT_S = 10.0


def request_timeout(context: Any) -> float:
    remaining = context.time_remaining()
    return DEFAULT_REQUEST_TIMEOUT_S if remaining is None else max(0.0, remaining)


@dataclass
class NodeContext:
    """What the services share about this node."""

    cluster: str
    node_id: NodeId
    address: str
    addresses: Mapping[str, str]  # every node id -> "host:port"
    driver: Driver
    limits: Limits
    auto_create_streams: bool
    heartbeat_interval_ms: int
    election_timeout_ms: int
    # This node's TLS (None: plaintext), and whether the file allowed that off loopback.
    tls: NodeTls | None = None
    insecure: bool = False
    # Where this node serves the native put protocol ("": nowhere).
    native_address: str = ""
    # The cluster file's [limits]: what clients may take from this node.
    resource_limits: LimitsConfig = field(default_factory=LimitsConfig)
    started_at: float = field(default_factory=time.monotonic)
    # Monotonic time of the last message from each peer (kept by the transport).
    last_heard: dict[str, float] = field(default_factory=dict)
    admission: Admission = field(init=False)

    def __post_init__(self) -> None:
        self.admission = Admission(self.resource_limits, self.node_id)

    def leader(self) -> NodeId | None:
        return self.driver.soft_state.leader_id

    def is_leader(self) -> bool:
        return self.leader() == self.node_id


class Forwarder:
    """Long-lived channels to the other nodes, for writes sent to a follower."""

    def __init__(self, node: NodeContext) -> None:
        self.node = node
        # node id -> (the address dialled, its channel)
        self._channels: dict[str, tuple[str, grpc.aio.Channel]] = {}
        self._retired: list[grpc.aio.Channel] = []

    def channel(self, node_id: str) -> grpc.aio.Channel:
        address = self.node.addresses[node_id]
        cached = self._channels.get(node_id)
        if cached is not None and cached[0] == address:
            return cached[1]
        if cached is not None:
            # A member removed and added again at a new address: the old
            # channel would go on dialling the old one. Calls still on it finish.
            self._retired.append(cached[1])
        tls = self.node.tls
        # With TLS the leader checks this node's own certificate (a node may forward).
        channel = (
            grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            if tls is None
            else grpc.aio.secure_channel(
                address, tls.channel_credentials(), options=CHANNEL_OPTIONS
            )
        )
        self._channels[node_id] = (address, channel)
        return channel

    async def close(self) -> None:
        for ch in [*(ch for _, ch in self._channels.values()), *self._retired]:
            await ch.close(grace=None)

    async def forward(
        self,
        method: str,
        request: Any,
        context: Any,
        *,
        stub: Callable[[grpc.aio.Channel], Any] = pb_grpc.StreamsStub,
        timeout_s: float | None = None,
        extra_metadata: tuple[tuple[str, str], ...] = (),
    ) -> Any:
        """Send the request to the leader's `method` of `stub`; its answer (or its error) is ours.

        The call gets the caller's remaining time (`timeout_s` when the
        caller set no deadline, else the default request timeout).
        `extra_metadata` travels with the request besides the forwarded mark.
        """
        leader = self.node.leader()
        if leader is None:
            raise unavailable("no leader is known; retry shortly", None)
        forwarded = any(key == FORWARDED_KEY for key, _ in context.invocation_metadata() or ())
        if forwarded:
            raise unavailable(f"not the leader (leader: {leader})", leader)
        remaining = context.time_remaining()
        if remaining is None and timeout_s is not None:
            remaining = timeout_s
        try:
            response = await getattr(stub(self.channel(leader)), method)(
                request,
                timeout=request_timeout(context) if remaining is None else max(0.0, remaining),
                metadata=((FORWARDED_KEY, self.node.node_id), *extra_metadata),
            )
            # A forwarded write costs a second hop: name the leader, so a
            # client that reads trailing metadata can go there directly.
            context.set_trailing_metadata(
                (
                    (LEADER_ID_KEY, leader),
                    (LEADER_ADDRESS_KEY, self.node.addresses.get(leader, "")),
                )
            )
            return response
        except grpc.aio.AioRpcError as exc:
            metadata = cast(Sequence[tuple[str, str | bytes]], exc.trailing_metadata() or ())
            trailing = tuple(
                (k, v.decode() if isinstance(v, bytes) else str(v)) for k, v in metadata
            )
            if exc.code() is grpc.StatusCode.UNAVAILABLE and not trailing:
                # The leader itself is unreachable: naming it would send the
                # client to a dead node.
                raise unavailable(
                    f"leader {leader} did not answer ({exc.details()})", None
                ) from exc
            raise ServiceError(exc.code(), exc.details() or "", trailing=trailing) from exc
