"""Connecting to the database: the engine and the per-backend settings that make it durable."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def create_engine(url: str, *, pool_size: int = 10, timeout_seconds: float = 5.0) -> AsyncEngine:
    """An async engine for `url`: SQLite (aiosqlite) or MySQL/MariaDB (aiomysql)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, timeout_seconds)
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=timeout_seconds,
        # A connection the server dropped (restart, wait_timeout) is found and
        # replaced before use instead of failing a call.
        pool_pre_ping=True,
        pool_recycle=3600,
        connect_args={"charset": "utf8mb4", "connect_timeout": timeout_seconds},
    )


def _sqlite_engine(url: str, timeout_seconds: float) -> AsyncEngine:
    engine = create_async_engine(url, connect_args={"timeout": timeout_seconds})

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
