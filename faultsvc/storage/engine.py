"""Connecting to the database: the engine and the per-backend settings that make it durable."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

# Galera's wsrep_sync_wait bits: 1 reads, 2 updates and deletes (see below).
GALERA_SYNC_WAIT = 3


def create_engine(url: str, *, pool_size: int = 10, timeout_seconds: float = 5.0) -> AsyncEngine:
    """An async engine for `url`: SQLite (aiosqlite) or MySQL/MariaDB (aiomysql)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, timeout_seconds)
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=timeout_seconds,
        # A connection the server dropped (restart, wait_timeout) is found and
        # replaced before use instead of failing a call.
        pool_pre_ping=True,
        pool_recycle=3600,
        connect_args={"charset": "utf8mb4", "connect_timeout": timeout_seconds},
        # Statement parameters hold fault details (admin-only): a database
        # error, logged with its traceback, must not quote them.
        hide_parameters=True,
    )
    sa.event.listen(engine.sync_engine, "connect", _utc_session)
    sa.event.listen(engine.sync_engine, "connect", _wait_for_cluster_writes)
    return engine


def _utc_session(dbapi_connection: Any, _record: Any) -> None:
    """Makes the database's clock (CURRENT_TIMESTAMP) read UTC, as every stored time is.

    The time an occurrence was recorded is the database's (its column's
    default), whatever the server's time zone.
    """
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SET time_zone = '+00:00'")
    finally:
        cursor.close()


def _wait_for_cluster_writes(dbapi_connection: Any, _record: Any) -> None:
    """On a Galera node, makes reads see what other nodes committed before them.

    A node applies the writes of the others asynchronously: without this, a
    fault recorded through one node may be missing from a read on another a
    moment later. wsrep_sync_wait=3 makes reads (1) and updates and deletes
    (2, so that ClearFaults clears what was just recorded elsewhere) wait
    until the node has applied every write committed before they started.
    Other servers (MySQL, MariaDB without Galera) are left as they are.
    """
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SHOW VARIABLES LIKE 'wsrep_on'")
        row = cursor.fetchone()
        if row is not None and str(row[1]).upper() == "ON":
            cursor.execute(f"SET SESSION wsrep_sync_wait = {GALERA_SYNC_WAIT}")
    finally:
        cursor.close()


def _sqlite_engine(url: str, timeout_seconds: float) -> AsyncEngine:
    engine = create_async_engine(
        url, connect_args={"timeout": timeout_seconds}, hide_parameters=True
    )

    @sa.event.listens_for(engine.sync_engine, "connect")
    def _durable_and_concurrent(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        # WAL lets readers run beside the writer (and several server processes
        # share one file); synchronous=FULL makes every commit durable.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={int(timeout_seconds * 1000)}")
        cursor.close()

    return engine
