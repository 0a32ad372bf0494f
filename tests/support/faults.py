"""Faults ready to store, for tests that call the store directly."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import replace

from faultsvc.faults import Fault, StoredFault, new_fault_id, utc_now
from faultsvc.storage.store import FaultStore, Recording


def new_fault(instance_id: str = "i-1", **changes: object) -> Fault:
    """A valid fault of `instance_id`, with a server-made id unless `changes` say otherwise.

    Its fingerprint is its own: it is a repeat of none, unless `changes` give one.
    """
    fault = Fault(
        id=new_fault_id(),
        instance_id=instance_id,
        message="boom",
        details="trace",
        source="taskmanager",
        host="tm-1",
        created=utc_now(),
        request_id="req-5f1c7a3e-2b7d-4c43-9a55-3c8d0f3b8e21",
        global_request_id="req-0b8f6b2a-7e0f-4b1e-8a0e-9d6c1e2f3a4b",
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        fingerprint=uuid.uuid4().hex,
    )
    return replace(fault, **changes)  # type: ignore[arg-type]


def nth(text: str, n: int) -> str:
    """`text` and `n` spelt in letters (12: "bc"), so that faults differ by more than a number.

    Messages that differ only by their numbers are repeats of one fault.
    """
    return f"{text} {''.join(chr(ord('a') + int(digit)) for digit in str(n))}"


def server_made(faults: Iterable[Fault]) -> list[Recording]:
    """The faults, recorded as the server records those whose ids it made."""
    return [(fault, False) for fault in faults]


def caller_made(fault: Fault) -> Recording:
    """The fault, recorded as the server records one whose id its caller made."""
    return (fault, True)


async def stored(store: FaultStore, fault: Fault, *, caller_made_id: bool = False) -> StoredFault:
    """The fault as `store` stored it, recorded alone."""
    (result,) = await store.record_batch([(fault, caller_made_id)])
    assert isinstance(result, StoredFault)
    return result
