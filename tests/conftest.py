"""Fixtures that start real things: databases (SQLite and MariaDB), servers, stubs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from faultsvc.app import FaultServer, build_server
from faultsvc.config import Settings
from faultsvc.storage.engine import create_engine
from faultsvc.storage.migrate import upgrade_to_head
from faultsvc.v1 import fault_service_pb2_grpc
from tests.support.calls import Stub
from tests.support.databases import BACKENDS, fresh_database


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
    server = await build_server(settings)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def stub(server: FaultServer) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(server.target) as channel:
        yield fault_service_pb2_grpc.FaultServiceStub(channel)
