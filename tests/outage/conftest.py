"""A MariaDB server of the tests' own, which they stop, kill and freeze under load."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.support.mariadb import PrivateMariaDB, require_root_and_mariadbd


@pytest.fixture(scope="module")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateMariaDB]:
    """One private mariadbd per module; killed at the end, whatever happened."""
    reason = require_root_and_mariadbd()
    if reason is not None:
        pytest.skip(reason)
    server = PrivateMariaDB(tmp_path_factory.mktemp("mariadb"))
    try:
        yield server.install().start()
    finally:
        server.kill()


@pytest.fixture
def private_url(mariadb: PrivateMariaDB) -> str:
    """A fresh database on the private server, which is running when the test starts."""
    if not mariadb.running:
        mariadb.start()
    return mariadb.create_database(f"faultsvc_{uuid.uuid4().hex[:12]}")
