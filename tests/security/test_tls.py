"""Mutual TLS: only clients with a certificate from the configured CA get past the handshake."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from faultsvc.app import FaultServer
from faultsvc.v1 import fault_pb2, fault_service_pb2_grpc
from faultsvc.v1 import fault_service_pb2 as pb
from tests.security.certificates import CertificateAuthority, Issued
from tests.support.servers import MakeServer

SERVER_NAME = "localhost"


@dataclass(frozen=True)
class Pki:
    """The server's CA, a client it trusts, and a client from a CA it does not."""

    ca: CertificateAuthority
    client: Issued
    stranger: Issued


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca = CertificateAuthority("faultsvc test CA")
    return Pki(
        ca, ca.issue_client("taskmanager"), CertificateAuthority("other CA").issue_client("x")
    )


@pytest.fixture
async def mtls_server(pki: Pki, make_server: MakeServer, tmp_path: Path) -> FaultServer:
    cert, key = pki.ca.issue_server(SERVER_NAME).write(tmp_path, "server")
    client_ca = tmp_path / "clients-ca.crt"
    client_ca.write_bytes(pki.ca.pem)
    return await make_server(tls_cert=cert, tls_key=key, tls_client_ca=client_ca)


def secure_channel(target: str, ca: bytes, client: Issued | None) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca,
        private_key=client.key if client else None,
        certificate_chain=client.certificate if client else None,
    )
    return grpc.aio.secure_channel(
        target, credentials, options=[("grpc.ssl_target_name_override", SERVER_NAME)]
    )


async def record(
    channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...] = ()
) -> fault_pb2.Fault:
    stub = fault_service_pb2_grpc.FaultServiceStub(channel)
    request = pb.RecordFaultRequest(instance_id=str(uuid.uuid4()), message="m", details="trace")
    response = await stub.RecordFault(request, metadata=metadata, timeout=10)
    return response.fault


async def test_a_client_with_a_certificate_from_the_ca_is_served_and_trusted(
    mtls_server: FaultServer, pki: Pki
) -> None:
    async with secure_channel(mtls_server.target, pki.ca.pem, pki.client) as channel:
        assert (await record(channel)).details == ""
        assert (await record(channel, (("x-roles", "admin"),))).details == "trace"


@pytest.mark.parametrize("who", ["no certificate", "a certificate from another CA", "plain text"])
async def test_everyone_else_fails_at_the_handshake(
    mtls_server: FaultServer, pki: Pki, who: str
) -> None:
    if who == "plain text":
        channel = grpc.aio.insecure_channel(mtls_server.target)
    else:
        channel = secure_channel(
            mtls_server.target, pki.ca.pem, None if who == "no certificate" else pki.stranger
        )
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await record(channel, (("x-roles", "admin"),))
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_tls_without_a_client_ca_serves_any_client(
    pki: Pki, make_server: MakeServer, tmp_path: Path
) -> None:
    cert, key = pki.ca.issue_server(SERVER_NAME).write(tmp_path, "server")
    server = await make_server(tls_cert=cert, tls_key=key)
    async with secure_channel(server.target, pki.ca.pem, None) as channel:
        await record(channel)
