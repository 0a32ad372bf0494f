"""The store and its batchers on each backend: SQLite and MariaDB."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from faultsvc.errors import AlreadyExists, FaultServiceError
from faultsvc.faults import Cursor, StoredFault, utc_now
from faultsvc.storage.batching import Batcher
from faultsvc.storage.migrate import upgrade_to_head
from faultsvc.storage.store import FaultStore, Recording
from faultsvc.storage.tables import instance_faults
from tests.support.faults import caller_made, new_fault, server_made, stored


async def test_upgrade_is_idempotent(engine: AsyncEngine) -> None:
    await upgrade_to_head(engine)
    async with engine.connect() as connection:
        columns = await connection.run_sync(
            lambda sync: {c["name"] for c in sa.inspect(sync).get_columns("instance_faults")}
        )
    assert columns == {c.name for c in instance_faults.columns}


async def test_times_keep_microseconds(store: FaultStore) -> None:
    base = utc_now().replace(microsecond=0)
    faults = [new_fault(created=base + timedelta(microseconds=n)) for n in (3, 1, 2)]
    await store.record_batch(server_made(faults))
    history = await store.history("i-1", 10)
    assert [f.created.microsecond for f in history] == [3, 2, 1]


async def test_a_batch_is_one_commit_with_per_fault_results(store: FaultStore) -> None:
    taken = await stored(store, new_fault("i-1"), caller_made_id=True)
    batch = [
        (new_fault("i-2"), False),
        caller_made(replace(new_fault("i-3"), id=taken.id)),  # another instance's id
        caller_made(replace(new_fault("i-1", message="retry"), id=taken.id)),
    ]
    results = await store.record_batch(batch)
    assert isinstance(results[0], StoredFault)
    assert isinstance(results[1], AlreadyExists)
    assert results[2] == taken


async def test_the_same_new_id_twice_in_one_batch_is_stored_once(store: FaultStore) -> None:
    fault = new_fault()
    first, second = await store.record_batch(
        [caller_made(fault), caller_made(replace(fault, message="dup"))]
    )
    assert first == second
    assert len(await store.history("i-1", 10)) == 1


async def test_latest_for_many_instances_in_one_query(store: FaultStore) -> None:
    now = utc_now()
    await store.record_batch(
        server_made(
            new_fault(f"i-{n}", created=now - timedelta(seconds=s))
            for n in range(50)
            for s in (3, 1, 2)
        )
    )
    latest = await store.latest_many({f"i-{n}" for n in range(60)})
    assert set(latest) == {f"i-{n}" for n in range(50)}
    assert all(f.created == now - timedelta(seconds=1) for f in latest.values())


async def test_latest_breaks_ties_by_the_greater_id(store: FaultStore) -> None:
    same_time = utc_now()
    faults = [new_fault(created=same_time) for _ in range(3)]
    await store.record_batch(server_made(faults))
    assert (await store.latest_many(["i-1"]))["i-1"].id == max(f.id for f in faults)
    assert (await store.history("i-1", 1))[0].id == max(f.id for f in faults)


async def test_history_pages_do_not_overlap_on_equal_dates(store: FaultStore) -> None:
    same_time = utc_now()
    await store.record_batch(server_made(new_fault(created=same_time) for _ in range(5)))
    first = await store.history("i-1", 2)
    rest = await store.history("i-1", 10, Cursor(first[-1].last_occurred, first[-1].id))
    assert len({f.id for f in first + rest}) == 5


async def test_clear_and_purge(store: FaultStore, engine: AsyncEngine) -> None:
    await store.record_batch(server_made([*(new_fault("i-1") for _ in range(5)), new_fault("i-2")]))
    assert await store.clear("i-1") == 5
    assert await store.latest_many(["i-1"]) == {}
    assert await store.purge(utc_now() - timedelta(days=1)) == 0  # cleared just now
    assert await store.purge(utc_now() + timedelta(seconds=1), batch_size=2) == 5
    async with engine.connect() as connection:
        remaining = await connection.scalar(sa.select(sa.func.count()).select_from(instance_faults))
    assert remaining == 1


async def test_group_commit_gathers_concurrent_writes(store: FaultStore) -> None:
    batch_sizes: list[int] = []
    writer: Batcher[Recording, StoredFault] = Batcher("writer", store.record_batch, max_batch=100)
    writer.on_batch = lambda size, waited: batch_sizes.append(size)
    writer.start()
    faults = [new_fault(f"i-{n}") for n in range(300)]
    results = await asyncio.gather(*(writer.submit(f) for f in server_made(faults)))
    await writer.close()
    assert [r.id for r in results] == [f.id for f in faults]
    assert sum(batch_sizes) == 300
    assert max(batch_sizes) > 1
    assert len(await store.latest_many({f.instance_id for f in faults})) == 300


async def test_a_failing_batch_fails_only_its_callers() -> None:
    async def run(items: Sequence[int]) -> list[int | Exception]:
        if 13 in items:
            raise FaultServiceError("unlucky batch")
        return [item if item % 2 else ValueError(item) for item in items]

    batcher: Batcher[int, int] = Batcher("test", run, max_batch=1)
    batcher.start()
    results = await asyncio.gather(
        *(batcher.submit(n) for n in (1, 2, 13, 3)), return_exceptions=True
    )
    await batcher.close()
    assert (results[0], results[3]) == (1, 3)
    assert isinstance(results[1], ValueError)
    assert isinstance(results[2], FaultServiceError)


async def test_idempotent_ids_hold_across_concurrent_batches(store: FaultStore) -> None:
    writer: Batcher[Recording, StoredFault] = Batcher("writer", store.record_batch, max_batch=7)
    writer.start()
    fault_id = str(uuid.uuid4())
    retries = [caller_made(new_fault(id=fault_id, message=f"try {n}")) for n in range(40)]
    results = await asyncio.gather(*(writer.submit(f) for f in retries))
    await writer.close()
    assert len({r.message for r in results}) == 1
    assert len(await store.history("i-1", 100)) == 1


async def test_after_a_busy_batch_the_next_one_waits_for_more_calls() -> None:
    sizes: list[int] = []

    async def run(items: Sequence[int]) -> list[int | Exception]:
        return list(items)

    batcher: Batcher[int, int] = Batcher("test", run, max_batch=100, busy_linger=0.2)
    batcher.on_batch = lambda size, waited: sizes.append(size)
    batcher.start()
    await asyncio.gather(*(batcher.submit(n) for n in range(10)))  # one busy batch
    first = asyncio.create_task(batcher.submit(100))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(batcher.submit(101))
    assert list(await asyncio.gather(first, second)) == [100, 101]
    await batcher.close()
    assert sizes == [10, 2]


async def test_a_lone_call_does_not_wait_for_company() -> None:
    async def run(items: Sequence[int]) -> list[int | Exception]:
        return list(items)

    batcher: Batcher[int, int] = Batcher("test", run, max_batch=100, busy_linger=60)
    batcher.start()
    for n in range(3):
        async with asyncio.timeout(10):  # a linger would hold it for a minute
            assert await batcher.submit(n) == n
    await batcher.close()
