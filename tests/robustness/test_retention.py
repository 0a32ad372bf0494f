"""Retention: purging cleared faults and capping each instance's history, in bounded batches."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import grpc
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from faultsvc.faults import new_fault_id, utc_now
from faultsvc.storage.store import FaultStore
from faultsvc.storage.tables import instance_faults
from faultsvc.v1 import fault_service_pb2 as pb
from faultsvc.v1 import fault_service_pb2_grpc
from tests.support.servers import ServerProcess

FAULTSVC = [sys.executable, "-m", "faultsvc"]


def row(
    instance_id: str, created: datetime, *, cleared_at: datetime | None = None
) -> dict[str, Any]:
    return {
        "id": new_fault_id(),
        "instance_id": instance_id,
        "message": "boom",
        "details": "trace",
        "source": "test",
        "host": "h",
        "created": created,
        "last_occurred": created,
        "updated": cleared_at or created,
        "deleted": cleared_at is not None,
        "deleted_at": cleared_at,
    }


async def insert(engine: AsyncEngine, rows: list[dict[str, Any]]) -> None:
    async with engine.begin() as connection:
        for start in range(0, len(rows), 2000):
            await connection.execute(sa.insert(instance_faults), rows[start : start + 2000])


async def all_rows(engine: AsyncEngine) -> dict[str, tuple[Any, ...]]:
    async with engine.connect() as connection:
        result = await connection.execute(sa.select(instance_faults))
        return {fault.id: tuple(fault) for fault in result}


@contextmanager
def rows_touched_by(engine: AsyncEngine, verb: str) -> Iterator[list[int]]:
    """The row count of every statement run on `engine` meanwhile that begins with `verb`.

    `verb` in upper case: UPDATE, DELETE, or DELETE FROM a table.
    """
    counts: list[int] = []

    def after_execute(
        _connection: Any, cursor: Any, statement: str, *_args: Any, **_kwargs: Any
    ) -> None:
        if statement.lstrip().upper().startswith(verb):
            counts.append(cursor.rowcount)

    sa.event.listen(engine.sync_engine, "after_cursor_execute", after_execute)
    try:
        yield counts
    finally:
        sa.event.remove(engine.sync_engine, "after_cursor_execute", after_execute)


async def test_purge_deletes_a_large_backlog_in_bounded_batches(engine: AsyncEngine) -> None:
    now = utc_now()
    month_ago = now - timedelta(days=30)
    cleared_long_ago = [
        row(f"gone-{n % 500}", month_ago - timedelta(days=1), cleared_at=month_ago)
        for n in range(20_000)
    ]
    live = [row(f"live-{n % 50}", month_ago + timedelta(seconds=n)) for n in range(500)]
    cleared_yesterday = [row("recent", now, cleared_at=now - timedelta(days=1)) for _ in range(300)]
    await insert(engine, cleared_long_ago + live + cleared_yesterday)
    before = await all_rows(engine)

    with rows_touched_by(engine, "DELETE FROM INSTANCE_FAULTS") as deletes:
        purged = await FaultStore(engine).purge(now - timedelta(days=7), batch_size=1000)

    assert purged == 20_000
    assert deletes == [1000] * 20
    after = await all_rows(engine)
    kept = {fault["id"] for fault in live + cleared_yesterday}
    assert after == {fault_id: before[fault_id] for fault_id in kept}


async def test_cap_clears_the_oldest_beyond_the_newest_n_in_bounded_batches(
    engine: AsyncEngine,
) -> None:
    base = utc_now() - timedelta(days=1)
    busy = [row("busy", base + timedelta(seconds=n)) for n in range(25)]
    # Two faults in the same microsecond at the cut: the greater id is the newer, as listed.
    same_moment = [row("busy", base + timedelta(seconds=14)) for _ in range(2)]
    cleared_before = [row("busy", base, cleared_at=base) for _ in range(3)]
    quiet = [row("quiet", base + timedelta(seconds=n)) for n in range(10)]
    await insert(engine, busy + same_moment + cleared_before + quiet)
    before = await all_rows(engine)
    live_busy = sorted(busy + same_moment, key=lambda fault: (fault["created"], fault["id"]))
    newest_ten = {fault["id"] for fault in live_busy[-10:]}
    history_before = await FaultStore(engine).history("busy", 10)

    with rows_touched_by(engine, "UPDATE") as updates:
        capped = await FaultStore(engine).cap_history(keep=10, batch_size=4)

    assert capped == 17
    assert updates == [4, 4, 4, 4, 1]
    assert {fault.id for fault in await FaultStore(engine).history("busy", 100)} == newest_ten
    assert await FaultStore(engine).history("busy", 10) == history_before
    after = await all_rows(engine)
    for untouched in quiet + cleared_before:
        assert after[untouched["id"]] == before[untouched["id"]]
    assert await FaultStore(engine).cap_history(keep=10, batch_size=4) == 0


async def test_cap_keeps_instances_at_or_under_the_cap_whole(engine: AsyncEngine) -> None:
    base = utc_now() - timedelta(days=1)
    faults = [row(f"i-{n}", base + timedelta(seconds=m)) for n in range(30) for m in range(n % 4)]
    await insert(engine, faults)
    before = await all_rows(engine)
    assert await FaultStore(engine).cap_history(keep=3, batch_size=7) == 0
    assert await all_rows(engine) == before


def purge(database_url: str, *flags: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [*FAULTSVC, "db", "purge", "--database-url", database_url, *flags],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return result.stdout


def test_purge_caps_history_when_asked(database_url: str) -> None:
    instance = str(uuid.uuid4())
    with ServerProcess(database_url) as server, grpc.insecure_channel(server.target) as channel:
        stub = fault_service_pb2_grpc.FaultServiceStub(channel)
        recorded = [
            stub.RecordFault(
                pb.RecordFaultRequest(instance_id=instance, message=f"m{n}", fingerprint=str(n))
            ).fault
            for n in range(8)
        ]

        def listed() -> list[str]:
            page = stub.ListFaults(pb.ListFaultsRequest(instance_id=instance))
            return [fault.id for fault in page.faults]

        assert "capped" not in purge(database_url, "--older-than", "30")
        assert len(listed()) == 8

        output = purge(database_url, "--older-than", "30", "--max-faults-per-instance", "5")
        assert "capped 3 " in output
        assert listed() == [fault.id for fault in reversed(recorded[3:])]

        env = {**os.environ, "FAULTSVC_MAX_FAULTS_PER_INSTANCE": "2"}
        assert "capped 3 " in purge(database_url, "--older-than", "30", env=env)
        assert listed() == [recorded[7].id, recorded[6].id]
        # Capped faults are cleared ones: purged once older than --older-than.
        assert "purged 6 " in purge(database_url, "--older-than", "0", env=env)
