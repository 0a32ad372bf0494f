"""grpc.health.v1 answers that follow the database: SERVING while it answers, else NOT_SERVING."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio

from faultsvc.errors import Unavailable
from faultsvc.storage.store import FaultStore

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class DatabaseHealth:
    """Probes the database every `interval` seconds and sets the health of `services`."""

    def __init__(
        self,
        store: FaultStore,
        servicer: health_aio.HealthServicer,
        services: Iterable[str],
        interval: float,
    ) -> None:
        self._store = store
        self._servicer = servicer
        self._services = ("", *services)  # "" is the whole server
        self._interval = interval
        self._serving: bool | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.check()
        self._task = asyncio.create_task(self._run(), name="database-health")

    async def close(self) -> None:
        await self._servicer.enter_graceful_shutdown()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def check(self) -> bool:
        """Probes once, updates the health answers, and says whether the database answered.

        The probe pings every endpoint of the database, each within the
        database timeout, and moves the store to the most preferred one that
        answers: it is also what brings the store back to its first endpoint.
        """
        try:
            await self._store.ping()
            serving = True
        except Unavailable as error:
            serving = False
            if self._serving is not False:
                log.warning("database unavailable: %s", error)
        if serving != self._serving:
            if serving and self._serving is False:
                log.info("database available again")
            for service in self._services:
                await self._servicer.set(service, SERVING if serving else NOT_SERVING)
            self._serving = serving
        return serving

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.check()
            except Exception:  # a probe must never stop the probing
                log.exception("database health probe failed")
