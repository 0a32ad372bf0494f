"""Small helpers for calling the service in tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeAlias

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from faultsvc.v1 import fault_pb2, fault_service_pb2_grpc
from faultsvc.v1 import fault_service_pb2 as pb

# Only the type stubs know the async stub class; at run time the stub adapts to its channel.
Stub: TypeAlias = "fault_service_pb2_grpc.FaultServiceAsyncStub"
Metadata = tuple[tuple[str, str | bytes], ...] | None
ADMIN: Metadata = (("x-roles", "admin"),)


@asynccontextmanager
async def stub_of(target: str) -> AsyncIterator[Stub]:
    """A FaultService stub on a new plaintext channel to `target`, closed afterwards."""
    async with grpc.aio.insecure_channel(target) as channel:
        yield fault_service_pb2_grpc.FaultServiceStub(channel)


async def record(
    stub: Stub, instance_id: str, message: str = "boom", **fields: object
) -> fault_pb2.Fault:
    response = await stub.RecordFault(
        pb.RecordFaultRequest(instance_id=instance_id, message=message, **fields)  # type: ignore[arg-type]
    )
    return response.fault


def bad_request_fields(error: grpc.aio.AioRpcError) -> list[str]:
    """The fields named by the google.rpc.BadRequest in a failed call's status."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "no google.rpc.Status in the trailers"
    fields = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            fields += [violation.field for violation in bad_request.field_violations]
    return fields


async def expect_invalid(call: object, field: str) -> grpc.aio.AioRpcError:
    """Awaits `call`, which must fail with INVALID_ARGUMENT naming `field`."""
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call  # type: ignore[misc]
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(failure.value) == [field]
    assert field in (failure.value.details() or "")
    return failure.value
