"""Every operator mistake ends in one clear line and a non-zero exit, never a traceback.

Each test runs the real `faultsvc` command in a fresh directory, as an
operator on a fresh clone would.
"""

from __future__ import annotations

import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.operator.commands import faultsvc
from tests.support.servers import free_port

USAGE = 2
FAILED = 1
PASSWORD = "Sup3rS3cretPassw0rd"


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--listen", "127.0.0.1:99999"], "--listen: '127.0.0.1:99999': the port must be"),
        (["--listen", "127.0.0.1"], "--listen: '127.0.0.1' is not HOST:PORT"),
        (["--listen", "nonsense"], "--listen: 'nonsense' is not HOST:PORT"),
        (["--listen", ":50072"], "--listen: ':50072' is not HOST:PORT"),
        (["--listen", "::1:50072"], "write an IPv6 address in brackets"),
        (["--metrics-listen", "garbage"], "--metrics-listen: 'garbage' is not HOST:PORT"),
        (["--workers", "0"], "--workers: input should be greater than or equal to 1"),
        (["--workers", "many"], "--workers: invalid int value: 'many'"),
        (["--log-level", "LOUD"], "argument --log-level: invalid choice: 'LOUD'"),
        (["--database-url", "postgresql://u:p@db/f"], "postgresql databases are not supported"),
        (["--database-url", "mysql+pymysql://u:p@db/f"], "write mysql+aiomysql://"),
        (["--bogus"], "faultsvc serve: error: unrecognized arguments: --bogus"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else "",
)
def test_a_bad_serve_flag_is_one_line(args: list[str], line: str, tmp_path: Path) -> None:
    outcome = faultsvc("serve", *args, cwd=tmp_path)
    assert outcome.code == USAGE
    assert line in outcome.error
    assert not list(tmp_path.iterdir()), "nothing is created before the settings are sound"


def test_a_subcommand_mistake_shows_that_subcommands_usage(tmp_path: Path) -> None:
    outcome = faultsvc("db", "purge", "--older-than", "1", "--bogus", cwd=tmp_path)
    assert outcome.code == USAGE
    assert outcome.stderr.startswith("usage: faultsvc db purge ")
    assert outcome.error == "faultsvc db purge: error: unrecognized arguments: --bogus"


@pytest.mark.parametrize(
    "url",
    [
        f"mysql+aiomysql//trove:{PASSWORD}@db.example/trove",  # no ':'
        f"mysql+aiomysql://trove:{PASSWORD}@db.example:33o6/trove",  # a port that is no number
        f"postgresql+asyncpg://trove:{PASSWORD}@db.example/trove",
        f"mysql+aiomysql://trove:{PASSWORD}@db1/trove,sqlite:///x.db",
        f"mysql+aiomysql://trove:{PASSWORD[:6]}@{PASSWORD[6:]}@db.example/trove",  # '@' not %40
    ],
)
@pytest.mark.parametrize("command", [["serve"], ["db", "upgrade"], ["db", "purge"]])
def test_a_malformed_database_url_is_refused_without_its_password(
    url: str, command: list[str], tmp_path: Path
) -> None:
    extra = ["--older-than", "1"] if command == ["db", "purge"] else []
    outcome = faultsvc(*command, *extra, "--database-url", url, cwd=tmp_path)
    assert outcome.code == USAGE
    assert outcome.error.startswith("faultsvc: --database-url: ")
    assert PASSWORD not in outcome.stderr + outcome.stdout


def test_a_database_url_from_the_environment_is_named_as_such(tmp_path: Path) -> None:
    env = {"FAULTSVC_DATABASE_URL": f"mysql+aiomysql//trove:{PASSWORD}@db/trove"}
    outcome = faultsvc("db", "upgrade", cwd=tmp_path, env=env)
    assert outcome.code == USAGE
    assert outcome.error.startswith("faultsvc: FAULTSVC_DATABASE_URL: a URL is not a database URL")
    assert PASSWORD not in outcome.stderr


def test_a_database_url_without_async_driver_gets_the_shipped_one(tmp_path: Path) -> None:
    outcome = faultsvc("db", "upgrade", "--database-url", "sqlite:///faults.db", cwd=tmp_path)
    assert outcome.code == 0, outcome.stderr
    assert outcome.stdout == "faults.db: schema is current\n"
    assert (tmp_path / "faults.db").exists()


def test_an_environment_variable_that_is_not_a_number_is_named(tmp_path: Path) -> None:
    outcome = faultsvc("serve", cwd=tmp_path, env={"FAULTSVC_WORKERS": "abc"})
    assert outcome.code == USAGE
    assert outcome.error.startswith("faultsvc: FAULTSVC_WORKERS: input should be a valid integer")


def config_file(directory: Path, text: str) -> Path:
    path = directory / "faultsvc.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("listen = '127.0.0.1:50051'\nworkerz = 2\n", "unknown setting 'workerz'"),
        ("listen = '127.0.0.1:50051'\nworkers = \n", "not valid TOML: Invalid value (at line 2"),
        ("workers = 'two'\n", "workers in faultsvc.toml: input should be a valid integer"),
        ("listen = 'localhost'\n", "listen in faultsvc.toml: 'localhost' is not HOST:PORT"),
    ],
)
def test_a_bad_config_file_is_named_with_the_problem(text: str, line: str, tmp_path: Path) -> None:
    config_file(tmp_path, text)
    outcome = faultsvc("serve", "--config", "faultsvc.toml", cwd=tmp_path)
    assert outcome.code == USAGE
    assert outcome.error.startswith("faultsvc: ")
    assert line in outcome.error


def test_a_missing_config_file_is_an_error_not_ignored(tmp_path: Path) -> None:
    outcome = faultsvc("serve", "--config", "missing.toml", cwd=tmp_path)
    assert outcome.code == USAGE
    assert outcome.error == "faultsvc: config file missing.toml: no such file"


@pytest.fixture
def closed_port() -> int:
    """A port where nothing listens: a database that is down."""
    return free_port()


@pytest.mark.parametrize("command", [["db", "upgrade"], ["db", "purge", "--older-than", "1"]])
def test_db_commands_with_the_database_down_say_so(
    command: list[str], closed_port: int, tmp_path: Path
) -> None:
    url = f"mysql+aiomysql://trove:{PASSWORD}@127.0.0.1:{closed_port}/trove"
    outcome = faultsvc(*command, "--database-url", url, cwd=tmp_path)
    assert outcome.code == FAILED
    assert "no database endpoint answers: 127.0.0.1:" in outcome.error
    assert "Can't connect to MySQL server" in outcome.error
    assert PASSWORD not in outcome.stderr


def test_a_url_argument_of_the_wrong_type_is_a_usage_error(tmp_path: Path) -> None:
    url = f"mysql+aiomysql://trove:{PASSWORD}@db.example/trove?connect_timeout=soon"
    outcome = faultsvc("db", "upgrade", "--database-url", url, cwd=tmp_path)
    assert outcome.code == USAGE
    assert outcome.error == (
        "faultsvc: --database-url: a URL argument is wrong: "
        "invalid literal for int() with base 10: 'soon'"
    )


def test_a_url_argument_the_driver_does_not_take_is_one_line(
    closed_port: int, tmp_path: Path
) -> None:
    url = f"mysql+aiomysql://trove:{PASSWORD}@127.0.0.1:{closed_port}/trove?no_such_argument=1"
    outcome = faultsvc("db", "upgrade", "--database-url", url, cwd=tmp_path)
    assert outcome.code == FAILED
    assert outcome.error.endswith(
        "TypeError: connect() got an unexpected keyword argument 'no_such_argument'"
    )
    assert PASSWORD not in outcome.stderr


def test_serve_with_the_database_down_says_so(closed_port: int, tmp_path: Path) -> None:
    url = f"mysql+aiomysql://trove:{PASSWORD}@127.0.0.1:{closed_port}/trove"
    listen = f"127.0.0.1:{free_port()}"  # not the default port, which a running faultsvc may hold
    outcome = faultsvc(
        "serve", "--workers", "1", "--listen", listen, "--database-url", url, cwd=tmp_path
    )
    assert outcome.code == FAILED
    assert "cannot start: no database endpoint answers" in outcome.error
    assert PASSWORD not in outcome.stderr


@pytest.mark.parametrize("command", [["serve"], ["db", "upgrade"], ["db", "purge"]])
@pytest.mark.parametrize("directory", ["a-file", "missing"])
def test_a_sqlite_path_that_cannot_hold_a_database_is_refused(
    command: list[str], directory: str, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("")
    extra = ["--older-than", "1"] if command == ["db", "purge"] else []
    url = f"sqlite+aiosqlite:///{tmp_path / directory / 'faults.db'}"
    outcome = faultsvc(*command, *extra, "--database-url", url, cwd=tmp_path)
    assert outcome.code == USAGE
    assert outcome.error == (
        f"faultsvc: --database-url: the SQLite file's directory {tmp_path / directory} "
        "is not a directory"
    )


def test_upgrading_a_database_opened_read_only_says_so(tmp_path: Path) -> None:
    sqlite3.connect(tmp_path / "faults.db").close()
    url = f"sqlite+aiosqlite:///file:{tmp_path / 'faults.db'}?mode=ro&uri=true"
    outcome = faultsvc("db", "upgrade", "--database-url", url, cwd=tmp_path)
    assert outcome.code == FAILED
    assert outcome.error.endswith("OperationalError: attempt to write a readonly database")


def test_a_migration_that_fails_says_why_in_one_line(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "faults.db") as database:  # a table not made by faultsvc
        database.execute("CREATE TABLE instance_faults (id INTEGER)")
    outcome = faultsvc("db", "upgrade", cwd=tmp_path, env=sqlite_env(tmp_path))
    assert outcome.code == FAILED
    assert outcome.error == (
        "faultsvc: cannot upgrade the schema: "
        "OperationalError: table instance_faults already exists"
    )


def test_purge_does_not_migrate_behind_the_operators_back(tmp_path: Path) -> None:
    sqlite3.connect(tmp_path / "faults.db").close()
    outcome = faultsvc("db", "purge", "--older-than", "1", cwd=tmp_path, env=sqlite_env(tmp_path))
    assert outcome.code == FAILED
    assert outcome.error == (
        "faultsvc: cannot purge: the database has no faultsvc schema; "
        "run `faultsvc db upgrade` first"
    )
    with sqlite3.connect(tmp_path / "faults.db") as database:
        assert database.execute("SELECT name FROM sqlite_master").fetchall() == []


def sqlite_env(directory: Path) -> dict[str, str]:
    return {"FAULTSVC_DATABASE_URL": f"sqlite+aiosqlite:///{directory / 'faults.db'}"}


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


def test_metrics_on_a_busy_port_are_refused(busy_port: int, tmp_path: Path) -> None:
    outcome = faultsvc(
        "serve",
        "--listen",
        f"127.0.0.1:{free_port()}",
        "--workers",
        "1",
        "--metrics-listen",
        f"127.0.0.1:{busy_port}",
        cwd=tmp_path,
        env=sqlite_env(tmp_path),
    )
    assert outcome.code == FAILED
    assert outcome.error.endswith(
        f"cannot start: cannot serve metrics on 127.0.0.1:{busy_port}: Address already in use"
    )


def test_an_unknown_host_is_one_line(tmp_path: Path) -> None:
    outcome = faultsvc(
        "serve",
        "--listen",
        "no-such-host.invalid:50051",
        "--allow-insecure-bind",
        cwd=tmp_path,
        env=sqlite_env(tmp_path),
    )
    assert outcome.code == FAILED
    assert "cannot start: cannot listen on no-such-host.invalid:50051: " in outcome.error
