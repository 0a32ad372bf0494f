"""OpenTelemetry traces (the `tracing` extra): a span for every RPC, a child for its batch.

Only imported when tracing is configured, so serving without the extra works.
Each RecordFault and GetLatestFault gets a child span for the group commit or
coalesced read that serves it: its wait for the batch and the batch's
database round trip, the time the database costs that call.
"""

from __future__ import annotations

from typing import TypeVar

import grpc
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Tracer

from faultsvc.storage.batching import Batcher, BatchFunction

Item = TypeVar("Item")
Result = TypeVar("Result")


def otlp_tracer_provider(endpoint: str) -> TracerProvider:
    """Spans batched and sent by OTLP/gRPC to `endpoint` (an OpenTelemetry collector)."""
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: "faultsvc"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return provider


def rpc_span_interceptor(provider: TracerProvider) -> grpc.aio.ServerInterceptor:
    """A server span per RPC, child of the caller's span when its metadata carries one."""
    # The instrumentation package ships no type information.
    interceptor: grpc.aio.ServerInterceptor = aio_server_interceptor(  # type: ignore[no-untyped-call]
        tracer_provider=provider
    )
    return interceptor


class TracedBatcher(Batcher[Item, Result]):
    """A Batcher whose every call is a span, child of the span of the RPC that made it."""

    def __init__(
        self,
        tracer: Tracer,
        name: str,
        run_batch: BatchFunction[Item, Result],
        max_batch: int,
        *,
        max_pending: int,
    ) -> None:
        super().__init__(name, run_batch, max_batch, max_pending=max_pending)
        self._tracer = tracer

    async def submit(self, item: Item) -> Result:
        with self._tracer.start_as_current_span(self.name):
            return await super().submit(item)
