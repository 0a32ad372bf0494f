"""A MariaDB server of the test's own, to stop, kill and freeze without touching the shared one."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pymysql

from tests.support.servers import free_port

MARIADBD = "/usr/sbin/mariadbd"
INSTALL_DB = "mariadb-install-db"
# Small, so that a server starts in well under a second; nothing else differs from Debian's.
SERVER_OPTIONS = (
    "--bind-address=127.0.0.1",
    "--skip-name-resolve",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_general_ci",
    "--innodb-buffer-pool-size=32M",
    "--innodb-log-file-size=8M",
)


def require_root_and_mariadbd() -> str | None:
    """Why a private server cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "a private mariadbd runs as user mysql, which needs root"
    if not Path(MARIADBD).exists() or shutil.which(INSTALL_DB) is None:
        return "mariadb-server is not installed (scripts/ensure-services.sh installs it)"
    return None


def mysql_directory(prefix: str) -> Path:
    """A new directory for the mysql user, under the system's temporary directory.

    Not under pytest's tmp: every pytest run that starts makes that
    private to root again, and a server already running there would lose
    its own files.
    """
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    shutil.chown(directory, "mysql", "mysql")
    return directory


class PrivateMariaDB:
    """A mariadbd with its own datadir, port and socket in `directory`, started as mysql.

    `start` and `stop` (SIGTERM, a clean shutdown), `kill` (SIGKILL), `freeze`
    and `thaw` (SIGSTOP, SIGCONT: a server that accepts connections and never
    answers) act on the one process this object started, by its id.
    """

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.datadir = directory / "data"
        self.socket = directory / "mariadbd.sock"
        self.log = directory / "mariadbd.err"
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, database: str) -> str:
        return f"mysql+aiomysql://root@127.0.0.1:{self.port}/{database}"

    def install(self) -> PrivateMariaDB:
        """Creates the system tables; root@127.0.0.1 gets an empty password."""
        self.datadir.mkdir(exist_ok=True)
        shutil.chown(self.datadir, "mysql", "mysql")
        installed = subprocess.run(
            [
                INSTALL_DB,
                "--no-defaults",
                "--user=mysql",
                f"--datadir={self.datadir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--innodb-log-file-size=8M",
            ],
            capture_output=True,
            text=True,
        )
        if installed.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed:\n{installed.stdout}{installed.stderr}")
        return self

    def start(self, timeout: float = 30.0) -> PrivateMariaDB:
        if self.running:
            raise RuntimeError("the private mariadbd is already running")
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [
                    MARIADBD,
                    "--no-defaults",
                    "--user=mysql",
                    f"--datadir={self.datadir}",
                    f"--port={self.port}",
                    f"--socket={self.socket}",
                    f"--pid-file={self.directory / 'mariadbd.pid'}",
                    *SERVER_OPTIONS,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.process.poll() is not None:
                raise RuntimeError(f"mariadbd exited with {self.process.returncode}: {self.log}")
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"mariadbd not answering after {timeout} s: {self.log}")
            time.sleep(0.05)
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def answers(self) -> bool:
        try:
            self.connect(timeout=1).close()
        except pymysql.err.OperationalError:
            return False
        return True

    def connect(
        self, database: str | None = None, timeout: float = 5
    ) -> pymysql.connections.Connection[pymysql.cursors.Cursor]:
        return pymysql.connect(
            host="127.0.0.1",
            port=self.port,
            user="root",
            database=database,
            autocommit=True,
            connect_timeout=timeout,
            read_timeout=timeout,
            write_timeout=timeout,
        )

    def create_database(self, name: str) -> str:
        """A new utf8mb4 database; returns its URL."""
        with self.connect() as connection, connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
        return self.url(name)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM: a clean shutdown, as `systemctl stop` does; SIGKILL if it takes too long."""
        self._signal(signal.SIGCONT)  # a frozen server cannot shut down
        self._signal(signal.SIGTERM)
        self._wait(timeout)

    def kill(self) -> None:
        """SIGKILL: the server vanishes; the kernel resets its connections."""
        self._signal(signal.SIGKILL)
        self._wait(10)

    def freeze(self) -> None:
        """SIGSTOP: connections stay open and new ones are accepted, but nothing answers."""
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, signum: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)

    def _wait(self, timeout: float) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
