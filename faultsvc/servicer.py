"""FaultService: each RPC turns its request into a domain call and the result into a message."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Literal

import grpc
from google.protobuf.duration_pb2 import Duration

from faultsvc import faults, filters, pagination
from faultsvc.convert import fault_message, naive_utc, occurrence_message, timestamp
from faultsvc.errors import InvalidArgument, ResponseTooLarge
from faultsvc.faults import (
    DETAILS_MAX_BYTES,
    LABEL_MAX_CHARS,
    MESSAGE_MAX_CHARS,
    Cursor,
    Fault,
    StoredFault,
)
from faultsvc.feed import FaultFeed, FeedBatch, decode_resume_token
from faultsvc.fingerprints import fingerprint_of
from faultsvc.occurrences import Window, ranked_count
from faultsvc.policy.redaction import stripping_admin_only
from faultsvc.policy.scope import check_watch_scope, require_admin
from faultsvc.policy.scrub import Scrubber
from faultsvc.storage.fleet import FleetStore
from faultsvc.storage.store import FaultStore
from faultsvc.v1 import fault_pb2, fault_service_pb2_grpc
from faultsvc.v1 import fault_service_pb2 as pb

MAX_BATCH_IDS = 1000
DEFAULT_MAX_RESPONSE_BYTES = 2 * 1024 * 1024
# What a fault costs in a response beyond its own bytes: its tag and length.
FRAMING_BYTES = 6
# A larger request is scrubbed on a worker thread, where RE2 matches without
# the GIL: scrubbing is linear, but megabytes of hostile text take seconds, and
# the event loop must not wait for them. A smaller one, at most a few
# milliseconds however hostile (a traceback is a few KB), is scrubbed inline.
SCRUB_INLINE_MAX_BYTES = 8 * 1024


class FaultServicer(fault_service_pb2_grpc.FaultServiceServicer):
    """Records faults through group commit and reads latest faults through coalesced queries."""

    def __init__(
        self,
        store: FaultStore,
        scrubber: Scrubber | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        *,
        fleet: FleetStore,
        feed: FaultFeed,
    ) -> None:
        self._store = store
        self._fleet = fleet
        self._feed = feed
        self._scrubber = scrubber or Scrubber()
        # One large request scrubbed at a time: threads scrubbing at once would
        # take turns with the event loop for the GIL, and each would add to its wait.
        self._large_scrubs = asyncio.Semaphore()
        self._max_response_bytes = max_response_bytes

    async def RecordFault(
        self, request: pb.RecordFaultRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.RecordFaultResponse:
        traceparent = metadata_value(context, "traceparent")
        if request.ByteSize() <= SCRUB_INLINE_MAX_BYTES:
            fault = new_fault_from(request, self._scrubber, traceparent)
        else:
            async with self._large_scrubs:
                fault = await asyncio.to_thread(
                    new_fault_from, request, self._scrubber, traceparent
                )
        stored = await self._store.record(fault, caller_made_id=request.HasField("fault_id"))
        return pb.RecordFaultResponse(fault=fault_message(stored))

    async def GetLatestFault(
        self, request: pb.GetLatestFaultRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.GetLatestFaultResponse:
        instance_id = faults.check_instance_id(request.instance_id)
        with_details = reads_details(request.view, default=pb.FAULT_VIEW_FULL)
        latest = await self._store.latest(instance_id, with_details=with_details)
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
        with_details = reads_details(request.view, default=pb.FAULT_VIEW_BASIC)
        latest = await self._store.latest_many(set(instance_ids), with_details=with_details)
        ordered = dict.fromkeys(
            instance_id for instance_id in instance_ids if instance_id in latest
        )
        messages = [fault_message(latest[instance_id]) for instance_id in ordered]
        size = sum(framed_size(message) for message in messages)
        if size > self._max_response_bytes:
            raise ResponseTooLarge(
                f"the {len(messages)} faults come to {size:,} bytes, over the response budget "
                f"of {self._max_response_bytes:,}: ask for fewer instances at a time"
                + (", or for the BASIC view" if with_details else "")
            )
        return pb.BatchGetLatestFaultsResponse(faults=messages)

    async def ListFaults(
        self, request: pb.ListFaultsRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.ListFaultsResponse:
        instance_id = faults.check_instance_id(request.instance_id)
        limit = pagination.page_size(request.page_size)
        after = pagination.decode_page_token(request.page_token, instance_id)
        with_details = reads_details(request.view, default=pb.FAULT_VIEW_FULL)
        # One row more than the page tells whether another page follows.
        rows = await self._store.history(instance_id, limit + 1, after, with_details=with_details)
        messages, next_page_token = self._page(rows, limit, instance_id)
        return pb.ListFaultsResponse(faults=messages, next_page_token=next_page_token)

    async def SearchFaults(
        self, request: pb.SearchFaultsRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.SearchFaultsResponse:
        require_admin("SearchFaults")
        fault_filter = filters.parse_filter(request.filter, filters.SEARCH)
        limit = pagination.page_size(request.page_size)
        scope = f"search:{request.filter}"
        after = pagination.decode_page_token(request.page_token, scope, "filter")
        with_details = reads_details(request.view, default=pb.FAULT_VIEW_FULL)
        rows = await self._fleet.search(fault_filter, limit + 1, after, with_details=with_details)
        messages, next_page_token = self._page(rows, limit, scope)
        return pb.SearchFaultsResponse(faults=messages, next_page_token=next_page_token)

    async def WatchFaults(
        self, request: pb.WatchFaultsRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncIterator[pb.WatchFaultsResponse]:
        fault_filter = filters.parse_filter(request.filter, filters.WATCH)
        check_watch_scope(fault_filter)
        resume_from = decode_resume_token(request.resume_token)
        if resume_from is not None:
            self._feed.check_resume_position(resume_from)
        with_details = reads_details(request.view, default=pb.FAULT_VIEW_BASIC)
        token = request.resume_token
        async for batch in self._feed.watch(fault_filter, resume_from, with_details=with_details):
            for response in self._watch_responses(batch, token, with_details=with_details):
                token = response.resume_token
                yield response

    def _watch_responses(
        self, batch: FeedBatch, previous_token: str, *, with_details: bool
    ) -> Iterator[pb.WatchFaultsResponse]:
        """A batch as responses that each fit the response budget.

        Each but the last resumes where the one before did: a token must not
        claim the rest of the batch.
        """
        response = pb.WatchFaultsResponse()
        size = 0
        for occurrence in batch.occurrences:
            message = occurrence_message(occurrence, with_details=with_details)
            size += message.ByteSize() + FRAMING_BYTES
            if response.occurrences and size > self._max_response_bytes:
                response.resume_token = previous_token
                yield response
                response = pb.WatchFaultsResponse()
                size = message.ByteSize() + FRAMING_BYTES
            response.occurrences.append(message)
        response.resume_token = batch.resume_token
        yield response

    async def RankFaults(
        self, request: pb.RankFaultsRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.RankFaultsResponse:
        require_admin("RankFaults")
        fault_filter = filters.parse_filter(request.filter, filters.RANK)
        start = window_time(request, "start_time")
        if start is None:
            raise InvalidArgument.field("start_time", "is required: the start of the window")
        end = window_time(request, "end_time") or faults.utc_now()
        window = Window.checked(start, end, request.interval_count)
        limit = ranked_count(request.max_faults)
        with_details = reads_details(request.view, default=pb.FAULT_VIEW_BASIC)
        ranked = await self._fleet.rank(fault_filter, window, limit, with_details=with_details)
        interval = Duration()
        interval.FromTimedelta(window.interval)
        response = pb.RankFaultsResponse(
            ranked_faults=[
                pb.RankedFault(
                    fault=fault_message(item.fault),
                    occurrence_count=item.occurrences,
                    interval_counts=item.interval_counts,
                )
                for item in ranked
            ],
            start_time=timestamp(window.start),
            end_time=timestamp(window.end),
            interval=interval,
        )
        if response.ByteSize() > self._max_response_bytes:
            raise ResponseTooLarge(
                f"the {len(ranked)} faults come to {response.ByteSize():,} bytes, over the "
                f"response budget of {self._max_response_bytes:,}: ask for fewer faults"
                + (", or for the BASIC view" if with_details else "")
            )
        return response

    def _page(
        self, rows: list[StoredFault], limit: int, scope: str
    ) -> tuple[list[fault_pb2.Fault], str]:
        """The messages of a page of `rows` (read one past `limit`), and the next page's token.

        The page ends early when more would not fit the response budget.
        """
        page, messages = self._within_budget(rows[:limit])
        if len(page) == len(rows):
            return messages, ""
        last = page[-1]
        return messages, pagination.encode_page_token(scope, Cursor(last.last_occurred, last.id))

    def _within_budget(
        self, faults_: list[StoredFault]
    ) -> tuple[list[StoredFault], list[fault_pb2.Fault]]:
        """The first faults whose messages fit the response budget together (at least one)."""
        messages: list[fault_pb2.Fault] = []
        size = 0
        for fault in faults_:
            message = fault_message(fault)
            size += framed_size(message)
            if messages and size > self._max_response_bytes:
                break
            messages.append(message)
        return faults_[: len(messages)], messages

    async def ClearFaults(
        self, request: pb.ClearFaultsRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.ClearFaultsResponse:
        cleared = await self._store.clear(faults.check_instance_id(request.instance_id))
        return pb.ClearFaultsResponse(cleared_count=cleared)


def reads_details(view: pb.FaultView.ValueType, *, default: pb.FaultView.ValueType) -> bool:
    """Whether a read fetches details: the view asks for them and the caller may see them."""
    if view not in pb.FaultView.values():
        raise InvalidArgument.field("view", f"is not a FaultView: {view}")
    return (view or default) == pb.FAULT_VIEW_FULL and not stripping_admin_only()


def window_time(
    request: pb.RankFaultsRequest, field: Literal["start_time", "end_time"]
) -> datetime | None:
    """A time of the window, checked; None when unset."""
    if not request.HasField(field):
        return None
    try:
        moment = naive_utc(getattr(request, field))
    except (ValueError, OverflowError):
        raise InvalidArgument.field(field, "is not a valid timestamp") from None
    if moment < faults.EARLIEST_OCCUR_TIME:
        raise InvalidArgument.field(field, "must not be before 1970-01-01")
    return moment


def framed_size(message: fault_pb2.Fault) -> int:
    """The bytes a fault takes in a response, as an element of a repeated field."""
    return message.ByteSize() + FRAMING_BYTES


def metadata_value(context: grpc.aio.ServicerContext[object, object], key: str) -> str:
    """The call's first metadata value for `key`, or empty."""
    for item_key, value in context.invocation_metadata() or ():
        if item_key == key and isinstance(value, str):
            return value
    return ""


def fault_id_of(request: pb.RecordFaultRequest) -> str:
    """The caller's fault id in canonical form, else a new one."""
    if request.HasField("fault_id"):
        return faults.parse_fault_id(request.fault_id)
    return faults.new_fault_id()


def trace_id_of(request: pb.RecordFaultRequest, traceparent: str) -> str:
    """The request's trace id, checked, else the one of the call's `traceparent`, if valid."""
    return faults.check_trace_id(request.trace_id) or faults.trace_id_of_traceparent(traceparent)


def occur_time_of(request: pb.RecordFaultRequest) -> datetime:
    """When the error happened: the request's `occur_time`, checked, else now."""
    now = faults.utc_now()
    if not request.HasField("occur_time"):
        return now
    try:
        occurred = naive_utc(request.occur_time)
    except (ValueError, OverflowError):
        raise InvalidArgument.field("occur_time", "is not a valid timestamp") from None
    return faults.check_occur_time(occurred, now)


def new_fault_from(
    request: pb.RecordFaultRequest, scrubber: Scrubber, traceparent: str = ""
) -> Fault:
    """The fault a RecordFault request describes: validated, scrubbed of secrets, truncated.

    Each text is scrubbed whole, then cut: a cut first could leave half a
    secret that no pattern recognises, and a mask can pull text from beyond
    the cut into what is kept. The ids are not text but keys to search logs
    with: they are checked, not scrubbed or cut. A request without a trace id
    takes the one of the call's `traceparent`, if valid (a malformed header
    is the caller's tracing, not its fault: it is ignored). The fingerprint
    is made from the stored message and the details as sent, whole: a cut
    could drop the frames that tell two faults apart.
    """
    scrub = scrubber.scrub
    instance_id = faults.check_instance_id(request.instance_id)
    message = faults.truncate_chars(
        scrub(faults.check_not_blank(request.message, "message")), MESSAGE_MAX_CHARS
    )
    source = faults.truncate_chars(scrub(request.source), LABEL_MAX_CHARS)
    return Fault(
        id=fault_id_of(request),
        instance_id=instance_id,
        message=message,
        details=faults.truncate_details(scrub(request.details), DETAILS_MAX_BYTES),
        source=source,
        host=faults.truncate_chars(scrub(request.host), LABEL_MAX_CHARS),
        created=occur_time_of(request),
        request_id=faults.check_request_id(request.request_id, "request_id"),
        global_request_id=faults.check_request_id(request.global_request_id, "global_request_id"),
        trace_id=trace_id_of(request, traceparent),
        fingerprint=fingerprint_of(
            instance_id,
            source,
            message,
            request.details,
            faults.check_caller_fingerprint(request.fingerprint),
        ),
    )
