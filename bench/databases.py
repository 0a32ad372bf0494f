"""The databases behind the server under test: made fresh, migrated, seeded, durable."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from bench import seed
from bench.servers import faultsvc_command

# What makes a MariaDB commit durable: the redo log and the binary log are
# both flushed to disk before COMMIT returns. And a buffer pool that holds the
# seeded table and its indexes (2.3 GB at 1,000,000 faults), as a production
# server's holds its working set: the figures are then faultsvc's, not the
# disk's (with the default 128 MB, a batch read of 1,000 faults waits on reads).
MARIADB_SETTINGS = {
    "innodb_flush_log_at_trx_commit": "1",
    "sync_binlog": "1",
    "innodb_buffer_pool_size": str(4 * 1024**3),
}
MARIADB_REPORTED = (
    "version",
    "innodb_flush_log_at_trx_commit",
    "sync_binlog",
    "log_bin",
    "innodb_doublewrite",
    "innodb_flush_method",
    "innodb_buffer_pool_size",
)


@dataclass
class Backend:
    """One database the server runs on, as the benchmark set it up."""

    name: str
    url: str
    settings: dict[str, str] = field(default_factory=dict)
    previous: dict[str, str] = field(default_factory=dict)
    seed_seconds: float = 0.0

    def sync_engine(self) -> sa.Engine:
        """A blocking engine on the same database, for setup and row counts."""
        url = make_url(self.url)
        driver = "sqlite" if url.get_backend_name() == "sqlite" else "mysql+pymysql"
        return sa.create_engine(url.set(drivername=driver), poolclass=sa.NullPool)

    def count_occurrences(self, instance_prefix: str) -> int:
        """The occurrences of the faults of these instances: one per RecordFault stored."""
        engine = self.sync_engine()
        try:
            with engine.connect() as connection:
                count = connection.scalar(
                    sa.text(
                        "SELECT SUM(occurrence_count) FROM instance_faults"
                        " WHERE instance_id LIKE :prefix"
                    ),
                    {"prefix": instance_prefix + "%"},
                )
        finally:
            engine.dispose()
        return int(count or 0)


def migrate(url: str, revision: str | None = None) -> None:
    """Creates the schema the way an operator does, `faultsvc db upgrade`, or up to `revision`."""
    if revision is None:
        command = faultsvc_command("db", "upgrade", "--database-url", url, "--log-level", "WARNING")
    else:
        command = [sys.executable, "-m", "bench.migration", "upgrade", url, revision]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def prepare_sqlite(path: Path, data: seed.Seed) -> Backend:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    backend = Backend("sqlite", f"sqlite+aiosqlite:///{path}")
    migrate(backend.url)
    backend.seed_seconds = seed.seed_sqlite(str(path), data)
    backend.settings = {
        "journal_mode": "WAL (set by the server)",
        "synchronous": "FULL (set by the server)",
        "fsyncs_per_s": f"{fsyncs_per_second(path.parent):.0f}",
    }
    return backend


def prepare_mariadb(url: str, data: seed.Seed, revision: str | None = None) -> Backend:
    """A fresh database at `url`, durable server settings, migrated (to `revision`) and seeded."""
    backend = Backend("mariadb", url)
    database = make_url(url).database
    if not database:
        raise SystemExit(f"{url}: name the benchmark's own database, e.g. /faultsvc_bench")
    admin = _server_engine(url)
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f"DROP DATABASE IF EXISTS `{database}`"))
            connection.execute(
                sa.text(f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
            )
            backend.previous = mariadb_settings(connection)
            for name, value in MARIADB_SETTINGS.items():
                connection.execute(sa.text(f"SET GLOBAL {name} = {value}"))
            backend.settings = mariadb_settings(connection)
    finally:
        admin.dispose()
    migrate(url, revision)
    engine = backend.sync_engine()
    try:
        backend.seed_seconds = seed.seed_mariadb(engine, data)
        seed.check_mariadb_rows(engine, data)
    finally:
        engine.dispose()
    return backend


def finish_mariadb(backend: Backend, *, keep: bool) -> None:
    """Puts the server's global settings back as they were; drops the database unless `keep`."""
    admin = _server_engine(backend.url)
    try:
        with admin.connect() as connection:
            for name in MARIADB_SETTINGS:
                if name in backend.previous:
                    value = backend.previous[name]
                    connection.execute(sa.text(f"SET GLOBAL {name} = {int(value)}"))
            if not keep:
                database = make_url(backend.url).database
                connection.execute(sa.text(f"DROP DATABASE IF EXISTS `{database}`"))
    finally:
        admin.dispose()


def _server_engine(url: str) -> sa.Engine:
    """An autocommit engine on the MariaDB server of `url`, outside any database."""
    parsed = make_url(url)
    server = sa.URL.create(
        "mysql+pymysql",
        username=parsed.username,
        password=parsed.password,
        host=parsed.host,
        port=parsed.port,
        query=parsed.query,
    )
    return sa.create_engine(server, poolclass=sa.NullPool, isolation_level="AUTOCOMMIT")


def mariadb_settings(connection: sa.Connection) -> dict[str, str]:
    rows = connection.execute(
        sa.text("SHOW GLOBAL VARIABLES WHERE Variable_name IN :names").bindparams(
            sa.bindparam("names", expanding=True)
        ),
        {"names": list(MARIADB_REPORTED)},
    )
    return {str(name): str(value) for name, value in rows}


def fsyncs_per_second(directory: Path, seconds: float = 1.0) -> float:
    """How many 4 KiB write + fsync pairs the disk under `directory` completes per second."""
    probe = directory / "fsync-probe"
    descriptor = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        block = b"\0" * 4096
        count = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            os.pwrite(descriptor, block, 0)
            os.fsync(descriptor)
            count += 1
    finally:
        os.close(descriptor)
        probe.unlink()
    return count / seconds
