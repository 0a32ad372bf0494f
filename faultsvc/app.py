"""The composition root: one function builds the whole server from settings."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from faultsvc.config import Settings
from faultsvc.decoding import DecodingInterceptor
from faultsvc.feed import FaultFeed
from faultsvc.health import DatabaseHealth
from faultsvc.interceptors import ErrorInterceptor, MetricsInterceptor, RedactionInterceptor
from faultsvc.metrics import Metrics
from faultsvc.policy.auth import (
    AuthInterceptor,
    TokenVerifier,
    authentication_configured,
    load_tokens,
    server_credentials,
)
from faultsvc.policy.roles import AdminPolicy
from faultsvc.policy.scrub import Scrubber
from faultsvc.servicer import FaultServicer
from faultsvc.storage.batching import Batcher
from faultsvc.storage.failover import DatabaseEndpoints
from faultsvc.storage.fleet import FleetStore
from faultsvc.storage.migrate import migrate
from faultsvc.storage.store import FaultStore, MakeBatcher
from faultsvc.v1 import fault_service_pb2, fault_service_pb2_grpc

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger(__name__)

FAULT_SERVICE = fault_service_pb2.DESCRIPTOR.services_by_name["FaultService"].full_name
CLIENT_PING_SECONDS = 10.0


class InsecureBindError(ValueError):
    """Listening beyond loopback without authentication was not explicitly allowed."""


@dataclass
class FaultServer:
    """A built server: start it, then stop it; owns everything it started."""

    settings: Settings
    server: grpc.aio.Server
    store: FaultStore
    feed: FaultFeed
    health: DatabaseHealth
    port: int
    metrics_registry: CollectorRegistry
    # The tracer provider the server made for itself (otlp_endpoint), flushed at stop.
    tracer_provider: TracerProvider | None = None

    @property
    def database(self) -> DatabaseEndpoints:
        return self.store.database

    @property
    def engine(self) -> AsyncEngine:
        """The engine of the database endpoint in use now."""
        return self.database.current

    @property
    def target(self) -> str:
        host = self.settings.listen.rpartition(":")[0].strip("[]")
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    async def start(self) -> None:
        self.store.start()
        self.feed.start()
        await self.health.start()
        await self.server.start()
        log.info("faultsvc serving on %s", self.target)

    async def broken(self) -> BaseException:
        """Returns when a part of the server failed, with its error: the server must then stop."""
        parts = [asyncio.ensure_future(part.broken()) for part in (self.store, self.feed)]
        try:
            done, _ = await asyncio.wait(parts, return_when=asyncio.FIRST_COMPLETED)
            return done.pop().result()
        finally:
            for part in parts:
                part.cancel()

    async def stop(self) -> None:
        """Graceful: refuse new calls, let in-flight ones finish, drain writes, close the pool.

        Watches are ended first, each with its resume token: a stream would
        otherwise hold the server for the whole grace period.
        """
        await self.health.close()
        await self.feed.close()
        await self.server.stop(self.settings.grace_seconds)
        await self.store.close()
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        log.info("faultsvc stopped")


async def build_server(
    settings: Settings,
    *,
    reuse_port: bool = False,
    migrate_schema: bool = True,
    tracer_provider: TracerProvider | None = None,
) -> FaultServer:
    """Wires storage, servicer, interceptors, health and reflection.

    Migrates the schema unless told it was (by the parent of several workers).
    Traces go to `tracer_provider` when given, else to settings.otlp_endpoint when set.
    """
    own_tracer_provider = _otlp_tracer_provider(settings) if tracer_provider is None else None
    tracer_provider = tracer_provider or own_tracer_provider
    # The files (tokens, certificates) are read before the database is touched.
    credentials = server_credentials(settings)
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    interceptors = _interceptors(settings, metrics, tracer_provider)
    database = DatabaseEndpoints.from_settings(settings)
    if migrate_schema:
        await migrate(database)
    store = FaultStore(
        database,
        metrics=metrics,
        max_waiting_calls=settings.max_waiting_calls,
        make_batcher=_make_batcher(tracer_provider),
    )
    server = _grpc_server(settings, interceptors, reuse_port=reuse_port)
    fleet = FleetStore(database)
    feed = FaultFeed(
        fleet,
        poll_seconds=settings.watch_poll_seconds,
        overlap_seconds=settings.watch_overlap_seconds,
        queue_size=settings.watch_queue_size,
        max_watchers=settings.max_watchers,
        max_replay_seconds=settings.watch_max_replay_seconds,
    )
    servicer = FaultServicer(
        store,
        Scrubber(settings.scrub_patterns, settings.scrub_mask),
        settings.max_response_bytes,
        fleet=fleet,
        feed=feed,
    )
    health_servicer = _add_services(server, servicer)
    if credentials is None:
        port = server.add_insecure_port(settings.listen)
    else:
        port = server.add_secure_port(settings.listen, credentials)
    health = DatabaseHealth(store, health_servicer, [FAULT_SERVICE], settings.health_check_seconds)
    return FaultServer(settings, server, store, feed, health, port, registry, own_tracer_provider)


def _interceptors(
    settings: Settings, metrics: Metrics, tracer_provider: TracerProvider | None
) -> list[grpc.aio.ServerInterceptor]:
    """Outermost first: metrics see every call's final status code."""
    tokens = load_tokens(settings)
    return [
        *_tracing_interceptors(tracer_provider),
        MetricsInterceptor(metrics),
        # Before anything that reads the caller's roles: a refused call reaches none of it.
        *([AuthInterceptor(TokenVerifier(tokens))] if tokens else []),
        ErrorInterceptor(),
        RedactionInterceptor(AdminPolicy(settings.admin_roles)),
        DecodingInterceptor(),
    ]


def _grpc_server(
    settings: Settings, interceptors: list[grpc.aio.ServerInterceptor], *, reuse_port: bool
) -> grpc.aio.Server:
    return grpc.aio.server(
        interceptors=interceptors,
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        options=[
            ("grpc.max_receive_message_length", settings.max_receive_message_bytes),
            ("grpc.so_reuseport", int(reuse_port)),
            *connection_options(settings),
        ],
    )


def _add_services(server: grpc.aio.Server, servicer: FaultServicer) -> health_aio.HealthServicer:
    """FaultService, the standard health service and server reflection; returns the health one."""
    fault_service_pb2_grpc.add_FaultServiceServicer_to_server(servicer, server)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [
            FAULT_SERVICE,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    return health_servicer


def _otlp_tracer_provider(settings: Settings) -> TracerProvider | None:
    if settings.otlp_endpoint is None:
        return None
    from faultsvc import tracing

    return tracing.otlp_tracer_provider(settings.otlp_endpoint)


def _tracing_interceptors(provider: TracerProvider | None) -> list[grpc.aio.ServerInterceptor]:
    if provider is None:
        return []
    from faultsvc import tracing

    return [tracing.rpc_span_interceptor(provider)]


def _make_batcher(tracer_provider: TracerProvider | None) -> MakeBatcher:
    if tracer_provider is None:
        return Batcher
    from faultsvc import tracing

    return functools.partial(tracing.TracedBatcher, tracer_provider.get_tracer(__name__))


def connection_options(settings: Settings) -> list[tuple[str, int]]:
    """Keepalive and connection age, for clients behind load balancers.

    The server pings quiet connections, idle ones too, to find peers that
    vanished; clients may ping as often as every CLIENT_PING_SECONDS without
    being told "too many pings" (grpc's default allows one per 5 minutes
    between calls). After max_connection_age a GOAWAY makes clients connect
    again, and so spread over the workers and hosts there are now.
    """
    return [
        ("grpc.keepalive_time_ms", _ms(settings.keepalive_seconds)),
        ("grpc.keepalive_timeout_ms", _ms(settings.keepalive_timeout_seconds)),
        ("grpc.max_connection_age_ms", _ms(settings.max_connection_age_seconds)),
        ("grpc.max_connection_age_grace_ms", _ms(settings.max_connection_age_grace_seconds)),
        ("grpc.http2.min_ping_interval_without_data_ms", _ms(CLIENT_PING_SECONDS)),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def check_bind_is_safe(settings: Settings) -> None:
    """Without authentication, only loopback, unless the operator explicitly allows more."""
    host = settings.listen.rpartition(":")[0].strip("[]")
    if host == "localhost" or _is_loopback(host):
        return
    if authentication_configured(settings):
        if settings.tls_cert is None:
            log.warning(
                "listening on %s without TLS: bearer tokens cross the network in clear text; "
                "set tls_cert and tls_key",
                settings.listen,
            )
        return
    if not settings.allow_insecure_bind:
        raise InsecureBindError(
            f"refusing to listen on {settings.listen} without authentication; "
            "listen on 127.0.0.1, or pass --allow-insecure-bind"
        )
    log.warning(
        "listening on %s without authentication: anyone who can reach it may "
        "record faults and claim the admin role",
        settings.listen,
    )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
