"""Error notifications become faults: the spec's notification callback.

A service that sends notifications registers this callback with its
notification mechanism, and every error notification about an instance is
recorded as that instance's fault. With oslo.messaging, the `faultsvc`
notifier driver (`faultsvc_client.notifier`) does it; any other mechanism
calls `record_error_notification` itself:

    record_error_notification(reporter, event_type, payload, priority)

Understood payloads are the ones OpenStack services send: Trove's
(`instance_id`, `message`, and the traceback in `exception`), Nova's legacy
ones (`instance_id` or `instance_uuid`, `message`, `exception`) and its
versioned ones (an oslo.versionedobjects primitive whose `fault` carries
`exception_message` and `traceback`), and payloads naming the instance under
`instance`, `server` or a decorated function's `args`.

This module needs no oslo library.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from faultsvc_client.fault_info import exception_details, exception_message

LOG = logging.getLogger(__name__)

ERROR_PRIORITIES = frozenset({"ERROR", "CRITICAL"})
INSTANCE_ID_KEYS = ("instance_id", "instance_uuid", "server_id")
INSTANCE_OBJECT_KEYS = ("instance", "server")
CALL_ARGUMENT_KEYS = ("args", "kwargs")
MESSAGE_KEYS = ("message", "exception_message", "error_message", "reason", "error")
DETAILS_KEYS = ("traceback", "details", "stack_trace")
TRACEBACK_HEADER = "Traceback (most recent call last)"


class Reporter(Protocol):
    """What records a fault: `FaultReporter` or `SyncFaultReporter`."""

    def report(
        self,
        instance_id: str,
        message: str,
        details: str | None = None,
        *,
        source: str | None = None,
        host: str | None = None,
    ) -> str | None: ...


@dataclass(frozen=True)
class NotifiedFault:
    """The fault an error notification describes."""

    instance_id: str
    message: str
    details: str


def is_error_notification(event_type: str, priority: str) -> bool:
    """ERROR or CRITICAL, or an event type ending in `.error` (Trove sends
    its `*.error` events at INFO)."""
    return priority.upper() in ERROR_PRIORITIES or event_type.endswith(".error")


def record_error_notification(
    reporter: Reporter,
    event_type: str,
    payload: Any,
    priority: str,
    publisher_id: str | None = None,
) -> str | None:
    """Reports the fault an error notification describes; returns its fault_id.

    `publisher_id` ("<service>.<host>", as oslo.messaging notifiers name
    themselves) gives the fault's source and host; without it, the
    reporter's own. Returns None, and does nothing, for a notification that
    is no error or names no instance. Never raises: a notification callback
    must not break the notifier that calls it.
    """
    try:
        if not is_error_notification(event_type, priority):
            return None
        fault = fault_from_notification(event_type, payload)
        if fault is None:
            LOG.debug("error notification %s names no instance; not recorded", event_type)
            return None
        source, host = publisher_source_and_host(publisher_id)
        return reporter.report(
            fault.instance_id, fault.message, fault.details, source=source, host=host
        )
    except Exception:
        LOG.exception("could not record error notification %s as a fault", event_type)
        return None


def publisher_source_and_host(publisher_id: str | None) -> tuple[str | None, str | None]:
    """("compute", "host1.example.org") from "compute.host1.example.org"."""
    if not publisher_id:
        return None, None
    service, _, host = publisher_id.partition(".")
    return service or None, host or None


def fault_from_notification(event_type: str, payload: Any) -> NotifiedFault | None:
    """The instance, message and details of an error notification's payload."""
    data = unwrap_versioned_object(payload)
    if not isinstance(data, Mapping):
        return None
    instance_id = find_instance_id(payload)
    if instance_id is None:
        return None
    fault = unwrap_versioned_object(data.get("fault"))
    sources = [data, fault] if isinstance(fault, Mapping) else [data]
    message, details = describe_error(sources)
    return NotifiedFault(instance_id, message or event_type, details)


def find_instance_id(payload: Any, depth: int = 0) -> str | None:
    """The instance a payload is about, wherever the usual senders put it."""
    data = unwrap_versioned_object(payload)
    if not isinstance(data, Mapping) or depth > 2:
        return None
    found = first_text(data, INSTANCE_ID_KEYS)
    if found is None and versioned_object_name(payload).startswith("Instance"):
        found = first_text(data, ("uuid",))  # Nova's versioned Instance*Payload
    for key in INSTANCE_OBJECT_KEYS:
        if found is not None:
            break
        nested = unwrap_versioned_object(data.get(key))
        if isinstance(nested, Mapping):
            found = first_text(nested, ("uuid", "id", *INSTANCE_ID_KEYS))
    for key in CALL_ARGUMENT_KEYS:
        if found is not None:
            break
        found = find_instance_id(data.get(key), depth + 1)
    return found


def describe_error(sources: list[Mapping[str, Any]]) -> tuple[str, str]:
    """The message and details of the error, from the first source that has each.

    An `exception` may be an exception object (an in-process notifier sends
    the payload as it is), a traceback (Trove) or a class name (Nova).
    """
    message = next((m for s in sources if (m := first_text(s, MESSAGE_KEYS))), "")
    details = next((d for s in sources if (d := first_text(s, DETAILS_KEYS))), "")
    for source in sources:
        exception = source.get("exception")
        if isinstance(exception, BaseException):
            message = message or exception_message(exception)
            if not details and exception.__traceback__ is not None:
                details = exception_details(exception)
        elif isinstance(exception, str) and exception.strip():
            if TRACEBACK_HEADER in exception:
                details = details or exception
                message = message or last_line(exception)
            else:
                message = message or exception.strip()
    return message, details


def first_text(data: Mapping[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None


def last_line(text: str) -> str:
    # A traceback's last line is the exception and its message.
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def unwrap_versioned_object(value: Any) -> Any:
    """The fields of an oslo.versionedobjects primitive (`<ns>_object.data`), or `value`."""
    if isinstance(value, Mapping):
        for key, data in value.items():
            if isinstance(key, str) and key.endswith("_object.data") and isinstance(data, Mapping):
                return data
    return value


def versioned_object_name(value: Any) -> str:
    if isinstance(value, Mapping):
        for key, name in value.items():
            if isinstance(key, str) and key.endswith("_object.name") and isinstance(name, str):
                return name
    return ""
