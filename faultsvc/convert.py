"""Between stored faults and protobuf messages: the one place that knows both."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from faultsvc.faults import StoredFault
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
    )


def timestamp(naive_utc: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(naive_utc.replace(tzinfo=UTC))
    return stamp


def naive_utc(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC).replace(tzinfo=None)
