"""The spec's scenario: a fault is recorded, the service restarts, the fault is still there."""

from __future__ import annotations

import uuid

import grpc

from faultsvc.v1 import fault_pb2, fault_service_pb2_grpc
from faultsvc.v1 import fault_service_pb2 as pb
from tests.support.calls import ADMIN, Metadata
from tests.support.servers import ServerProcess

TRACEBACK = """Traceback (most recent call last):
  File "/opt/trove/guestagent/manager.py", line 265, in prepare
    cluster_config, snapshot, modules)
RuntimeError: A guest error occurred"""


def faults_through_every_rpc(
    target: str, instance: str, metadata: Metadata
) -> list[fault_pb2.Fault]:
    with grpc.insecure_channel(target) as channel:
        stub = fault_service_pb2_grpc.FaultServiceStub(channel)
        latest = stub.GetLatestFault(
            pb.GetLatestFaultRequest(instance_id=instance), metadata=metadata
        )
        batch = stub.BatchGetLatestFaults(
            pb.BatchGetLatestFaultsRequest(instance_ids=[instance], view=pb.FAULT_VIEW_FULL),
            metadata=metadata,
        )
        history = stub.ListFaults(pb.ListFaultsRequest(instance_id=instance), metadata=metadata)
        return [latest.fault, *batch.faults, *history.faults]


def test_fault_survives_restart(database_url: str) -> None:
    instance = str(uuid.uuid4())
    with ServerProcess(database_url) as server:
        with grpc.insecure_channel(server.target) as channel:
            recorded = (
                fault_service_pb2_grpc.FaultServiceStub(channel)
                .RecordFault(
                    pb.RecordFaultRequest(
                        instance_id=instance,
                        message="A guest error occurred",
                        details=TRACEBACK,
                        source="guestagent",
                    ),
                    metadata=ADMIN,
                )
                .fault
            )
        assert server.stop() == 0
        server.start()

        for fault in faults_through_every_rpc(server.target, instance, ADMIN):
            assert fault == recorded
            assert fault.details == TRACEBACK
        for fault in faults_through_every_rpc(server.target, instance, None):
            assert fault.id == recorded.id
            assert fault.message == "A guest error occurred"
            assert fault.details == ""
