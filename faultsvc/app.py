"""The composition root: one function builds the whole server from settings."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from faultsvc.config import Settings
from faultsvc.decoding import DecodingInterceptor
from faultsvc.errors import FaultServiceError
from faultsvc.faults import NewFault, StoredFault
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
from faultsvc.storage.batching import Batcher, BatchFunction
from faultsvc.storage.failover import DatabaseEndpoints
from faultsvc.storage.migrate import upgrade_to_head
from faultsvc.storage.store import FaultStore
from faultsvc.v1 import fault_service_pb2, fault_service_pb2_grpc

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger(__name__)
Item = TypeVar("Item")
Result = TypeVar("Result")

FAULT_SERVICE = fault_service_pb2.DESCRIPTOR.services_by_name["FaultService"].full_name
WRITE_BATCH_MAX = 500
READ_BATCH_MAX = 1000
CLIENT_PING_SECONDS = 10.0


class InsecureBindError(ValueError):
    """Listening beyond loopback without authentication was not explicitly allowed."""


@dataclass
class FaultServer:
    """A built server: start it, then stop it; owns everything it started."""

    settings: Settings
    server: grpc.aio.Server
    database: DatabaseEndpoints
    health: DatabaseHealth
    writer: Batcher[NewFault, StoredFault]
    latest_reader: Batcher[tuple[str, bool], StoredFault | None]
    port: int
    metrics_registry: CollectorRegistry
    # The tracer provider the server made for itself (otlp_endpoint), flushed at stop.
    tracer_provider: TracerProvider | None = None

    @property
    def engine(self) -> AsyncEngine:
        """The engine of the database endpoint in use now."""
        return self.database.current

    @property
    def target(self) -> str:
        host = self.settings.listen.rpartition(":")[0].strip("[]")
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    async def start(self) -> None:
        self.writer.start()
        self.latest_reader.start()
        await self.health.start()
        await self.server.start()
        log.info("faultsvc serving on %s", self.target)

    async def broken(self) -> BaseException:
        """Returns the error of the first batcher that fails; the server must then be stopped.

        Never returns while both run: a server whose writer died answers every
        RecordFault UNAVAILABLE, and only a restart brings it back.
        """
        stopped = [asyncio.ensure_future(b.stopped()) for b in (self.writer, self.latest_reader)]
        try:
            for next_stopped in asyncio.as_completed(stopped):
                error = await next_stopped
                if error is not None:
                    return error
            await asyncio.Event().wait()  # both were closed: the server is stopping
            raise AssertionError("unreachable")
        finally:
            for task in stopped:
                task.cancel()

    async def stop(self) -> None:
        """Graceful: refuse new calls, let in-flight ones finish, drain writes, close the pool."""
        await self.health.close()
        await self.server.stop(self.settings.grace_seconds)
        await self.writer.close()
        await self.latest_reader.close()
        await self.database.dispose()
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        log.info("faultsvc stopped")


async def build_server(
    settings: Settings,
    *,
    reuse_port: bool = False,
    tracer_provider: TracerProvider | None = None,
) -> FaultServer:
    """Wires storage, servicer, interceptors, health and reflection; migrates the schema.

    Traces go to `tracer_provider` when given, else to settings.otlp_endpoint when set.
    """
    own_tracer_provider = _otlp_tracer_provider(settings) if tracer_provider is None else None
    tracer_provider = tracer_provider or own_tracer_provider
    tokens = load_tokens(settings)
    credentials = server_credentials(settings)
    database = DatabaseEndpoints.connect(
        settings.database_urls,
        pool_size=settings.database_pool_size,
        timeout_seconds=settings.database_timeout_seconds,
    )
    await upgrade_to_head(await database.first_answering())
    store = FaultStore(database)
    registry = CollectorRegistry()
    metrics = Metrics(registry)

    async def record_batch(batch: Sequence[NewFault]) -> list[StoredFault | FaultServiceError]:
        results = await store.record_batch(batch)
        metrics.pool_in_use.set(database.current.pool.checkedout())  # type: ignore[attr-defined]
        metrics.count_recorded(r.source for r in results if isinstance(r, StoredFault))
        return results

    async def latest_each(
        requests: Sequence[tuple[str, bool]],
    ) -> list[StoredFault | None]:
        """The latest fault of each (instance, with details): one query per kind asked for."""
        latest = {
            with_details: await store.latest_for(
                {instance_id for instance_id, details in requests if details == with_details},
                with_details=with_details,
            )
            for with_details in {details for _, details in requests}
        }
        return [latest[details].get(instance_id) for instance_id, details in requests]

    writer = _batcher(
        "group-commit", record_batch, WRITE_BATCH_MAX, settings.max_waiting_calls, tracer_provider
    )
    latest_reader = _batcher(
        "coalesced-reads", latest_each, READ_BATCH_MAX, settings.max_waiting_calls, tracer_provider
    )
    for batcher in (writer, latest_reader):
        batcher.on_batch = functools.partial(metrics.observe_batch, batcher.name)

    server = grpc.aio.server(
        # Outermost first: metrics see every call's final status code.
        interceptors=[
            *_tracing_interceptors(tracer_provider),
            MetricsInterceptor(metrics),
            # Before anything that reads the caller's roles: a refused call reaches none of it.
            *([AuthInterceptor(TokenVerifier(tokens))] if tokens else []),
            ErrorInterceptor(),
            RedactionInterceptor(AdminPolicy(settings.admin_roles)),
            DecodingInterceptor(),
        ],
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        options=[
            ("grpc.max_receive_message_length", settings.max_receive_message_bytes),
            ("grpc.so_reuseport", int(reuse_port)),
            *connection_options(settings),
        ],
    )
    fault_service_pb2_grpc.add_FaultServiceServicer_to_server(
        FaultServicer(
            store,
            writer,
            latest_reader,
            Scrubber(settings.scrub_patterns, settings.scrub_mask),
            settings.max_response_bytes,
        ),
        server,
    )
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
    if credentials is None:
        port = server.add_insecure_port(settings.listen)
    else:
        port = server.add_secure_port(settings.listen, credentials)
    health = DatabaseHealth(store, health_servicer, [FAULT_SERVICE], settings.health_check_seconds)
    return FaultServer(
        settings,
        server,
        database,
        health,
        writer,
        latest_reader,
        port,
        registry,
        own_tracer_provider,
    )


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


def _batcher(
    name: str,
    run_batch: BatchFunction[Item, Result],
    max_batch: int,
    max_pending: int,
    tracer_provider: TracerProvider | None,
) -> Batcher[Item, Result]:
    if tracer_provider is None:
        return Batcher(name, run_batch, max_batch, max_pending=max_pending)
    from faultsvc import tracing

    tracer = tracer_provider.get_tracer(__name__)
    return tracing.TracedBatcher(tracer, name, run_batch, max_batch, max_pending=max_pending)


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
