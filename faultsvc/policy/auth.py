"""Who may call: service tokens, TLS with client certificates, and what that means for roles.

With tokens configured, every call to a protected service must carry
`authorization: Bearer <token>` metadata. The standard health and reflection
services stay open: they are how load balancers and operators find the
server, and they say nothing about any fault.

A token file has one token per line, `#` starting a comment:

    # the task manager and conductor: x-roles forwarded from the user's request
    3b0c5e1f8a9d4e7c9f2a6b1d0e8c7f4a
    # the operators' CLI: always admin, whatever x-roles it sends
    9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b roles=admin

A token with `roles=` fixes its caller's roles: x-roles sent with it is
replaced by the token's roles before anything else sees the call. A token
without it is a service that forwards its user's roles in x-roles, and is
trusted to do so honestly.

With mutual TLS the handshake has already refused every client without a
certificate from the configured CA, so every call that arrives comes from an
authenticated peer and its x-roles is trusted.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from faultsvc.config import Settings
from faultsvc.errors import Unauthenticated, abort_with
from faultsvc.handlers import Continuation, Handler, make_handler, method_descriptor
from faultsvc.policy.roles import ROLES_METADATA_KEY

log = logging.getLogger(__name__)

AUTHORIZATION_METADATA_KEY = "authorization"
MIN_TOKEN_CHARS = 16
# Services any caller may use: they expose the server's health and its schema.
OPEN_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)

MISSING_TOKEN = "missing credentials: send 'authorization: Bearer <token>' metadata"
MALFORMED_TOKEN = "malformed authorization metadata: expected one 'Bearer <token>'"
INVALID_TOKEN = "invalid bearer token"

Metadata = Sequence[tuple[str, str | bytes]] | None


class AuthConfigError(ValueError):
    """The tokens or TLS files cannot be used; the message never quotes a token."""


@dataclass(frozen=True)
class ServiceToken:
    """A configured token, kept as its SHA-256 so every comparison has the same length."""

    digest: bytes
    roles: frozenset[str] | None  # None: the caller's x-roles is trusted
    origin: str  # where it was configured, for messages: "tokens file line 3"

    @classmethod
    def of(cls, secret: str, roles: frozenset[str] | None, origin: str) -> ServiceToken:
        if len(secret) < MIN_TOKEN_CHARS:
            raise AuthConfigError(
                f"{origin}: a token must be at least {MIN_TOKEN_CHARS} characters"
            )
        return cls(_digest(secret), roles, origin)


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def authentication_configured(settings: Settings) -> bool:
    """Whether callers must prove who they are: tokens, or TLS with client certificates."""
    return bool(settings.tokens or settings.tokens_file or settings.tls_client_ca)


def load_tokens(settings: Settings) -> list[ServiceToken]:
    """The tokens of FAULTSVC_TOKENS (or `tokens` in the config file) and of the tokens file."""
    tokens = [
        ServiceToken.of(token.get_secret_value(), None, f"tokens setting, token {number}")
        for number, token in enumerate(settings.tokens, 1)
    ]
    if settings.tokens_file is not None:
        try:
            text = settings.tokens_file.read_text()
        except OSError as error:
            raise AuthConfigError(
                f"cannot read tokens file {settings.tokens_file}: {error.strerror}"
            ) from None
        tokens += parse_tokens_file(text)
        if not tokens:
            raise AuthConfigError(f"tokens file {settings.tokens_file} holds no token")
    seen: dict[bytes, str] = {}
    for token in tokens:
        if token.digest in seen:
            raise AuthConfigError(f"{token.origin}: the same token as {seen[token.digest]}")
        seen[token.digest] = token.origin
    return tokens


def parse_tokens_file(text: str) -> list[ServiceToken]:
    """`TOKEN [roles=ROLE,...]` per line; blank lines and `#` comments are skipped."""
    tokens = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        comment = next((i for i, field in enumerate(fields) if field.startswith("#")), None)
        fields = fields[:comment]
        if not fields:
            continue
        origin = f"tokens file line {number}"
        secret, *options = fields
        roles: frozenset[str] | None = None
        for option in options:
            name, equals, value = option.partition("=")
            if name != "roles" or not equals or roles is not None:
                raise AuthConfigError(f"{origin}: expected TOKEN [roles=ROLE,...]")
            roles = frozenset(role.strip().lower() for role in value.split(",") if role.strip())
        tokens.append(ServiceToken.of(secret, roles, origin))
    return tokens


class TokenVerifier:
    """Finds the configured token a call's metadata carries, in constant time."""

    def __init__(self, tokens: Iterable[ServiceToken]) -> None:
        self._tokens = tuple(tokens)
        if not self._tokens:
            raise AuthConfigError("no tokens to verify callers with")

    def verify(self, metadata: Metadata) -> ServiceToken:
        """The caller's token; raises Unauthenticated, never quoting what was sent."""
        values = [
            value for key, value in metadata or () if key.lower() == AUTHORIZATION_METADATA_KEY
        ]
        if not values:
            raise Unauthenticated(MISSING_TOKEN)
        if len(values) > 1 or not isinstance(values[0], str):
            raise Unauthenticated(MALFORMED_TOKEN)
        scheme, _, credential = values[0].strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise Unauthenticated(MALFORMED_TOKEN)
        # Every configured token is compared, equal-length digests each time,
        # so the time taken tells neither which token matched nor how close
        # a guess came.
        digest = _digest(credential)
        found = None
        for token in self._tokens:
            if hmac.compare_digest(digest, token.digest):
                found = token
        if found is None:
            raise Unauthenticated(INVALID_TOKEN)
        return found


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses every call to a protected service that carries no valid token.

    It comes before the interceptors that decide what a caller may see, so a
    refused call reaches none of them: its handler is never even looked up.
    A refusal is a handler of the same kind as the RPC's (found from the
    descriptors), so streaming RPCs are refused the same way.
    """

    def __init__(
        self, verifier: TokenVerifier, open_services: Iterable[str] = OPEN_SERVICES
    ) -> None:
        self._verifier = verifier
        self._open_services = frozenset(open_services)
        self._refusals: dict[tuple[bool, bool, str], Handler] = {}

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        method = handler_call_details.method
        if _service_of(method) in self._open_services:
            return await continuation(handler_call_details)
        metadata = handler_call_details.invocation_metadata
        try:
            token = self._verifier.verify(metadata)
        except Unauthenticated as error:
            log.debug("refused a call to %s: %s", method, error)
            return self._refusal(method, error)
        if token.roles is not None:
            # The interceptors inside read roles from the call details. grpc.aio
            # accepts only its own type of details down the chain: a new one of it.
            details_type: Any = type(handler_call_details)
            handler_call_details = details_type(method, _with_roles(metadata, token.roles))
        return await continuation(handler_call_details)

    def _refusal(self, method: str, error: Unauthenticated) -> Handler | None:
        rpc = method_descriptor(method)
        if rpc is None:  # no such RPC: answered UNIMPLEMENTED, as to anyone
            return None
        key = (bool(rpc.client_streaming), bool(rpc.server_streaming), str(error))
        refusal = self._refusals.get(key)
        if refusal is None:
            refusal = self._refusals[key] = _refusing_handler(key[0], key[1], error.status())
        return refusal


def _service_of(method: str) -> str:
    """`faultsvc.v1.FaultService` of `/faultsvc.v1.FaultService/RecordFault`."""
    return method.lstrip("/").rpartition("/")[0]


def _with_roles(metadata: Metadata, roles: frozenset[str]) -> tuple[tuple[str, str | bytes], ...]:
    kept = tuple((key, value) for key, value in metadata or () if key.lower() != ROLES_METADATA_KEY)
    return (*kept, (ROLES_METADATA_KEY, ",".join(sorted(roles))))


def _refusing_handler(
    client_streaming: bool, server_streaming: bool, status: grpc.Status
) -> Handler:
    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await abort_with(context, status)

    async def refuse_stream(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        await abort_with(context, status)
        yield  # never reached; makes this an async generator, as stream handlers are

    return make_handler(
        client_streaming, server_streaming, refuse_stream if server_streaming else refuse
    )


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from the settings' files; None without TLS.

    With a client CA, clients must present a certificate it signed (mutual TLS).
    """
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    certificate, key = _read(settings.tls_cert), _read(settings.tls_key)
    client_ca = None if settings.tls_client_ca is None else _read(settings.tls_client_ca)
    return grpc.ssl_server_credentials(
        [(key, certificate)],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise AuthConfigError(f"cannot read {path}: {error.strerror}") from None
