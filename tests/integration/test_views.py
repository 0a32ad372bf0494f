"""Views and the response budget: details read only when sent, and every answer fits a client."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from faultsvc.app import FaultServer
from faultsvc.v1 import fault_service_pb2 as pb
from tests.support.calls import ADMIN, Stub, bad_request_fields, record, stub_of
from tests.support.servers import MakeServer

DETAILS = "Traceback (most recent call last):\n" + "x" * 65_000
GRPC_DEFAULT_LIMIT = 4 * 1024 * 1024
SMALL_BUDGET = 256 * 1024


class StatementLog:
    """The SELECTs engines run while it is installed."""

    def __init__(self, *engines: AsyncEngine) -> None:
        self.statements: list[str] = []
        self._engines = {engine.sync_engine for engine in engines}

    def __enter__(self) -> StatementLog:
        for engine in self._engines:
            sa.event.listen(engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *_: object) -> None:
        for engine in self._engines:
            sa.event.remove(engine, "before_cursor_execute", self._seen)

    def _seen(self, _connection: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            self.statements.append(statement)

    def read_details(self) -> bool:
        return any("instance_faults.details" in statement for statement in self.statements)


@pytest.fixture
def reads(server: FaultServer) -> Iterator[StatementLog]:
    with StatementLog(server.database.current, server.database.current_reader) as log:
        yield log


async def test_details_are_never_read_for_a_caller_who_will_not_get_them(
    stub: Stub, reads: StatementLog
) -> None:
    instance = str(uuid.uuid4())
    await record(stub, instance, details=DETAILS)
    reads.statements.clear()
    for view in (pb.FAULT_VIEW_UNSPECIFIED, pb.FAULT_VIEW_BASIC, pb.FAULT_VIEW_FULL):
        latest = await stub.GetLatestFault(
            pb.GetLatestFaultRequest(instance_id=instance, view=view)
        )
        listed = await stub.ListFaults(pb.ListFaultsRequest(instance_id=instance, view=view))
        batch = await stub.BatchGetLatestFaults(
            pb.BatchGetLatestFaultsRequest(instance_ids=[instance], view=view)
        )
        assert latest.fault.message
        assert listed.faults
        assert batch.faults
    assert reads.statements, "the reads were not seen"
    assert not reads.read_details(), reads.statements


async def test_an_admin_gets_details_in_the_full_view_only(stub: Stub, reads: StatementLog) -> None:
    instance = str(uuid.uuid4())
    await record(stub, instance, details=DETAILS)

    async def details_of(view: pb.FaultView.ValueType) -> dict[str, str]:
        latest = await stub.GetLatestFault(
            pb.GetLatestFaultRequest(instance_id=instance, view=view), metadata=ADMIN
        )
        listed = await stub.ListFaults(
            pb.ListFaultsRequest(instance_id=instance, view=view), metadata=ADMIN
        )
        batch = await stub.BatchGetLatestFaults(
            pb.BatchGetLatestFaultsRequest(instance_ids=[instance], view=view), metadata=ADMIN
        )
        return {
            "get": latest.fault.details,
            "list": listed.faults[0].details,
            "batch": batch.faults[0].details,
        }

    assert await details_of(pb.FAULT_VIEW_FULL) == dict.fromkeys(["get", "list", "batch"], DETAILS)
    # Unspecified: full where one fault is shown, basic for the list view's batch.
    assert await details_of(pb.FAULT_VIEW_UNSPECIFIED) == {
        "get": DETAILS,
        "list": DETAILS,
        "batch": "",
    }
    reads.statements.clear()
    assert await details_of(pb.FAULT_VIEW_BASIC) == dict.fromkeys(["get", "list", "batch"], "")
    assert not reads.read_details()


@pytest.mark.parametrize("method", ["GetLatestFault", "ListFaults", "BatchGetLatestFaults"])
async def test_a_view_that_does_not_exist_is_invalid(stub: Stub, method: str) -> None:
    request = {
        "GetLatestFault": pb.GetLatestFaultRequest(instance_id="i-1", view=7),  # type: ignore[arg-type]
        "ListFaults": pb.ListFaultsRequest(instance_id="i-1", view=7),  # type: ignore[arg-type]
        "BatchGetLatestFaults": pb.BatchGetLatestFaultsRequest(instance_ids=["i-1"], view=7),  # type: ignore[arg-type]
    }[method]
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await getattr(stub, method)(request)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(failure.value) == ["view"]


async def test_an_admin_page_of_large_faults_ends_early_and_the_pages_hold_them_all(
    stub: Stub,
) -> None:
    instance = str(uuid.uuid4())
    recorded = [
        (await record(stub, instance, f"fault {n}", details=DETAILS, fingerprint=str(n))).id
        for n in range(80)
    ]
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await stub.ListFaults(
            pb.ListFaultsRequest(instance_id=instance, page_size=1000, page_token=token),
            metadata=ADMIN,
        )
        pages += 1
        assert page.ByteSize() < GRPC_DEFAULT_LIMIT // 2
        assert all(fault.details == DETAILS for fault in page.faults)
        seen += [fault.id for fault in page.faults]
        token = page.next_page_token
        if not token:
            break
    assert seen == recorded[::-1]
    assert pages >= 3  # 80 faults of 64 KB do not fit one 2 MiB page


@pytest.fixture
async def small_budget_stub(make_server: MakeServer) -> AsyncIterator[Stub]:
    server = await make_server(max_response_bytes=SMALL_BUDGET)
    async with stub_of(server.target) as stub:
        yield stub


async def test_a_full_batch_over_the_budget_is_refused_saying_what_to_do(
    small_budget_stub: Stub,
) -> None:
    stub = small_budget_stub
    instances = [str(uuid.uuid4()) for _ in range(5)]
    for instance in instances:
        await record(stub, instance, details=DETAILS)
    full = pb.BatchGetLatestFaultsRequest(instance_ids=instances, view=pb.FAULT_VIEW_FULL)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.BatchGetLatestFaults(full, metadata=ADMIN)
    assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "fewer instances" in (failure.value.details() or "")
    assert "BASIC" in (failure.value.details() or "")

    basic = pb.BatchGetLatestFaultsRequest(instance_ids=instances)
    assert len((await stub.BatchGetLatestFaults(basic, metadata=ADMIN)).faults) == 5
    three = pb.BatchGetLatestFaultsRequest(instance_ids=instances[:3], view=pb.FAULT_VIEW_FULL)
    assert len((await stub.BatchGetLatestFaults(three, metadata=ADMIN)).faults) == 3
