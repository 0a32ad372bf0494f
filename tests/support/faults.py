"""Faults ready to store, for tests that call the store directly."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from faultsvc.faults import Fault, new_fault_id, utc_now
from faultsvc.storage.store import Recording


def new_fault(instance_id: str = "i-1", **changes: object) -> Fault:
    """A valid fault of `instance_id`, with a server-made id unless `changes` say otherwise."""
    fault = Fault(
        id=new_fault_id(),
        instance_id=instance_id,
        message="boom",
        details="trace",
        source="taskmanager",
        host="tm-1",
        created=utc_now(),
    )
    return replace(fault, **changes)  # type: ignore[arg-type]


def server_made(faults: Iterable[Fault]) -> list[Recording]:
    """The faults, recorded as the server records those whose ids it made."""
    return [(fault, False) for fault in faults]


def caller_made(fault: Fault) -> Recording:
    """The fault, recorded as the server records one whose id its caller made."""
    return (fault, True)
