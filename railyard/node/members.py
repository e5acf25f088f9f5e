"""The node follows its configuration: whom it links, accepts and authorizes.

The driver calls `MembershipFollower.apply_membership` whenever the
configuration in force or the committed one changes (`Driver.on_membership`).
The node then links (`Transport.set_members`), accepts (`RaftService
.set_members`) and, under TLS, authorizes as a node
(`AuthorizationInterceptor.members`) exactly the members of both, and the
leader's `core.peers`. A node joining with no configuration yet accepts
any node of its cluster file, and the leaders whose envelopes say where
to answer them (`on_new_sender`).

It sees all three wings, as `process.py` does, which builds it.
"""

from __future__ import annotations

import logging

from railyard.config import ClusterConfig, ConfigError
from railyard.node.api.authorization import AuthorizationInterceptor
from railyard.node.driver import Driver
from railyard.node.observability import event
from railyard.node.peers.inbound import RaftService
from railyard.node.peers.links import Transport
from railyard.proto import railyard_pb2 as pb
from railyard.raft import Index, Member, Membership, NodeId


def member_addresses(
    members: tuple[Member, ...], config: ClusterConfig
) -> dict[NodeId, tuple[str, str | None]]:
    """Where to reach each member: the addresses its configuration holds, else
    (a configuration known by ids only, from an old store) the cluster file's."""
    out: dict[NodeId, tuple[str, str | None]] = {}
    for member in members:
        if member.address:
            out[member.node_id] = (member.address, member.peer_address or None)
            continue
        try:
            node = config.node(member.node_id)
        except ConfigError:
            out[member.node_id] = ("", None)
            continue
        out[member.node_id] = (node.address, node.peer_address)
    return out


def describe_membership(membership: Membership) -> str:
    voters = ", ".join(membership.voter_ids) or "none"
    learners = ", ".join(membership.learner_ids)
    return f"{voters}" + (f"; learners {learners}" if learners else "")


def note_file_differs(
    config: ClusterConfig, membership: Membership, index: Index, log: logging.Logger
) -> None:
    """One line when the store's configuration, which wins, is not the file's list."""
    if index == 0 or not membership.voters:
        return
    in_file = sorted(config.node_ids)
    if sorted(membership.voter_ids + membership.learner_ids) != in_file:
        log.info(
            "the store's configuration (index %d: %s) is in force; %s lists %s",
            index,
            describe_membership(membership),
            config.source_name,
            ", ".join(in_file),
        )


class MembershipFollower:
    """Applies each configuration to the links, the Raft service and the authorization."""

    def __init__(
        self,
        *,
        config: ClusterConfig,
        node_id: NodeId,
        driver: Driver,
        transport: Transport,
        raft_service: RaftService,
        authorization: AuthorizationInterceptor | None,
        addresses: dict[str, str],
        log: logging.Logger,
    ) -> None:
        self.config = config
        self.node_id = node_id
        self.driver = driver
        self.transport = transport
        self.raft_service = raft_service
        self.authorization = authorization
        # The services' node id -> client address map, kept up to date here.
        self.addresses = addresses
        self.log = log
        self._logged: Membership | None = None
        # Leaders heard from while joining, and where they said to answer them.
        self._senders: dict[NodeId, Member] = {}

    def on_new_sender(self, sender: pb.Peer) -> None:
        if not sender.address or self.driver.core.membership.voters:
            return
        self._senders[NodeId(sender.node_id)] = Member(
            NodeId(sender.node_id), sender.address, sender.peer_address
        )
        self.apply_membership(self.driver.core.membership)

    def apply_membership(self, membership: Membership) -> None:
        """Link, accept and authorize the members of `membership` (the latest
        configuration) and of the committed one.

        A removed member stays linked and accepted until its removal commits:
        a leader that removes itself needs the others' acknowledgements, and
        the leader replicates the removing entry to the member it removes.
        """
        committed = self.driver.core.committed_membership()[1]
        members = tuple(
            {
                m.node_id: m
                for m in committed.voters
                + committed.learners
                + membership.voters
                + membership.learners
            }.values()
        )
        joining = not membership.voters
        if joining:
            # No configuration yet: the leader that adds this node must be
            # answered before its configuration arrives; the file says where,
            # or the leader's envelopes do (`on_new_sender`).
            in_file = tuple(Member(NodeId(n.id)) for n in self.config.nodes)
            members = in_file + tuple(self._senders.values())
        known = {
            p: (link.address, link.peer_address)
            for p, link in self.transport.links.items()
            if p in self.driver.core.peers
        }
        wanted = {**known, **member_addresses(members, self.config)}
        wanted.pop(self.node_id, None)
        self.transport.set_members(wanted)
        self.addresses.update({p: address for p, (address, _) in wanted.items()})
        self.raft_service.set_members(list(wanted), joining)
        if self.authorization is not None:
            self.authorization.members = frozenset([self.node_id, *wanted])
            self.authorization.any_node = joining
        if membership == self._logged:
            return  # only the commit changed
        self._logged = membership
        self.log.info(
            "members %s%s",
            describe_membership(membership),
            " (joining: waiting for a leader to add this node)" if joining else "",
            # `learners` only when there are some: the event's shape is unchanged
            # for a cluster that never had any.
            extra=event(
                "membership",
                voters=list(membership.voter_ids),
                **({"learners": list(membership.learner_ids)} if membership.learners else {}),
            ),
        )
