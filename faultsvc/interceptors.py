"""Server interceptors: error mapping and admin-only redaction, around every RPC.

Each one returns a handler whose behaviour wraps the servicer's (see
`faultsvc.handlers`), for all four kinds, so a streaming RPC added later is
covered too.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from faultsvc.errors import FaultServiceError, abort_with
from faultsvc.handlers import Behaviour, Context, Continuation, Handler, Kind, rewrap
from faultsvc.metrics import Metrics
from faultsvc.policy.redaction import strip_admin_only, strip_admin_only_of_this_call
from faultsvc.policy.roles import AdminPolicy

log = logging.getLogger(__name__)

UnaryBehaviour = Callable[[Any, Context], Awaitable[Any]]
StreamBehaviour = Callable[[Any, Context], AsyncIterator[Any]]


class BehaviourInterceptor(grpc.aio.ServerInterceptor):
    """Wraps the behaviour of the handlers it applies to, once per handler."""

    def __init__(self) -> None:
        self._wrapped: dict[Handler, Handler] = {}

    def applies_to(self, handler_call_details: grpc.HandlerCallDetails) -> bool:
        return True

    def unary(self, behaviour: UnaryBehaviour, method: str) -> UnaryBehaviour:
        raise NotImplementedError

    def stream(self, behaviour: StreamBehaviour, method: str) -> StreamBehaviour:
        raise NotImplementedError

    def writes(self, behaviour: UnaryBehaviour, method: str) -> UnaryBehaviour:
        """Wraps a streaming behaviour that writes its responses; by default as a unary one."""
        return self.unary(behaviour, method)

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None or not self.applies_to(handler_call_details):
            return handler
        wrapped = self._wrapped.get(handler)
        if wrapped is None:
            method = handler_call_details.method
            wrapped = self._wrapped[handler] = rewrap(
                handler, lambda behaviour, kind: self._wrap(behaviour, kind, method)
            )
        return wrapped

    def _wrap(self, behaviour: Behaviour, kind: Kind, method: str) -> Behaviour:
        if not kind.response_streaming:
            return self.unary(behaviour, method)
        if kind.yields:
            return self.stream(behaviour, method)
        return self.writes(behaviour, method)


class ErrorInterceptor(BehaviourInterceptor):
    """Answers domain errors with their status, and anything unexpected with a bare INTERNAL.

    The INTERNAL message carries a reference to the logged traceback, never the
    traceback or the exception text, which may hold internals.
    """

    def unary(self, behaviour: UnaryBehaviour, method: str) -> UnaryBehaviour:
        async def mapped(request: Any, context: Context) -> Any:
            try:
                return await behaviour(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as error:
                await _abort_for(error, context, method)

        return mapped

    def stream(self, behaviour: StreamBehaviour, method: str) -> StreamBehaviour:
        async def mapped(request: Any, context: Context) -> AsyncIterator[Any]:
            try:
                async for response in behaviour(request, context):
                    yield response
            except grpc.aio.AbortError:
                raise
            except Exception as error:
                await _abort_for(error, context, method)

        return mapped


async def _abort_for(error: Exception, context: Context, method: str) -> None:
    """Ends the call with the status of a domain error, or a bare INTERNAL for anything else."""
    if isinstance(error, FaultServiceError):
        await abort_with(context, error.status())
    reference = uuid.uuid4().hex[:12]
    log.error("unexpected error in %s, reference %s", method, reference, exc_info=error)
    await abort_with(context, FaultServiceError(f"internal error (reference {reference})").status())


class RedactionInterceptor(BehaviourInterceptor):
    """Clears every admin-only field of every response for callers that are not admins."""

    def __init__(self, policy: AdminPolicy) -> None:
        super().__init__()
        self._policy = policy

    def applies_to(self, handler_call_details: grpc.HandlerCallDetails) -> bool:
        return not self._policy.is_admin(handler_call_details.invocation_metadata)

    def unary(self, behaviour: UnaryBehaviour, method: str) -> UnaryBehaviour:
        async def redacted(request: Any, context: Context) -> Any:
            strip_admin_only_of_this_call()
            response = await behaviour(request, context)
            if response is not None:
                strip_admin_only(response)
            return response

        return redacted

    def stream(self, behaviour: StreamBehaviour, method: str) -> StreamBehaviour:
        async def redacted(request: Any, context: Context) -> AsyncIterator[Any]:
            strip_admin_only_of_this_call()
            async for response in behaviour(request, context):
                strip_admin_only(response)
                yield response

        return redacted

    def writes(self, behaviour: UnaryBehaviour, method: str) -> UnaryBehaviour:
        async def redacted(request: Any, context: Context) -> Any:
            strip_admin_only_of_this_call()
            redacting: Any = _RedactingWrites(context)  # stands in for the context
            return await behaviour(request, redacting)

        return redacted


class _RedactingWrites:
    """A servicer context whose `write` clears admin-only fields before sending."""

    def __init__(self, context: Context) -> None:
        self._context = context

    async def write(self, message: Any) -> None:
        strip_admin_only(message)
        await self._context.write(message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class MetricsInterceptor(BehaviourInterceptor):
    """Counts every RPC by method and status code, and times it."""

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self._metrics = metrics

    def unary(self, behaviour: UnaryBehaviour, method: str) -> UnaryBehaviour:
        name = method.rpartition("/")[2]
        latency = self._metrics.rpc_seconds.labels(name)

        async def measured(request: Any, context: Context) -> Any:
            started = time.perf_counter()
            try:
                response = await behaviour(request, context)
            finally:
                latency.observe(time.perf_counter() - started)
                self._count(name, context)
            return response

        return measured

    def stream(self, behaviour: StreamBehaviour, method: str) -> StreamBehaviour:
        name = method.rpartition("/")[2]
        latency = self._metrics.rpc_seconds.labels(name)

        async def measured(request: Any, context: Context) -> AsyncIterator[Any]:
            started = time.perf_counter()
            try:
                async for response in behaviour(request, context):
                    yield response
            finally:
                latency.observe(time.perf_counter() - started)
                self._count(name, context)

        return measured

    def _count(self, method: str, context: Context) -> None:
        code = context.code()
        # An abort leaves its code on the context; an RPC that returned has none.
        label = code.name if isinstance(code, grpc.StatusCode) else "OK"
        self._metrics.rpcs.labels(method, label).inc()
