"""WatchFaults across processes: a watcher on one server sees what the others record.

Several servers share one database; each follows the feed with one poller,
whatever the number of its watchers. `pytest -s` prints what each watcher
costs the server that streams to it (the benchmark measures it properly:
`python -m bench --fleet`).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc

from faultsvc.v1 import fault_service_pb2 as pb
from faultsvc.v1.fault_service_pb2_grpc import FaultServiceStub
from tests.support.calls import ADMIN, Stub, stub_of
from tests.support.servers import ServerProcess

FAST_POLLS = {"FAULTSVC_WATCH_POLL_SECONDS": "0.1"}
WAIT_SECONDS = 60.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(server: ServerProcess) -> float:
    """The CPU time the server's process has used so far (user and system)."""
    assert server.process is not None
    stat = Path(f"/proc/{server.process.pid}/stat").read_text()
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class Watcher:
    """A watch from now on, read in the background: the fault ids of what it streams."""

    def __init__(self, stub: Stub, filter_: str = "") -> None:
        self.call = stub.WatchFaults(pb.WatchFaultsRequest(filter=filter_), metadata=ADMIN)
        self.ids: list[str] = []
        self.ready = asyncio.Event()
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for response in self.call:
            self.ready.set()
            self.ids += [occurrence.id for occurrence in response.occurrences]
            self._changed.set()

    async def has(self, count: int) -> None:
        async with asyncio.timeout(WAIT_SECONDS):
            while len(self.ids) < count:
                self._changed.clear()
                await self._changed.wait()

    async def stop(self) -> None:
        self.call.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@asynccontextmanager
async def watchers_of(target: str, count: int, channels: int = 10) -> AsyncIterator[list[Watcher]]:
    """`count` watchers from now on, spread over a few channels; each has its first token."""
    async with _Channels(target, channels) as stubs:
        watchers = [Watcher(stubs[n % channels]) for n in range(count)]
        try:
            async with asyncio.timeout(WAIT_SECONDS):
                await asyncio.gather(*(watcher.ready.wait() for watcher in watchers))
            yield watchers
        finally:
            for watcher in watchers:
                await watcher.stop()


class _Channels:
    def __init__(self, target: str, count: int) -> None:
        self._channels = [grpc.aio.insecure_channel(target) for _ in range(count)]

    async def __aenter__(self) -> list[Stub]:
        return [FaultServiceStub(channel) for channel in self._channels]

    async def __aexit__(self, *_: object) -> None:
        for channel in self._channels:
            await channel.close()


async def record_many(stub: Stub, count: int, writers: int = 4) -> list[str]:
    """`count` occurrences recorded by concurrent writers; their ids (the fault ids they sent)."""
    ids = [str(uuid.uuid4()) for _ in range(count)]

    async def write(share: list[str]) -> None:
        for n, fault_id in enumerate(share):
            await stub.RecordFault(
                pb.RecordFaultRequest(
                    instance_id=f"i-{n % 7}", message="Volume attach failed", fault_id=fault_id
                )
            )

    await asyncio.gather(*(write(ids[w::writers]) for w in range(writers)))
    return ids


async def test_a_watcher_on_one_server_sees_every_fault_recorded_through_another(
    database_url: str,
) -> None:
    with (
        ServerProcess(database_url, env=FAST_POLLS) as watched,
        ServerProcess(database_url, env=FAST_POLLS) as written,
    ):
        async with watchers_of(watched.target, 1, channels=1) as (watcher,):
            async with stub_of(written.target) as writer:
                recorded = await record_many(writer, 100)
            await watcher.has(100)
    assert sorted(watcher.ids) == sorted(recorded)  # each once


async def test_a_hundred_watchers_each_see_every_fault_for_a_small_cost_each(
    database_url: str,
) -> None:
    faults = 100
    with (
        ServerProcess(database_url, env=FAST_POLLS) as watched,
        ServerProcess(database_url, env=FAST_POLLS) as written,
    ):
        cost = {}
        async with stub_of(written.target) as writer:
            for count in (1, 100):
                async with watchers_of(watched.target, count) as watchers:
                    started = cpu_seconds(watched)
                    recorded = await record_many(writer, faults)
                    for watcher in watchers:
                        await watcher.has(faults)
                    cost[count] = cpu_seconds(watched) - started
                assert all(sorted(w.ids) == sorted(recorded) for w in watchers)
    per_watcher_us = (cost[100] - cost[1]) / (99 * faults) * 1e6
    print(
        f"\nstreaming {faults} faults: {cost[1] * 1e3:.0f} ms of the server's CPU to one "
        f"watcher, {cost[100] * 1e3:.0f} ms to a hundred: {per_watcher_us:.0f} us per watcher "
        "per fault"
    )
