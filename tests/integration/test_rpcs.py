"""Every RPC through the real server and the generated stubs, on SQLite and MariaDB."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from faultsvc.faults import TRUNCATION_MARKER
from faultsvc.v1 import fault_service_pb2 as pb
from tests.support.calls import ADMIN, Stub, expect_invalid, record


def new_instance() -> str:
    return str(uuid.uuid4())


async def test_recorded_fault_is_the_latest(stub: Stub) -> None:
    instance = new_instance()
    await record(stub, instance, "first", source="taskmanager", host="tm-1")
    second = await record(stub, instance, "second", details="Traceback ...", source="conductor")
    latest = (
        await stub.GetLatestFault(pb.GetLatestFaultRequest(instance_id=instance), metadata=ADMIN)
    ).fault
    assert latest.id == second.id
    assert (latest.message, latest.details, latest.source) == (
        "second",
        "Traceback ...",
        "conductor",
    )
    assert latest.create_time.ToDatetime() <= latest.update_time.ToDatetime()


async def test_instance_without_faults_has_no_latest_fault(stub: Stub) -> None:
    response = await stub.GetLatestFault(pb.GetLatestFaultRequest(instance_id=new_instance()))
    assert not response.HasField("fault")


async def test_fault_id_makes_recording_idempotent(stub: Stub) -> None:
    instance, fault_id = new_instance(), str(uuid.uuid4())
    first = await record(stub, instance, "once", fault_id=fault_id)
    again = await record(stub, instance, "a retry may even differ", fault_id=fault_id.upper())
    assert again == first
    history = await stub.ListFaults(pb.ListFaultsRequest(instance_id=instance))
    assert [fault.id for fault in history.faults] == [fault_id]


async def test_fault_id_of_another_instance_is_already_exists(stub: Stub) -> None:
    fault_id = str(uuid.uuid4())
    await record(stub, new_instance(), fault_id=fault_id)
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await record(stub, new_instance(), fault_id=fault_id)
    assert failure.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_occur_time_is_the_fault_date(stub: Stub) -> None:
    occurred = datetime(2026, 5, 6, 21, 30, 6, 123456, tzinfo=UTC)
    stamp = Timestamp()
    stamp.FromDatetime(occurred)
    fault = await record(stub, new_instance(), occur_time=stamp)
    assert fault.create_time.ToDatetime(tzinfo=UTC) == occurred
    assert fault.update_time.ToDatetime(tzinfo=UTC) > occurred


async def test_occur_time_far_in_the_future_is_invalid(stub: Stub) -> None:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    await expect_invalid(record(stub, new_instance(), occur_time=stamp), "occur_time")


async def test_latest_fault_follows_occur_time_not_arrival(stub: Stub) -> None:
    instance = new_instance()
    late, early = Timestamp(), Timestamp()
    late.FromDatetime(datetime.now(UTC) - timedelta(minutes=1))
    early.FromDatetime(datetime.now(UTC) - timedelta(minutes=10))
    newest = await record(stub, instance, "newest", occur_time=late)
    await record(stub, instance, "buffered through an outage", occur_time=early)
    latest = await stub.GetLatestFault(pb.GetLatestFaultRequest(instance_id=instance))
    assert latest.fault.id == newest.id


async def test_batch_returns_the_latest_of_each_instance_in_request_order(stub: Stub) -> None:
    instances = [new_instance() for _ in range(5)]
    latest = {}
    for instance in instances[:4]:
        await record(stub, instance, "older")
        latest[instance] = await record(stub, instance, "newer")
    requested = [instances[3], instances[4], instances[0], instances[3]]
    response = await stub.BatchGetLatestFaults(
        pb.BatchGetLatestFaultsRequest(instance_ids=requested)
    )
    assert [fault.id for fault in response.faults] == [
        latest[instances[3]].id,
        latest[instances[0]].id,
    ]


async def test_batch_of_a_thousand_ids(stub: Stub) -> None:
    instances = [new_instance() for _ in range(1000)]
    for instance in instances[::100]:
        await record(stub, instance)
    response = await stub.BatchGetLatestFaults(
        pb.BatchGetLatestFaultsRequest(instance_ids=instances)
    )
    assert [fault.instance_id for fault in response.faults] == instances[::100]


async def test_batch_of_more_than_a_thousand_ids_is_invalid(stub: Stub) -> None:
    request = pb.BatchGetLatestFaultsRequest(instance_ids=[new_instance() for _ in range(1001)])
    await expect_invalid(stub.BatchGetLatestFaults(request), "instance_ids")


async def test_batch_names_the_bad_id(stub: Stub) -> None:
    request = pb.BatchGetLatestFaultsRequest(instance_ids=[new_instance(), ""])
    await expect_invalid(stub.BatchGetLatestFaults(request), "instance_ids[1]")


async def test_list_pages_through_history_newest_first(stub: Stub) -> None:
    instance = new_instance()
    recorded = [await record(stub, instance, fingerprint=str(n)) for n in range(7)]
    seen, token, pages = [], "", 0
    while True:
        page = await stub.ListFaults(
            pb.ListFaultsRequest(instance_id=instance, page_size=3, page_token=token)
        )
        seen += [fault.id for fault in page.faults]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == [fault.id for fault in reversed(recorded)]
    assert pages == 3


async def test_list_page_size_defaults_and_caps(stub: Stub) -> None:
    instance = new_instance()
    for n in range(51):
        await record(stub, instance, fingerprint=str(n))
    default = await stub.ListFaults(pb.ListFaultsRequest(instance_id=instance))
    assert len(default.faults) == 50
    assert default.next_page_token
    huge = await stub.ListFaults(pb.ListFaultsRequest(instance_id=instance, page_size=2**31 - 1))
    assert len(huge.faults) == 51
    assert not huge.next_page_token


async def test_list_rejects_negative_page_size(stub: Stub) -> None:
    request = pb.ListFaultsRequest(instance_id=new_instance(), page_size=-1)
    await expect_invalid(stub.ListFaults(request), "page_size")


@pytest.mark.parametrize("token", ["garbage!", "W10", "WyJ4IiwgIm5vdC1hLWRhdGUiLCAiMSJd"])
async def test_list_rejects_forged_page_tokens(stub: Stub, token: str) -> None:
    request = pb.ListFaultsRequest(instance_id=new_instance(), page_token=token)
    await expect_invalid(stub.ListFaults(request), "page_token")


async def test_list_rejects_a_token_of_another_instance(stub: Stub) -> None:
    instance = new_instance()
    for n in range(3):
        await record(stub, instance, fingerprint=str(n))
    page = await stub.ListFaults(pb.ListFaultsRequest(instance_id=instance, page_size=1))
    request = pb.ListFaultsRequest(instance_id=new_instance(), page_token=page.next_page_token)
    await expect_invalid(stub.ListFaults(request), "page_token")


async def test_clear_hides_faults_and_counts_them(stub: Stub) -> None:
    instance, other = new_instance(), new_instance()
    for n in range(3):
        await record(stub, instance, fingerprint=str(n))
    await record(stub, other)
    cleared = await stub.ClearFaults(pb.ClearFaultsRequest(instance_id=instance))
    assert cleared.cleared_count == 3
    latest = await stub.GetLatestFault(pb.GetLatestFaultRequest(instance_id=instance))
    assert not latest.HasField("fault")
    assert not (await stub.ListFaults(pb.ListFaultsRequest(instance_id=instance))).faults
    again = await stub.ClearFaults(pb.ClearFaultsRequest(instance_id=instance))
    assert again.cleared_count == 0
    assert (await stub.GetLatestFault(pb.GetLatestFaultRequest(instance_id=other))).HasField(
        "fault"
    )


async def test_long_message_is_truncated_not_rejected(stub: Stub) -> None:
    fault = await record(stub, new_instance(), "x" * 10_000)
    assert len(fault.message) == 255
    assert fault.message.endswith(TRUNCATION_MARKER)


async def test_huge_details_are_cut_on_a_character_boundary(stub: Stub) -> None:
    details = "é🔥" * 40_000  # 240,000 bytes of UTF-8
    instance = new_instance()
    await record(stub, instance, details=details)
    stored = (
        await stub.GetLatestFault(pb.GetLatestFaultRequest(instance_id=instance), metadata=ADMIN)
    ).fault.details
    assert len(stored.encode()) <= 65_535
    assert stored.endswith(TRUNCATION_MARKER)
    assert details.startswith(stored.removesuffix("\n" + TRUNCATION_MARKER))


async def test_four_byte_characters_survive_a_round_trip(stub: Stub) -> None:
    instance = new_instance()
    message = "database 🐬 fell over 𝄞 at 東京"
    await record(stub, instance, message, details="stack 🧵\n  frame 😱", source="guest 🤖")
    fault = (
        await stub.GetLatestFault(pb.GetLatestFaultRequest(instance_id=instance), metadata=ADMIN)
    ).fault
    assert (fault.message, fault.details, fault.source) == (
        message,
        "stack 🧵\n  frame 😱",
        "guest 🤖",
    )


async def test_sql_looking_strings_are_stored_verbatim(stub: Stub) -> None:
    instance = "x'); DROP TABLE instance_faults; --"
    message = "' OR '1'='1 \\ % _ \" ; DELETE FROM instance_faults"
    await record(stub, instance, message, details="\x00 NUL and `backticks`")
    fault = (
        await stub.GetLatestFault(pb.GetLatestFaultRequest(instance_id=instance), metadata=ADMIN)
    ).fault
    assert (fault.instance_id, fault.message, fault.details) == (
        instance,
        message,
        "\x00 NUL and `backticks`",
    )
    assert (await stub.ListFaults(pb.ListFaultsRequest(instance_id="x%"))).faults == []


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"instance_id": "", "message": "m"}, "instance_id"),
        ({"instance_id": "   ", "message": "m"}, "instance_id"),
        ({"instance_id": "i" * 65, "message": "m"}, "instance_id"),
        ({"instance_id": "i", "message": ""}, "message"),
        ({"instance_id": "i", "message": "m", "fault_id": "not-a-uuid"}, "fault_id"),
        ({"instance_id": "i", "message": "m", "fingerprint": "f" * 65_536}, "fingerprint"),
    ],
)
async def test_record_rejects_bad_input_naming_the_field(
    stub: Stub, request_fields: dict[str, str], field: str
) -> None:
    await expect_invalid(stub.RecordFault(pb.RecordFaultRequest(**request_fields)), field)  # type: ignore[arg-type]


async def test_sixty_four_character_instance_id_is_accepted(stub: Stub) -> None:
    fault = await record(stub, "i" * 64)
    assert fault.instance_id == "i" * 64


@pytest.mark.parametrize(
    "call",
    ["GetLatestFault", "ListFaults", "ClearFaults"],
)
async def test_reads_reject_empty_instance_id(stub: Stub, call: str) -> None:
    request_type = getattr(pb, f"{call}Request")
    await expect_invalid(getattr(stub, call)(request_type(instance_id="")), "instance_id")


async def test_rejected_input_stores_nothing(stub: Stub) -> None:
    instance = new_instance()
    with pytest.raises(grpc.aio.AioRpcError):
        await record(stub, instance, "", details="half a fault")
    assert not (await stub.ListFaults(pb.ListFaultsRequest(instance_id=instance))).faults
