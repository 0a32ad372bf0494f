"""Faults ready to store, for tests that call the store directly."""

from __future__ import annotations

from dataclasses import replace

from faultsvc.faults import NewFault, new_fault_id, utc_now


def new_fault(instance_id: str = "i-1", **changes: object) -> NewFault:
    """A valid fault of `instance_id`, with a server-made id unless `changes` say otherwise."""
    fault = NewFault(
        id=new_fault_id(),
        instance_id=instance_id,
        message="boom",
        details="trace",
        source="taskmanager",
        host="tm-1",
        created=utc_now(),
        caller_made_id=False,
    )
    return replace(fault, **changes)  # type: ignore[arg-type]
