"""Repeats of an error reported through the real server become one fault with a count."""

from __future__ import annotations

import asyncio
import traceback
import uuid

from faultsvc.v1 import fault_service_pb2 as pb
from tests.support.calls import Stub, record


class GuestError(Exception):
    pass


def prepare_guest(attempt: int) -> None:
    raise GuestError(f"attempt {attempt}: guest did not answer within 600 s")


def restore_backup(attempt: int) -> None:
    try:
        prepare_guest(attempt)
    except GuestError as error:
        raise RuntimeError(f"restore {attempt} failed") from error


def traceback_of(function: object, attempt: int) -> str:
    try:
        function(attempt)  # type: ignore[operator]
    except Exception:
        return traceback.format_exc()
    raise AssertionError("no exception")


async def test_a_retry_loop_is_one_fault_that_counts_every_attempt(stub: Stub) -> None:
    instance = str(uuid.uuid4())
    recorded = [
        await record(
            stub,
            instance,
            f"Restore {attempt} failed",
            details=traceback_of(restore_backup, attempt),
            source="taskmanager",
        )
        for attempt in range(5)
    ]
    other = await record(
        stub, instance, "Prepare failed", details=traceback_of(prepare_guest, 1), source="guest"
    )

    assert {fault.id for fault in recorded} == {recorded[0].id}
    assert [fault.occurrence_count for fault in recorded] == [1, 2, 3, 4, 5]
    listed = (await stub.ListFaults(pb.ListFaultsRequest(instance_id=instance))).faults
    assert [(f.id, f.occurrence_count) for f in listed] == [(other.id, 1), (recorded[0].id, 5)]
    repeated = listed[1]
    assert repeated.create_time == recorded[0].create_time
    assert repeated.last_occur_time == recorded[-1].last_occur_time
    assert repeated.message == "Restore 4 failed"


async def test_concurrent_reports_of_one_error_are_counted_exactly(stub: Stub) -> None:
    """Calls at once share group-commit batches; every one is counted, retries none twice."""
    instance = str(uuid.uuid4())
    fault_ids = [str(uuid.uuid4()) for _ in range(200)]

    async def report(fault_id: str) -> None:
        await record(stub, instance, "Volume 12 is full", fault_id=fault_id)

    await asyncio.gather(*map(report, fault_ids))
    await asyncio.gather(*map(report, fault_ids[:50]))  # retries
    latest = await stub.GetLatestFault(pb.GetLatestFaultRequest(instance_id=instance))
    assert latest.fault.occurrence_count == 200
    assert latest.fault.id in fault_ids
