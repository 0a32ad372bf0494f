"""Schema migrations on each backend, on tables that already hold faults."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.ext.asyncio import AsyncEngine

from faultsvc.faults import utc_now
from faultsvc.storage.engine import create_engine
from faultsvc.storage.migrate import alembic_config, upgrade_to_head
from faultsvc.storage.store import FaultStore
from tests.support.databases import fresh_database
from tests.support.faults import new_fault, stored


@pytest.fixture
async def bare_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the fresh database, its schema not made yet."""
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


async def migrate_to(engine: AsyncEngine, revision: str) -> None:
    async with engine.begin() as connection:
        await connection.run_sync(lambda sync: command.upgrade(alembic_config(sync), revision))


async def downgrade_to(engine: AsyncEngine, revision: str) -> None:
    async with engine.begin() as connection:
        await connection.run_sync(lambda sync: command.downgrade(alembic_config(sync), revision))


async def columns_of(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        return await connection.run_sync(
            lambda sync: {c["name"] for c in sa.inspect(sync).get_columns("instance_faults")}
        )


def faults_of_an_older_server(count: int, *, prefix: str = "f") -> list[dict[str, object]]:
    """Rows as a server older than revision 0003 writes them, a second apart, oldest first."""
    start = utc_now() - timedelta(days=1)
    return [
        {
            "id": f"{prefix}-{n:05}",
            "instance_id": "i-1",
            "message": "m",
            "details": "",
            "created": start + timedelta(seconds=n),
            "updated": start,
        }
        for n in range(count)
    ]


async def write(engine: AsyncEngine, rows: list[dict[str, object]]) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            sa.insert(sa.table("instance_faults", *map(sa.column, rows[0]))), rows
        )


async def test_faults_stored_before_the_ids_existed_read_with_empty_ids(
    bare_engine: AsyncEngine,
) -> None:
    await migrate_to(bare_engine, "0001")
    now = utc_now()
    async with bare_engine.begin() as connection:
        await connection.execute(
            sa.text(
                "INSERT INTO instance_faults (id, instance_id, message, details, created, updated)"
                " VALUES ('f-1', 'i-1', 'boom', 'trace', :now, :now)"
            ),
            {"now": now},
        )
    await upgrade_to_head(bare_engine)
    store = FaultStore(bare_engine)
    latest = await store.latest_many({"i-1"})
    fault = latest["i-1"]
    assert (fault.id, fault.message) == ("f-1", "boom")
    assert (fault.request_id, fault.global_request_id, fault.trace_id) == ("", "", "")


async def test_the_ids_migration_goes_down_and_up_again(bare_engine: AsyncEngine) -> None:
    await upgrade_to_head(bare_engine)
    ids = {"request_id", "global_request_id", "trace_id"}
    assert ids <= await columns_of(bare_engine)
    await downgrade_to(bare_engine, "0001")
    assert not ids & await columns_of(bare_engine)
    await upgrade_to_head(bare_engine)
    assert ids <= await columns_of(bare_engine)


GROUPING = importlib.import_module("faultsvc.storage.migrations.versions.0003_repeats_grouped")


async def test_faults_stored_before_repeats_were_grouped_occurred_once_when_created(
    bare_engine: AsyncEngine,
) -> None:
    """More rows than a backfill batch, so the copy goes on from where each batch ended."""
    await migrate_to(bare_engine, "0002")
    rows = faults_of_an_older_server(GROUPING.BACKFILL_BATCH + 5)
    await write(bare_engine, rows)
    await upgrade_to_head(bare_engine)
    store = FaultStore(bare_engine)
    history = await store.history("i-1", 2000)
    assert len(history) == len(rows)
    assert all(f.last_occurred == f.created and f.occurrence_count == 1 for f in history)
    assert history[0].id == rows[-1]["id"]
    # Not counted into: a repeat with any fingerprint is a fault of its own.
    repeat = await stored(store, replace(new_fault(), fingerprint=""))
    assert repeat.occurrence_count == 1


async def test_the_grouping_migration_goes_down_and_up_again(bare_engine: AsyncEngine) -> None:
    await upgrade_to_head(bare_engine)
    grouping = {"fingerprint", "occurrence_count", "last_occurred", "live_fingerprint"}
    assert grouping <= await columns_of(bare_engine)
    await downgrade_to(bare_engine, "0002")
    assert not grouping & await columns_of(bare_engine)
    await upgrade_to_head(bare_engine)
    assert grouping <= await columns_of(bare_engine)


LAST_OCCURRED = importlib.import_module(
    "faultsvc.storage.migrations.versions.0005_last_occurred_defaults_to_created"
)


async def test_faults_older_servers_wrote_after_grouping_last_occurred_when_created(
    bare_engine: AsyncEngine,
) -> None:
    """Written between revisions 0003 and 0005, they had 0003's default, 1970: never the latest."""
    await migrate_to(bare_engine, "0004")
    rows = faults_of_an_older_server(LAST_OCCURRED.BATCH + 5)
    await write(bare_engine, rows)
    await upgrade_to_head(bare_engine)
    history = await FaultStore(bare_engine).history("i-1", 2000)
    assert len(history) == len(rows)
    assert all(fault.last_occurred == fault.created for fault in history)
    assert history[0].id == rows[-1]["id"]


async def test_faults_older_servers_write_on_mariadb_after_the_upgrade_take_their_place(
    tmp_path: Path,
) -> None:
    """On MariaDB the default of last_occurred is created: an older server's fault is the latest.

    (SQLite is one host's database, whose servers are upgraded together.)
    """
    with fresh_database("mariadb", tmp_path) as url:
        engine = create_engine(url)
        try:
            await upgrade_to_head(engine)
            store = FaultStore(engine)
            await stored(store, new_fault(created=utc_now() - timedelta(days=2)))
            (older_servers,) = faults_of_an_older_server(1, prefix="old")
            await write(engine, [older_servers])
            latest = (await store.latest_many(["i-1"]))["i-1"]
            assert latest.id == older_servers["id"]
            assert latest.last_occurred == latest.created == older_servers["created"]
        finally:
            await engine.dispose()


async def test_the_default_of_last_occurred_goes_back_and_forth(bare_engine: AsyncEngine) -> None:
    await upgrade_to_head(bare_engine)
    await downgrade_to(bare_engine, "0004")
    await upgrade_to_head(bare_engine)
    rows = faults_of_an_older_server(1)
    await write(bare_engine, rows)
    (fault,) = await FaultStore(bare_engine).history("i-1", 10)
    assert fault.id == rows[0]["id"]
