"""Between stored faults and protobuf messages: the one place that knows both."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from faultsvc.faults import StoredFault
from faultsvc.occurrences import RecordedOccurrence
from faultsvc.v1 import fault_pb2


def fault_message(fault: StoredFault) -> fault_pb2.Fault:
    return fault_pb2.Fault(
        id=fault.id,
        instance_id=fault.instance_id,
        message=fault.message,
        details=fault.details,
        source=fault.source,
        host=fault.host,
        create_time=timestamp(fault.created),
        update_time=timestamp(fault.updated),
        request_id=fault.request_id,
        global_request_id=fault.global_request_id,
        trace_id=fault.trace_id,
        fingerprint=fault.fingerprint,
        occurrence_count=fault.occurrence_count,
        last_occur_time=timestamp(fault.last_occurred),
    )


def occurrence_message(
    occurrence: RecordedOccurrence, *, with_details: bool
) -> fault_pb2.FaultOccurrence:
    """The occurrence with its fault; without details, when the caller did not ask for them."""
    fault = fault_message(occurrence.fault)
    if not with_details:
        fault.ClearField("details")
    return fault_pb2.FaultOccurrence(
        id=occurrence.id,
        occur_time=timestamp(occurrence.occurred),
        record_time=timestamp(occurrence.recorded),
        request_id=occurrence.request_id,
        global_request_id=occurrence.global_request_id,
        fault=fault,
    )


EPOCH = datetime(1970, 1, 1)


def timestamp(naive_utc: datetime) -> Timestamp:
    # Plain arithmetic: Timestamp.FromDatetime's time zone handling costs a
    # quarter of building a Fault, on every fault of every read.
    since_epoch = naive_utc - EPOCH
    return Timestamp(
        seconds=since_epoch.days * 86_400 + since_epoch.seconds,
        nanos=since_epoch.microseconds * 1000,
    )


def naive_utc(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC).replace(tzinfo=None)
