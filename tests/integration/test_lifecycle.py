"""Starting, stopping and maintaining the server as operators do."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from pathlib import Path

import grpc

from faultsvc.v1 import fault_service_pb2 as pb
from faultsvc.v1 import fault_service_pb2_grpc
from tests.support.servers import ServerProcess, free_port

FAULTSVC = [sys.executable, "-m", "faultsvc"]


async def test_sigterm_lets_in_flight_calls_finish(database_url: str) -> None:
    """Calls being handled at SIGTERM finish; the rest are refused, and none half-way.

    grpc answers CANCELLED for calls that had reached the server but that no
    handler had started yet, and UNAVAILABLE once the port is closed: neither
    stored anything, so a retry with the same fault_id is safe.
    """
    instance = str(uuid.uuid4())
    server = ServerProcess(database_url).start()
    acknowledged: list[str] = []
    refused: list[grpc.StatusCode] = []
    under_load = asyncio.Event()

    async def report(stub: fault_service_pb2_grpc.FaultServiceAsyncStub, n: int) -> None:
        try:
            response = await stub.RecordFault(
                pb.RecordFaultRequest(instance_id=instance, message=f"fault {n}"), timeout=20
            )
            acknowledged.append(response.fault.id)
            if len(acknowledged) == 20:
                under_load.set()
        except grpc.aio.AioRpcError as error:
            refused.append(error.code())

    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = fault_service_pb2_grpc.FaultServiceStub(channel)
        calls = [asyncio.create_task(report(stub, n)) for n in range(400)]
        await under_load.wait()
        server.terminate()
        acknowledged_before_sigterm = len(acknowledged)
        await asyncio.gather(*calls)
    assert server.wait() == 0
    assert len(acknowledged) > acknowledged_before_sigterm
    assert set(refused) <= {grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE}

    server.start()
    try:
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub = fault_service_pb2_grpc.FaultServiceStub(channel)
            history = await stub.ListFaults(
                pb.ListFaultsRequest(instance_id=instance, page_size=1000)
            )
        assert {fault.id for fault in history.faults} == set(acknowledged)
        assert len(acknowledged) + len(refused) == 400
    finally:
        server.stop()


def test_db_commands(database_url: str) -> None:
    upgrade = subprocess.run(
        [*FAULTSVC, "db", "upgrade", "--database-url", database_url],
        capture_output=True,
        text=True,
        check=False,
    )
    assert upgrade.returncode == 0, upgrade.stderr
    assert "schema is current" in upgrade.stdout

    with ServerProcess(database_url) as server, grpc.insecure_channel(server.target) as channel:
        stub = fault_service_pb2_grpc.FaultServiceStub(channel)
        for message in ("disk full", "volume lost", "no host"):
            stub.RecordFault(pb.RecordFaultRequest(instance_id="gone", message=message))
        stub.RecordFault(pb.RecordFaultRequest(instance_id="kept", message="m"))
        stub.ClearFaults(pb.ClearFaultsRequest(instance_id="gone"))

    def purge(days: str) -> str:
        result = subprocess.run(
            [*FAULTSVC, "db", "purge", "--older-than", days, "--database-url", database_url],
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stdout

    assert "purged 0 " in purge("1")
    assert "purged 3 " in purge("0")


def test_refuses_to_listen_beyond_loopback_without_auth(tmp_path: Path) -> None:
    refused = subprocess.run(
        [
            *FAULTSVC,
            "serve",
            "--listen",
            f"0.0.0.0:{free_port()}",
            "--database-url",
            f"sqlite+aiosqlite:///{tmp_path / 'f.db'}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert refused.returncode == 2
    assert "--allow-insecure-bind" in refused.stderr


def test_settings_from_environment_and_config_file(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "faultsvc.toml"
    config.write_text(f'listen = "127.0.0.1:{port}"\nadmin_roles = ["operator"]\n')
    server = ServerProcess(
        f"sqlite+aiosqlite:///{tmp_path / 'f.db'}",
        port=port,
        extra_args=["--config", str(config)],
        env={"FAULTSVC_GRACE_SECONDS": "1"},
    )
    # The flag --listen that ServerProcess passes wins over the file; the file
    # still sets the admin roles.
    with server, grpc.insecure_channel(server.target) as channel:
        stub = fault_service_pb2_grpc.FaultServiceStub(channel)
        stub.RecordFault(pb.RecordFaultRequest(instance_id="i", message="m", details="trace"))
        request = pb.GetLatestFaultRequest(instance_id="i")
        assert stub.GetLatestFault(request, metadata=(("x-roles", "operator"),)).fault.details
        assert not stub.GetLatestFault(request, metadata=(("x-roles", "admin"),)).fault.details
