"""`faultsvc serve` as operators run it: several workers, a config file, a port of its own."""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from faultsvc.v1 import fault_service_pb2 as pb
from faultsvc.v1 import fault_service_pb2_grpc
from tests.operator.commands import faultsvc, serve_command
from tests.support.servers import free_port, wait_until_serving

WORKERS = "2"


@contextmanager
def serving(*args: str, cwd: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """`faultsvc serve ARGS` until it answers on `port`; SIGTERM on the way out."""
    log = (cwd / f"serve-{uuid.uuid4().hex[:6]}.log").open("wb")
    process = subprocess.Popen(serve_command(*args), cwd=cwd, stdout=log, stderr=log)
    try:
        wait_until_serving(f"127.0.0.1:{port}")
        yield process
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def sqlite_url(directory: Path, name: str) -> str:
    return f"sqlite+aiosqlite:///{directory / name}"


def refused_serve(listen: str, workers: str, database_url: str, cwd: Path) -> str:
    """Runs `faultsvc serve`, which must fail with exit code 1; returns its one line."""
    outcome = faultsvc(
        "serve", "--listen", listen, "--workers", workers, "--database-url", database_url, cwd=cwd
    )
    assert outcome.code == 1
    return outcome.error


def test_a_config_file_serves_with_several_workers(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "faultsvc.toml").write_text(
        f'listen = "127.0.0.1:{port}"\n'
        f"workers = {WORKERS}\n"
        f'database_url = "{sqlite_url(tmp_path, "faults.db")}"\n'
    )
    with serving("--config", "faultsvc.toml", cwd=tmp_path, port=port) as server:
        assert server.poll() is None
    assert server.returncode == 0
    [log] = tmp_path.glob("serve-*.log")
    assert log.read_text().count("faultsvc serving on") == int(WORKERS)
    assert "alembic" not in log.read_text(), "one line per migration, not per process"


def record_and_read_back(target: str, calls: int) -> list[bool]:
    """Records a fault, then asks for it `calls` times, each on a new connection."""
    instance = str(uuid.uuid4())
    with grpc.insecure_channel(target) as channel:
        stub = fault_service_pb2_grpc.FaultServiceStub(channel)
        stub.RecordFault(pb.RecordFaultRequest(instance_id=instance, message="m"), timeout=10)
    found = []
    for _ in range(calls):
        with grpc.insecure_channel(target) as channel:
            stub = fault_service_pb2_grpc.FaultServiceStub(channel)
            request = pb.GetLatestFaultRequest(instance_id=instance)
            found.append(stub.GetLatestFault(request, timeout=10).HasField("fault"))
    return found


@pytest.mark.parametrize("second_workers", ["1", WORKERS])
def test_a_second_faultsvc_on_the_same_port_is_refused(second_workers: str, tmp_path: Path) -> None:
    """SO_REUSEPORT would let it share the port, splitting calls between two databases."""
    port = free_port()
    listen = f"127.0.0.1:{port}"
    first = ["--listen", listen, "--workers", WORKERS]
    with serving(*first, "--database-url", sqlite_url(tmp_path, "a.db"), cwd=tmp_path, port=port):
        refusal = refused_serve(listen, second_workers, sqlite_url(tmp_path, "b.db"), tmp_path)
        assert refusal.endswith(
            f"cannot start: port {port} is in use: something else listens on {listen}"
        )
        assert record_and_read_back(listen, 12) == [True] * 12
    assert not (tmp_path / "b.db").exists(), "refused before touching its database"


@pytest.mark.parametrize("reuse_port", [False, True], ids=["plain", "SO_REUSEPORT"])
def test_a_port_another_program_listens_on_is_refused(reuse_port: bool, tmp_path: Path) -> None:
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, int(reuse_port))
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        listen = f"localhost:{port}"
        for workers in ("1", WORKERS):
            refusal = refused_serve(listen, workers, sqlite_url(tmp_path, "faults.db"), tmp_path)
            assert refusal.endswith(
                f"cannot start: port {port} is in use: something else listens on {listen}"
            )


def test_the_port_is_free_again_as_soon_as_the_server_stops(tmp_path: Path) -> None:
    """Connections the server closed wait in TIME_WAIT; they must not block a restart."""
    port = free_port()
    args = ["--listen", f"127.0.0.1:{port}", "--workers", WORKERS]
    args += ["--database-url", sqlite_url(tmp_path, "faults.db")]
    channels = []
    with serving(*args, cwd=tmp_path, port=port):
        for _ in range(8):  # left open: the server closes them when it stops
            channel = grpc.insecure_channel(f"127.0.0.1:{port}")
            fault_service_pb2_grpc.FaultServiceStub(channel).GetLatestFault(
                pb.GetLatestFaultRequest(instance_id="i"), timeout=10
            )
            channels.append(channel)
    time.sleep(0.5)
    with serving(*args, cwd=tmp_path, port=port) as server:
        assert server.poll() is None
    for channel in channels:
        channel.close()
