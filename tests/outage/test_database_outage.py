"""The database goes away under load and comes back: callers are told at once, and nobody hangs.

The MariaDB server here is the tests' own (see conftest.py): it is really
stopped (SIGTERM), killed (SIGKILL) or frozen (SIGSTOP: connections stay
open and nothing answers, as behind a dead network link), then brought back.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa

from faultsvc.config import Settings
from faultsvc.storage.engine import create_engine
from faultsvc.v1 import fault_service_pb2 as pb
from tests.support.calls import stub_of
from tests.support.databases import writes_locked
from tests.support.load import HealthWatch, Load
from tests.support.mariadb import PrivateMariaDB
from tests.support.servers import MakeServer, ServerProcess, running_server

DATABASE_TIMEOUT = 2.0
SERVER_ENV = {
    "FAULTSVC_DATABASE_TIMEOUT_SECONDS": str(DATABASE_TIMEOUT),
    "FAULTSVC_HEALTH_CHECK_SECONDS": "0.25",
}
OUTAGE_SECONDS = 4.0
# A write waits for the batch in flight before its own: two timeouts, and some slack.
SLOWEST_FAILURE = 2 * DATABASE_TIMEOUT + 1.0
RECOVERY_BOUND = 3.0


def take_down(mariadb: PrivateMariaDB, how: str) -> None:
    {"stop": mariadb.stop, "kill": mariadb.kill, "freeze": mariadb.freeze}[how]()


def bring_back(mariadb: PrivateMariaDB, how: str) -> None:
    if how == "freeze":
        mariadb.thaw()
    else:
        mariadb.start()


def stored_ids(mariadb: PrivateMariaDB, url: str) -> set[str]:
    with mariadb.connect(sa.make_url(url).database) as connection, connection.cursor() as cursor:
        # Every recorded occurrence, repeats of a fault included.
        cursor.execute("SELECT id FROM fault_occurrences")
        return {row[0] for row in cursor.fetchall()}


@pytest.mark.parametrize("outage", ["stop", "kill", "freeze"])
async def test_calls_fail_fast_while_the_database_is_down_and_recover_without_a_restart(
    outage: str, mariadb: PrivateMariaDB, private_url: str, tmp_path: Path
) -> None:
    with ServerProcess(
        private_url,
        extra_args=["--workers", "1"],
        env=SERVER_ENV,
        log_path=tmp_path / "faultsvc.log",
    ) as server:
        load = Load([server.target], callers=8)
        health = HealthWatch(server.target)
        running = [asyncio.create_task(load.run()), asyncio.create_task(health.run())]
        try:
            await asyncio.sleep(1.0)
            down = time.monotonic()
            await asyncio.to_thread(take_down, mariadb, outage)
            await asyncio.sleep(OUTAGE_SECONDS)
            await asyncio.to_thread(bring_back, mariadb, outage)
            back = time.monotonic()
            async with asyncio.timeout(10):
                serving_again = await health.wait_for("SERVING")
            await asyncio.sleep(1.0)
        finally:
            load.stop.set()
            health.stop.set()
            await asyncio.gather(*running)

    failed = load.failed
    print(
        f"\n{outage}: {len(load.calls) - len(failed)} calls ok, {len(failed)} failed "
        f"({dict(load.codes())}); slowest failure {max(c.seconds for c in failed):.2f} s; "
        f"first write ok {load.first_ok_after(back, 'RecordFault'):.2f} s and first read ok "
        f"{load.first_ok_after(back, 'GetLatestFault'):.2f} s after the database was back; "
        f"SERVING again after {serving_again - back:.2f} s"
    )
    assert failed, "the outage went unnoticed"
    assert {call.code for call in failed} == {grpc.StatusCode.UNAVAILABLE}
    assert max(call.seconds for call in load.calls) < SLOWEST_FAILURE
    assert "NOT_SERVING" in health.statuses_between(down, back)
    # Both the group-commit writer and the coalesced reader kept running.
    assert load.first_ok_after(back, "RecordFault") < RECOVERY_BOUND
    assert load.first_ok_after(back, "GetLatestFault") < RECOVERY_BOUND
    assert load.acknowledged <= stored_ids(mariadb, private_url)


async def test_pooled_connections_are_replaced_after_a_database_restart(
    mariadb: PrivateMariaDB, private_url: str
) -> None:
    """Every connection in the pool died with the server; none of them fails a query."""
    engine = create_engine(private_url, pool_size=4)
    try:

        async def connection_used() -> object:
            """The driver's connection a query ran on (held, so that the four are different)."""
            async with engine.connect() as connection:
                await connection.execute(sa.select(sa.func.connection_id()))
                await asyncio.sleep(0.1)
                raw = await connection.get_raw_connection()
                return raw.driver_connection

        before = await asyncio.gather(*(connection_used() for _ in range(4)))
        assert engine.pool.checkedin() == 4  # type: ignore[attr-defined]
        await asyncio.to_thread(mariadb.stop)
        await asyncio.to_thread(mariadb.start)
        after = await asyncio.gather(*(connection_used() for _ in range(4)))
        assert not any(new is old for new in after for old in before)
    finally:
        await engine.dispose()


async def test_a_frozen_database_cannot_hold_a_call_past_the_timeout(
    mariadb: PrivateMariaDB, private_url: str
) -> None:
    """A server that keeps the connection open and never answers: UNAVAILABLE, then recovery.

    The statements cut by the timeout lose their connections, so none of them
    goes back to the pool with an answer still on the way.
    """
    settings = Settings(
        listen="127.0.0.1:0",
        database_url=private_url,
        database_timeout_seconds=1.0,
        health_check_seconds=60,
        grace_seconds=1,
    )
    async with running_server(settings) as server, stub_of(server.target) as stub:
        first = await stub.RecordFault(pb.RecordFaultRequest(instance_id="i-1", message="a"))
        mariadb.freeze()
        try:
            for call in (
                stub.RecordFault(pb.RecordFaultRequest(instance_id="i-1", message="b")),
                stub.GetLatestFault(pb.GetLatestFaultRequest(instance_id="i-1")),
                stub.ListFaults(pb.ListFaultsRequest(instance_id="i-1")),
            ):
                started = time.monotonic()
                with pytest.raises(grpc.aio.AioRpcError) as failure:
                    await call
                assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
                assert time.monotonic() - started < 2 * settings.database_timeout_seconds + 1
        finally:
            mariadb.thaw()
        latest = await stub.GetLatestFault(pb.GetLatestFaultRequest(instance_id="i-1"))
        history = await stub.ListFaults(pb.ListFaultsRequest(instance_id="i-1"))
        third = await stub.RecordFault(pb.RecordFaultRequest(instance_id="i-1", message="c"))
    assert latest.fault.id == first.fault.id
    assert [fault.message for fault in history.faults] == ["a"]
    assert third.fault.message == "c"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_locked_sqlite_file_makes_writes_unavailable_not_stuck(
    make_server: MakeServer, database_url: str
) -> None:
    """SQLite has no server to lose; what stops its writes is another process's lock."""
    server = await make_server(database_timeout_seconds=1.0, grace_seconds=1)
    async with stub_of(server.target) as stub:
        first = await stub.RecordFault(pb.RecordFaultRequest(instance_id="i-1", message="a"))
        with writes_locked(database_url):
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await stub.RecordFault(pb.RecordFaultRequest(instance_id="i-1", message="b"))
            assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() - started < 3.0
            # Readers are not held up by a writer (WAL).
            latest = await stub.GetLatestFault(pb.GetLatestFaultRequest(instance_id="i-1"))
            assert latest.fault.id == first.fault.id
        second = await stub.RecordFault(pb.RecordFaultRequest(instance_id="i-1", message="b"))
        latest = await stub.GetLatestFault(pb.GetLatestFaultRequest(instance_id="i-1"))
    assert latest.fault.id == second.fault.id
