"""With tokens configured, every FaultService call needs one; health and reflection stay open."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from faultsvc.app import FaultServer
from faultsvc.policy.auth import INVALID_TOKEN, MALFORMED_TOKEN, MISSING_TOKEN
from faultsvc.v1 import fault_service_pb2 as pb
from tests.support.calls import Metadata, Stub, stub_of
from tests.support.rpcs import ADMIN_ONLY_METHODS, METHODS, REQUESTS, SERVICE, answer
from tests.support.tokens import ADMIN_TOKEN, FORWARDING_TOKEN, READER_TOKEN, bearer

WRONG_TOKEN = "not-a-configured-token-5f6e7d8c9b0a"


@pytest.fixture
async def stub(token_server: FaultServer) -> AsyncIterator[Stub]:
    async with stub_of(token_server.target) as stub:
        yield stub


async def call(stub: Stub, method: str, metadata: Metadata) -> Message:
    return await answer(
        stub, method, REQUESTS[method](str(uuid.uuid4())), metadata=metadata, timeout=10
    )


async def refused(stub: Stub, method: str, metadata: Metadata) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call(stub, method, metadata)
    assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED
    return failure.value


def everything_said(error: grpc.aio.AioRpcError) -> str:
    """The status message and every trailer, as text: what a caller can read."""
    trailers = error.trailing_metadata() or ()
    return f"{error.details()} {[(key, value) for key, value in trailers]}"


@pytest.mark.parametrize("method", METHODS)
async def test_every_rpc_refuses_a_call_without_a_token(stub: Stub, method: str) -> None:
    for metadata in [None, (("x-roles", "admin"),)]:
        error = await refused(stub, method, metadata)
        assert error.details() == MISSING_TOKEN


@pytest.mark.parametrize("method", METHODS)
async def test_every_rpc_refuses_a_wrong_token_without_quoting_it(stub: Stub, method: str) -> None:
    error = await refused(stub, method, (bearer(WRONG_TOKEN), ("x-roles", "admin")))
    assert error.details() == INVALID_TOKEN
    assert WRONG_TOKEN not in everything_said(error)
    assert WRONG_TOKEN[:8] not in everything_said(error)


@pytest.mark.parametrize(
    "metadata",
    [
        (("authorization", f"Basic {FORWARDING_TOKEN}"),),
        (("authorization", "Bearer"),),
        (("authorization", FORWARDING_TOKEN),),
        (bearer(FORWARDING_TOKEN), bearer(WRONG_TOKEN)),
    ],
    ids=["basic-scheme", "no-token", "no-scheme", "two-tokens"],
)
async def test_malformed_authorization_is_refused_without_quoting_it(
    stub: Stub, metadata: Metadata
) -> None:
    error = await refused(stub, "GetLatestFault", metadata)
    assert error.details() == MALFORMED_TOKEN
    assert FORWARDING_TOKEN[:12] not in everything_said(error)


@pytest.mark.parametrize("method", METHODS)
async def test_every_rpc_answers_a_configured_token(stub: Stub, method: str) -> None:
    # An admin-only RPC answers the admin token, and the others' roles with PERMISSION_DENIED.
    admin = (("x-roles", "admin"),) if method in ADMIN_ONLY_METHODS else ()
    for token in [FORWARDING_TOKEN, ADMIN_TOKEN]:
        await call(stub, method, (bearer(token), *admin))
    if method in ADMIN_ONLY_METHODS:
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await call(stub, method, (bearer(READER_TOKEN), ("x-roles", "admin")))
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    else:
        await call(stub, method, (bearer(READER_TOKEN),))
    # The scheme is case-insensitive (RFC 9110).
    await call(stub, method, (("authorization", f"bearer {FORWARDING_TOKEN}"), *admin))


async def test_health_and_reflection_answer_without_a_token(token_server: FaultServer) -> None:
    async with grpc.aio.insecure_channel(token_server.target) as channel:
        health: Any = health_pb2_grpc.HealthStub(channel)  # its type stubs omit the methods
        for service in ["", "faultsvc.v1.FaultService"]:
            answer = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING

        reflection: Any = reflection_pb2_grpc.ServerReflectionStub(channel)  # type: ignore[arg-type]
        listing = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
        names = {
            service.name
            async for answer in listing
            for service in answer.list_services_response.service
        }
        assert SERVICE.full_name in names


async def test_roles_are_honoured_only_from_authenticated_callers(stub: Stub) -> None:
    """x-roles alone proves nothing; with a service's token, its forwarded roles count."""
    instance = str(uuid.uuid4())
    request = pb.RecordFaultRequest(instance_id=instance, message="boom", details="trace")
    await stub.RecordFault(request, metadata=(bearer(FORWARDING_TOKEN),))
    latest = pb.GetLatestFaultRequest(instance_id=instance)

    error = await refused(stub, "GetLatestFault", (("x-roles", "admin"),))
    assert "trace" not in everything_said(error)

    as_admin = await stub.GetLatestFault(
        latest, metadata=(bearer(FORWARDING_TOKEN), ("x-roles", "admin"))
    )
    assert as_admin.fault.details == "trace"
    as_user = await stub.GetLatestFault(
        latest, metadata=(bearer(FORWARDING_TOKEN), ("x-roles", "member"))
    )
    assert as_user.fault.message == "boom"
    assert not as_user.fault.details


async def test_a_token_with_roles_decides_its_callers_roles(stub: Stub) -> None:
    instance = str(uuid.uuid4())
    request = pb.RecordFaultRequest(instance_id=instance, message="boom", details="trace")
    await stub.RecordFault(request, metadata=(bearer(FORWARDING_TOKEN),))
    latest = pb.GetLatestFaultRequest(instance_id=instance)

    operator = await stub.GetLatestFault(latest, metadata=(bearer(ADMIN_TOKEN),))
    assert operator.fault.details == "trace"
    claiming = await stub.GetLatestFault(
        latest, metadata=(bearer(READER_TOKEN), ("x-roles", "admin"), ("x-roles", "reader,admin"))
    )
    assert claiming.fault.message == "boom"
    assert not claiming.fault.details
