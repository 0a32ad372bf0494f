"""Running the server until SIGINT or SIGTERM, then shutting it down gracefully."""

from __future__ import annotations

import asyncio
import logging
import signal

from faultsvc.app import build_server
from faultsvc.config import Settings

log = logging.getLogger(__name__)


async def serve(settings: Settings) -> None:
    """Serves until SIGINT or SIGTERM; in-flight calls then finish and the pool closes."""
    server = await build_server(settings)
    await server.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    log.info("shutting down; in-flight calls have %.0f s to finish", settings.grace_seconds)
    await server.stop()


def run(settings: Settings) -> None:
    asyncio.run(serve(settings))
