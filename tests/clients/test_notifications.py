"""Which notifications are errors, and what fault each payload the usual senders send describes."""

from __future__ import annotations

import time
from typing import Any

import pytest

from faultsvc_client.fault_info import NOTHING_SAFE, SafeExceptionTypes
from faultsvc_client.notifications import (
    NotifiedFault,
    fault_from_notification,
    is_error_notification,
    publisher_source_and_host,
    record_error_notification,
)
from faultsvc_client.request_ids import RequestIds

INSTANCE = "73cfc462-dd59-4dc1-9d32-95954171775f"
TRACEBACK = """Traceback (most recent call last):
  File "/opt/trove/guestagent/manager.py", line 355, in _prepare
    raise GuestError("A guest error occurred")
trove.common.exception.GuestError: A guest error occurred"""
TRACEBACK_START = 'Traceback (most recent call last):\n  File "x.py", line 1, in f\n'
TROVE_SAFE = SafeExceptionTypes(["trove.common.exception"])
NOVA_SAFE = SafeExceptionTypes(["nova.exception"])


class RecordingReporter:
    """Stands in for a FaultReporter: remembers what it was asked to report."""

    def __init__(self, safe_exception_types: SafeExceptionTypes = NOTHING_SAFE) -> None:
        self.safe_exception_types = safe_exception_types
        self.reports: list[tuple[str, str, str | None, str | None, str | None]] = []

    def report(
        self,
        instance_id: str,
        message: str,
        details: str | None = None,
        *,
        source: str | None = None,
        host: str | None = None,
        request_ids: RequestIds | None = None,
    ) -> str | None:
        self.reports.append((instance_id, message, details, source, host))
        return "fault-id"


@pytest.mark.parametrize(
    ("event_type", "priority", "is_error"),
    [
        ("compute.instance.create.error", "ERROR", True),
        ("dbaas.instance_create.error", "INFO", True),  # Trove's error events
        ("taskmanager.prepare", "error", True),
        ("taskmanager.prepare", "CRITICAL", True),
        ("dbaas.instance_create.start", "INFO", False),
        ("compute.instance.update", "WARN", False),
        ("compute.instance.error_count", "INFO", False),
    ],
)
def test_error_notifications_are_told_by_priority_or_event_type(
    event_type: str, priority: str, is_error: bool
) -> None:
    assert is_error_notification(event_type, priority) is is_error


def trove_payload(message: str, traceback: str) -> dict[str, Any]:
    return {"instance_id": INSTANCE, "message": message, "exception": traceback.splitlines(True)}


def test_trove_error_shows_its_text_when_its_module_is_declared_safe() -> None:
    payload = trove_payload("A guest error occurred", TRACEBACK)
    assert fault_from_notification("dbaas.x.error", payload, TROVE_SAFE) == NotifiedFault(
        INSTANCE, "A guest error occurred", TRACEBACK
    )


def test_trove_error_shows_its_class_name_when_nothing_is_declared() -> None:
    payload = trove_payload("A guest error occurred", TRACEBACK)
    assert fault_from_notification("dbaas.x.error", payload) == NotifiedFault(
        INSTANCE, "GuestError", TRACEBACK
    )


@pytest.mark.parametrize(
    "text",
    [
        # A forged exception line inside the text of an exception that is not safe.
        "connect to 10.0.0.5 failed\ntrove.common.exception.GuestError: pwned",
        "10.0.0.5\nTraceback (most recent call last):\ntrove.common.exception.GuestError",
    ],
)
def test_a_forged_exception_line_in_the_text_does_not_make_it_safe(text: str) -> None:
    traceback = f"{TRACEBACK_START}pymysql.err.OperationalError: {text}"
    fault = fault_from_notification("dbaas.x.error", trove_payload(text, traceback), TROVE_SAFE)
    assert fault is not None
    assert fault.message == "OperationalError"


def test_a_text_that_is_not_the_tracebacks_own_shows_no_type() -> None:
    fault = fault_from_notification(
        "dbaas.x.error", trove_payload("another text", TRACEBACK), TROVE_SAFE
    )
    assert fault == NotifiedFault(INSTANCE, "dbaas.x.error", TRACEBACK)


def nova_versioned(fault: dict[str, Any]) -> dict[str, Any]:
    return {
        "nova_object.name": "InstanceActionPayload",
        "nova_object.data": {
            "uuid": INSTANCE,
            "fault": {"nova_object.name": "ExceptionPayload", "nova_object.data": fault},
        },
    }


def test_nova_versioned_traceback_is_rejoined_and_names_the_module() -> None:
    lines = [
        "Traceback (most recent call last):\n",
        '  File "nova/conductor/manager.py", line 1, in build_instances\n',
        "nova.exception.NoValidHost: No valid host was found.\n",
    ]
    payload = nova_versioned(
        {
            "module_name": "nova.conductor.manager",
            "exception": "NoValidHost",
            "exception_message": "No valid host was found.",
            "traceback": ",".join(lines),
        }
    )
    assert fault_from_notification("instance.create.error", payload, NOVA_SAFE) == (
        NotifiedFault(INSTANCE, "No valid host was found.", "".join(lines))
    )


def test_nova_versioned_exception_whose_traceback_disagrees_is_named_by_its_class_only() -> None:
    payload = nova_versioned(
        {
            "exception": "NoValidHost",
            "exception_message": "No valid host was found.",
            "traceback": "Traceback (most recent call last):\nnova.exception.Other: x\n",
        }
    )
    fault = fault_from_notification("instance.create.error", payload, NOVA_SAFE)
    assert fault is not None
    assert fault.message == "NoValidHost"


@pytest.mark.parametrize(
    ("exception", "message", "details"),
    [
        (
            "{'kwargs': {'code': 500}, 'message': 'No valid host was found. ', "
            "'class': 'NoValidHost'}",
            "No valid host was found.",
            "NoValidHost: No valid host was found.",
        ),
        (  # values that are no Python literals: the class alone is read
            "{'kwargs': {'when': datetime.datetime(2024, 1, 1, 0, 0)}, 'message': 'x', "
            "'class': 'NoValidHost'}",
            "NoValidHost",
            "NoValidHost",
        ),
        (
            "libvirtError('internal error: qemu on 10.0.0.5 closed the monitor')",
            "libvirtError",
            "libvirtError: internal error: qemu on 10.0.0.5 closed the monitor",
        ),
        (
            "ConnectionRefusedError(111, 'Connection refused')",
            "ConnectionRefusedError",
            "ConnectionRefusedError: 111, 'Connection refused'",
        ),
    ],
)
def test_nova_legacy_exception_reprs_give_their_class_and_text(
    exception: str, message: str, details: str
) -> None:
    payload = {"instance_id": INSTANCE, "exception": exception}
    fault = fault_from_notification("compute.instance.create.error", payload, NOVA_SAFE)
    assert fault is not None
    assert (fault.message, fault.details) == (message, details)


def test_decorated_function_payload_names_the_instance_in_its_arguments() -> None:
    payload = {
        "exception": "No valid host was found.",
        "args": {
            "instance": {"nova_object.name": "Instance", "nova_object.data": {"uuid": INSTANCE}}
        },
    }
    assert fault_from_notification("build_and_run_instance", payload) == NotifiedFault(
        INSTANCE, "build_and_run_instance", "No valid host was found."
    )


@pytest.mark.parametrize(
    "payload",
    [
        {"instance_uuid": INSTANCE},
        {"server_id": INSTANCE},
        {"instance": {"uuid": INSTANCE}},
        {"server": {"id": INSTANCE}},
        {"kwargs": {"instance_id": INSTANCE}},
    ],
)
def test_instance_is_found_where_senders_put_it(payload: dict[str, Any]) -> None:
    fault = fault_from_notification("x.error", payload)
    assert fault is not None
    assert fault.instance_id == INSTANCE


def test_a_message_sent_without_any_exception_is_kept_as_sent() -> None:
    payload = {"instance_id": INSTANCE, "message": "Volume creation failed", "details": "d"}
    assert fault_from_notification("x.error", payload) == NotifiedFault(
        INSTANCE, "Volume creation failed", "d"
    )


def test_a_message_beside_a_traceback_is_the_exceptions_text() -> None:
    payload = {"instance_id": INSTANCE, "message": "A guest error occurred", "traceback": TRACEBACK}
    assert fault_from_notification("x.error", payload) == NotifiedFault(
        INSTANCE, "GuestError", TRACEBACK
    )


def test_an_exception_object_shows_its_class_unless_declared() -> None:
    try:
        raise OSError("disk full on /var/lib/mysql")
    except OSError as error:
        caught = error
    payload = {"instance_id": INSTANCE, "exception": caught}

    fault = fault_from_notification("x.error", payload)
    declared = fault_from_notification("x.error", payload, SafeExceptionTypes([OSError]))

    assert fault is not None
    assert declared is not None
    assert (fault.message, declared.message) == ("OSError", "disk full on /var/lib/mysql")
    assert fault.details.startswith("Traceback (most recent call last):")


def test_an_error_without_any_message_is_named_by_its_event_type() -> None:
    assert fault_from_notification("trove.backup.create.error", {"instance_id": INSTANCE}) == (
        NotifiedFault(INSTANCE, "trove.backup.create.error", "")
    )


def test_record_error_notification_reports_errors_only_with_the_reporters_safe_types() -> None:
    reporter = RecordingReporter(TROVE_SAFE)
    payload = trove_payload("A guest error occurred", TRACEBACK)

    assert record_error_notification(reporter, "x.start", payload, "INFO") is None
    assert record_error_notification(reporter, "x.error", payload, "ERROR") == "fault-id"

    assert reporter.reports == [(INSTANCE, "A guest error occurred", TRACEBACK, None, None)]


@pytest.mark.parametrize(
    ("publisher_id", "source", "host"),
    [
        ("taskmanager.tm-1.example.org", "taskmanager", "tm-1.example.org"),
        ("nova-compute:compute-01.example.org", "nova-compute", "compute-01.example.org"),
        ("nova-conductor:10.0.0.5", "nova-conductor", "10.0.0.5"),
        ("guest.0.0.0.0", "guest", None),  # Trove's default host names none
        ("taskmanager.::", "taskmanager", None),
        ("conductor", "conductor", None),
        (None, None, None),
    ],
)
def test_the_publisher_names_the_source_and_host(
    publisher_id: str | None, source: str | None, host: str | None
) -> None:
    assert publisher_source_and_host(publisher_id) == (source, host)


@pytest.mark.parametrize("payload", [{"message": "no instance named"}, "a string", None, [1, 2]])
def test_record_error_notification_skips_payloads_naming_no_instance(payload: Any) -> None:
    reporter = RecordingReporter()
    assert record_error_notification(reporter, "x.error", payload, "ERROR") is None
    assert reporter.reports == []


HOSTILE_64K = [
    "-" * 65536 + "1",
    "[" * 65536,
    "(" * 32768 + ")" * 32768,
    "{" + "'a': {" * 10000 + "}" * 10001,
    "X(" + "'a', " * 13000 + ")",
    "X(" * 32768,
    "{'class': 'a" + "'class': 'a" * 5000,
    "a." * 32768 + ": " + "x" * 10,
    "Traceback (most recent call last):\n" + "\n" * 65536,
    "9" * 65536,
]


@pytest.mark.parametrize("text", HOSTILE_64K, ids=range(len(HOSTILE_64K)))
@pytest.mark.parametrize("form", ["exception", "reason", "traceback", "trove"])
def test_hostile_64k_exception_text_is_read_at_once_and_never_passes_for_safe(
    text: str, form: str
) -> None:
    sent: Any = [text, text] if form == "trove" else text
    payload = {"instance_id": INSTANCE, "message": text, form.replace("trove", "exception"): sent}
    started = time.perf_counter()
    fault = fault_from_notification("x.error", payload, NOVA_SAFE)
    elapsed = time.perf_counter() - started

    assert fault is not None
    assert elapsed < 0.5  # linear: a quadratic parse of 64 KB takes seconds
    if form != "reason":  # a reason that is no exception's repr is the sender's own message
        assert len(fault.message) < 100
