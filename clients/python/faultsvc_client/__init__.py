"""Python clients of faultsvc.

`FaultServiceClient` calls the service, and `SyncFaultServiceClient` the same
from threads and green threads; `FaultReporter` (async) and
`SyncFaultReporter` (threads) report a service's faults in the background
without ever blocking or failing it; `faultsvc_client.cli` holds the
`faultsvc show` and `faultsvc faults list` commands; `faultsvc_client.notifier`
turns oslo.messaging error notifications into faults.
"""

from faultsvc_client.client import (
    CallOptions,
    FaultServiceClient,
    FaultView,
    RetryPolicy,
    TlsConfig,
)
from faultsvc_client.errors import FaultServiceError, FieldViolation
from faultsvc_client.reporter import Backoff, FaultReporter, FaultReporting, ReporterStats
from faultsvc_client.request_ids import RequestIds
from faultsvc_client.sync_client import SyncFaultServiceClient
from faultsvc_client.sync_reporter import SyncFaultReporter

__all__ = [
    "Backoff",
    "CallOptions",
    "FaultReporter",
    "FaultReporting",
    "FaultServiceClient",
    "FaultServiceError",
    "FaultView",
    "FieldViolation",
    "ReporterStats",
    "RequestIds",
    "RetryPolicy",
    "SyncFaultReporter",
    "SyncFaultServiceClient",
    "TlsConfig",
]
