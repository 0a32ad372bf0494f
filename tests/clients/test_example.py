"""The example component runs and its faults arrive, as the README shows it."""

from __future__ import annotations

import asyncio
import uuid

from faultsvc_client import FaultServiceClient
from tests.clients.processes import ROOT, python_env, run_python
from tests.support.servers import ServerProcess

EXAMPLE = str(ROOT / "examples" / "component.py")


async def test_example_component_reports_a_notified_and_a_direct_fault(
    faultsvc_process: ServerProcess,
) -> None:
    instance = str(uuid.uuid4())
    env = python_env(FAULTSVC_TARGET=faultsvc_process.target)

    ran = await asyncio.to_thread(run_python, [EXAMPLE, instance], env)

    assert ran.returncode == 0, ran.stderr
    assert ran.stderr == ""  # no page of warnings
    async with FaultServiceClient.connect(faultsvc_process.target, roles=["admin"]) as client:
        faults = [fault async for fault in client.iter_faults(instance)]
    assert sorted(fault.message for fault in faults) == [
        f"A guest error occurred on {instance}",  # a GuestError, declared safe to show
        "Volume creation failed",
    ]
    direct = next(fault for fault in faults if fault.message.startswith("A guest error"))
    assert "in prepare_guest" in direct.details
    assert {fault.source for fault in faults} == {"taskmanager"}
    notified = next(fault for fault in faults if fault.message == "Volume creation failed")
    assert notified.host == "example"  # from the notifier's publisher_id


def test_example_without_an_instance_prints_its_usage() -> None:
    ran = run_python([EXAMPLE])

    assert ran.returncode == 2
    assert ran.stderr.splitlines() == [
        "usage: component.py [-h] INSTANCE_ID",
        "component.py: error: the following arguments are required: INSTANCE_ID",
    ]
