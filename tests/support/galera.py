"""A three-node MariaDB Galera cluster for tests, run by scripts/galera/cluster."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
from pathlib import Path

import pymysql

from tests.support.mariadb import require_root_and_mariadbd

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "galera" / "cluster"
PROVIDER = Path("/usr/lib/galera/libgalera_smm.so")
NODES = (1, 2, 3)
# A killed node is evicted after about 3.5 s instead of 6 s (see scripts/galera/README.md).
FAST_EVICTION = "evs.keepalive_period=PT0.5S;evs.suspect_timeout=PT2S;evs.inactive_timeout=PT4S"
# Port offsets of scripts/galera/cluster: MySQL, gcomm, IST, SST, for nodes 1-3.
PORT_OFFSETS = tuple(offset + node for offset in (0, 12610, 12620, 12630) for node in range(3))


def require_galera() -> str | None:
    """Why a cluster cannot run here, or None when it can."""
    reason = require_root_and_mariadbd()
    if reason is None and not PROVIDER.exists():
        reason = "galera-4 is not installed (scripts/ensure-services.sh installs it)"
    return reason


def free_base_port() -> int:
    """A base port whose twelve derived ports are free; below the kernel's ephemeral range."""
    for _ in range(100):
        base = random.randrange(10_000, 20_000)
        if all(_port_is_free(base + offset) for offset in PORT_OFFSETS):
            return base
    raise RuntimeError("no free base port for a Galera cluster")


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class GaleraCluster:
    """The cluster in `base_dir`; every command is the script's, with this base dir and port."""

    def __init__(self, base_dir: Path, base_port: int) -> None:
        self.base_dir = base_dir
        self.base_port = base_port

    def port(self, node: int) -> int:
        return self.base_port + node - 1

    def url(self, node: int) -> str:
        return f"mysql+aiomysql://root@127.0.0.1:{self.port(node)}/faultsvc"

    def start(self) -> list[str]:
        """Starts the three nodes with fast eviction; returns their URLs."""
        started = self._run("start", env={"GALERA_PROVIDER_OPTIONS": FAST_EVICTION})
        return started.stdout.split()

    def kill(self, node: int) -> None:
        self._run("kill", str(node))

    def restart_node(self, node: int) -> None:
        self._run("restart-node", str(node))

    def synced(self) -> bool:
        """Whether all three nodes are up, in one primary component, and synced."""
        return self._run("status", check=False).returncode == 0

    def destroy(self) -> None:
        """Stops every node and deletes the base dir; nothing is left running."""
        try:
            self._run("destroy", timeout=180)
        finally:
            shutil.rmtree(self.base_dir, ignore_errors=True)  # when start failed early

    def save_logs(self, directory: Path) -> None:
        """Copies the nodes' logs, which `destroy` deletes, for a look after a failure."""
        for log in self.base_dir.glob("*.err"):
            shutil.copy(log, directory / log.name)

    def connect(self, node: int) -> pymysql.connections.Connection[pymysql.cursors.Cursor]:
        """A connection to one node that waits, for each read, for writes committed elsewhere."""
        connection = pymysql.connect(
            host="127.0.0.1",
            port=self.port(node),
            user="root",
            database="faultsvc",
            autocommit=True,
            connect_timeout=5,
        )
        with connection.cursor() as cursor:
            cursor.execute("SET SESSION wsrep_sync_wait = 1")
        return connection

    def query(self, node: int, sql: str) -> list[tuple[object, ...]]:
        with self.connect(node) as connection, connection.cursor() as cursor:
            cursor.execute(sql)
            return list(cursor.fetchall())

    def _run(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        timeout: float = 150,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [SCRIPT, *args, "--base-dir", self.base_dir, "--base-port", str(self.base_port)],
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"cluster {' '.join(args)} failed:\n{done.stderr}")
        return done
