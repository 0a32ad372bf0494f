"""The composition root: one function builds the whole server from settings."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass

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
from faultsvc.storage.batching import Batcher
from faultsvc.storage.failover import DatabaseEndpoints
from faultsvc.storage.migrate import upgrade_to_head
from faultsvc.storage.store import FaultStore
from faultsvc.v1 import fault_service_pb2, fault_service_pb2_grpc

log = logging.getLogger(__name__)

FAULT_SERVICE = fault_service_pb2.DESCRIPTOR.services_by_name["FaultService"].full_name
WRITE_BATCH_MAX = 500
READ_BATCH_MAX = 1000


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
        log.info("faultsvc stopped")


async def build_server(settings: Settings, *, reuse_port: bool = False) -> FaultServer:
    """Wires storage, servicer, interceptors, health and reflection; migrates the schema."""
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

    writer = Batcher(
        "group-commit",
        record_batch,
        max_batch=WRITE_BATCH_MAX,
        max_pending=settings.max_waiting_calls,
    )
    latest_reader = Batcher(
        "coalesced-reads",
        latest_each,
        max_batch=READ_BATCH_MAX,
        max_pending=settings.max_waiting_calls,
    )
    for batcher in (writer, latest_reader):
        batcher.on_batch = functools.partial(metrics.observe_batch, batcher.name)

    server = grpc.aio.server(
        # Outermost first: metrics see every call's final status code.
        interceptors=[
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
    return FaultServer(settings, server, database, health, writer, latest_reader, port, registry)


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
