"""FaultServiceClient against the real server, on SQLite and MariaDB."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from faultsvc_client import CallOptions, FaultServiceClient, FaultServiceError, RetryPolicy
from faultsvc_client.client import call_metadata
from tests.clients.server_answers import LOCK_WAIT_SECONDS, record_fault_answers
from tests.support.databases import writes_locked
from tests.support.servers import MakeServer, free_port

TRACEBACK = 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: boom'


def new_instance() -> str:
    return str(uuid.uuid4())


async def test_recorded_fault_comes_back_as_stored(admin_client: FaultServiceClient) -> None:
    instance, fault_id = new_instance(), str(uuid.uuid4())
    occurred = datetime(2026, 5, 6, 21, 30, 6, 123456, tzinfo=UTC)
    recorded = await admin_client.record_fault(
        instance,
        "A guest error occurred",
        details=TRACEBACK,
        source="guestagent",
        host="db-host-1",
        fault_id=fault_id,
        occur_time=occurred,
    )
    assert recorded.id == fault_id
    assert (recorded.instance_id, recorded.message, recorded.details) == (
        instance,
        "A guest error occurred",
        TRACEBACK,
    )
    assert (recorded.source, recorded.host) == ("guestagent", "db-host-1")
    assert recorded.create_time.ToDatetime(tzinfo=UTC) == occurred
    assert await admin_client.get_latest_fault(instance) == recorded


async def test_instance_without_faults_has_no_latest_fault(
    admin_client: FaultServiceClient,
) -> None:
    assert await admin_client.get_latest_fault(new_instance()) is None


async def test_retry_with_the_same_fault_id_records_once(admin_client: FaultServiceClient) -> None:
    instance, fault_id = new_instance(), str(uuid.uuid4())
    first = await admin_client.record_fault(instance, "once", fault_id=fault_id)
    again = await admin_client.record_fault(instance, "once", fault_id=fault_id)
    assert again == first
    assert [f.id async for f in admin_client.iter_faults(instance)] == [fault_id]


async def test_every_record_gets_its_own_fault_id(admin_client: FaultServiceClient) -> None:
    instance = new_instance()
    first = await admin_client.record_fault(instance, "first")
    second = await admin_client.record_fault(instance, "second")
    assert first.id != second.id
    assert len([f async for f in admin_client.iter_faults(instance)]) == 2


async def test_batch_returns_the_latest_fault_of_each_instance_that_has_one(
    admin_client: FaultServiceClient,
) -> None:
    broken, also_broken, healthy = new_instance(), new_instance(), new_instance()
    await admin_client.record_fault(broken, "old")
    newest = await admin_client.record_fault(broken, "new")
    other = await admin_client.record_fault(also_broken, "other")
    faults = await admin_client.batch_get_latest_faults([broken, also_broken, healthy])
    assert {fault.instance_id: fault.id for fault in faults} == {
        broken: newest.id,
        also_broken: other.id,
    }


async def test_list_faults_pages_newest_first(admin_client: FaultServiceClient) -> None:
    instance = new_instance()
    start = datetime.now(UTC) - timedelta(hours=1)
    recorded = [
        await admin_client.record_fault(
            instance, f"fault {n}", occur_time=start + timedelta(seconds=n), fingerprint=str(n)
        )
        for n in range(5)
    ]
    newest_first = [fault.id for fault in reversed(recorded)]

    first_page = await admin_client.list_faults(instance, page_size=2)
    assert [fault.id for fault in first_page.faults] == newest_first[:2]
    assert first_page.next_page_token
    second_page = await admin_client.list_faults(
        instance, page_size=2, page_token=first_page.next_page_token
    )
    assert [fault.id for fault in second_page.faults] == newest_first[2:4]

    assert [f.id async for f in admin_client.iter_faults(instance, page_size=2)] == newest_first


async def test_clear_faults_counts_them_and_hides_them(admin_client: FaultServiceClient) -> None:
    instance = new_instance()
    await admin_client.record_fault(instance, "one")
    await admin_client.record_fault(instance, "two")
    assert await admin_client.clear_faults(instance) == 2
    assert await admin_client.get_latest_fault(instance) is None
    assert (await admin_client.list_faults(instance)).faults == []
    assert await admin_client.clear_faults(instance) == 0


async def test_client_without_admin_role_never_sees_details(
    admin_client: FaultServiceClient, user_client: FaultServiceClient
) -> None:
    instance = new_instance()
    recorded = await user_client.record_fault(instance, "boom", details=TRACEBACK)
    assert recorded.details == ""

    latest = await user_client.get_latest_fault(instance)
    batch = await user_client.batch_get_latest_faults([instance])
    history = await user_client.list_faults(instance)
    for fault in [latest, *batch, *history.faults]:
        assert fault is not None
        assert (fault.id, fault.message, fault.details) == (recorded.id, "boom", "")

    as_admin = await admin_client.get_latest_fault(instance)
    assert as_admin is not None
    assert as_admin.details == TRACEBACK


@pytest.mark.parametrize("instance_id", ["", "x" * 65])
async def test_invalid_argument_names_the_field(
    admin_client: FaultServiceClient, instance_id: str
) -> None:
    with pytest.raises(FaultServiceError) as failure:
        await admin_client.record_fault(instance_id, "boom")
    assert failure.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in failure.value.field_violations] == ["instance_id"]
    assert failure.value.field_violations[0].description
    assert "instance_id" in str(failure.value)


async def test_negative_page_size_is_an_invalid_argument(
    admin_client: FaultServiceClient,
) -> None:
    with pytest.raises(FaultServiceError) as failure:
        await admin_client.list_faults(new_instance(), page_size=-1)
    assert failure.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in failure.value.field_violations] == ["page_size"]


async def test_unreachable_server_raises_unavailable() -> None:
    async with FaultServiceClient.connect(f"127.0.0.1:{free_port()}", timeout=5) as client:
        with pytest.raises(FaultServiceError) as failure:
            await client.get_latest_fault(new_instance())
    assert failure.value.code is grpc.StatusCode.UNAVAILABLE
    assert failure.value.field_violations == ()


def test_token_and_roles_travel_as_metadata() -> None:
    assert call_metadata("s3cret", ["admin", " reader ", ""]) == (
        ("authorization", "Bearer s3cret"),
        ("x-roles", "admin,reader"),
    )
    assert call_metadata(None, []) == ()


@pytest.mark.parametrize(
    "credentials",
    [
        {"token": "s3cret\n"},
        {"token": "s\u00e9cret"},
        {"roles": ["admin\r\nx-roles: admin"]},
        {"roles": ["r\u00f4le"]},
    ],
)
async def test_a_token_or_role_metadata_cannot_carry_is_an_invalid_argument(
    user_client: FaultServiceClient, credentials: CallOptions
) -> None:
    with pytest.raises(FaultServiceError) as failure:
        await user_client.get_latest_fault(new_instance(), **credentials)

    assert failure.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "printable ASCII" in failure.value.details
    assert "s3cret" not in str(failure.value)


async def test_a_role_too_long_for_metadata_is_refused_not_sent(
    user_client: FaultServiceClient,
) -> None:
    with pytest.raises(FaultServiceError) as failure:
        await user_client.get_latest_fault(new_instance(), roles=["r" * 65_536])

    assert failure.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_a_call_answered_unavailable_is_retried_until_it_is_recorded(
    make_server: MakeServer, database_url: str
) -> None:
    server = await make_server(database_timeout_seconds=LOCK_WAIT_SECONDS)
    instance = new_instance()
    async with FaultServiceClient.connect(server.target, retry=RetryPolicy()) as client:
        with writes_locked(database_url):
            recording = asyncio.ensure_future(client.record_fault(instance, "retried"))
            async with asyncio.timeout(10):
                while not record_fault_answers(server, grpc.StatusCode.UNAVAILABLE):
                    assert not recording.done(), recording
                    await asyncio.sleep(0.01)
        fault = await recording
        assert [f.id async for f in client.iter_faults(instance)] == [fault.id]
    assert record_fault_answers(server, grpc.StatusCode.OK) == 1


@pytest.mark.parametrize(
    ("retry", "attempts"), [(None, 1), (RetryPolicy(max_attempts=3), 3)], ids=["none", "three"]
)
async def test_a_call_is_tried_as_often_as_its_retry_policy_says_then_unavailable(
    make_server: MakeServer, database_url: str, retry: RetryPolicy | None, attempts: int
) -> None:
    server = await make_server(database_timeout_seconds=LOCK_WAIT_SECONDS)
    async with FaultServiceClient.connect(server.target, retry=retry) as client:
        with writes_locked(database_url), pytest.raises(FaultServiceError) as failure:
            await client.record_fault(new_instance(), "never recorded")
    assert failure.value.code is grpc.StatusCode.UNAVAILABLE
    assert record_fault_answers(server, grpc.StatusCode.UNAVAILABLE) == attempts
