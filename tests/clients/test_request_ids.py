"""The reporter fills in a fault's request ids from oslo.context and its trace id from
OpenTelemetry, both real, and the server stores them."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from oslo_context.context import RequestContext

from faultsvc.app import FaultServer
from faultsvc.v1.fault_pb2 import Fault
from faultsvc_client import FaultReporter, FaultServiceClient, RequestIds

GLOBAL_REQUEST_ID = "req-0b8f6b2a-7e0f-4b1e-8a0e-9d6c1e2f3a4b"


def on_a_new_thread(function: Callable[[], Any]) -> None:
    """Runs `function` on a thread of its own: oslo.context's current context is per thread."""
    thread = threading.Thread(target=function)
    thread.start()
    thread.join()


async def reported(
    server: FaultServer, client: FaultServiceClient, report: Callable[[FaultReporter, str], Any]
) -> Fault:
    instance = str(uuid.uuid4())
    async with FaultReporter(server.target) as reporter:
        report(reporter, instance)
        await asyncio.sleep(0)  # a report from another thread reaches the loop as a callback
        assert await reporter.flush(10)
    fault = await client.get_latest_fault(instance)
    assert fault is not None
    return fault


async def test_the_request_ids_of_the_current_oslo_context_are_the_faults(
    server: FaultServer, admin_client: FaultServiceClient
) -> None:
    contexts: list[RequestContext] = []

    def report_in_a_request(reporter: FaultReporter, instance: str) -> None:
        def serve_request() -> None:
            contexts.append(RequestContext(global_request_id=GLOBAL_REQUEST_ID))
            reporter.report_exception(instance, ValueError("boom"))

        on_a_new_thread(serve_request)

    fault = await reported(server, admin_client, report_in_a_request)
    assert (fault.request_id, fault.global_request_id) == (
        contexts[0].request_id,
        GLOBAL_REQUEST_ID,
    )
    assert fault.request_id.startswith("req-")


async def test_the_trace_id_of_the_current_span_is_the_faults(
    server: FaultServer, admin_client: FaultServiceClient
) -> None:
    tracer = TracerProvider().get_tracer(__name__)
    spans: list[trace.Span] = []

    def report_in_a_span(reporter: FaultReporter, instance: str) -> None:
        with tracer.start_as_current_span("resize") as span:
            spans.append(span)
            reporter.report(instance, "resize failed")

    fault = await reported(server, admin_client, report_in_a_span)
    assert fault.trace_id == trace.format_trace_id(spans[0].get_span_context().trace_id)
    assert len(fault.trace_id) == 32


async def test_outside_any_request_or_span_a_fault_has_no_ids(
    server: FaultServer, admin_client: FaultServiceClient
) -> None:
    def report_on_a_new_thread(reporter: FaultReporter, instance: str) -> None:
        on_a_new_thread(lambda: reporter.report(instance, "boom"))

    fault = await reported(server, admin_client, report_on_a_new_thread)
    assert (fault.request_id, fault.global_request_id, fault.trace_id) == ("", "", "")


async def test_ids_given_to_report_win_over_the_current_ones(
    server: FaultServer, admin_client: FaultServiceClient
) -> None:
    given = RequestIds("req-given", "req-given-global", "4bf92f3577b34da6a3ce929d0e0e4736")

    def report_in_a_request(reporter: FaultReporter, instance: str) -> None:
        def serve_request() -> None:
            RequestContext(global_request_id=GLOBAL_REQUEST_ID)
            reporter.report(instance, "boom", request_ids=given)

        on_a_new_thread(serve_request)

    fault = await reported(server, admin_client, report_in_a_request)
    assert RequestIds(fault.request_id, fault.global_request_id, fault.trace_id) == given


@pytest.mark.parametrize("bad_id", ["r" * 65_536, "r" * 65, "req 1", "req-\u00e9", 7, b"req-1"])
async def test_a_request_id_the_server_would_refuse_is_left_out_not_the_fault(
    server: FaultServer, admin_client: FaultServiceClient, bad_id: Any
) -> None:
    def report_in_a_request(reporter: FaultReporter, instance: str) -> None:
        def serve_request() -> None:
            RequestContext(request_id=bad_id, global_request_id=bad_id)
            reporter.report(instance, "boom")

        on_a_new_thread(serve_request)

    fault = await reported(server, admin_client, report_in_a_request)
    assert (fault.message, fault.request_id, fault.global_request_id) == ("boom", "", "")


@pytest.mark.parametrize(
    ("trace_id", "kept"),
    [
        ("4bf92f3577b34da6a3ce929d0e0e4736", True),
        ("4BF92F3577B34DA6A3CE929D0E0E4736", False),
        ("0" * 32, False),
        ("4bf92f3577b34da6a3ce929d0e0e473", False),
        ("a" * 65_536, False),
    ],
)
def test_only_a_w3c_trace_id_is_sent(trace_id: str, kept: bool) -> None:
    assert RequestIds.valid(trace_id=trace_id).trace_id == (trace_id if kept else "")
