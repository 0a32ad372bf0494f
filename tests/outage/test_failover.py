"""Several endpoints: the first is used while it answers, the next when it does not.

Two independent databases stand in for two nodes of a cluster here, so that
the rows show which endpoint each write went to.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from faultsvc.config import Settings, load_settings
from faultsvc.storage.failover import DatabaseEndpoints
from faultsvc.storage.migrate import upgrade_to_head
from faultsvc.v1 import fault_service_pb2 as pb
from tests.support.calls import stub_of
from tests.support.databases import fresh_mariadb_database, mysql_connection, writes_locked
from tests.support.load import HealthWatch
from tests.support.mariadb import PrivateMariaDB
from tests.support.servers import ServerProcess, running_server


def test_one_url_is_one_endpoint() -> None:
    settings = Settings(database_url="mysql+aiomysql://faultsvc:s3cret@db1:3306/faultsvc")
    assert settings.database_urls == ["mysql+aiomysql://faultsvc:s3cret@db1:3306/faultsvc"]


def test_comma_separated_urls_are_endpoints_in_order_of_preference() -> None:
    settings = Settings(
        database_url="mysql+aiomysql://faultsvc:a,b@db1/faultsvc?ssl_ca=/x,"
        " mysql+aiomysql://faultsvc:a,b@db2:3307/faultsvc"
    )
    assert settings.database_urls == [
        "mysql+aiomysql://faultsvc:a,b@db1/faultsvc?ssl_ca=/x",
        "mysql+aiomysql://faultsvc:a,b@db2:3307/faultsvc",
    ]


def test_a_config_file_may_list_the_urls(tmp_path: Path) -> None:
    config = tmp_path / "faultsvc.toml"
    config.write_text('database_url = ["mysql+aiomysql://db1/faultsvc", "mysql+aiomysql://db2/f"]')
    settings = load_settings(config)
    assert settings.database_urls == ["mysql+aiomysql://db1/faultsvc", "mysql+aiomysql://db2/f"]


def test_several_sqlite_files_are_refused() -> None:
    with pytest.raises(ValueError, match="one endpoint"):
        Settings(database_url="sqlite+aiosqlite:///a.db,sqlite+aiosqlite:///b.db")


@pytest.fixture
def shared_url() -> Iterator[str]:
    with fresh_mariadb_database() as url:
        yield url


def ids_in(url: str) -> set[str]:
    with mysql_connection(url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT id FROM instance_faults")
        return {row[0] for row in cursor.fetchall()}


async def migrate(*urls: str) -> None:
    for url in urls:
        database = DatabaseEndpoints.connect([url])
        try:
            await upgrade_to_head(database.current)
        finally:
            await database.dispose()


async def test_writes_fail_over_to_the_next_endpoint_and_come_back_to_the_first(
    mariadb: PrivateMariaDB, private_url: str, shared_url: str, tmp_path: Path
) -> None:
    await migrate(private_url, shared_url)
    with ServerProcess(
        f"{private_url},{shared_url}",
        extra_args=["--workers", "1"],
        env={"FAULTSVC_DATABASE_TIMEOUT_SECONDS": "2", "FAULTSVC_HEALTH_CHECK_SECONDS": "0.25"},
        log_path=tmp_path / "faultsvc.log",
    ) as server:
        health = HealthWatch(server.target)
        watching = asyncio.create_task(health.run())
        async with stub_of(server.target) as stub:

            async def record(message: str) -> str:
                request = pb.RecordFaultRequest(instance_id="i-1", message=message)
                return (await stub.RecordFault(request, timeout=10)).fault.id

            before = await record("before")
            await asyncio.to_thread(mariadb.stop)
            down = time.monotonic()
            during = [await record(f"during {n}") for n in range(5)]
            await asyncio.to_thread(mariadb.start)
            back = time.monotonic()
            after = await record("after")
            while after not in ids_in(private_url):  # once the probe has seen the first again
                assert time.monotonic() - back < 5, "still writing to the second endpoint"
                after = await record("after")
            went_back = time.monotonic() - back
        health.stop.set()
        await watching

    print(f"\nback on the first endpoint {went_back:.2f} s after it returned")
    assert before in ids_in(private_url)
    assert set(during) <= ids_in(shared_url)
    assert health.statuses_between(down, back) == {"SERVING"}


async def two_endpoints(first_url: str, second_url: str) -> Settings:
    """Settings for a server on both databases, migrated, with a short timeout and no probe."""
    await migrate(first_url, second_url)
    return Settings(
        listen="127.0.0.1:0",
        database_url=f"{first_url},{second_url}",
        database_timeout_seconds=1.0,
        health_check_seconds=60,  # the periodic probe plays no part
        grace_seconds=1,
    )


async def test_a_lock_wait_is_unavailable_but_never_a_failover(
    private_url: str, shared_url: str
) -> None:
    """A slow endpoint is not a dead one: writes stay on it, as on a Galera node under load."""
    async with (
        running_server(await two_endpoints(private_url, shared_url)) as server,
        stub_of(server.target) as stub,
    ):
        request = pb.RecordFaultRequest(instance_id="i-1", message="m")
        with writes_locked(private_url):
            for _ in range(3):
                with pytest.raises(grpc.aio.AioRpcError) as failure:
                    await stub.RecordFault(request, timeout=10)
                assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
            await asyncio.sleep(1.5)  # the endpoint's ping has answered by now
        after = (await stub.RecordFault(request, timeout=10)).fault.id
    assert after in ids_in(private_url)
    assert not ids_in(shared_url)


async def test_a_frozen_endpoint_is_left_for_the_next_one_without_waiting_for_the_probe(
    mariadb: PrivateMariaDB, private_url: str, shared_url: str
) -> None:
    settings = await two_endpoints(private_url, shared_url)
    async with running_server(settings) as server, stub_of(server.target) as stub:
        request = pb.RecordFaultRequest(instance_id="i-1", message="m")
        await stub.RecordFault(request, timeout=10)
        mariadb.freeze()
        try:
            # UNAVAILABLE, or already written to the next endpoint when the
            # ping failed within the call's own timeout.
            with contextlib.suppress(grpc.aio.AioRpcError):
                await stub.RecordFault(request, timeout=10)
            await asyncio.sleep(1.5)  # the ping's own timeout
            moved = (await stub.RecordFault(request, timeout=10)).fault.id
        finally:
            mariadb.thaw()
    assert moved in ids_in(shared_url)
