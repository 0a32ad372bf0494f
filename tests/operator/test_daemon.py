"""What operators expect of a daemon: a version, quiet logs, a unit file that systemd accepts."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from faultsvc.cli import version
from tests.operator.commands import FAULTSVC, faultsvc

ROOT = Path(__file__).parents[2]
UNIT = ROOT / "docs" / "deploy" / "faultsvc.service"


def test_version(tmp_path: Path) -> None:
    outcome = faultsvc("--version", cwd=tmp_path)
    assert outcome.code == 0
    assert outcome.stdout == f"faultsvc {version()}\n"
    assert version()[0].isdigit()


def test_db_commands_say_what_they_did_and_nothing_else(tmp_path: Path) -> None:
    env = {"FAULTSVC_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'faults.db'}"}
    first = faultsvc("db", "upgrade", cwd=tmp_path, env=env)
    assert first.code == 0
    assert first.stdout == f"{tmp_path / 'faults.db'}: schema is current\n"
    [migrated] = first.stderr.splitlines()
    assert migrated.endswith(
        "INFO MainProcess faultsvc.storage.migrate: "
        "schema migrated from nothing (a new database) to 0003"
    )
    again = faultsvc("db", "upgrade", cwd=tmp_path, env=env)
    assert (again.code, again.stderr) == (0, "")
    purge = faultsvc("db", "purge", "--older-than", "1", cwd=tmp_path, env=env)
    assert (purge.code, purge.stderr) == (0, "")
    assert purge.stdout == "purged 0 cleared faults older than 1 day\n"


def test_make_serve_installs_the_runtime_without_the_dev_tools(tmp_path: Path) -> None:
    shutil.copy(ROOT / "Makefile", tmp_path)
    (tmp_path / "pyproject.toml").touch()
    planned = subprocess.run(
        ["make", "--no-print-directory", "-n", "serve", "ARGS=--listen 127.0.0.1:50052"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "pip install --quiet -e .\n" in planned
    assert "[dev]" not in planned
    assert planned.endswith(".venv/bin/faultsvc serve --listen 127.0.0.1:50052\n")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_the_systemd_unit_is_one_systemd_accepts(tmp_path: Path) -> None:
    """The unit as shipped, but pointing at this checkout's faultsvc and an existing user."""
    faultsvc_bin = Path(FAULTSVC[0]).parent / "faultsvc"
    unit = tmp_path / "faultsvc.service"
    unit.write_text(
        UNIT.read_text()
        .replace("/opt/faultsvc/bin/faultsvc", str(faultsvc_bin))
        .replace("User=faultsvc", "User=daemon")
        .replace("Group=faultsvc", "Group=daemon")
    )
    verified = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert verified.returncode == 0, verified.stderr
    assert verified.stderr == ""
    text = UNIT.read_text()
    assert "ExecStartPre=/opt/faultsvc/bin/faultsvc db upgrade" in text
    assert "RestartPreventExitStatus=2" in text
