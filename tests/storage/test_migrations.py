"""Schema migrations on each backend, on tables that already hold faults."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.ext.asyncio import AsyncEngine

from faultsvc.faults import utc_now
from faultsvc.storage.engine import create_engine
from faultsvc.storage.migrate import alembic_config, upgrade_to_head
from faultsvc.storage.store import FaultStore
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
    start = utc_now() - timedelta(days=1)
    rows = [
        {
            "id": f"f-{n:05}",
            "instance_id": "i-1",
            "message": "m",
            "details": "",
            "created": start + timedelta(seconds=n),
            "updated": start,
        }
        for n in range(GROUPING.BACKFILL_BATCH + 5)
    ]
    async with bare_engine.begin() as connection:
        await connection.execute(
            sa.insert(sa.table("instance_faults", *map(sa.column, rows[0]))), rows
        )
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
