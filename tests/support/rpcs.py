"""The RPCs of FaultService, read from its descriptor, and a valid request of each."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from google.protobuf.message import Message

from faultsvc.convert import timestamp
from faultsvc.faults import utc_now
from faultsvc.feed import encode_resume_token
from faultsvc.v1 import fault_service_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["FaultService"]
METHODS = [method.name for method in SERVICE.methods]
# RPCs that answer PERMISSION_DENIED to anyone who is not an admin.
ADMIN_ONLY_METHODS = {"SearchFaults", "RankFaults"}
# RPCs that answer with a stream of responses.
STREAMING_METHODS = {method.name for method in SERVICE.methods if method.server_streaming}
# RPCs that answer PERMISSION_DENIED to a caller that is not an admin, for some requests:
# WatchFaults watches one instance for them, and not by host.
SCOPED_METHODS = ADMIN_ONLY_METHODS | {"WatchFaults"}

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
    # Replays the instance's occurrences of the last minute in its first response.
    "WatchFaults": lambda instance: pb.WatchFaultsRequest(
        filter=f'instance_id = "{instance}"',
        resume_token=encode_resume_token(utc_now() - timedelta(minutes=1)),
        view=pb.FAULT_VIEW_FULL,
    ),
    "RankFaults": lambda instance: pb.RankFaultsRequest(
        filter=f'instance_id = "{instance}"',
        start_time=timestamp(utc_now() - timedelta(hours=1)),
        view=pb.FAULT_VIEW_FULL,
    ),
}


async def answer(stub: object, method: str, request: Message, **options: Any) -> Message:
    """The RPC's response; for a stream, its first response (the stream is then cancelled)."""
    call = getattr(stub, method)(request, **options)
    if method not in STREAMING_METHODS:
        response: Message = await call
        return response
    try:
        first = await call.read()
    finally:
        call.cancel()
    assert isinstance(first, Message), "the stream ended without a response"
    return first


def sync_answer(stub: object, method: str, request: Message, **options: Any) -> Message:
    """`answer`, through a blocking stub."""
    call = getattr(stub, method)(request, **options)
    if method not in STREAMING_METHODS:
        response: Message = call
        return response
    try:
        first: Message = next(call)
    finally:
        call.cancel()
    return first


def request_id_of(instance: str) -> str:
    """The request id the tests record an instance's faults with, so that a search finds them."""
    return f"req-{instance}"
