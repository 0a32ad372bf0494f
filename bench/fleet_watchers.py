"""Watchers of one server, in a process of their own: `python -m bench.fleet_watchers`.

Opens N WatchFaults streams (as an admin, on a few connections), prints
`ready` once each has its first token, then reads until every watcher has
received the expected number of occurrences, and prints one JSON line: what
each received, and how long after its recording each occurrence arrived.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import TypeAlias

import grpc

from faultsvc.v1 import fault_service_pb2 as pb
from faultsvc.v1 import fault_service_pb2_grpc as rpc

# Only the type stubs know the async stub class; at run time the stub adapts to its channel.
AsyncStub: TypeAlias = "rpc.FaultServiceAsyncStub"
ADMIN = (("x-roles", "admin"),)
MAX_CONNECTIONS = 10


async def watch(
    stub: AsyncStub,
    filter_: str,
    expected: int,
    ready: asyncio.Event,
    delays: list[float],
) -> int:
    """Reads one watch until `expected` occurrences came; returns how many came."""
    call = stub.WatchFaults(pb.WatchFaultsRequest(filter=filter_), metadata=ADMIN)
    received = 0
    try:
        async for response in call:
            ready.set()
            now = time.time()
            for occurrence in response.occurrences:
                delays.append(now - occurrence.record_time.ToNanoseconds() / 1e9)
            received += len(response.occurrences)
            if received >= expected:
                return received
    finally:
        call.cancel()
    return received


async def main(target: str, watchers: int, expected: int, filter_: str, patience: float) -> None:
    channels = [grpc.aio.insecure_channel(target) for _ in range(min(watchers, MAX_CONNECTIONS))]
    stubs: list[AsyncStub] = [rpc.FaultServiceStub(channel) for channel in channels]
    readies = [asyncio.Event() for _ in range(watchers)]
    delays: list[float] = []
    tasks = [
        asyncio.create_task(watch(stubs[n % len(stubs)], filter_, expected, readies[n], delays))
        for n in range(watchers)
    ]
    await asyncio.gather(*(ready.wait() for ready in readies))
    print("ready", flush=True)
    done, pending = await asyncio.wait(tasks, timeout=patience)
    for task in pending:
        task.cancel()
    received = [task.result() if task in done else 0 for task in tasks]
    delays.sort()
    print(
        json.dumps(
            {
                "received": received,
                "delay_p50_s": delays[len(delays) // 2] if delays else None,
                "delay_p99_s": delays[int(len(delays) * 0.99)] if delays else None,
            }
        ),
        flush=True,
    )
    for channel in channels:
        await channel.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--target", required=True)
    parser.add_argument("--watchers", type=int, required=True)
    parser.add_argument("--expected", type=int, required=True)
    parser.add_argument("--filter", default="")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    asyncio.run(main(args.target, args.watchers, args.expected, args.filter, args.timeout))
    sys.exit(0)
