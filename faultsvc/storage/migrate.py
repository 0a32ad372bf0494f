"""Bringing a database's schema to the newest Alembic revision."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from faultsvc.storage.failover import DatabaseEndpoints

MIGRATIONS = Path(__file__).parent / "migrations"

log = logging.getLogger(__name__)


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


async def migrate(database: DatabaseEndpoints) -> AsyncEngine:
    """Migrates the schema on the most preferred endpoint that answers; returns that endpoint."""
    engine = await database.first_answering()
    await upgrade_to_head(engine)
    return engine


async def upgrade_to_head(engine: AsyncEngine) -> None:
    """Creates the schema on a new database, or migrates an older one; a no-op when current."""
    async with engine.begin() as connection:
        before = await connection.run_sync(_revision)
        await connection.run_sync(lambda sync: command.upgrade(alembic_config(sync), "head"))
    head = _head()
    if before != head:
        log.info("schema migrated from %s to %s", before or "nothing (a new database)", head)


async def schema_problem(engine: AsyncEngine) -> str | None:
    """Why the database's schema is not the newest revision, or None when it is."""
    async with engine.connect() as connection:
        revision = await connection.run_sync(_revision)
    if revision is None:
        return "the database has no faultsvc schema"
    if revision != _head():
        return f"the schema is at revision {revision}, not {_head()}"
    return None


def _revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _head() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
