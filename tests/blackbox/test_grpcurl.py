"""What an operator does with grpcurl and nothing but the running server (reflection)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.support.databases import sqlite_url
from tests.support.servers import ServerProcess

GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(sqlite_url(tmp_path_factory.mktemp("grpcurl"))) as server:
        yield server


def grpcurl(
    server: ServerProcess, *args: str, flags: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    """`grpcurl -plaintext FLAGS TARGET ARGS`, as an operator types it."""
    return subprocess.run(
        [GRPCURL, "-plaintext", *flags, server.target, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_list_shows_the_services(server: ServerProcess) -> None:
    listed = grpcurl(server, "list")
    assert listed.returncode == 0, listed.stderr
    assert set(listed.stdout.split()) == {
        "faultsvc.v1.FaultService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }


def test_describe_shows_the_contract(server: ServerProcess) -> None:
    described = grpcurl(server, "describe", "faultsvc.v1.FaultService")
    assert described.returncode == 0, described.stderr
    for rpc in (
        "RecordFault",
        "GetLatestFault",
        "BatchGetLatestFaults",
        "ListFaults",
        "ClearFaults",
    ):
        assert f"rpc {rpc}" in described.stdout
    fault = grpcurl(server, "describe", "faultsvc.v1.Fault")
    assert "admin_only" in fault.stdout


def test_record_and_read_back(server: ServerProcess) -> None:
    request = {"instance_id": "grpcurl-1", "message": "volume full", "details": "df: 100%"}
    recorded = grpcurl(
        server, "faultsvc.v1.FaultService/RecordFault", flags=["-d", json.dumps(request)]
    )
    assert recorded.returncode == 0, recorded.stderr
    fault = json.loads(recorded.stdout)["fault"]
    assert fault["message"] == "volume full"
    assert "details" not in fault

    read = grpcurl(
        server,
        "faultsvc.v1.FaultService/GetLatestFault",
        flags=["-H", "x-roles: admin", "-d", '{"instance_id": "grpcurl-1"}'],
    )
    assert read.returncode == 0, read.stderr
    assert json.loads(read.stdout)["fault"] == {**fault, "details": "df: 100%"}


def test_bad_input_shows_the_field(server: ServerProcess) -> None:
    failed = grpcurl(
        server,
        "faultsvc.v1.FaultService/RecordFault",
        flags=["-d", '{"instance_id": "", "message": "m"}'],
    )
    assert failed.returncode != 0
    assert "InvalidArgument" in failed.stderr
    assert '"field":"instance_id"' in failed.stderr.replace(" ", "")


def test_health(server: ServerProcess) -> None:
    for service in ("", "faultsvc.v1.FaultService"):
        checked = grpcurl(
            server, "grpc.health.v1.Health/Check", flags=["-d", json.dumps({"service": service})]
        )
        assert checked.returncode == 0, checked.stderr
        assert json.loads(checked.stdout) == {"status": "SERVING"}
