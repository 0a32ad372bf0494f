"""Fixtures that start real things: databases (SQLite and MariaDB), servers, stubs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from faultsvc.app import FaultServer
from faultsvc.config import Settings
from faultsvc.storage.engine import create_engine
from faultsvc.storage.migrate import upgrade_to_head
from tests.support.calls import Stub, stub_of
from tests.support.databases import BACKENDS, fresh_database
from tests.support.servers import MakeServer, running_server


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database on each backend: a SQLite file, then a MariaDB database."""
    with fresh_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the fresh database, its schema migrated."""
    engine = create_engine(database_url)
    await upgrade_to_head(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(listen="127.0.0.1:0", database_url=database_url, grace_seconds=2)


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[FaultServer]:
    """The real server, built by the composition root, on a free port."""
    async with running_server(settings) as server:
        yield server


@pytest.fixture
async def make_server(settings: Settings) -> AsyncIterator[MakeServer]:
    """Starts servers on the test's database with some settings changed; stops them after it.

    `server = await make_server(max_response_bytes=1024)`
    """
    async with AsyncExitStack() as servers:

        async def make(**overrides: Any) -> FaultServer:
            changed = Settings(**(settings.model_dump() | overrides))
            return await servers.enter_async_context(running_server(changed))

        yield make


@pytest.fixture
async def stub(server: FaultServer) -> AsyncIterator[Stub]:
    async with stub_of(server.target) as stub:
        yield stub
