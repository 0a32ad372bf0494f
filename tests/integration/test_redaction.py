"""Admin-only fields never reach a caller that is not an admin, on any RPC."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf.message import Message

from faultsvc.v1 import fault_service_pb2 as pb
from tests.support.calls import Metadata, Stub, record
from tests.support.redaction import admin_only_values
from tests.support.rpcs import ADMIN_ONLY_METHODS, METHODS, REQUESTS, answer, request_id_of

NOT_ADMIN: list[Metadata] = [
    None,
    (("x-roles", "member,reader"),),
    (("x-roles", ""),),
    (("x-roles", "administrator"),),
    (("x-roles", "admin-ish, not-admin"),),
    (("x-role", "admin"),),
    (("x-roles-bin", b"admin"),),
]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
ADMIN: list[Metadata] = [
    (("x-roles", "admin"),),
    (("x-roles", "member, Admin"),),
    (("x-roles", "reader"), ("x-roles", "admin")),
]


def test_every_rpc_has_a_request() -> None:
    assert set(REQUESTS) == set(METHODS)


async def call(stub: Stub, method: str, metadata: Metadata) -> Message:
    instance = str(uuid.uuid4())
    for message in ("boom", "boom again"):
        await record(
            stub,
            instance,
            message,
            details="Traceback: secret frame",
            host="tm-1",
            trace_id=TRACE_ID,
            request_id=request_id_of(instance),
        )
    return await answer(stub, method, REQUESTS[method](instance), metadata=metadata)


@pytest.mark.parametrize("metadata", NOT_ADMIN)
@pytest.mark.parametrize("method", sorted(ADMIN_ONLY_METHODS))
async def test_non_admin_may_not_call_an_admin_only_rpc(
    stub: Stub, method: str, metadata: Metadata
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call(stub, method, metadata)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("metadata", NOT_ADMIN)
@pytest.mark.parametrize("method", [m for m in METHODS if m not in ADMIN_ONLY_METHODS])
async def test_non_admin_never_sees_details_on_any_rpc(
    stub: Stub, method: str, metadata: Metadata
) -> None:
    response = await call(stub, method, metadata)
    assert admin_only_values(response) == []


@pytest.mark.parametrize("metadata", ADMIN)
@pytest.mark.parametrize(
    "method",
    [
        "RecordFault",
        "GetLatestFault",
        "BatchGetLatestFaults",
        "ListFaults",
        "SearchFaults",
        "WatchFaults",
        "RankFaults",
    ],
)
async def test_admin_sees_details_and_host(stub: Stub, method: str, metadata: Metadata) -> None:
    response = await call(stub, method, metadata)
    assert {path.rpartition(".")[2] for path in admin_only_values(response)} == {
        "details",
        "host",
        "trace_id",
    }
    assert "Traceback: secret frame" in str(response)
    assert 'host: "tm-1"' in str(response)


async def test_non_admin_sees_everything_else(stub: Stub) -> None:
    instance = str(uuid.uuid4())
    recorded = await record(
        stub,
        instance,
        "boom",
        details="trace",
        source="api",
        host="h1",
        request_id="req-1",
        global_request_id="req-g",
        trace_id=TRACE_ID,
    )
    latest = (await stub.GetLatestFault(pb.GetLatestFaultRequest(instance_id=instance))).fault
    recorded.ClearField("details")
    recorded.ClearField("host")
    recorded.ClearField("trace_id")
    assert (latest.request_id, latest.global_request_id) == ("req-1", "req-g")
    assert latest == recorded
