"""Servers keep no state of their own: any number of them share one database."""

from __future__ import annotations

import uuid

import grpc

from faultsvc.v1 import fault_service_pb2 as pb
from faultsvc.v1 import fault_service_pb2_grpc
from tests.support.calls import ADMIN
from tests.support.servers import ServerProcess


def test_fault_recorded_through_one_server_is_read_through_another(database_url: str) -> None:
    instance = str(uuid.uuid4())
    with (
        ServerProcess(database_url) as writer,
        ServerProcess(database_url) as reader,
        grpc.insecure_channel(writer.target) as writer_channel,
        grpc.insecure_channel(reader.target) as reader_channel,
    ):
        writes = fault_service_pb2_grpc.FaultServiceStub(writer_channel)
        reads = fault_service_pb2_grpc.FaultServiceStub(reader_channel)
        recorded = [
            writes.RecordFault(
                pb.RecordFaultRequest(
                    instance_id=instance, message=f"fault {n}", details="trace", fingerprint=str(n)
                ),
                metadata=ADMIN,
            ).fault
            for n in range(3)
        ]
        latest = reads.GetLatestFault(
            pb.GetLatestFaultRequest(instance_id=instance), metadata=ADMIN
        )
        assert latest.fault == recorded[-1]
        history = reads.ListFaults(pb.ListFaultsRequest(instance_id=instance), metadata=ADMIN)
        assert list(history.faults) == recorded[::-1]

        reads.ClearFaults(pb.ClearFaultsRequest(instance_id=instance))
        assert not writes.GetLatestFault(pb.GetLatestFaultRequest(instance_id=instance)).HasField(
            "fault"
        )
