"""Service tokens: the file format, constant-time checks, and refusals of every kind of RPC."""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from faultsvc.config import Settings
from faultsvc.errors import Unauthenticated
from faultsvc.policy.auth import (
    AuthConfigError,
    AuthInterceptor,
    ServiceToken,
    TokenVerifier,
    load_tokens,
    parse_tokens_file,
)
from tests.support.tokens import ADMIN_TOKEN, FORWARDING_TOKEN, READER_TOKEN, TOKENS_FILE

SHORT_TOKEN = "short-secret"


def test_a_tokens_file_names_tokens_and_their_roles() -> None:
    tokens = parse_tokens_file(TOKENS_FILE)
    assert [token.roles for token in tokens] == [None, {"admin"}, {"reader"}]
    assert [token.origin for token in tokens] == [
        "tokens file line 2",
        "tokens file line 4",
        "tokens file line 5",
    ]
    assert parse_tokens_file(f"{FORWARDING_TOKEN} roles=")[0].roles == frozenset()


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        (SHORT_TOKEN, "line 1: a token must be at least 16 characters"),
        (f"{FORWARDING_TOKEN} admin", "line 1: expected TOKEN [roles=ROLE,...]"),
        (f"{FORWARDING_TOKEN} roles=a roles=b", "line 1: expected TOKEN [roles=ROLE,...]"),
    ],
)
def test_a_bad_tokens_file_is_refused_without_quoting_a_token(text: str, complaint: str) -> None:
    with pytest.raises(AuthConfigError) as refusal:
        parse_tokens_file(f"# comment\n{text}")
    assert str(refusal.value).endswith(complaint.replace("line 1", "line 2"))
    assert SHORT_TOKEN not in str(refusal.value)
    assert FORWARDING_TOKEN[:10] not in str(refusal.value)


def test_tokens_come_from_the_environment_and_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"{ADMIN_TOKEN} roles=admin\n")
    monkeypatch.setenv("FAULTSVC_TOKENS", f"{FORWARDING_TOKEN}, {READER_TOKEN}")
    settings = Settings(tokens_file=path)
    assert FORWARDING_TOKEN not in repr(settings)
    assert [token.roles for token in load_tokens(settings)] == [None, None, {"admin"}]

    path.write_text(f"{READER_TOKEN}\n")
    with pytest.raises(AuthConfigError, match="tokens file line 1: the same token as tokens"):
        load_tokens(settings)
    path.write_text("# nothing yet\n")
    monkeypatch.delenv("FAULTSVC_TOKENS")
    with pytest.raises(AuthConfigError, match="holds no token"):
        load_tokens(Settings(tokens_file=path))


@pytest.mark.parametrize("presented", [FORWARDING_TOKEN, READER_TOKEN, "a-wrong-guess-of-a-token"])
def test_every_configured_token_is_compared_whichever_matches(
    presented: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The work done tells an attacker neither which token matched nor how close a guess was."""
    compared: list[tuple[int, int]] = []
    real_compare: Callable[[bytes, bytes], bool] = hmac.compare_digest

    def compare_digest(a: bytes, b: bytes) -> bool:
        compared.append((len(a), len(b)))
        return real_compare(a, b)

    monkeypatch.setattr(hmac, "compare_digest", compare_digest)
    verifier = TokenVerifier(parse_tokens_file(TOKENS_FILE))
    with contextlib.suppress(Unauthenticated):
        verifier.verify([("authorization", f"Bearer {presented}")])
    assert compared == [(32, 32)] * 3


def test_no_tokens_is_a_configuration_error() -> None:
    with pytest.raises(AuthConfigError):
        TokenVerifier([])
    with pytest.raises(AuthConfigError):
        ServiceToken.of("", None, "tokens setting, token 1")


async def test_a_refused_call_reaches_no_other_interceptor() -> None:
    interceptor = AuthInterceptor(TokenVerifier(parse_tokens_file(TOKENS_FILE)))
    reached: list[Any] = []

    async def continuation(details: grpc.HandlerCallDetails) -> Any:
        reached.append(details)
        return None

    class Details(grpc.HandlerCallDetails):
        method = "/faultsvc.v1.FaultService/GetLatestFault"
        invocation_metadata = (("x-roles", "admin"),)

    refusal = await interceptor.intercept_service(continuation, Details())
    assert refusal is not None
    assert reached == []


@pytest.fixture
async def guarded_standard_services() -> Any:
    """A bare server whose health and reflection services (two streaming RPCs) need a token."""
    server = grpc.aio.server(
        interceptors=[AuthInterceptor(TokenVerifier(parse_tokens_file(TOKENS_FILE)), ())]
    )
    health_pb2_grpc.add_HealthServicer_to_server(health_aio.HealthServicer(), server)
    reflection.enable_server_reflection([reflection.SERVICE_NAME], server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(0)


async def test_streaming_rpcs_are_refused_in_their_own_kind(guarded_standard_services: str) -> None:
    async with grpc.aio.insecure_channel(guarded_standard_services) as channel:
        health: Any = health_pb2_grpc.HealthStub(channel)  # its type stubs omit the methods
        watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as refusal:
            await watch.read()
        assert refusal.value.code() == grpc.StatusCode.UNAUTHENTICATED

        reflecting: Any = reflection_pb2_grpc.ServerReflectionStub(channel)  # type: ignore[arg-type]
        info = reflecting.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
        with pytest.raises(grpc.aio.AioRpcError) as refusal:
            await info.read()
        assert refusal.value.code() == grpc.StatusCode.UNAUTHENTICATED

        unknown: Any = channel.unary_unary("/faultsvc.v1.FaultService/NoSuchMethod")
        with pytest.raises(grpc.aio.AioRpcError) as refusal:
            await unknown(b"", timeout=10)
        assert refusal.value.code() == grpc.StatusCode.UNIMPLEMENTED
