"""A gRPC server interceptor that counts and times every call a node serves.

`railyard_grpc_requests_total{method,code}` counts finished calls by status
code; `railyard_grpc_request_duration_seconds{method}` times them from the
handler's start to its end (a stream's whole life for streaming calls).
`method` is `Service/Method` (`Streams/PutRecord`), a bounded set.

Each method's wrapped handler is built once and reused: the per-call cost is
a clock read at each end, a dictionary lookup and two instrument updates (adds: the instruments are
the node's own, written on the event loop where every handler runs).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from railyard.node.observability.metrics import NodeMetrics

OK = grpc.StatusCode.OK.name
# What a handler that raised without setting a status code answers.
UNKNOWN = grpc.StatusCode.UNKNOWN.name
CANCELLED = grpc.StatusCode.CANCELLED.name


def method_label(full_method: str) -> str:
    """`/railyard.v1.Streams/PutRecord` -> `Streams/PutRecord`."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return f"{service.rsplit('.', 1)[-1]}/{method}"


# The stubs type handlers for the synchronous server; an aio handler's
# behaviours are coroutine functions and async generator functions.
Handler = Any


class GrpcMetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Counts and times calls; see the module docstring."""

    def __init__(self, metrics: NodeMetrics) -> None:
        assert metrics.grpc_requests is not None and metrics.grpc_duration is not None
        self._requests = metrics.grpc_requests
        self._duration = metrics.grpc_duration
        self._handlers: dict[str, Handler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        full_method: str = handler_call_details.method
        wrapped = self._handlers.get(full_method)
        if wrapped is None:
            handler = await continuation(handler_call_details)
            if handler is None:
                return handler  # unknown method: gRPC answers UNIMPLEMENTED itself
            wrapped = self._wrap(method_label(full_method), handler)
            self._handlers[full_method] = wrapped
        return wrapped

    def _done(self, method: str, started: float, code: str) -> None:
        self._requests.counter(method, code).inc()
        self._duration.histogram(method).observe(time.perf_counter() - started)

    def _wrap(self, method: str, handler: Handler) -> Handler:
        done = self._done
        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None or handler.stream_unary is not None:
            behavior: Any = handler.unary_unary or handler.stream_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                started = time.perf_counter()
                code = OK
                try:
                    response = await behavior(request, context)
                except BaseException as exc:
                    code = _code(context, exc)
                    raise
                else:
                    code = _code(context, None)
                    return response
                finally:
                    done(method, started, code)

            if handler.unary_unary is not None:
                return grpc.unary_unary_rpc_method_handler(unary, **kwargs)
            return grpc.stream_unary_rpc_method_handler(unary, **kwargs)

        streaming: Any = handler.unary_stream or handler.stream_stream
        assert streaming is not None

        async def stream(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            started = time.perf_counter()
            code = OK
            try:
                result = streaming(request, context)
                if hasattr(result, "__aiter__"):
                    async for response in result:
                        yield response
                else:  # a handler that writes with context.write() and returns
                    await result
            except BaseException as exc:
                code = _code(context, exc)
                raise
            else:
                code = _code(context, None)
            finally:
                done(method, started, code)

        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(stream, **kwargs)
        return grpc.stream_stream_rpc_method_handler(stream, **kwargs)


def _code(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException | None) -> str:
    """The status code the call ends with: the one set (by abort or set_code), else
    CANCELLED for a cancelled call, UNKNOWN for another exception, OK otherwise."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int) and not isinstance(code, bool):
        for status in grpc.StatusCode:
            if status.value[0] == code:
                return status.name
    if exc is None:
        return OK
    return CANCELLED if isinstance(exc, asyncio.CancelledError) else UNKNOWN
