"""Fresh test databases: a SQLite file, or a MariaDB database made and dropped around each test."""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pymysql
from sqlalchemy.engine import make_url

# The MariaDB server the tests use; its databases are made per test and dropped after.
MYSQL_URL = os.environ.get("FAULTSVC_TEST_MYSQL_URL", "mysql+aiomysql://root@127.0.0.1:3306")
BACKENDS = ("sqlite", "mariadb")


def sqlite_url(directory: Path) -> str:
    return f"sqlite+aiosqlite:///{directory / 'faults.db'}"


def mysql_connection(url: str) -> pymysql.connections.Connection[pymysql.cursors.Cursor]:
    """A connection to the server and database of a MySQL `url`, committing each statement."""
    parsed = make_url(url)
    return pymysql.connect(
        host=parsed.host or "127.0.0.1",
        port=parsed.port or 3306,
        user=parsed.username or "root",
        password=parsed.password or "",
        database=parsed.database,
        autocommit=True,
    )


def mysql_admin_connection() -> pymysql.connections.Connection[pymysql.cursors.Cursor]:
    return mysql_connection(MYSQL_URL)


@contextmanager
def writes_locked(url: str) -> Iterator[None]:
    """Another client holds the faults table's write lock, as long as the block runs.

    Nothing the server does ends it: its writes wait for the lock and time out.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        holder = sqlite3.connect(parsed.database or "", isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            yield
            holder.execute("ROLLBACK")
        finally:
            holder.close()
    else:
        with mysql_connection(url) as locker, locker.cursor() as cursor:
            cursor.execute("LOCK TABLES instance_faults WRITE")
            yield
            cursor.execute("UNLOCK TABLES")


@contextmanager
def fresh_mariadb_database() -> Iterator[str]:
    """A new, empty utf8mb4 database; yields its URL and drops it afterwards."""
    name = f"faultsvc_test_{uuid.uuid4().hex[:12]}"
    connection = mysql_admin_connection()
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        yield make_url(MYSQL_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name}")
        connection.close()


@contextmanager
def fresh_database(backend: str, directory: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield sqlite_url(directory)
    else:
        with fresh_mariadb_database() as url:
            yield url
