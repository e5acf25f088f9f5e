"""The membership RPCs of the Cluster service: list, add, promote, remove.

Each is served by the leader (a follower forwards it, as it forwards a
write) and answers with the committed configuration as the leader sees it:
every member with its role, its match index and whether the leader heard
from it within an election timeout.

A change is one single-server step of the core (`RaftCore.propose_conf_change`,
dissertation §4.1); the answer comes once its entry is committed. What is
asked for and already true (the same member at the same addresses, a member
already gone) changes nothing and says so (`changed` false), so an operator
can repeat a command. A refused change (`ConfChangeError`: one in flight, an
unknown id, an address another member uses, a voter to promote, a learner
not caught up) appends nothing and is FAILED_PRECONDITION. Removing a voter
when the voters left that answered lately could not form a quorum is refused
unless forced (`RaftCore.keeps_live_quorum`).

`MembershipRpcs` is the part of the Cluster servicer that serves them;
`ClusterService` (`cluster_service.py`) extends it with the other RPCs.
Who may call them (admin) is checked by name before any handler runs
(`authorization.py`). Handlers read the core between the driver's steps
(`status()`, `committed_membership()`), never change it outside
`Driver.call`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc

from railyard.node.api.context import Forwarder, NodeContext, request_timeout
from railyard.node.api.status_codes import ServiceError, rpc, unavailable
from railyard.proto import railyard_pb2 as pb
from railyard.proto import railyard_pb2_grpc as pb_grpc
from railyard.raft import (
    ConfChange,
    ConfChangeKind,
    CoreStatus,
    Index,
    Membership,
    NodeId,
    Role,
)

# How often a change's commit is looked for; well under a heartbeat.
COMMIT_POLL_S = 0.01


def member_infos(
    status: CoreStatus, membership: Membership, node_id: NodeId
) -> list[pb.MemberInfo]:
    """`membership`'s members as the node with `status` sees them (progress: leader only)."""
    infos = []
    for role, members in (("voter", membership.voters), ("learner", membership.learners)):
        for member in members:
            info = pb.MemberInfo(
                id=member.node_id,
                address=member.address,
                peer_address=member.peer_address,
                role=role,
            )
            progress = status.progress.get(member.node_id)
            if member.node_id == node_id:
                info.reachable = True
                info.match_index = status.last_index
            elif progress is not None and status.role is Role.LEADER:
                info.reachable = progress.recent_active
                info.match_index = progress.match_index
                info.caught_up = progress.caught_up
            infos.append(info)
    return infos


def check_address(field: str, address: str, *, required: bool) -> None:
    """INVALID_ARGUMENT unless `address` is HOST:PORT (or empty where allowed)."""
    if not address:
        if required:
            raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: expected HOST:PORT")
        return
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ServiceError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{field}: {address!r} is not HOST:PORT (a port from 1 to 65535)",
        )


class MembershipRpcs(pb_grpc.ClusterServicer):
    """The Cluster servicer's membership methods; `ClusterService` adds the rest."""

    def __init__(self, node: NodeContext, forwarder: Forwarder) -> None:
        self.node = node
        self.driver = node.driver
        self.addresses = node.addresses
        self.forwarder = forwarder

    def _committed(self) -> tuple[Index, Membership]:
        return self.driver.core.committed_membership()

    def listing(self) -> pb.ListMembersResponse:
        status = self.driver.status()
        index, membership = self._committed()
        return pb.ListMembersResponse(
            config_index=index,
            members=member_infos(status, membership, self.node.node_id),
            leader_id=status.leader_id or "",
            last_index=status.last_index,
        )

    def _answer(self, changed: bool) -> pb.MemberChangeResponse:
        listing = self.listing()
        return pb.MemberChangeResponse(
            changed=changed, config_index=listing.config_index, members=listing.members
        )

    async def _forward_unless_leader(self, method: str, request: Any, context: Any) -> Any:
        """The leader's answer when this node is not the leader; None when it is."""
        leader = self.node.leader()
        if leader is None:
            raise unavailable("no leader is known; retry shortly", None)
        if leader == self.node.node_id:
            return None
        return await self.forwarder.forward(method, request, context, stub=pb_grpc.ClusterStub)

    @rpc
    async def ListMembers(
        self, request: pb.ListMembersRequest, context: Any
    ) -> pb.ListMembersResponse:
        forwarded: pb.ListMembersResponse | None = await self._forward_unless_leader(
            "ListMembers", request, context
        )
        return forwarded if forwarded is not None else self.listing()

    @rpc
    async def AddMember(
        self, request: pb.AddMemberRequest, context: Any
    ) -> pb.MemberChangeResponse:
        if not request.id:
            raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "id: expected a node id")
        check_address("address", request.address, required=True)
        check_address("peer_address", request.peer_address, required=False)
        forwarded: pb.MemberChangeResponse | None = await self._forward_unless_leader(
            "AddMember", request, context
        )
        if forwarded is not None:
            return forwarded
        existing = self.driver.status().membership.member(NodeId(request.id))
        if existing is not None:
            if (existing.address, existing.peer_address) == (
                request.address,
                request.peer_address,
            ):
                return self._answer(changed=False)
            raise ServiceError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{request.id} is already a member at address {existing.address!r}"
                f"{f', peer_address {existing.peer_address!r}' if existing.peer_address else ''}"
                "; remove it first to move it",
            )
        change = ConfChange(
            ConfChangeKind.ADD_LEARNER, NodeId(request.id), request.address, request.peer_address
        )
        await self._change(change, context)
        return self._answer(changed=True)

    @rpc
    async def PromoteMember(
        self, request: pb.PromoteMemberRequest, context: Any
    ) -> pb.MemberChangeResponse:
        if not request.id:
            raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "id: expected a node id")
        forwarded: pb.MemberChangeResponse | None = await self._forward_unless_leader(
            "PromoteMember", request, context
        )
        if forwarded is not None:
            return forwarded
        await self._change(ConfChange(ConfChangeKind.PROMOTE, NodeId(request.id)), context)
        return self._answer(changed=True)

    @rpc
    async def RemoveMember(
        self, request: pb.RemoveMemberRequest, context: Any
    ) -> pb.MemberChangeResponse:
        if not request.id:
            raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "id: expected a node id")
        forwarded: pb.MemberChangeResponse | None = await self._forward_unless_leader(
            "RemoveMember", request, context
        )
        if forwarded is not None:
            return forwarded
        node_id = NodeId(request.id)
        if self.driver.status().membership.member(node_id) is None:
            return self._answer(changed=False)
        change = ConfChange(ConfChangeKind.REMOVE, node_id)
        if not request.force:
            keeps = await self.driver.call(lambda: self.driver.core.keeps_live_quorum(change))
            if not keeps:
                raise ServiceError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"removing {node_id} would leave voters of which too few answered within "
                    "an election timeout to form a quorum (the cluster could not commit); "
                    "bring the others back first, or pass --force",
                )
        await self._change(change, context)
        return self._answer(changed=True)

    async def _change(self, change: ConfChange, context: Any) -> None:
        """Propose `change` and return once its entry is committed (errors: see the docstring)."""
        index = await self.driver.call(lambda: self.driver.core.propose_conf_change(change))
        term = self.driver.core.term_of(index)
        deadline = time.monotonic() + request_timeout(context)
        while time.monotonic() < deadline:
            now_term = self.driver.core.term_of(index)
            if now_term is not None and now_term != term:
                raise unavailable(
                    f"leadership changed before the change at index {index} committed; "
                    "list the members to see whether it took effect",
                    self.node.leader(),
                )
            if self.driver.status().commit_index >= index:
                return
            await asyncio.sleep(COMMIT_POLL_S)
        raise ServiceError(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"the change at index {index} did not commit in time; it may still: "
            "list the members to see",
        )
