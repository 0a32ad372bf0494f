"""Streaming RPCs get the same treatment as unary ones: redaction, errors, metrics.

FaultService has no streaming RPC today; the standard health service's Watch
does (it writes with `context.write`), and a stream added later will too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from faultsvc.app import FaultServer
from faultsvc.interceptors import ErrorInterceptor, RedactionInterceptor
from faultsvc.policy.roles import AdminPolicy
from faultsvc.v1 import fault_pb2
from tests.support.calls import ADMIN
from tests.support.redaction import admin_only_values


async def test_health_watch_streams_serving(server: FaultServer) -> None:
    async with grpc.aio.insecure_channel(server.target) as channel:
        health: Any = health_pb2_grpc.HealthStub(channel)  # its type stubs omit the methods
        watch = health.Watch
        call = watch(health_pb2.HealthCheckRequest(service="faultsvc.v1.FaultService"))
        first = await call.read()
        call.cancel()
    assert first.status == health_pb2.HealthCheckResponse.SERVING


def fault() -> fault_pb2.Fault:
    return fault_pb2.Fault(id="1", instance_id="i", message="m", details="secret trace")


async def yielded(
    request: bytes, context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[Any]:
    for _ in range(3):
        yield fault()


async def written(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    for _ in range(3):
        await context.write(fault())


async def test_a_streaming_rpc_added_later_is_redacted_both_ways() -> None:
    server = grpc.aio.server(
        interceptors=[ErrorInterceptor(), RedactionInterceptor(AdminPolicy(["admin"]))]
    )
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        name: grpc.unary_stream_rpc_method_handler(
            behaviour, response_serializer=fault_pb2.Fault.SerializeToString
        )
        for name, behaviour in (("Yielded", yielded), ("Written", written))
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Faults", handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            for name in handlers:
                call: grpc.aio.UnaryStreamMultiCallable[bytes, fault_pb2.Fault] = (
                    channel.unary_stream(
                        f"/test.Faults/{name}", response_deserializer=fault_pb2.Fault.FromString
                    )
                )
                as_user = [response async for response in call(b"")]
                as_admin = [response async for response in call(b"", metadata=ADMIN)]
                assert len(as_user) == len(as_admin) == 3
                assert all(admin_only_values(response) == [] for response in as_user)
                assert all(response.details == "secret trace" for response in as_admin)
    finally:
        await server.stop(None)
