"""The database's per-row-commit ceiling: what a server that commits every row gets.

Trove and Nova write a fault the plain way: one INSERT, one COMMIT, per fault.
This measures that pattern with no gRPC in the way: `connections` concurrent
connections, each inserting one row and committing, over and over, with the
same durable settings the server runs with. A server that batches commits can
beat it; one that does not can at best reach it.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench.workloads import RECORD_DETAILS, RECORD_MESSAGE

INSERT = sa.text(
    "INSERT INTO instance_faults "
    "(id, instance_id, message, details, created, updated, deleted, source, host) "
    "VALUES (:id, :instance_id, :message, :details, :created, :created, 0, :source, :host)"
)


@dataclass(frozen=True, slots=True)
class Ceiling:
    """Rows committed per second and the latency of each INSERT + COMMIT."""

    rows_per_s: float
    rows: int
    latencies_us: tuple[int, ...]


def time_ordered_id() -> str:
    """A UUIDv7-shaped id, as the server makes, so rows land at the end of the key."""
    unix_ms = time.time_ns() // 1_000_000
    random_hex = os.urandom(10).hex()
    ms_hex = f"{unix_ms:012x}"
    return (
        f"{ms_hex[:8]}-{ms_hex[8:]}-7{random_hex[:3]}-"
        f"{8 + int(random_hex[3], 16) % 4:x}{random_hex[4:7]}-{random_hex[7:19]}"
    )


def async_engine(url: str, connections: int) -> AsyncEngine:
    """An engine with one pooled connection per writer and the server's durability."""
    if make_url(url).get_backend_name() != "sqlite":
        return create_async_engine(url, pool_size=connections, max_overflow=0)
    engine = create_async_engine(url, pool_size=connections, max_overflow=0)

    @sa.event.listens_for(engine.sync_engine, "connect")
    def _durable(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine


async def measure(
    url: str, connections: int, *, duration_s: float, warmup_s: float, instance_prefix: str
) -> Ceiling:
    """Runs `connections` writers for warmup_s + duration_s; counts only after the warm-up."""
    engine = async_engine(url, connections)
    started = time.monotonic()
    measure_from = started + warmup_s
    stop_at = measure_from + duration_s
    latencies: list[int] = []

    async def writer(index: int) -> None:
        async with engine.connect() as connection:
            while True:
                began = time.monotonic()
                if began >= stop_at:
                    return
                await connection.execute(
                    INSERT,
                    {
                        "id": time_ordered_id(),
                        "instance_id": f"{instance_prefix}{index}",
                        "message": RECORD_MESSAGE,
                        "details": RECORD_DETAILS,
                        "created": _utc_now(),
                        "source": "taskmanager",
                        "host": "trove-taskmanager-2",
                    },
                )
                await connection.commit()
                ended = time.monotonic()
                if began >= measure_from and ended <= stop_at:
                    latencies.append(round((ended - began) * 1_000_000))

    try:
        await asyncio.gather(*(writer(index) for index in range(connections)))
    finally:
        await engine.dispose()
    return Ceiling(len(latencies) / duration_s, len(latencies), tuple(latencies))


def _utc_now() -> str:
    """Now in UTC as 'YYYY-MM-DD HH:MM:SS.ffffff', which both backends store as given."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
