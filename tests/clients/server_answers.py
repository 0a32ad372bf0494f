"""How the server answered RecordFault, counted from its own metrics: one answer per attempt."""

from __future__ import annotations

import grpc

from faultsvc.app import FaultServer

# How long the server's writes wait for a locked table, then answer UNAVAILABLE.
LOCK_WAIT_SECONDS = 0.5


def record_fault_answers(server: FaultServer, code: grpc.StatusCode) -> int:
    """How many RecordFault calls the server answered with `code`: one per attempt."""
    samples = server.metrics_registry.get_sample_value(
        "faultsvc_rpc_requests_total", {"method": "RecordFault", "code": code.name}
    )
    return int(samples or 0)
