"""OpenTelemetry: a span per RPC, and under it the database batch that served it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from faultsvc.app import FaultServer, build_server
from faultsvc.config import Settings
from faultsvc.storage.batching import Batcher
from faultsvc.v1 import fault_service_pb2 as pb
from faultsvc.v1 import fault_service_pb2_grpc
from tests.support.calls import Stub
from tests.support.databases import sqlite_url
from tests.support.servers import ServerProcess


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.shutdown()


@pytest.fixture
async def server(settings: Settings, exporter: InMemorySpanExporter) -> AsyncIterator[FaultServer]:
    """The real server, its spans sent to `exporter` (the stub fixture calls this one)."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    server = await build_server(settings, tracer_provider=provider)
    await server.start()
    yield server
    await server.stop()


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    return {span.name: span for span in spans}


@pytest.mark.parametrize(
    ("rpc", "batch"), [("RecordFault", "group-commit"), ("GetLatestFault", "coalesced-reads")]
)
async def test_every_rpc_is_a_span_with_its_database_batch_as_a_child(
    rpc: str, batch: str, stub: Stub, exporter: InMemorySpanExporter
) -> None:
    if rpc == "RecordFault":
        await stub.RecordFault(pb.RecordFaultRequest(instance_id="i-1", message="boom"))
    else:
        await stub.GetLatestFault(pb.GetLatestFaultRequest(instance_id="i-1"))
    spans = by_name(exporter.get_finished_spans())
    server_span = spans[f"/faultsvc.v1.FaultService/{rpc}"]
    child = spans[batch]
    assert server_span.context is not None
    assert child.parent is not None
    assert child.parent.span_id == server_span.context.span_id
    assert server_span.start_time is not None
    assert child.start_time is not None
    assert server_span.start_time <= child.start_time


async def test_the_rpc_span_joins_the_callers_trace(
    stub: Stub, exporter: InMemorySpanExporter
) -> None:
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    traceparent = ("traceparent", f"00-{trace_id}-{parent_id}-01")
    await stub.GetLatestFault(pb.GetLatestFaultRequest(instance_id="i-1"), metadata=(traceparent,))
    span = by_name(exporter.get_finished_spans())["/faultsvc.v1.FaultService/GetLatestFault"]
    assert span.context is not None
    assert span.parent is not None
    assert (span.context.trace_id, span.parent.span_id) == (int(trace_id, 16), int(parent_id, 16))


async def test_errors_are_recorded_on_the_rpc_span(
    stub: Stub, exporter: InMemorySpanExporter
) -> None:
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.RecordFault(pb.RecordFaultRequest(instance_id="", message="boom"))
    span = by_name(exporter.get_finished_spans())["/faultsvc.v1.FaultService/RecordFault"]
    assert span.attributes is not None
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]


async def test_nothing_traces_unless_tracing_is_configured(settings: Settings) -> None:
    untraced = await build_server(settings)
    await untraced.start()
    await untraced.stop()
    assert untraced.tracer_provider is None
    assert type(untraced.store._writer) is Batcher
    assert type(untraced.store._latest_reader) is Batcher


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OpenTelemetry collector that keeps the names of the spans it is sent."""

    def __init__(self) -> None:
        self.span_names: list[str] = []

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                self.span_names += [span.name for span in scope_spans.spans]
        return trace_service_pb2.ExportTraceServiceResponse()


def test_a_server_given_an_otlp_endpoint_sends_its_spans_there(tmp_path: Path) -> None:
    collector = Collector()
    receiver = grpc.server(ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, receiver)  # type: ignore[no-untyped-call]
    port = receiver.add_insecure_port("127.0.0.1:0")
    receiver.start()
    try:
        env = {"FAULTSVC_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}
        with ServerProcess(sqlite_url(tmp_path), env=env) as server:
            with grpc.insecure_channel(server.target) as channel:
                stub = fault_service_pb2_grpc.FaultServiceStub(channel)
                stub.RecordFault(pb.RecordFaultRequest(instance_id="i", message="m"), timeout=10)
            assert server.stop() == 0  # spans are flushed at shutdown
    finally:
        receiver.stop(None)
    assert "/faultsvc.v1.FaultService/RecordFault" in collector.span_names
    assert "group-commit" in collector.span_names
