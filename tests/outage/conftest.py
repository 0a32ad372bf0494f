"""A MariaDB server of the tests' own, which they stop, kill and freeze under load."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator

import pytest

from tests.support.mariadb import PrivateMariaDB, mysql_directory, require_root_and_mariadbd


@pytest.fixture(scope="module")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateMariaDB]:
    """One private mariadbd per module; killed and deleted at the end, whatever happened.

    Its log is kept in pytest's tmp, for a look afterwards.
    """
    reason = require_root_and_mariadbd()
    if reason is not None:
        pytest.skip(reason)
    server = PrivateMariaDB(mysql_directory("faultsvc-mariadb-"))
    try:
        yield server.install().start()
    finally:
        server.kill()
        if server.log.exists():
            shutil.copy(server.log, tmp_path_factory.mktemp("mariadb-log"))
        shutil.rmtree(server.directory)


@pytest.fixture
def private_url(mariadb: PrivateMariaDB) -> str:
    """A fresh database on the private server, which is running when the test starts."""
    if not mariadb.running:
        mariadb.start()
    return mariadb.create_database(f"faultsvc_{uuid.uuid4().hex[:12]}")
