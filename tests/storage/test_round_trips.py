"""The statements a call costs the database, counted by MariaDB itself.

A round trip costs the server more CPU than the SQL costs the database, so
what each call sends is part of the contract with the database: a read is
one SELECT, a lone write an upsert, an insert and a COMMIT; no ROLLBACK
after a COMMIT, no ping before each statement. (MariaDB only: SQLite has no
round trips.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from faultsvc.storage.failover import DatabaseEndpoints
from faultsvc.storage.migrate import upgrade_to_head
from faultsvc.storage.store import FaultStore
from tests.support.databases import fresh_database
from tests.support.faults import new_fault, stored

COUNTERS = ("Com_select", "Com_insert", "Com_commit", "Com_rollback", "Com_begin")


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[DatabaseEndpoints]:
    """One connection for writes and one for reads, so their sessions count every statement."""
    with fresh_database("mariadb", tmp_path) as url:
        database = DatabaseEndpoints.connect([url], pool_size=1)
        try:
            await upgrade_to_head(database.current)
            yield database
        finally:
            await database.dispose()


async def session_counts(engine: AsyncEngine) -> dict[str, int]:
    """The session's statement counters, on the pool's one connection."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            sa.text("SHOW SESSION STATUS WHERE Variable_name IN :names").bindparams(
                sa.bindparam("names", expanding=True)
            ),
            {"names": list(COUNTERS)},
        )
        return {name: int(value) for name, value in rows}


def spent(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {name: after[name] - before[name] for name in COUNTERS if after[name] != before[name]}


async def test_a_read_is_one_select_and_nothing_else(database: DatabaseEndpoints) -> None:
    store = FaultStore(database)
    store.start()
    try:
        await stored(store, new_fault())
        before = await session_counts(database.current_reader)
        for _ in range(5):
            assert await store.latest("i-1") is not None
            assert await store.history("i-1", 10)
        after = await session_counts(database.current_reader)
    finally:
        await store.close()
    assert spent(before, after) == {"Com_select": 10}


async def test_a_lone_write_is_an_upsert_an_insert_and_a_commit(
    database: DatabaseEndpoints,
) -> None:
    store = FaultStore(database)
    store.start()
    try:
        await stored(store, new_fault(fingerprint="f"))  # the connection is made
        before = await session_counts(database.current)
        for _ in range(3):
            await stored(store, new_fault(fingerprint="f"))  # counted into the first
        await stored(store, new_fault(fingerprint="g"))  # a fault of its own
        after = await session_counts(database.current)
    finally:
        await store.close()
    # Each: the upsert returning what it wrote, the occurrence, the COMMIT; and
    # the ROLLBACK that ended the connection of the first count.
    assert spent(before, after) == {"Com_insert": 8, "Com_commit": 4, "Com_rollback": 1}
