"""How long other callers wait while something hostile runs: the event loop must not be held."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# The service holds its event loop at most ~50 ms for any one call (the worst
# health check measured on an idle machine while 4 MiB requests are parsed); a
# health check is a round trip on top of that, on a machine whose two cores
# also run the hostile client, and other work. What this catches is a call that
# holds the loop for hundreds of milliseconds or seconds, as each did before.
HEALTH_CHECK_BOUND_SECONDS = 0.2
PROBE_INTERVAL_SECONDS = 0.005


async def slowest_health_check_during(target: str, work: Awaitable[None]) -> float:
    """Runs `work` while checking health every few ms; the longest check, in seconds."""
    async with grpc.aio.insecure_channel(target) as channel:
        health: Any = health_pb2_grpc.HealthStub(channel)  # its type stubs omit the methods
        await health.Check(health_pb2.HealthCheckRequest())  # connected before timing
        worst = 0.0
        task = asyncio.ensure_future(work)
        while not task.done():
            started = time.perf_counter()
            await health.Check(health_pb2.HealthCheckRequest(), timeout=30)
            worst = max(worst, time.perf_counter() - started)
            await asyncio.sleep(PROBE_INTERVAL_SECONDS)
        await task
        return worst
