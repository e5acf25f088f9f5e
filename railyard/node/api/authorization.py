"""Who may call what on a TLS node: roles carried by client certificates.

Every RPC needs a role, the least that may make it (`REQUIRED_ROLES`):

- ``reader``: get (GetIteratorIndex, GetRecords), status (Status,
  WatchStatus: `railyard top`), stream list/describe, health, reflection;
- ``writer``: and put (PutRecord, PutRecords, PutRecordStream), stream create;
- ``admin``: and stream delete, force-election (TransferLeadership), ReadLog,
  snapshot save (SaveSnapshot), the membership RPCs (ListMembers, AddMember,
  PromoteMember, RemoveMember), and any method not listed (what is added
  later is closed until named);
- a member node: everything, and it alone may call the Raft service (a
  follower forwards its clients' calls, already checked, with its own
  certificate; inbound.py then checks the node against each envelope).

`AuthorizationInterceptor` checks the verified client certificate of every
call before its handler runs; a refusal is PERMISSION_DENIED naming the role
needed, logged (at most every few seconds per caller and method). Without
TLS there is no certificate and no interceptor: a plaintext node trusts its
network (loopback, or `insecure = true`).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any

import grpc

from railyard.certs import ADMIN, NODE, READER, WRITER, Identity
from railyard.node.security import identity_of
from railyard.proto import railyard_pb2 as pb

# Refusals are logged at most this often per (caller, method): a client retries.
REFUSAL_LOG_INTERVAL_S = 5.0

STREAMS, CLUSTER, RAFT = (
    pb.DESCRIPTOR.services_by_name[name].full_name for name in ("Streams", "Cluster", "Raft")
)
REQUIRED_ROLES: dict[str, str] = {
    f"/{STREAMS}/ListStreams": READER,
    f"/{STREAMS}/DescribeStream": READER,
    f"/{STREAMS}/GetIteratorIndex": READER,
    f"/{STREAMS}/GetRecords": READER,
    f"/{CLUSTER}/Status": READER,
    f"/{CLUSTER}/WatchStatus": READER,
    f"/{STREAMS}/CreateStream": WRITER,
    f"/{STREAMS}/PutRecord": WRITER,
    f"/{STREAMS}/PutRecords": WRITER,
    f"/{STREAMS}/PutRecordStream": WRITER,
    f"/{STREAMS}/DeleteStream": ADMIN,
    # Tighter retention drops records at once, as a delete does.
    f"/{STREAMS}/UpdateStream": ADMIN,
    f"/{CLUSTER}/TransferLeadership": ADMIN,
    f"/{CLUSTER}/ReadLog": ADMIN,
    # A backup holds every record of every stream.
    f"/{CLUSTER}/SaveSnapshot": ADMIN,
    f"/{CLUSTER}/ListMembers": ADMIN,
    f"/{CLUSTER}/AddMember": ADMIN,
    f"/{CLUSTER}/PromoteMember": ADMIN,
    f"/{CLUSTER}/RemoveMember": ADMIN,
}
READER_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
NODE_PREFIX = f"/{RAFT}/"


def required_role(method: str) -> str:
    """The least role that may call `method` (a full gRPC method name)."""
    if method.startswith(NODE_PREFIX):
        return NODE
    if method.startswith(READER_PREFIXES):
        return READER
    return REQUIRED_ROLES.get(method, ADMIN)


def refusal(
    identity: Identity | None, method: str, members: Collection[str], any_node: bool = False
) -> str | None:
    """Why `identity` may not call `method`, or None when it may; `any_node`: every
    node certificate of the cluster's CA counts as a member's (a joining node's)."""
    needed = required_role(method)
    name = method.rsplit("/", 1)[-1]
    if identity is None:
        return f"{name} needs a client certificate with the {needed} role"
    if identity.node:
        if identity.name in members or any_node:
            return None
        return f"node {identity.name} is not a member of this cluster"
    if needed == NODE:
        return f"{name} is for cluster nodes only; {identity.describe()} is not one"
    if identity.role is None:
        return (
            f"{name} needs the {needed} role; the certificate of client {identity.name} "
            "carries none (issue one with `railyard cert client NAME --role ...`)"
        )
    if not identity.may(needed):
        return f"{name} needs the {needed} role; client {identity.name} has {identity.role}"
    return None


class AuthorizationInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Refuses, before its handler runs, every call its caller's role does not allow."""

    def __init__(self, members: Collection[str], log: logging.Logger) -> None:
        # Replaced as the configuration changes (the node's `apply_membership`).
        self.members = frozenset(members)
        self.any_node = False
        self.log = log
        self._logged: dict[tuple[str, str], float] = {}

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        return _guarded(handler, handler_call_details.method, self._check)

    async def _check(self, method: str, context: Any) -> None:
        identity = identity_of(context)
        reason = refusal(identity, method, self.members, self.any_node)
        if reason is None:
            return
        who = identity.describe() if identity is not None else "a caller without a certificate"
        key = (who, method)
        now = time.monotonic()
        if now - self._logged.get(key, -REFUSAL_LOG_INTERVAL_S) >= REFUSAL_LOG_INTERVAL_S:
            self._logged[key] = now
            self.log.warning("refused %s from %s (%s): %s", method, who, context.peer(), reason)
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, reason)


def _guarded(
    handler: grpc.RpcMethodHandler[Any, Any],
    method: str,
    check: Callable[[str, Any], Awaitable[None]],
) -> grpc.RpcMethodHandler[Any, Any]:
    """`handler` with `check` run before its behaviour, of whichever of the four kinds."""
    kinds = (
        ("unary_unary", grpc.unary_unary_rpc_method_handler),
        ("unary_stream", grpc.unary_stream_rpc_method_handler),
        ("stream_unary", grpc.stream_unary_rpc_method_handler),
        ("stream_stream", grpc.stream_stream_rpc_method_handler),
    )
    for attribute, make in kinds:
        behaviour = getattr(handler, attribute)
        if behaviour is not None:
            return make(
                _wrap(behaviour, method, check),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler


def _wrap(
    behaviour: Callable[..., Any], method: str, check: Callable[[str, Any], Awaitable[None]]
) -> Callable[..., Any]:
    # gRPC tells a streaming-response handler by its kind (async generator
    # or coroutine writing with context.write): the wrapper keeps the kind.
    if inspect.isasyncgenfunction(behaviour):

        async def generator(request: Any, context: Any) -> AsyncIterator[Any]:
            await check(method, context)
            async for response in behaviour(request, context):
                yield response

        return generator

    async def coroutine(request: Any, context: Any) -> Any:
        await check(method, context)
        return await behaviour(request, context)

    return coroutine
