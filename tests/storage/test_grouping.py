"""Repeats of a fault counted into it, exactly, on each backend: SQLite and MariaDB."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from faultsvc.errors import AlreadyExists
from faultsvc.faults import StoredFault, utc_now
from faultsvc.storage.engine import create_engine
from faultsvc.storage.store import FaultStore
from faultsvc.storage.tables import fault_occurrences, instance_faults
from tests.support.faults import caller_made, new_fault, server_made, stored


async def count_rows(engine: AsyncEngine, table: sa.Table) -> int:
    async with engine.connect() as connection:
        return await connection.scalar(sa.select(sa.func.count()).select_from(table)) or 0


async def test_a_repeat_counts_into_the_fault_and_shows_its_latest_occurrence(
    store: FaultStore,
) -> None:
    start = utc_now() - timedelta(minutes=10)
    first = await stored(store, new_fault(fingerprint="f", created=start, message="first"))
    again = await stored(
        store,
        new_fault(fingerprint="f", created=start + timedelta(minutes=1), message="second"),
    )
    latest = await stored(
        store,
        new_fault(
            fingerprint="f", created=start + timedelta(minutes=2), message="third", host="tm-9"
        ),
    )
    assert again.id == latest.id == first.id
    assert (latest.occurrence_count, latest.created) == (3, start)
    assert latest.last_occurred == start + timedelta(minutes=2)
    assert (latest.message, latest.host) == ("third", "tm-9")
    assert await store.history("i-1", 10) == [latest]


async def test_a_late_report_of_an_older_occurrence_counts_but_keeps_the_latest_text(
    store: FaultStore,
) -> None:
    now = utc_now()
    await stored(store, new_fault(fingerprint="f", created=now, message="latest"))
    older = now - timedelta(hours=1)
    fault = await stored(store, new_fault(fingerprint="f", created=older, message="older"))
    assert (fault.occurrence_count, fault.message) == (2, "latest")
    assert (fault.created, fault.last_occurred) == (older, now)


async def test_repeats_in_one_batch_count_each_and_keep_the_newest_text(
    store: FaultStore,
) -> None:
    now = utc_now()
    batch = [
        new_fault(fingerprint="f", created=now + timedelta(seconds=s), message=f"at {s}")
        for s in (2, 5, 1, 3)
    ]
    results = await store.record_batch(server_made(batch))
    (fault,) = await store.history("i-1", 10)
    assert all(result == fault for result in results)
    assert (fault.occurrence_count, fault.message, fault.id) == (4, "at 5", batch[0].id)
    assert (fault.created, fault.last_occurred) == (now + timedelta(seconds=1), batch[1].created)


async def test_other_fingerprints_and_instances_are_other_faults(store: FaultStore) -> None:
    await store.record_batch(
        server_made(
            [
                new_fault("i-1", fingerprint="f"),
                new_fault("i-1", fingerprint="g"),
                new_fault("i-2", fingerprint="f"),
            ]
        )
    )
    assert [f.occurrence_count for f in await store.history("i-1", 10)] == [1, 1]
    assert [f.occurrence_count for f in await store.history("i-2", 10)] == [1]


async def test_a_cleared_fault_is_not_counted_into(store: FaultStore) -> None:
    cleared = await stored(store, new_fault(fingerprint="f"))
    assert await store.clear("i-1") == 1
    fresh = await stored(store, new_fault(fingerprint="f"))
    assert fresh.id != cleared.id
    assert fresh.occurrence_count == 1
    assert await store.clear("i-1") == 1  # and clearing the second works beside the first


async def test_a_fault_an_older_server_cleared_lets_its_fingerprint_go(
    store: FaultStore, engine: AsyncEngine
) -> None:
    """Servers older than revision 0003 clear a fault without letting its fingerprint go."""
    cleared = await stored(store, new_fault(fingerprint="f", message="before"))
    async with engine.begin() as connection:
        await connection.execute(
            sa.update(instance_faults).values(deleted=True, deleted_at=utc_now())
        )
    batch = [new_fault(fingerprint="f", message=f"after {n}") for n in range(3)]
    results = await store.record_batch(server_made(batch))
    (fresh,) = await store.history("i-1", 10)
    assert all(result == fresh for result in results)
    assert (fresh.id, fresh.occurrence_count, fresh.message) == (batch[0].id, 3, "after 2")
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                sa.select(instance_faults).where(instance_faults.c.id == cleared.id)
            )
        ).one()
    assert (row.occurrence_count, row.message, row.deleted) == (1, "before", True)
    assert row.live_fingerprint is None
    assert (await stored(store, new_fault(fingerprint="f"))).occurrence_count == 4


async def test_latest_and_history_follow_the_latest_occurrence(store: FaultStore) -> None:
    now = utc_now()
    old = await stored(store, new_fault(fingerprint="old", created=now - timedelta(minutes=5)))
    newer = await stored(store, new_fault(fingerprint="new", created=now - timedelta(minutes=1)))
    assert (await store.latest_many(["i-1"]))["i-1"].id == newer.id
    repeated = await stored(store, new_fault(fingerprint="old", created=now))
    assert repeated.id == old.id
    assert (await store.latest_many(["i-1"]))["i-1"].id == old.id
    assert [f.id for f in await store.history("i-1", 10)] == [old.id, newer.id]


async def test_a_retried_occurrence_is_never_counted_twice(
    store: FaultStore, engine: AsyncEngine
) -> None:
    first = new_fault(fingerprint="f")
    repeat = new_fault(fingerprint="f")
    await stored(store, first, caller_made_id=True)
    await stored(store, repeat, caller_made_id=True)
    for retry in (first, repeat, replace(repeat, message="retried")):
        fault = await stored(store, retry, caller_made_id=True)
        assert (fault.id, fault.occurrence_count) == (first.id, 2)
    results = await store.record_batch([caller_made(repeat), caller_made(repeat)])
    assert [r.occurrence_count for r in results if isinstance(r, StoredFault)] == [2, 2]
    assert await count_rows(engine, fault_occurrences) == 2


async def test_an_occurrence_id_of_another_instance_already_exists(store: FaultStore) -> None:
    repeat = new_fault(fingerprint="f")
    await stored(store, new_fault(fingerprint="f"))
    await stored(store, repeat, caller_made_id=True)
    (result,) = await store.record_batch([caller_made(replace(repeat, instance_id="i-2"))])
    assert isinstance(result, AlreadyExists)


async def test_concurrent_hosts_never_lose_a_count_or_split_a_fault(
    database_url: str, engine: AsyncEngine
) -> None:
    """Four servers, each with its own pool, record the same faults at once, in batches."""
    hosts = [FaultStore(create_engine(database_url)) for _ in range(4)]
    per_host, fingerprints = 60, ("f", "g", "h")

    async def record(store: FaultStore, host: int) -> None:
        for start in range(0, per_host, 10):
            batch = [
                new_fault(fingerprint=fingerprints[n % 3], message=f"from {host}")
                for n in range(start, start + 10)
            ]
            results = await store.record_batch(server_made(batch))
            assert all(isinstance(result, StoredFault) for result in results)

    try:
        await asyncio.gather(*(record(store, host) for host, store in enumerate(hosts)))
    finally:
        for store in hosts:
            await store.database.dispose()
    history = await FaultStore(engine).history("i-1", 10)
    assert sorted(f.fingerprint for f in history) == sorted(fingerprints)
    assert sum(f.occurrence_count for f in history) == 4 * per_host
    assert {f.occurrence_count for f in history} == {4 * per_host // 3}
    assert await count_rows(engine, fault_occurrences) == 4 * per_host


@contextmanager
def statements_of(engine: AsyncEngine) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(args[2])

    sa.event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        sa.event.remove(engine.sync_engine, "before_cursor_execute", record)


async def test_a_batch_is_a_few_statements_whatever_its_size(
    store: FaultStore, engine: AsyncEngine
) -> None:
    await store.record_batch(server_made(new_fault(fingerprint=f"f{n % 7}") for n in range(7)))
    batch = [new_fault(f"i-{n % 50}", fingerprint=f"f{n % 7}") for n in range(400)]
    with statements_of(engine) as statements:
        await store.record_batch([*server_made(batch[:-1]), caller_made(batch[-1])])
    # Looked up, upserted (and read back where an upsert cannot return what it
    # wrote), occurrences inserted; the driver may add none.
    assert len(statements) == (3 if engine.dialect.insert_returning else 4), statements
    assert await count_rows(engine, fault_occurrences) == 407


async def test_purge_bounds_occurrences(store: FaultStore, engine: AsyncEngine) -> None:
    now = utc_now()
    old = now - timedelta(days=10)
    await store.record_batch(
        server_made(
            [
                *(new_fault("i-1", fingerprint="f", created=old) for _ in range(3)),
                new_fault("i-1", fingerprint="f", created=now),
                *(new_fault("i-2", fingerprint="f", created=now) for _ in range(2)),
            ]
        )
    )
    assert await store.clear("i-2") == 1
    assert await store.purge(now + timedelta(seconds=1) - timedelta(days=1)) == 0
    assert await count_rows(engine, fault_occurrences) == 3  # the old ones of i-1 went
    (fault,) = await store.history("i-1", 10)
    assert fault.occurrence_count == 4  # the count stays
    assert await store.purge(utc_now() + timedelta(seconds=1)) == 1
    assert await count_rows(engine, fault_occurrences) == 0
    assert await count_rows(engine, instance_faults) == 1
