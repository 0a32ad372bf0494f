"""Faults are scrubbed of credentials before they are stored: what admins read back is masked."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from faultsvc.app import FaultServer
from faultsvc.config import ConfigError, load_settings
from faultsvc.faults import truncate_chars
from faultsvc.policy.scrub import MASK, Scrubber
from faultsvc.servicer import new_fault_from
from faultsvc.v1 import fault_pb2
from faultsvc.v1 import fault_service_pb2 as pb
from tests.support.calls import ADMIN, Stub, stub_of
from tests.support.latency import HEALTH_CHECK_BOUND_SECONDS, slowest_health_check_during
from tests.support.leaks import INNOCENT, LEAKS, SPELLINGS
from tests.support.servers import MakeServer

TRACEBACK, TRACEBACK_SECRETS = LEAKS["trove guest agent: mysql -p in a ProcessExecutionError"]
HEADERS, HEADER_SECRETS = LEAKS["requests header dump"]
STORED_TEXTS = ("message", "details", "source", "host")
LABEL_CHARS = 255  # message, source and host: DESIGN.md


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


def everywhere(instance_id: str, text: str) -> pb.RecordFaultRequest:
    """A request with `text` as the message, details, source and host."""
    return pb.RecordFaultRequest(
        instance_id=instance_id, message=text, details=text, source=text, host=text
    )


async def record_everywhere(stub: Stub, text: str) -> fault_pb2.Fault:
    """`text` recorded as the message, details, source and host of one fault, as stored."""
    instance = str(uuid.uuid4())
    await stub.RecordFault(everywhere(instance, text))
    request = pb.GetLatestFaultRequest(instance_id=instance)
    return (await stub.GetLatestFault(request, metadata=ADMIN)).fault


async def test_every_spelling_is_masked_in_every_stored_field(stub: Stub) -> None:
    leaks = []
    for name, (text, secrets) in SPELLINGS.items():
        assert len(text) <= LABEL_CHARS, f"{name}: too long to be stored whole"
        stored = await record_everywhere(stub, text)
        for field in STORED_TEXTS:
            value = getattr(stored, field)
            if MASK not in value or any(secret in value for secret in secrets):
                leaks.append(f"{name}, in {field}: {value}")
    assert not leaks, "\n".join(leaks)


async def test_text_without_credentials_is_stored_as_sent_in_every_field(stub: Stub) -> None:
    for text in filter(None, INNOCENT):
        stored = await record_everywhere(stub, text)
        assert stored.details == text
        for field in ("message", "source", "host"):
            assert getattr(stored, field) == truncate_chars(text, LABEL_CHARS)


SECRET = "Sup3rS3cretPassw0rd"


def keystone_failure(before_url: str) -> str:
    """The message that leaked: a long token, then a URL holding a password."""
    return (
        f"keystone call failed: Authorization: Bearer {before_url} ; connecting to "
        f"mysql+pymysql://trove:{SECRET}@db.example/trove failed"
    )


SECRET_AT = keystone_failure("").index(SECRET)
# Where a cut fell: the message's marker and limit, the old window of 2 x 255
# characters, the details' marker and limit (in bytes: the text is ASCII), and
# their old window.
CUTS = [255 - 15, 255, 2 * 255, 65_535 - 16, 65_535, 2 * 65_535]


def fragments_of_the_secret(stored: str) -> list[str]:
    """The pieces of SECRET longer than 3 characters that `stored` holds."""
    return [SECRET[i : i + 4] for i in range(len(SECRET) - 3) if SECRET[i : i + 4] in stored]


def stored_texts(text: str) -> dict[str, str]:
    """What RecordFault stores of `text` given as each of the message, details, source and host."""
    fault = new_fault_from(everywhere("i", text), Scrubber())
    return {field: getattr(fault, field) for field in STORED_TEXTS}


@pytest.mark.parametrize("masked_before", [True, False], ids=["masked token", "plain text"])
@pytest.mark.parametrize("cut", CUTS)
def test_no_piece_of_a_secret_is_stored_wherever_the_cut_falls(
    cut: int, masked_before: bool
) -> None:
    """Whatever is stored was scrubbed whole: stored = cut(scrub(text)), never scrub(cut(text)).

    The password slides across the cut one character at a time, behind a
    token that is masked (so that text from beyond the cut moves into what is
    kept) or behind text that is not.
    """
    for start in range(cut - len(SECRET) - 2, cut + 3):
        offset = start - SECRET_AT
        before_url = "t" * offset if masked_before else ("x " * offset)[:offset]
        for field, stored in stored_texts(keystone_failure(before_url)).items():
            assert not fragments_of_the_secret(stored), (field, start, stored[-120:])


async def test_the_message_that_leaked_is_stored_masked(stub: Stub) -> None:
    """534 characters: the password lay beyond the old 510-character window, half in it."""
    message = keystone_failure("t" * 408)
    assert len(message) == 534
    stored = await record_everywhere(stub, message)
    assert stored.message == (
        "keystone call failed: Authorization: Bearer *** ; connecting to "
        "mysql+pymysql://trove:***@db.example/trove failed"
    )
    for field in STORED_TEXTS:
        assert not fragments_of_the_secret(getattr(stored, field))


def hostile(unit: str, size: int) -> str:
    return (unit * (size // len(unit) + 1))[:size]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the loop, not the database
async def test_hostile_text_up_to_the_request_limit_never_holds_up_other_callers(
    server: FaultServer, stub: Stub
) -> None:
    """The densest text found for the costliest patterns, a match every 10 bytes, 4 MiB of it.

    Scrubbed whole on the event loop, each of these held every other caller
    for seconds; on a worker thread, where RE2 matches without the GIL, a
    health check waits no longer than the bound of any hostile call.
    """
    size = server.settings.max_receive_message_bytes - 1024  # the other fields and framing
    requests = [
        pb.RecordFaultRequest(instance_id="i-1", message=hostile("password=x\n", size)),
        pb.RecordFaultRequest(instance_id="i-2", message="m", details=hostile("mysql -pX\n", size)),
    ]

    async def hostile_calls() -> None:
        await asyncio.gather(*(stub.RecordFault(request) for request in requests))

    worst = await slowest_health_check_during(server.target, hostile_calls())
    assert worst < HEALTH_CHECK_BOUND_SECONDS, f"a health check waited {worst * 1000:.0f} ms"
    first, second = [
        (await stub.GetLatestFault(pb.GetLatestFaultRequest(instance_id=i), metadata=ADMIN)).fault
        for i in ("i-1", "i-2")
    ]
    assert first.message.startswith("password=***\npassword=***\n")
    assert second.details.startswith("mysql -p***\nmysql -p***\n")


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


@pytest.mark.parametrize("pattern", ["password=(", r"(?<=password=)\S+"])
def test_a_pattern_re2_cannot_compile_is_a_settings_error_naming_it(
    tmp_path: Path, pattern: str
) -> None:
    """A lookbehind is a regular expression to Python, but not one RE2 can match in linear time."""
    config = tmp_path / "faultsvc.toml"
    config.write_text(f"scrub_patterns = ['ticket=\\d+', '{pattern}']\n")
    with pytest.raises(ConfigError) as error:
        load_settings(config)
    assert f"scrub pattern 2 ({pattern!r}) is not a regular expression RE2 accepts" in str(
        error.value
    )
