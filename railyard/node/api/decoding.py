"""Requests that are not their method's message: INVALID_ARGUMENT, on every method.

grpc runs a method's request deserializer before its handler sees the
request. When it raises (protobuf's `DecodeError` on invalid bytes),
grpc.aio answers a unary call ``UNKNOWN: Unexpected <class DecodeError>``
and leaves a call with a request stream hanging until the client's deadline.

`TolerantRegistration` is the server the generated
``add_<Service>Servicer_to_server`` functions are given: it registers every
method with a deserializer that returns a `Malformed` marker instead of
raising, and a behaviour that answers the marker (the request, or any
message of a request stream) with INVALID_ARGUMENT naming the method and
the message expected. A handler never sees a `Malformed`: a malformed
message of a request stream raises `MalformedRequest` in whoever reads the
stream, and the call is aborted from the handler's own task once that
reaches it. grpc.aio's abort must come from the handler's task: sent from
another task (a handler that reads its requests in a task of its own) while
the handler still writes answers, the call hung until its deadline.

Methods named in `pre_encoded` may also answer with `bytes` already encoded
as their response message, sent as they are: a status shared by many
watchers is encoded once, not once per watcher.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from typing import Any

import grpc

# The stubs type handlers for the synchronous server; an aio handler's
# behaviours are coroutine functions and async generator functions.
Handler = Any


class Malformed:
    """What the deserializer returns for bytes that are not the expected message."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class MalformedRequest(Exception):
    """Raised by a request stream at a message that is not the expected message."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TolerantRegistration:
    """Registers a service's handlers on `server`, each made tolerant of malformed requests."""

    def __init__(self, server: grpc.aio.Server, pre_encoded: Collection[str] = ()) -> None:
        self.server = server
        self.pre_encoded = frozenset(pre_encoded)

    def add_generic_rpc_handlers(
        self, handlers: Sequence[grpc.GenericRpcHandler[Any, Any]]
    ) -> None:
        self.server.add_generic_rpc_handlers(
            tuple(_TolerantGeneric(h, self.pre_encoded) for h in handlers)
        )

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, Handler]) -> None:
        self.server.add_registered_method_handlers(  # type: ignore[attr-defined]
            service,
            {
                name: tolerant(handler, f"/{service}/{name}", self.pre_encoded)
                for name, handler in handlers.items()
            },
        )


class _TolerantGeneric(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """A generic handler whose method handlers are `tolerant`, each wrapped once."""

    def __init__(
        self, inner: grpc.GenericRpcHandler[Any, Any], pre_encoded: frozenset[str]
    ) -> None:
        self.inner = inner
        self.pre_encoded = pre_encoded
        self._wrapped: dict[str, Handler] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler:
        method: str = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = self.inner.service(handler_call_details)
            if handler is None:
                return None
            wrapped = tolerant(handler, method, self.pre_encoded)
            self._wrapped[method] = wrapped
        return wrapped


def tolerant(handler: Handler, method: str, pre_encoded: Collection[str] = ()) -> Handler:
    """`handler` with a deserializer that never raises and a behaviour that refuses `Malformed`."""
    deserialize = _tolerant_deserializer(handler.request_deserializer, method)
    serialize = handler.response_serializer
    if method in pre_encoded and serialize is not None:
        serialize = _pass_bytes(serialize)
    kinds = (
        ("unary_unary", grpc.unary_unary_rpc_method_handler, False),
        ("unary_stream", grpc.unary_stream_rpc_method_handler, False),
        ("stream_unary", grpc.stream_unary_rpc_method_handler, True),
        ("stream_stream", grpc.stream_stream_rpc_method_handler, True),
    )
    for attribute, make, streaming_request in kinds:
        behaviour = getattr(handler, attribute)
        if behaviour is not None:
            wrap = _checking_stream if streaming_request else _checking_request
            return make(
                wrap(behaviour), request_deserializer=deserialize, response_serializer=serialize
            )
    return handler


def _tolerant_deserializer(
    deserialize: Callable[[bytes], Any] | None, method: str
) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None
    message_type = getattr(getattr(deserialize, "__self__", None), "DESCRIPTOR", None)
    expected = message_type.full_name if message_type is not None else "protobuf message"
    name = method.rsplit("/", 1)[-1]

    def tolerant_deserialize(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:
            return Malformed(f"{name}: the request is not a valid {expected} ({exc})")

    return tolerant_deserialize


def _pass_bytes(serialize: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    def serialize_or_pass(message: Any) -> bytes:
        return message if isinstance(message, bytes) else serialize(message)

    return serialize_or_pass


async def _refuse(context: Any, malformed: Malformed) -> None:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, malformed.reason)


def _checking_request(behaviour: Callable[..., Any]) -> Callable[..., Any]:
    # gRPC tells a streaming-response handler by its kind (async generator
    # or coroutine writing with context.write): the wrapper keeps the kind.
    if inspect.isasyncgenfunction(behaviour):

        async def generator(request: Any, context: Any) -> AsyncIterator[Any]:
            if type(request) is Malformed:
                await _refuse(context, request)
            async for response in behaviour(request, context):
                yield response

        return generator

    async def coroutine(request: Any, context: Any) -> Any:
        if type(request) is Malformed:
            await _refuse(context, request)
        return await behaviour(request, context)

    return coroutine


def _checking_stream(behaviour: Callable[..., Any]) -> Callable[..., Any]:
    async def checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for request in requests:
            if type(request) is Malformed:
                raise MalformedRequest(request.reason)
            yield request

    if inspect.isasyncgenfunction(behaviour):

        async def generator(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
            try:
                async for response in behaviour(checked(requests), context):
                    yield response
            except MalformedRequest as malformed:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, malformed.reason)

        return generator

    async def coroutine(requests: AsyncIterator[Any], context: Any) -> Any:
        try:
            return await behaviour(checked(requests), context)
        except MalformedRequest as malformed:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, malformed.reason)

    return coroutine
