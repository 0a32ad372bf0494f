"""From a fault to its logs: request ids and trace id through the real server."""

from __future__ import annotations

import uuid

import pytest

from faultsvc.v1 import fault_service_pb2 as pb
from tests.support.calls import ADMIN, Stub, expect_invalid

REQUEST_ID = "req-5f1c7a3e-2b7d-4c43-9a55-3c8d0f3b8e21"
GLOBAL_REQUEST_ID = "req-0b8f6b2a-7e0f-4b1e-8a0e-9d6c1e2f3a4b"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


def traceparent(trace_id: str = TRACEPARENT_TRACE_ID) -> tuple[str, str]:
    return ("traceparent", f"00-{trace_id}-b7ad6b7169203331-01")


async def recorded(stub: Stub, metadata: tuple[tuple[str, str], ...] = (), **fields: str) -> str:
    """The trace id of a fault recorded with `fields` and `metadata`, as an admin reads it."""
    instance = str(uuid.uuid4())
    request = pb.RecordFaultRequest(instance_id=instance, message="boom", **fields)  # type: ignore[arg-type]
    await stub.RecordFault(request, metadata=metadata)
    latest = await stub.GetLatestFault(
        pb.GetLatestFaultRequest(instance_id=instance), metadata=ADMIN
    )
    return latest.fault.trace_id


async def test_ids_are_stored_and_read_back(stub: Stub) -> None:
    instance = str(uuid.uuid4())
    request = pb.RecordFaultRequest(
        instance_id=instance,
        message="boom",
        request_id=REQUEST_ID,
        global_request_id=GLOBAL_REQUEST_ID,
        trace_id=TRACE_ID,
    )
    await stub.RecordFault(request)
    for read in (
        (
            await stub.GetLatestFault(
                pb.GetLatestFaultRequest(instance_id=instance), metadata=ADMIN
            )
        ).fault,
        (await stub.ListFaults(pb.ListFaultsRequest(instance_id=instance), metadata=ADMIN)).faults[
            0
        ],
    ):
        assert (read.request_id, read.global_request_id, read.trace_id) == (
            REQUEST_ID,
            GLOBAL_REQUEST_ID,
            TRACE_ID,
        )


async def test_trace_id_comes_from_traceparent_when_the_request_has_none(stub: Stub) -> None:
    assert await recorded(stub, (traceparent(),)) == TRACEPARENT_TRACE_ID


async def test_the_requests_own_trace_id_wins_over_traceparent(stub: Stub) -> None:
    assert await recorded(stub, (traceparent(),), trace_id=TRACE_ID) == TRACE_ID


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        f"00-{TRACEPARENT_TRACE_ID.upper()}-b7ad6b7169203331-01",
        f"00-{'0' * 32}-b7ad6b7169203331-01",
        f"ff-{TRACEPARENT_TRACE_ID}-b7ad6b7169203331-01",
        f"00-{TRACEPARENT_TRACE_ID}-b7ad6b7169203331-01-extra",
        f"00-{TRACEPARENT_TRACE_ID}0-b7ad6b7169203331-01",
        "00-" + "a" * 7_000,  # gRPC refuses metadata over 8 KB itself
        "-" * 7_000,
    ],
)
async def test_a_malformed_traceparent_is_ignored(stub: Stub, header: str) -> None:
    assert await recorded(stub, (("traceparent", header),)) == ""


async def test_a_later_traceparent_version_gives_its_trace_id(stub: Stub) -> None:
    header = f"01-{TRACEPARENT_TRACE_ID}-b7ad6b7169203331-01-future"
    assert await recorded(stub, (("traceparent", header),)) == TRACEPARENT_TRACE_ID


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"request_id": "r" * 65}, "request_id"),
        ({"request_id": "req 1"}, "request_id"),
        ({"request_id": "req-\n1"}, "request_id"),
        ({"request_id": "req-é"}, "request_id"),
        ({"request_id": "r" * 65_000}, "request_id"),
        ({"global_request_id": "g" * 65}, "global_request_id"),
        ({"global_request_id": "\x00"}, "global_request_id"),
        ({"trace_id": TRACE_ID.upper()}, "trace_id"),
        ({"trace_id": TRACE_ID[:-1]}, "trace_id"),
        ({"trace_id": "0" * 32}, "trace_id"),
        ({"trace_id": "g" * 32}, "trace_id"),
        ({"trace_id": "a" * 65_000}, "trace_id"),
    ],
)
async def test_bad_ids_are_rejected_naming_the_field(
    stub: Stub, fields: dict[str, str], field: str
) -> None:
    request = pb.RecordFaultRequest(instance_id="i-1", message="m", **fields)  # type: ignore[arg-type]
    await expect_invalid(stub.RecordFault(request), field)


async def test_a_sixty_four_character_request_id_is_accepted(stub: Stub) -> None:
    response = await stub.RecordFault(
        pb.RecordFaultRequest(instance_id="i-1", message="m", request_id="r" * 64)
    )
    assert response.fault.request_id == "r" * 64
