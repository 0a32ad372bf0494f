"""Connections behind load balancers: clients are made to reconnect, and so spread again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from faultsvc.app import build_server
from faultsvc.config import Settings
from faultsvc.v1 import fault_service_pb2 as pb
from faultsvc.v1 import fault_service_pb2_grpc
from tests.support.databases import sqlite_url

AGE = 0.5


@pytest.mark.parametrize(("max_age", "state_after"), [(AGE, "IDLE"), (300.0, "READY")])
async def test_a_connection_older_than_max_connection_age_is_closed(
    max_age: float, state_after: str, tmp_path: Path
) -> None:
    """After a GOAWAY the channel goes IDLE and connects again, maybe to another worker."""
    settings = Settings(
        listen="127.0.0.1:0",
        database_url=sqlite_url(tmp_path),
        max_connection_age_seconds=max_age,
        max_connection_age_grace_seconds=AGE,
    )
    server = await build_server(settings)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub = fault_service_pb2_grpc.FaultServiceStub(channel)
            request = pb.GetLatestFaultRequest(instance_id="i")
            await stub.GetLatestFault(request, timeout=10)
            assert channel.get_state() == grpc.ChannelConnectivity.READY
            await asyncio.sleep(4 * AGE + 1)  # age, with grpc's jitter, then grace
            assert channel.get_state().name == state_after
            await stub.GetLatestFault(request, timeout=10)  # and calls go on
    finally:
        await server.stop()
