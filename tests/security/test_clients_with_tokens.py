"""The Python client and the `faultsvc show` / `faults list` commands present their token."""

from __future__ import annotations

import uuid

from faultsvc.app import FaultServer
from faultsvc_client import FaultServiceClient
from faultsvc_client.cli import EXIT_OK, EXIT_REFUSED
from tests.clients.processes import python_env, run_python_async
from tests.support.tokens import FORWARDING_TOKEN

FAULTSVC = ("-m", "faultsvc")


async def test_the_client_and_the_commands_work_against_a_server_requiring_tokens(
    token_server: FaultServer,
) -> None:
    instance = str(uuid.uuid4())
    async with FaultServiceClient.connect(
        token_server.target, token=FORWARDING_TOKEN, roles=["admin"]
    ) as client:
        await client.record_fault(instance, "A guest error occurred", details="Traceback: x")
        latest = await client.get_latest_fault(instance)
    assert latest is not None
    assert latest.details == "Traceback: x"

    target = ("--target", token_server.target)
    shown = await run_python_async(
        [*FAULTSVC, "show", instance, *target, "--admin", "--token", FORWARDING_TOKEN]
    )
    assert shown.returncode == EXIT_OK, shown.stderr
    assert "fault_details" in shown.stdout
    assert "Traceback: x" in shown.stdout

    listed = await run_python_async(
        [*FAULTSVC, "faults", "list", instance, *target],
        env=python_env(FAULTSVC_TOKEN=FORWARDING_TOKEN),
    )
    assert listed.returncode == EXIT_OK, listed.stderr
    assert "A guest error occurred" in listed.stdout

    refused = await run_python_async([*FAULTSVC, "show", instance, *target])
    assert refused.returncode == EXIT_REFUSED
    assert "not authenticated" in refused.stderr
