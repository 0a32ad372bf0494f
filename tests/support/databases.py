"""Fresh test databases: a SQLite file, or a MariaDB database made and dropped around each test."""

from __future__ import annotations

import os
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


def mysql_admin_connection() -> pymysql.connections.Connection[pymysql.cursors.Cursor]:
    url = make_url(MYSQL_URL)
    return pymysql.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 3306,
        user=url.username or "root",
        password=url.password or "",
        autocommit=True,
    )


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
