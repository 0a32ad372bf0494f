"""Which notifications are errors, and what fault each payload the usual senders send describes."""

from __future__ import annotations

from typing import Any

import pytest

from faultsvc_client.notifications import (
    NotifiedFault,
    fault_from_notification,
    is_error_notification,
    record_error_notification,
)

INSTANCE = "73cfc462-dd59-4dc1-9d32-95954171775f"
TRACEBACK = """Traceback (most recent call last):
  File "/opt/trove/guestagent/manager.py", line 355, in _prepare
    raise RuntimeError("A guest error occurred")
RuntimeError: A guest error occurred"""


class RecordingReporter:
    """Stands in for a FaultReporter: remembers what it was asked to report."""

    def __init__(self) -> None:
        self.reports: list[tuple[str, str, str | None, str | None, str | None]] = []

    def report(
        self,
        instance_id: str,
        message: str,
        details: str | None = None,
        *,
        source: str | None = None,
        host: str | None = None,
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


def test_trove_error_payload_carries_the_traceback_in_exception() -> None:
    payload = {"instance_id": INSTANCE, "message": "A guest error occured", "exception": TRACEBACK}
    assert fault_from_notification("dbaas.instance_create.error", payload) == NotifiedFault(
        INSTANCE, "A guest error occured", TRACEBACK
    )


def test_nova_versioned_payload_carries_its_fault_as_an_object() -> None:
    payload = {
        "nova_object.name": "InstanceActionPayload",
        "nova_object.data": {
            "uuid": INSTANCE,
            "fault": {
                "nova_object.name": "ExceptionPayload",
                "nova_object.data": {
                    "exception": "RuntimeError",
                    "exception_message": "A guest error occurred",
                    "traceback": TRACEBACK,
                },
            },
        },
    }
    assert fault_from_notification("instance.create.error", payload) == NotifiedFault(
        INSTANCE, "A guest error occurred", TRACEBACK
    )


def test_decorated_function_payload_names_the_instance_in_its_arguments() -> None:
    payload = {
        "exception": "No valid host was found.",
        "args": {
            "instance": {"nova_object.name": "Instance", "nova_object.data": {"uuid": INSTANCE}}
        },
    }
    assert fault_from_notification("build_and_run_instance", payload) == NotifiedFault(
        INSTANCE, "No valid host was found.", ""
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


def test_a_traceback_alone_gives_its_last_line_as_the_message() -> None:
    fault = fault_from_notification("x.error", {"instance_id": INSTANCE, "exception": TRACEBACK})
    assert fault == NotifiedFault(INSTANCE, "RuntimeError: A guest error occurred", TRACEBACK)


def test_an_exception_object_gives_its_message_and_traceback() -> None:
    try:
        raise OSError("disk full")
    except OSError as error:
        caught = error
    fault = fault_from_notification("x.error", {"instance_id": INSTANCE, "exception": caught})
    assert fault is not None
    assert fault.message == "disk full"
    assert fault.details.startswith("Traceback (most recent call last):")


def test_an_error_without_any_message_is_named_by_its_event_type() -> None:
    assert fault_from_notification("trove.backup.create.error", {"instance_id": INSTANCE}) == (
        NotifiedFault(INSTANCE, "trove.backup.create.error", "")
    )


def test_record_error_notification_reports_errors_only() -> None:
    reporter = RecordingReporter()
    payload = {"instance_id": INSTANCE, "message": "failed", "traceback": TRACEBACK}

    assert record_error_notification(reporter, "x.start", payload, "INFO") is None
    assert record_error_notification(reporter, "x.error", payload, "ERROR") == "fault-id"

    assert reporter.reports == [(INSTANCE, "failed", TRACEBACK, None, None)]


@pytest.mark.parametrize(
    ("publisher_id", "source", "host"),
    [
        ("taskmanager.tm-1.example.org", "taskmanager", "tm-1.example.org"),
        ("conductor", "conductor", None),
        (None, None, None),
    ],
)
def test_the_publisher_names_the_source_and_host(
    publisher_id: str | None, source: str | None, host: str | None
) -> None:
    reporter = RecordingReporter()
    payload = {"instance_id": INSTANCE, "message": "failed"}

    record_error_notification(reporter, "x.error", payload, "ERROR", publisher_id)

    assert reporter.reports == [(INSTANCE, "failed", "", source, host)]


@pytest.mark.parametrize("payload", [{"message": "no instance named"}, "a string", None, [1, 2]])
def test_record_error_notification_skips_payloads_naming_no_instance(payload: Any) -> None:
    reporter = RecordingReporter()
    assert record_error_notification(reporter, "x.error", payload, "ERROR") is None
    assert reporter.reports == []
