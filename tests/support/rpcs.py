"""The RPCs of FaultService, read from its descriptor, and a valid request of each."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from google.protobuf.message import Message

from faultsvc.v1 import fault_service_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["FaultService"]
METHODS = [method.name for method in SERVICE.methods]
# RPCs that answer PERMISSION_DENIED to anyone who is not an admin.
ADMIN_ONLY_METHODS = {"SearchFaults"}

# One request per RPC, for an instance that has faults. A new RPC fails
# test_every_rpc_has_a_request (test_redaction.py) until it is added here, and is then covered.
REQUESTS: dict[str, Callable[[str], Message]] = {
    "RecordFault": lambda instance: pb.RecordFaultRequest(
        instance_id=instance,
        message="again",
        details="Traceback: secret frame",
        host="tm-1",
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
    ),
    "GetLatestFault": lambda instance: pb.GetLatestFaultRequest(instance_id=instance),
    "BatchGetLatestFaults": lambda instance: pb.BatchGetLatestFaultsRequest(
        instance_ids=[instance, str(uuid.uuid4())], view=pb.FAULT_VIEW_FULL
    ),
    "ListFaults": lambda instance: pb.ListFaultsRequest(instance_id=instance, page_size=1),
    "ClearFaults": lambda instance: pb.ClearFaultsRequest(instance_id=instance),
    "SearchFaults": lambda instance: pb.SearchFaultsRequest(
        filter=f'request_id = "{request_id_of(instance)}"', page_size=1
    ),
}


def request_id_of(instance: str) -> str:
    """The request id the tests record an instance's faults with, so that a search finds them."""
    return f"req-{instance}"
