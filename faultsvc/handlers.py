"""grpc.aio handlers for the interceptors: one way to wrap a behaviour, whatever its kind.

A grpc.aio interceptor sees the handler, not the call: to act on requests or
responses it returns a new handler around the servicer's behaviour (the
`grpc.*_rpc_method_handler` functions, never private fields).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import MethodDescriptor

Context = grpc.aio.ServicerContext[Any, Any]
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Continuation: TypeAlias = "Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]"
# A servicer function as grpc.aio calls it: a coroutine function, or an async
# generator function for a response stream that yields.
Behaviour: TypeAlias = Callable[..., Any]

_MAKERS = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}
_BEHAVIOURS = {
    (False, False): "unary_unary",
    (False, True): "unary_stream",
    (True, False): "stream_unary",
    (True, True): "stream_stream",
}
_SAME: Any = object()


@dataclass(frozen=True)
class Kind:
    """What a behaviour takes and gives.

    A streaming response is either yielded (an async generator) or written
    with `context.write` by a coroutine that returns nothing, as
    grpc.health.v1's Watch does; grpc.aio tells them apart by the function's
    kind, so a wrapper must keep it.
    """

    request_streaming: bool
    response_streaming: bool
    yields: bool


def make_handler(
    request_streaming: bool,
    response_streaming: bool,
    behaviour: Behaviour,
    *,
    request_deserializer: Any = None,
    response_serializer: Any = None,
) -> Handler:
    handler: Handler = _MAKERS[request_streaming, response_streaming](
        behaviour,
        request_deserializer=request_deserializer,
        response_serializer=response_serializer,
    )
    return handler


def rewrap(
    handler: Handler,
    wrap: Callable[[Behaviour, Kind], Behaviour],
    *,
    request_deserializer: Any = _SAME,
) -> Handler:
    """`handler` with its behaviour replaced by `wrap(behaviour, kind)`.

    `request_deserializer` replaces the handler's (None: the behaviour takes bytes).
    """
    behaviours: Any = handler  # the stubs type behaviours as the sync API's
    for (request_streaming, response_streaming), name in _BEHAVIOURS.items():
        behaviour = getattr(behaviours, name)
        if behaviour:
            kind = Kind(
                request_streaming, response_streaming, inspect.isasyncgenfunction(behaviour)
            )
            return make_handler(
                request_streaming,
                response_streaming,
                wrap(behaviour, kind),
                request_deserializer=(
                    handler.request_deserializer
                    if request_deserializer is _SAME
                    else request_deserializer
                ),
                response_serializer=handler.response_serializer,
            )
    raise ValueError("a handler without a behaviour")


def method_descriptor(method: str) -> MethodDescriptor | None:
    """The descriptor of a method path ("/package.Service/Method"); None if unknown."""
    try:
        found: MethodDescriptor = descriptor_pool.Default().FindMethodByName(
            method.strip("/").replace("/", ".")
        )
    except KeyError:
        return None
    return found
