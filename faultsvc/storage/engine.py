"""Connecting to the database: the engine and the per-backend settings that make it durable.

A round trip to the database costs the server more CPU than the SQL costs the
database (a socket write that wakes another process, the driver's packets
in Python), so an engine spends none it does not need: a pooled connection
is pinged only after it sat idle, a MariaDB one is not rolled back when it
comes back to the pool (every transaction ends in a COMMIT, or in the
ROLLBACK of closing it), and reads run on connections in autocommit mode,
one statement each with no transaction to end.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

# Galera's wsrep_sync_wait bits: 1 reads, 2 updates and deletes (see below).
GALERA_SYNC_WAIT = 3
# A pooled connection idle longer than this is pinged before it is used.
IDLE_PING_SECONDS = 1.0


def create_engine(
    url: str, *, pool_size: int = 10, timeout_seconds: float = 5.0, autocommit: bool = False
) -> AsyncEngine:
    """An async engine for `url`: SQLite (aiosqlite) or MySQL/MariaDB (aiomysql).

    With `autocommit`, each statement commits on its own: for reads, which
    then need no COMMIT or ROLLBACK of their own.
    """
    options: dict[str, Any] = {
        # Statement parameters hold fault details (admin-only): a database
        # error, logged with its traceback, must not quote them.
        "hide_parameters": True,
    }
    if autocommit:
        options |= {"isolation_level": "AUTOCOMMIT", "skip_autocommit_rollback": True}
    if make_url(url).get_backend_name() == "sqlite":
        # SQLite keeps the pool's ROLLBACK: a call within the process, and the
        # end of any read snapshot a connection still holds.
        return _sqlite_engine(url, timeout_seconds, options)
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=timeout_seconds,
        pool_recycle=3600,
        connect_args={"charset": "utf8mb4", "connect_timeout": timeout_seconds},
        pool_reset_on_return=None,
        **options,
    )
    sa.event.listen(engine.sync_engine, "connect", _utc_session)
    sa.event.listen(engine.sync_engine, "connect", _wait_for_cluster_writes)
    sa.event.listen(engine.sync_engine, "checkin", _note_idle_since)
    sa.event.listen(engine.sync_engine, "checkout", _ping_after_idling)
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


def _note_idle_since(_dbapi_connection: Any, record: Any) -> None:
    record.info["idle_since"] = time.monotonic()


def _ping_after_idling(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """Finds a connection the server dropped before a call uses it; the pool replaces it.

    A server that closed the connection (a restart, wait_timeout) has sent
    its end of it, which the event loop read while the connection sat in the
    pool: that costs no round trip to find. A connection idle for a while is
    also pinged, for a peer gone without a word (a crashed host, a firewall
    that forgot the connection); under load, connections come back to work
    within milliseconds, and a ping would double a read's round trips.
    """
    if _closed_by_server(dbapi_connection):
        raise sa.exc.DisconnectionError("the server closed the connection")
    idle_since = record.info.get("idle_since")
    if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
        return
    try:
        dbapi_connection.ping(False)
    except Exception as error:
        raise sa.exc.DisconnectionError(f"the connection was dropped: {error}") from error


def _closed_by_server(dbapi_connection: Any) -> bool:
    """Whether aiomysql's stream has seen the server's end of the connection (or an error)."""
    reader = getattr(dbapi_connection.driver_connection, "_reader", None)
    return reader is not None and (reader.at_eof() or reader.exception() is not None)


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


def _sqlite_engine(url: str, timeout_seconds: float, options: dict[str, Any]) -> AsyncEngine:
    engine = create_async_engine(url, connect_args={"timeout": timeout_seconds}, **options)

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
