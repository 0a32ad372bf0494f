"""Fixtures for the client tests: a client of the real server, and the server as a process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from faultsvc_client import FaultServiceClient

from faultsvc.app import FaultServer
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


@pytest.fixture
def notifier_driver_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Makes the `faultsvc` notifier driver loadable by name, as installing the project does.

    Returns the paths a child Python needs on its PYTHONPATH to load it too.
    """
    group = "oslo.messaging.notify.drivers"
    if entry_points(group=group, name="faultsvc"):
        return []
    dist_info = tmp_path / "entry-points" / "faultsvc_notifier-0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: faultsvc-notifier\nVersion: 0\n"
    )
    (dist_info / "entry_points.txt").write_text(
        f"[{group}]\nfaultsvc = faultsvc_client.notifier:FaultNotifierDriver\n"
    )
    monkeypatch.syspath_prepend(str(dist_info.parent))
    return [str(dist_info.parent)]
