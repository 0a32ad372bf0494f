"""No acknowledged fault is lost when the server is killed (SIGKILL) under write load.

RecordFault answers only after its row is committed, so a kill -9 can lose
only calls that were not answered; their callers retry with the same
fault_id, and each fault is stored exactly once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path

import grpc

from faultsvc.v1 import fault_pb2, fault_service_pb2_grpc
from faultsvc.v1 import fault_service_pb2 as pb
from tests.support.servers import ServerProcess

CALLERS = 16
LOAD_SECONDS = 2.0
ROUNDS = 2


class Load:
    """Callers that record faults with ids they made, until the server is killed."""

    def __init__(self, target: str, round_number: int) -> None:
        self.target = target
        self.instances = [f"kill-{round_number}-{caller}" for caller in range(CALLERS)]
        self.acknowledged: set[str] = set()
        self.unanswered: dict[str, str] = {}  # fault_id: instance_id
        self.failures: Counter[grpc.StatusCode] = Counter()
        self.killed = asyncio.Event()
        self.warmed_up = asyncio.Event()

    async def caller(self, instance: str) -> None:
        async with grpc.aio.insecure_channel(self.target) as channel:
            stub = fault_service_pb2_grpc.FaultServiceStub(channel)
            while not self.killed.is_set():
                fault_id = str(uuid.uuid4())
                self.unanswered[fault_id] = instance
                try:
                    await stub.RecordFault(request_for(instance, fault_id), timeout=30)
                except grpc.aio.AioRpcError as error:
                    self.failures[error.code()] += 1
                    return
                del self.unanswered[fault_id]
                self.acknowledged.add(fault_id)
                if len(self.acknowledged) >= 100:
                    self.warmed_up.set()


def request_for(instance: str, fault_id: str) -> pb.RecordFaultRequest:
    return pb.RecordFaultRequest(
        instance_id=instance,
        message=f"fault {fault_id}",
        fault_id=fault_id,
        source="load",
        fingerprint=fault_id,  # a fault of its own, found by its id
    )


async def stored_faults(target: str, instances: list[str]) -> list[fault_pb2.Fault]:
    """Every stored fault of `instances`, as ListFaults pages through them."""
    faults: list[fault_pb2.Fault] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = fault_service_pb2_grpc.FaultServiceStub(channel)
        for instance in instances:
            token = ""
            while True:
                page = await stub.ListFaults(
                    pb.ListFaultsRequest(instance_id=instance, page_size=1000, page_token=token)
                )
                faults += page.faults
                token = page.next_page_token
                if not token:
                    break
    return faults


async def retry(target: str, load: Load) -> None:
    """What each caller does after an unanswered call: the same request, the same fault_id."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = fault_service_pb2_grpc.FaultServiceStub(channel)
        for fault_id, instance in load.unanswered.items():
            await stub.RecordFault(request_for(instance, fault_id), timeout=30)


async def test_no_acknowledged_fault_is_lost_to_kill_9(database_url: str, tmp_path: Path) -> None:
    server = ServerProcess(
        database_url, extra_args=["--workers", "1"], log_path=tmp_path / "faultsvc.log"
    )
    server.start()
    try:
        for round_number in range(ROUNDS):
            load = Load(server.target, round_number)
            callers = [asyncio.create_task(load.caller(i)) for i in load.instances]
            await asyncio.wait_for(load.warmed_up.wait(), 30)
            await asyncio.sleep(LOAD_SECONDS)
            in_flight_at_kill = len(load.unanswered)
            server.kill()
            load.killed.set()
            await asyncio.gather(*callers)
            assert set(load.failures) <= {grpc.StatusCode.UNAVAILABLE}, load.failures

            server.start()
            stored = [fault.id for fault in await stored_faults(server.target, load.instances)]
            assert len(stored) == len(set(stored)), "a fault is stored twice"
            assert load.acknowledged <= set(stored), "an acknowledged fault was lost"
            assert set(stored) <= load.acknowledged | set(load.unanswered)
            committed_unanswered = len(set(stored) & set(load.unanswered))
            print(
                f"\n{database_url.partition(':')[0]} round {round_number}: "
                f"{len(load.acknowledged)} acknowledged, {in_flight_at_kill} in flight at kill, "
                f"{len(stored)} stored after restart ({committed_unanswered} of them "
                "committed but never answered)"
            )

            await retry(server.target, load)
            after_retries = await stored_faults(server.target, load.instances)
            ids = Counter(fault.id for fault in after_retries)
            assert set(ids) == load.acknowledged | set(load.unanswered)
            assert set(ids.values()) == {1}
            assert all(fault.message == f"fault {fault.id}" for fault in after_retries)
    finally:
        server.kill()
