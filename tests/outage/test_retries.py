"""Transactions that fail in a way that is safe to retry are retried, and only those.

A COMMIT whose answer is lost leaves the outcome unknown: a fault is looked
up before it is written again, so it is stored once and acknowledged. A
transaction rolled back by a conflict (here a lock wait timeout) runs again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from faultsvc.errors import Unavailable
from faultsvc.faults import StoredFault
from faultsvc.storage.engine import create_engine
from faultsvc.storage.migrate import upgrade_to_head
from faultsvc.storage.store import FaultStore
from faultsvc.storage.tables import instance_faults
from tests.support.databases import fresh_mariadb_database
from tests.support.faults import caller_made, new_fault, server_made
from tests.support.mariadb import PrivateMariaDB
from tests.support.proxy import CommitAnswerLosingProxy


@dataclass
class Proxied:
    store: FaultStore
    engine: AsyncEngine
    proxy: CommitAnswerLosingProxy


@pytest.fixture
async def proxied() -> AsyncIterator[Proxied]:
    """A store whose connections to a fresh MariaDB database go through the proxy."""
    with fresh_mariadb_database() as url:
        direct = make_url(url)
        proxy = await CommitAnswerLosingProxy(
            direct.host or "127.0.0.1", direct.port or 3306
        ).start()
        proxied_url = direct.set(host="127.0.0.1", port=proxy.port)
        engine = create_engine(proxied_url.render_as_string(hide_password=False))
        try:
            await upgrade_to_head(engine)
            yield Proxied(FaultStore(engine), engine, proxy)
        finally:
            await engine.dispose()
            await proxy.close()


async def count_rows(engine: AsyncEngine, ids: list[str]) -> int:
    async with engine.connect() as connection:
        return (
            await connection.scalar(sa.select(sa.func.count()).where(instance_faults.c.id.in_(ids)))
        ) or 0


async def test_a_batch_whose_commit_answer_is_lost_is_stored_once_and_acknowledged(
    proxied: Proxied,
) -> None:
    """Ids made by the server before the batch are looked up on the retry too."""
    batch = [new_fault("i-1"), new_fault("i-2"), new_fault("i-3")]
    proxied.proxy.lose_next_commit_answers(1)
    results = await proxied.store.record_batch([*server_made(batch[:2]), caller_made(batch[2])])
    assert proxied.proxy.lost_answers == 1
    assert all(isinstance(result, StoredFault) for result in results)
    assert [result.id for result in results] == [fault.id for fault in batch]  # type: ignore[union-attr]
    assert await count_rows(proxied.engine, [fault.id for fault in batch]) == 3


async def test_repeats_whose_commit_answer_is_lost_are_counted_once(proxied: Proxied) -> None:
    """The occurrences of the lost batch are found on the retry, and not counted again."""
    first = await proxied.store.record_batch(server_made([new_fault("i-1", fingerprint="f")]))
    repeats = [new_fault("i-1", fingerprint="f") for _ in range(3)]
    proxied.proxy.lose_next_commit_answers(1)
    results = await proxied.store.record_batch(server_made(repeats))
    assert proxied.proxy.lost_answers == 1
    (fault,) = await proxied.store.history("i-1", 10)
    assert (fault.id, fault.occurrence_count) == (first[0].id, 4)  # type: ignore[union-attr]
    assert results == [fault] * 3


async def test_a_clear_whose_commit_answer_is_lost_is_unavailable_and_not_repeated(
    proxied: Proxied,
) -> None:
    """A second run would find nothing left to clear and answer 0: the caller is told instead."""
    await proxied.store.record_batch(server_made([new_fault("i-1"), new_fault("i-1")]))
    proxied.proxy.lose_next_commit_answers(1)
    with pytest.raises(Unavailable):
        await proxied.store.clear("i-1")
    assert proxied.proxy.lost_answers == 1
    assert await proxied.store.latest_many({"i-1"}) == {}
    assert await proxied.store.clear("i-1") == 0


async def test_a_transaction_rolled_back_by_a_lock_wait_timeout_runs_again(
    mariadb: PrivateMariaDB, private_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with mariadb.connect() as admin, admin.cursor() as cursor:
        cursor.execute("SET GLOBAL innodb_lock_wait_timeout = 1")
    engine = create_engine(private_url)
    try:
        await upgrade_to_head(engine)
        store = FaultStore(engine)
        await store.record_batch(
            server_made([new_fault("i-1"), replace(new_fault("i-1"), message="again")])
        )
        holder = mariadb.connect(make_url(private_url).database)
        with holder.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute("UPDATE instance_faults SET host = 'tm-2' WHERE instance_id = 'i-1'")

        def release_later() -> None:
            time.sleep(1.5)
            holder.commit()
            holder.close()

        releasing = asyncio.create_task(asyncio.to_thread(release_later))
        started = time.monotonic()
        with caplog.at_level(logging.INFO, logger="faultsvc.storage.transactions"):
            cleared = await store.clear("i-1")
        waited = time.monotonic() - started
        await releasing
    finally:
        await engine.dispose()
    assert cleared == 2
    assert waited > 1.0
    assert "MySQL error 1205" in caplog.text
