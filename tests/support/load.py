"""Concurrent callers of a running server, and what they saw: for outage and failover tests."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from faultsvc.v1 import fault_service_pb2 as pb
from faultsvc.v1 import fault_service_pb2_grpc

CALL_TIMEOUT = 20.0  # far beyond any failover: a call that takes this long has hung
PAUSE_AFTER_FAILURE = 0.05  # as a client's backoff would, so failures do not spin


@dataclass(frozen=True)
class Call:
    """One finished call: what, when (time.monotonic), and its status code."""

    rpc: str
    started: float
    ended: float
    code: grpc.StatusCode
    fault_id: str = ""

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclass
class Load:
    """`callers` tasks, each recording faults with caller-made ids and reading its latest one.

    Every caller repeats: RecordFault (a new fault_id), then GetLatestFault of
    its own instance, until `stop` is set. A failed call is followed by a
    short pause. Failures are kept, never raised.
    """

    targets: Sequence[str]
    callers: int = 16
    calls: list[Call] = field(default_factory=list)
    prefix: str = field(default_factory=lambda: f"load-{uuid.uuid4().hex[:8]}")
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        channels = [grpc.aio.insecure_channel(target) for target in self.targets]
        try:
            stubs = [fault_service_pb2_grpc.FaultServiceStub(channel) for channel in channels]
            await asyncio.gather(
                *(self._caller(n, stubs[n % len(stubs)]) for n in range(self.callers))
            )
        finally:
            for channel in channels:
                await channel.close()

    async def _caller(self, n: int, stub: fault_service_pb2_grpc.FaultServiceAsyncStub) -> None:
        instance_id = f"{self.prefix}-{n}"
        while not self.stop.is_set():
            fault_id = str(uuid.uuid4())
            ok = await self._call(
                "RecordFault",
                stub.RecordFault(
                    pb.RecordFaultRequest(
                        instance_id=instance_id, message="disk full", fault_id=fault_id
                    ),
                    timeout=CALL_TIMEOUT,
                ),
                fault_id,
            )
            if ok:
                ok = await self._call(
                    "GetLatestFault",
                    stub.GetLatestFault(
                        pb.GetLatestFaultRequest(instance_id=instance_id), timeout=CALL_TIMEOUT
                    ),
                )
            if not ok:
                await asyncio.sleep(PAUSE_AFTER_FAILURE)

    async def _call(self, rpc: str, call: Any, fault_id: str = "") -> bool:
        started = time.monotonic()
        try:
            await call
            code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as error:
            code = error.code()
        self.calls.append(Call(rpc, started, time.monotonic(), code, fault_id))
        return code == grpc.StatusCode.OK

    @property
    def acknowledged(self) -> set[str]:
        """The fault_ids whose RecordFault answered OK: each must be stored, once."""
        return {
            call.fault_id
            for call in self.calls
            if call.rpc == "RecordFault" and call.code == grpc.StatusCode.OK
        }

    @property
    def failed(self) -> list[Call]:
        return [call for call in self.calls if call.code != grpc.StatusCode.OK]

    def codes(self) -> Counter[str]:
        return Counter(f"{call.rpc} {call.code.name}" for call in self.calls)

    def first_ok_after(self, moment: float, rpc: str | None = None) -> float:
        """Seconds from `moment` to the end of the first successful call that started after it.

        Infinite when there was none.
        """
        return min(
            (
                call.ended - moment
                for call in self.calls
                if call.started >= moment
                and call.code == grpc.StatusCode.OK
                and rpc in (None, call.rpc)
            ),
            default=math.inf,
        )

    def longest_pause(self, rpc: str = "RecordFault") -> float:
        """The longest time without a successful `rpc` finishing."""
        ends = sorted(c.ended for c in self.calls if c.rpc == rpc and c.code == grpc.StatusCode.OK)
        return max((b - a for a, b in itertools.pairwise(ends)), default=0.0)


@dataclass
class HealthWatch:
    """Polls grpc.health.v1 of the whole server every `interval` seconds until `stop` is set."""

    target: str
    interval: float = 0.1
    seen: list[tuple[float, str]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    _polled: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def run(self) -> None:
        async with grpc.aio.insecure_channel(self.target) as channel:
            health: Any = health_pb2_grpc.HealthStub(channel)
            while not self.stop.is_set():
                try:
                    response = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
                except grpc.aio.AioRpcError as error:
                    status = error.code().name
                async with self._polled:
                    self.seen.append((time.monotonic(), status))
                    self._polled.notify_all()
                await asyncio.sleep(self.interval)

    def statuses_between(self, start: float, end: float) -> set[str]:
        return {status for moment, status in self.seen if start <= moment <= end}

    async def wait_for(self, status: str) -> float:
        """Waits until `status` is seen; returns when (time.monotonic)."""
        async with self._polled:
            await self._polled.wait_for(lambda: bool(self.seen) and self.seen[-1][1] == status)
        return self.seen[-1][0]
