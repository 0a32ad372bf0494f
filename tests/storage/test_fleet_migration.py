"""Revision 0006, on each backend: occurrences get a recording time, the fleet its indexes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.ext.asyncio import AsyncEngine

from faultsvc.faults import utc_now
from faultsvc.storage.engine import create_engine
from faultsvc.storage.failover import DatabaseEndpoints
from faultsvc.storage.fleet import FleetStore
from faultsvc.storage.migrate import alembic_config, upgrade_to_head
from faultsvc.storage.store import FaultStore
from faultsvc.storage.tables import fault_occurrences
from tests.support.databases import fresh_database
from tests.support.faults import new_fault, server_made

NEVER = datetime(1970, 1, 1)
OLD_OCCURRENCE_COLUMNS = ["id", "fault_id", "occurred"]
FLEET_INDEXES = {
    "instance_faults": {
        "ix_instance_faults_last_occurred",
        "ix_instance_faults_source_last_occurred",
        "ix_instance_faults_host_last_occurred",
        "ix_instance_faults_source_host_last_occurred",
        "ix_instance_faults_fingerprint",
    },
    "fault_occurrences": {
        "ix_fault_occurrences_recorded",
        "ix_fault_occurrences_occurred_fault_id",
        "ix_fault_occurrences_fault_id_occurred",
    },
}


@pytest.fixture
async def bare_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


async def alembic(engine: AsyncEngine, action: str, revision: str) -> None:
    async with engine.begin() as connection:
        await connection.run_sync(
            lambda sync: getattr(command, action)(alembic_config(sync), revision)
        )


async def indexes_of(engine: AsyncEngine) -> dict[str, set[str]]:
    async with engine.connect() as connection:
        return await connection.run_sync(
            lambda sync: {
                table: {index["name"] or "" for index in sa.inspect(sync).get_indexes(table)}
                for table in FLEET_INDEXES
            }
        )


async def recorded_times(engine: AsyncEngine) -> dict[str, datetime]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            sa.select(fault_occurrences.c.id, fault_occurrences.c.recorded)
        )
        return {row.id: row.recorded for row in rows}


async def test_occurrences_kept_before_are_dated_before_any_feed(bare_engine: AsyncEngine) -> None:
    await alembic(bare_engine, "upgrade", "0005")
    store = FaultStore(bare_engine)
    async with bare_engine.begin() as connection:  # as a server of revision 0005 writes them
        await connection.execute(
            sa.insert(sa.table("fault_occurrences", *map(sa.column, OLD_OCCURRENCE_COLUMNS))),
            [{"id": f"o-{n}", "fault_id": "f-1", "occurred": utc_now()} for n in range(3)],
        )
    await upgrade_to_head(bare_engine)
    assert set((await recorded_times(bare_engine)).values()) == {NEVER}
    fleet = FleetStore(DatabaseEndpoints([bare_engine]))
    before = await fleet.feed_now()
    (fault,) = await store.record_batch(server_made([new_fault()]))
    recorded = await recorded_times(bare_engine)
    assert before <= recorded[fault.id] <= await fleet.feed_now()  # type: ignore[union-attr]


async def test_the_fleet_revision_goes_down_and_up_again(bare_engine: AsyncEngine) -> None:
    await upgrade_to_head(bare_engine)
    indexes = await indexes_of(bare_engine)
    for table, names in FLEET_INDEXES.items():
        assert names <= indexes[table]
    # The occurrences' single-column indexes made way for the pairs that start with them.
    assert not {"ix_fault_occurrences_occurred", "ix_fault_occurrences_fault_id"} & set(
        indexes["fault_occurrences"]
    )
    await alembic(bare_engine, "downgrade", "0005")
    indexes = await indexes_of(bare_engine)
    for table, names in FLEET_INDEXES.items():
        assert not names & indexes[table]
    assert {"ix_fault_occurrences_occurred", "ix_fault_occurrences_fault_id"} <= set(
        indexes["fault_occurrences"]
    )
    await upgrade_to_head(bare_engine)
    await FaultStore(bare_engine).record_batch(server_made([new_fault()]))


async def test_on_mariadb_servers_not_yet_upgraded_date_their_occurrences_too(
    tmp_path: Path,
) -> None:
    """The column defaults to the database's clock, in the UTC of the session."""
    with fresh_database("mariadb", tmp_path) as url:
        engine = create_engine(url)
        try:
            await upgrade_to_head(engine)
            fleet = FleetStore(DatabaseEndpoints([engine]))
            before = await fleet.feed_now()
            async with engine.begin() as connection:  # as a server of revision 0005 writes it
                await connection.execute(
                    sa.text(
                        "INSERT INTO fault_occurrences (id, fault_id, occurred)"
                        " VALUES ('o-old-server', 'f-1', :now)"
                    ),
                    {"now": utc_now()},
                )
            recorded = (await recorded_times(engine))["o-old-server"]
            assert before <= recorded <= await fleet.feed_now()
            assert abs(recorded - utc_now()) < timedelta(minutes=1)  # UTC, not local time
        finally:
            await engine.dispose()
