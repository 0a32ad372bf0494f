"""Faults are scrubbed of credentials before they are stored: what admins read back is masked."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from faultsvc.config import load_settings
from faultsvc.v1 import fault_service_pb2 as pb
from tests.support.calls import ADMIN, Stub, stub_of
from tests.support.leaks import LEAKS
from tests.support.servers import MakeServer

TRACEBACK, TRACEBACK_SECRETS = LEAKS["trove guest agent: mysql -p in a ProcessExecutionError"]
HEADERS, HEADER_SECRETS = LEAKS["requests header dump"]


async def test_recorded_faults_are_stored_scrubbed(stub: Stub) -> None:
    instance = str(uuid.uuid4())
    request = pb.RecordFaultRequest(
        instance_id=instance,
        message="Guest prepare failed: mysql -u root -pV3ry$ecretR00t exited 1",
        details=TRACEBACK + HEADERS,
        source="guestagent token=Src70ken",
        host="mysql://root:H0stPa55@db-7",
    )
    recorded = (await stub.RecordFault(request, metadata=ADMIN)).fault
    stored = (
        await stub.GetLatestFault(pb.GetLatestFaultRequest(instance_id=instance), metadata=ADMIN)
    ).fault
    assert recorded == stored
    for secret in [*TRACEBACK_SECRETS, *HEADER_SECRETS, "Src70ken", "H0stPa55"]:
        assert secret not in str(stored)
    assert stored.message == "Guest prepare failed: mysql -u root -p*** exited 1"
    assert "Command: sudo mysql -u root -p*** -e UPDATE" in stored.details
    assert "'Authorization': 'Bearer ***'" in stored.details
    assert stored.source == "guestagent token=***"
    assert stored.host == "mysql://root:***@db-7"


async def test_a_secret_at_the_cut_is_masked_before_the_cut(stub: Stub) -> None:
    """Truncating first would keep the start of the password, which no pattern recognises."""
    instance = str(uuid.uuid4())
    credentials = "mysql+pymysql://trove:"
    details = "x" * (65_535 - 16 - len(credentials) - 12) + credentials + "Sup3rS3cretPassw0rd@db/t"
    await stub.RecordFault(
        pb.RecordFaultRequest(instance_id=instance, message="m", details=details * 2)
    )
    stored = (
        await stub.GetLatestFault(pb.GetLatestFaultRequest(instance_id=instance), metadata=ADMIN)
    ).fault
    assert "Sup3r" not in stored.details
    assert len(stored.details.encode()) <= 65_535


async def test_operators_add_their_own_patterns_and_mask(make_server: MakeServer) -> None:
    server = await make_server(
        scrub_patterns=[r"(?i)ticket=(?P<secret>\d+)", r"sk_live_\w+"], scrub_mask="[scrubbed]"
    )
    async with stub_of(server.target) as stub:
        request = pb.RecordFaultRequest(
            instance_id="i", message="m", details="Ticket=4242 sk_live_abc password=pw1"
        )
        fault = (await stub.RecordFault(request, metadata=ADMIN)).fault
    assert fault.details == "Ticket=[scrubbed] [scrubbed] password=[scrubbed]"


def test_a_pattern_that_is_not_a_regular_expression_is_a_settings_error(tmp_path: Path) -> None:
    config = tmp_path / "faultsvc.toml"
    config.write_text("scrub_patterns = ['password=(']\n")
    with pytest.raises(ValidationError, match="scrub pattern 1 is not a regular expression"):
        load_settings(config)
