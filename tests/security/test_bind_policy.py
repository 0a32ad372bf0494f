"""Beyond loopback only with authentication, or when the operator explicitly accepts the risk."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from faultsvc.app import InsecureBindError, check_bind_is_safe
from faultsvc.config import Settings
from faultsvc.v1 import fault_service_pb2 as pb
from faultsvc.v1 import fault_service_pb2_grpc
from tests.support.servers import ServerProcess, free_port
from tests.support.tokens import FORWARDING_TOKEN, bearer


@pytest.mark.parametrize("listen", ["127.0.0.1:50051", "localhost:50051", "[::1]:50051"])
def test_loopback_needs_no_authentication(listen: str) -> None:
    check_bind_is_safe(Settings(listen=listen))


@pytest.mark.parametrize("listen", ["0.0.0.0:50051", "[::]:50051", "10.1.2.3:50051"])
def test_beyond_loopback_without_authentication_is_refused(listen: str, tmp_path: Path) -> None:
    with pytest.raises(InsecureBindError, match="--allow-insecure-bind"):
        check_bind_is_safe(Settings(listen=listen))
    # TLS alone encrypts, but anyone may still connect and claim the admin role.
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    with pytest.raises(InsecureBindError):
        check_bind_is_safe(Settings(listen=listen, tls_cert=cert, tls_key=key))
    check_bind_is_safe(Settings(listen=listen, allow_insecure_bind=True))


def test_beyond_loopback_with_tokens_or_client_certificates_is_allowed(tmp_path: Path) -> None:
    cert, key, ca = tmp_path / "server.crt", tmp_path / "server.key", tmp_path / "ca.crt"
    check_bind_is_safe(Settings(listen="0.0.0.0:50051", tokens=[FORWARDING_TOKEN]))
    check_bind_is_safe(Settings(listen="0.0.0.0:50051", tokens_file=tmp_path / "tokens"))
    check_bind_is_safe(
        Settings(listen="0.0.0.0:50051", tls_cert=cert, tls_key=key, tls_client_ca=ca)
    )


def test_a_server_with_tokens_listens_on_every_address(tokens_file: Path, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "faultsvc.log"
    server = ServerProcess(
        f"sqlite+aiosqlite:///{tmp_path / 'faults.db'}",
        port=port,
        extra_args=["--listen", f"0.0.0.0:{port}", "--tokens-file", str(tokens_file)],
        log_path=log,
    )
    with server, grpc.insecure_channel(server.target) as channel:
        stub = fault_service_pb2_grpc.FaultServiceStub(channel)
        request = pb.GetLatestFaultRequest(instance_id="i")
        stub.GetLatestFault(request, metadata=(bearer(FORWARDING_TOKEN),), timeout=10)
        with pytest.raises(grpc.RpcError) as refusal:
            stub.GetLatestFault(request, timeout=10)
        assert refusal.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "clear text" in log.read_text(), "a warning that tokens cross the network unencrypted"
