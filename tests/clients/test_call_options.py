"""Roles, token and deadline per call, on both clients: one API process serves admins and tenants.

The server here requires a bearer token and trusts the x-roles of whoever
presents it, as it trusts an API service that forwards its users' roles.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest

from faultsvc.app import FaultServer
from faultsvc.config import Settings
from faultsvc_client import (
    FaultServiceClient,
    FaultServiceError,
    FaultView,
    SyncFaultServiceClient,
)
from tests.clients.processes import frozen
from tests.support.servers import ServerProcess

SERVICE_TOKEN = "instance-api-service-token-7c1e4b"
TRACEBACK = 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: boom'
# Far below the clients' default deadline of 10 s, far above a call's round trip.
SHORT_DEADLINE = 0.3
# A call to a frozen faultsvc ends within its deadline, and this for the machine.
SLACK = 1.5


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        listen="127.0.0.1:0", database_url=database_url, grace_seconds=2, tokens=[SERVICE_TOKEN]
    )


class InThread:
    """The sync client's methods, each awaited in a thread of its own.

    The server under test runs on the test's event loop, which a blocking
    call would stop.
    """

    def __init__(self, client: SyncFaultServiceClient) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(method, *args, **kwargs)

        return call

    async def iter_faults(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        faults = await asyncio.to_thread(lambda: list(self._client.iter_faults(*args, **kwargs)))
        for fault in faults:
            yield fault


@asynccontextmanager
async def connected(kind: str, target: str, **defaults: Any) -> AsyncIterator[Any]:
    """A client of either kind, with `defaults` for every call, whose methods are awaited."""
    if kind == "async":
        async with FaultServiceClient.connect(target, **defaults) as client:
            yield client
        return
    sync_client = SyncFaultServiceClient.connect(target, **defaults)
    try:
        yield InThread(sync_client)
    finally:
        await asyncio.to_thread(sync_client.close)


CLIENT_KINDS = pytest.mark.parametrize("kind", ["async", "sync"])


@CLIENT_KINDS
async def test_every_method_takes_the_token_and_roles_of_its_call(
    server: FaultServer, kind: str
) -> None:
    instance = str(uuid.uuid4())
    as_admin = {"token": SERVICE_TOKEN, "roles": ["admin"]}

    async with connected(kind, server.target) as client:
        recorded = await client.record_fault(
            instance, "boom", details=TRACEBACK, host="db-7", **as_admin
        )
        latest = await client.get_latest_fault(instance, **as_admin)
        (batched,) = await client.batch_get_latest_faults([instance], **as_admin)
        page = await client.list_faults(instance, **as_admin)
        every = [fault async for fault in client.iter_faults(instance, **as_admin)]
        cleared = await client.clear_faults(instance, **as_admin)
        with pytest.raises(FaultServiceError) as without_token:
            await client.get_latest_fault(instance, roles=["admin"])

    for fault in [recorded, latest, *page.faults, *every]:
        assert (fault.id, fault.details, fault.host) == (recorded.id, TRACEBACK, "db-7")
    # A batch serves list views: no details, but the admin's host.
    assert (batched.id, batched.host) == (recorded.id, "db-7")
    assert cleared == 1
    assert without_token.value.code is grpc.StatusCode.UNAUTHENTICATED


@CLIENT_KINDS
async def test_every_read_takes_the_view_of_its_call(server: FaultServer, kind: str) -> None:
    instance = str(uuid.uuid4())
    as_admin = {"token": SERVICE_TOKEN, "roles": ["admin"]}
    basic, full = FaultView.FAULT_VIEW_BASIC, FaultView.FAULT_VIEW_FULL

    async with connected(kind, server.target, **as_admin) as client:
        await client.record_fault(instance, "boom", details=TRACEBACK)
        details = {
            view: [
                (await client.get_latest_fault(instance, view=view)).details,
                *[f.details for f in await client.batch_get_latest_faults([instance], view=view)],
                *[f.details for f in (await client.list_faults(instance, view=view)).faults],
                *[f.details async for f in client.iter_faults(instance, view=view)],
            ]
            for view in (basic, full)
        }

    assert details == {basic: [""] * 4, full: [TRACEBACK] * 4}


@CLIENT_KINDS
async def test_roles_given_to_a_call_hold_for_that_call_only(
    server: FaultServer, kind: str
) -> None:
    instance = str(uuid.uuid4())

    async with connected(kind, server.target, token=SERVICE_TOKEN) as tenant_by_default:
        await tenant_by_default.record_fault(instance, "boom", details=TRACEBACK)
        for_admin = await tenant_by_default.get_latest_fault(instance, roles=["admin"])
        afterwards = await tenant_by_default.get_latest_fault(instance)
    async with connected(
        kind, server.target, token=SERVICE_TOKEN, roles=["admin"]
    ) as admin_by_default:
        for_tenant = await admin_by_default.get_latest_fault(instance, roles=[])
        (batched_for_tenant,) = await admin_by_default.batch_get_latest_faults([instance], roles=[])

    assert for_admin.details == TRACEBACK
    assert afterwards.details == ""
    assert for_tenant.details == ""
    assert batched_for_tenant.details == ""
    assert for_tenant.message == "boom"


@CLIENT_KINDS
async def test_a_call_deadline_ends_the_wait_for_a_frozen_faultsvc(
    faultsvc_process: ServerProcess, kind: str
) -> None:
    instance = str(uuid.uuid4())
    async with connected(kind, faultsvc_process.target, timeout=30) as client:
        await client.record_fault(instance, "boom")
        with frozen(faultsvc_process):
            started = time.monotonic()
            with pytest.raises(FaultServiceError) as failure:
                await client.get_latest_fault(instance, timeout=SHORT_DEADLINE)
            waited = time.monotonic() - started
        # Answered again once thawed: the frozen call left the client usable.
        latest = await client.get_latest_fault(instance)

    assert failure.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert SHORT_DEADLINE <= waited < SHORT_DEADLINE + SLACK
    assert latest.message == "boom"
