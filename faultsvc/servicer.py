"""FaultService: each RPC turns its request into a domain call and the result into a message."""

from __future__ import annotations

import grpc

from faultsvc import faults, pagination
from faultsvc.convert import fault_message, naive_utc
from faultsvc.errors import InvalidArgument
from faultsvc.faults import NewFault, StoredFault
from faultsvc.policy.scrub import Scrubber
from faultsvc.storage.batching import Batcher
from faultsvc.storage.store import Cursor, FaultStore
from faultsvc.storage.tables import DETAILS_MAX_BYTES, LABEL_MAX_CHARS, MESSAGE_MAX_CHARS
from faultsvc.v1 import fault_service_pb2 as pb
from faultsvc.v1 import fault_service_pb2_grpc

MAX_BATCH_IDS = 1000


class FaultServicer(fault_service_pb2_grpc.FaultServiceServicer):
    """Records faults through group commit and reads latest faults through coalesced queries."""

    def __init__(
        self,
        store: FaultStore,
        writer: Batcher[NewFault, StoredFault],
        latest_reader: Batcher[str, StoredFault | None],
        scrubber: Scrubber | None = None,
    ) -> None:
        self._store = store
        self._writer = writer
        self._latest_reader = latest_reader
        self._scrubber = scrubber or Scrubber()

    async def RecordFault(
        self, request: pb.RecordFaultRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.RecordFaultResponse:
        stored = await self._writer.submit(new_fault_from(request, self._scrubber))
        return pb.RecordFaultResponse(fault=fault_message(stored))

    async def GetLatestFault(
        self, request: pb.GetLatestFaultRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.GetLatestFaultResponse:
        latest = await self._latest_reader.submit(faults.check_instance_id(request.instance_id))
        if latest is None:
            return pb.GetLatestFaultResponse()
        return pb.GetLatestFaultResponse(fault=fault_message(latest))

    async def BatchGetLatestFaults(
        self,
        request: pb.BatchGetLatestFaultsRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> pb.BatchGetLatestFaultsResponse:
        if len(request.instance_ids) > MAX_BATCH_IDS:
            raise InvalidArgument.field(
                "instance_ids",
                f"at most {MAX_BATCH_IDS} ids per call, got {len(request.instance_ids)}",
            )
        instance_ids = [
            faults.check_instance_id(instance_id, f"instance_ids[{index}]")
            for index, instance_id in enumerate(request.instance_ids)
        ]
        latest = await self._store.latest_for(set(instance_ids))
        ordered = dict.fromkeys(
            instance_id for instance_id in instance_ids if instance_id in latest
        )
        return pb.BatchGetLatestFaultsResponse(
            faults=[fault_message(latest[instance_id]) for instance_id in ordered]
        )

    async def ListFaults(
        self, request: pb.ListFaultsRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.ListFaultsResponse:
        instance_id = faults.check_instance_id(request.instance_id)
        limit = pagination.page_size(request.page_size)
        after = pagination.decode_page_token(request.page_token, instance_id)
        # One row more than the page tells whether another page follows.
        page = await self._store.history(instance_id, limit + 1, after)
        next_page_token = ""
        if len(page) > limit:
            page = page[:limit]
            last = page[-1]
            next_page_token = pagination.encode_page_token(
                instance_id, Cursor(created=last.created, id=last.id)
            )
        return pb.ListFaultsResponse(
            faults=[fault_message(fault) for fault in page], next_page_token=next_page_token
        )

    async def ClearFaults(
        self, request: pb.ClearFaultsRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.ClearFaultsResponse:
        cleared = await self._store.clear(faults.check_instance_id(request.instance_id))
        return pb.ClearFaultsResponse(cleared_count=cleared)


def new_fault_from(request: pb.RecordFaultRequest, scrubber: Scrubber) -> NewFault:
    """The fault a RecordFault request describes: validated, scrubbed of secrets, truncated.

    Scrubbing comes before truncation, so that a cut never leaves half a
    secret that no pattern recognises.
    """
    scrub = scrubber.scrub_before_cut
    now = faults.utc_now()
    created = now
    if request.HasField("occur_time"):
        try:
            occurred = naive_utc(request.occur_time)
        except (ValueError, OverflowError):
            raise InvalidArgument.field("occur_time", "is not a valid timestamp") from None
        created = faults.check_occur_time(occurred, now)
    caller_made_id = request.HasField("fault_id")
    return NewFault(
        id=faults.parse_fault_id(request.fault_id) if caller_made_id else faults.new_fault_id(),
        instance_id=faults.check_instance_id(request.instance_id),
        message=faults.check_message(scrub(request.message, MESSAGE_MAX_CHARS)),
        details=faults.truncate_details(scrub(request.details, DETAILS_MAX_BYTES)),
        source=faults.truncate_chars(scrub(request.source, LABEL_MAX_CHARS), LABEL_MAX_CHARS),
        host=faults.truncate_chars(scrub(request.host, LABEL_MAX_CHARS), LABEL_MAX_CHARS),
        created=created,
        caller_made_id=caller_made_id,
    )
