"""A stalled database under load: a bounded queue, and no write for a caller who gave up."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
import sqlalchemy as sa
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from faultsvc.config import Settings
from faultsvc.v1 import fault_service_pb2 as pb
from tests.support.calls import stub_of
from tests.support.mariadb import PrivateMariaDB
from tests.support.servers import running_server

WAITING = 5


def retry_delay_of(error: grpc.aio.AioRpcError) -> float | None:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status else ():
        retry_info = error_details_pb2.RetryInfo()
        if detail.Unpack(retry_info):
            return float(retry_info.retry_delay.ToNanoseconds()) / 1e9
    return None


def stored_messages(mariadb: PrivateMariaDB, url: str) -> list[str]:
    with mariadb.connect(sa.make_url(url).database) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT message FROM instance_faults")
        return sorted(row[0] for row in cursor.fetchall())


async def test_a_stalled_database_turns_calls_away_at_once_beyond_the_queue_bound(
    mariadb: PrivateMariaDB, private_url: str
) -> None:
    settings = Settings(
        listen="127.0.0.1:0",
        database_url=private_url,
        database_timeout_seconds=5.0,
        max_waiting_calls=WAITING,
        grace_seconds=1,
    )
    async with running_server(settings) as server, stub_of(server.target) as stub:
        await stub.RecordFault(pb.RecordFaultRequest(instance_id="i-1", message="before"))
        mariadb.freeze()
        try:

            def recording(message: str) -> asyncio.Future[pb.RecordFaultResponse]:
                request = pb.RecordFaultRequest(instance_id="i-1", message=message)
                return asyncio.ensure_future(stub.RecordFault(request))

            in_flight = recording("in flight")
            await asyncio.sleep(0.3)  # its batch now waits on the frozen database
            started = time.monotonic()
            # The first WAITING of these wait for the next batch; the others cannot.
            later = [recording(f"later {n}") for n in range(2 * WAITING)]
            done, _ = await asyncio.wait(later, timeout=1.0)
            turned_away = [call.exception() for call in done]
            assert len(turned_away) == WAITING, "calls beyond the bound were not refused at once"
            assert time.monotonic() - started < 1.5
            for error in turned_away:
                assert isinstance(error, grpc.aio.AioRpcError)
                assert error.code() == grpc.StatusCode.UNAVAILABLE
                assert retry_delay_of(error)
            await asyncio.gather(in_flight, *later, return_exceptions=True)
        finally:
            mariadb.thaw()


async def test_writes_whose_callers_gave_up_while_waiting_are_never_stored(
    mariadb: PrivateMariaDB, private_url: str
) -> None:
    settings = Settings(
        listen="127.0.0.1:0",
        database_url=private_url,
        database_timeout_seconds=3.0,
        grace_seconds=1,
    )
    async with running_server(settings) as server, stub_of(server.target) as stub:
        await stub.RecordFault(pb.RecordFaultRequest(instance_id="i-1", message="before"))
        mariadb.freeze()
        try:
            in_flight = asyncio.ensure_future(
                stub.RecordFault(pb.RecordFaultRequest(instance_id="i-1", message="first"))
            )
            await asyncio.sleep(0.2)  # its batch is on the frozen connection now
            for n in range(3):
                with pytest.raises(grpc.aio.AioRpcError) as gave_up:
                    await stub.RecordFault(
                        pb.RecordFaultRequest(instance_id="i-1", message=f"gave up {n}"),
                        timeout=0.3,
                    )
                assert gave_up.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        finally:
            mariadb.thaw()
        await asyncio.gather(in_flight, return_exceptions=True)
        after = pb.RecordFaultRequest(instance_id="i-1", message="after")
        await stub.RecordFault(after, timeout=10)
    assert set(stored_messages(mariadb, private_url)) <= {"before", "first", "after"}
