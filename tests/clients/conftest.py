"""Fixtures for the client tests: a client of the real server, and the server as a process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from faultsvc.app import FaultServer
from faultsvc_client import FaultServiceClient
from tests.support.servers import ServerProcess


@pytest.fixture
async def admin_client(server: FaultServer) -> AsyncIterator[FaultServiceClient]:
    """A client of the in-process server, asking as an admin."""
    async with FaultServiceClient.connect(server.target, roles=["admin"]) as client:
        yield client


@pytest.fixture
async def user_client(server: FaultServer) -> AsyncIterator[FaultServiceClient]:
    """A client of the in-process server, asking with no role."""
    async with FaultServiceClient.connect(server.target) as client:
        yield client


@pytest.fixture
def faultsvc_process(database_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    """`faultsvc serve` as its own process, for tests that stop and start it."""
    with ServerProcess(database_url, log_path=tmp_path / "faultsvc.log") as server:
        yield server
