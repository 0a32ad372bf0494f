"""A real three-node Galera cluster, started once per module and destroyed after it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.galera import GaleraCluster, free_base_port, require_galera
from tests.support.mariadb import mysql_directory


@pytest.fixture(scope="module")
def galera(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GaleraCluster]:
    """The cluster's nodes are stopped and its files deleted even when a test fails.

    The nodes' logs are kept in pytest's tmp, for a look afterwards.
    """
    reason = require_galera()
    if reason is not None:
        pytest.skip(reason)
    cluster = GaleraCluster(mysql_directory("faultsvc-galera-"), free_base_port())
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.save_logs(tmp_path_factory.mktemp("galera-logs"))
        cluster.destroy()
