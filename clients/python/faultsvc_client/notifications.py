"""Error notifications become faults: the spec's notification callback.

A service that sends notifications registers this callback with its
notification mechanism, and every error notification about an instance is
recorded as that instance's fault. With oslo.messaging, the `faultsvc`
notifier driver (`faultsvc_client.notifier`) does it; any other mechanism
calls `record_error_notification` itself:

    record_error_notification(reporter, event_type, payload, priority, publisher_id)

A notification is an error when its priority is ERROR or CRITICAL, or its
event type ends in `.error` (Trove sends those at INFO). The payloads
understood are the ones OpenStack services send, as their serializers leave
them (Trove: JsonPayloadSerializer; Nova: `to_primitive(convert_instances=True)`):

- Trove's `dbaas.<action>.error` (taskmanager, and guest agent errors sent
  on by the conductor): `instance_id`, `message` (the exception's text) and
  `exception`, the traceback as a list of lines.
- Nova's versioned `instance.<action>.error` and `compute_task.<action>.error`:
  an oslo.versionedobjects primitive naming the instance by `uuid` or
  `instance_uuid`, with an ExceptionPayload under `fault` or `reason`
  (`exception`, `exception_message`, and the traceback's lines joined by
  commas).
- Nova's legacy `compute.instance.<action>.error`, `wrap_exception` (the
  event type is the failed method) and scheduling errors
  (`compute_task.<method>`): the instance as `instance_id` or in `args`, and
  the exception as its `repr()` under `exception` or `reason`; for Nova's own
  exceptions that is a dict with `class` and `message`.
- Any other payload naming the instance (`instance_id`, `instance_uuid`,
  `server_id`, or an `instance`/`server` object) with `message` or
  `error_message`, and `traceback` or `details`; in-process, `exception` may
  be the exception itself.

An exception's text reaches the fault's message only if its type is declared
safe to show (`SafeExceptionTypes`, the reporter's `safe_exception_types`);
otherwise the message is its class name and the text is in the details. The
type is known as precisely as the payload tells it: a traceback's last line
qualifies it with its module ("nova.exception.NoValidHost", so declaring
`nova.exception` or `trove.common.exception` covers the service's own
errors); Nova's legacy dict repr marks a subclass of
`nova.exception.NovaException`; any other repr names only the class
("libvirtError"). A payload's `message` without any exception is the
sender's own wording and is kept.

This module needs no oslo library.
"""

from __future__ import annotations

import ast
import ipaddress
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from faultsvc_client.fault_info import (
    NOTHING_SAFE,
    DescribedException,
    SafeExceptionTypes,
    describe_exception,
    message_and_details,
)
from faultsvc_client.request_ids import RequestIds, current_trace_id

LOG = logging.getLogger(__name__)

ERROR_PRIORITIES = frozenset({"ERROR", "CRITICAL"})
INSTANCE_ID_KEYS = ("instance_id", "instance_uuid", "server_id")
INSTANCE_OBJECT_KEYS = ("instance", "server")
CALL_ARGUMENT_KEYS = ("args", "kwargs")
MESSAGE_KEYS = ("message", "exception_message", "error_message", "reason", "error")
DETAILS_KEYS = ("traceback", "details", "stack_trace")
# Where Nova puts an ExceptionPayload, or the repr() of an exception.
EXCEPTION_KEYS = ("fault", "reason", "exception")
# The exception's text, sent beside the exception (Trove, Nova's legacy payloads).
EXCEPTION_TEXT_KEYS = ("message",)
TRACEBACK_HEADER = "Traceback (most recent call last):"

PUBLISHER_SEPARATOR = re.compile(r"[.:]")
# The base class of every exception whose repr() is Nova's dict repr.
NOVA_EXCEPTION = "nova.exception.NovaException"
# Python's own repr of an exception: "ClassName('text')".
EXCEPTION_REPR = re.compile(r"([A-Za-z_]\w*)\((.*)\)", re.DOTALL)
# The end of Nova's dict repr when its values are no Python literals.
NOVA_REPR_CLASS = re.compile(r"'class': '([A-Za-z_]\w*)'\}\Z")


class Reporter(Protocol):
    """What records a fault: `FaultReporter` or `SyncFaultReporter`."""

    @property
    def safe_exception_types(self) -> SafeExceptionTypes: ...

    def report(
        self,
        instance_id: str,
        message: str,
        details: str | None = None,
        *,
        source: str | None = None,
        host: str | None = None,
        request_ids: RequestIds | None = None,
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
    context: Any = None,
) -> str | None:
    """Reports the fault an error notification describes; returns its fault_id.

    `publisher_id` gives the fault's source and host (see
    `publisher_source_and_host`); without it, the reporter's own. `context`
    (the notification's, a dict or a RequestContext) gives its request ids
    (see `notification_request_ids`). Returns
    None, and does nothing, for a notification that is no error or names no
    instance. Never raises: a notification callback must not break the
    notifier that calls it.
    """
    try:
        if not is_error_notification(event_type, priority):
            return None
        fault = fault_from_notification(event_type, payload, reporter.safe_exception_types)
        if fault is None:
            LOG.debug("error notification %s names no instance; not recorded", event_type)
            return None
        source, host = publisher_source_and_host(publisher_id)
        return reporter.report(
            fault.instance_id,
            fault.message,
            fault.details,
            source=source,
            host=host,
            request_ids=notification_request_ids(context, payload),
        )
    except Exception:
        LOG.exception("could not record error notification %s as a fault", event_type)
        return None


def notification_request_ids(context: Any, payload: Any) -> RequestIds:
    """The request ids of a notification: its context's, else its payload's request id.

    Trove's `dbaas.*` payloads carry the API's `request_id`. The trace id is
    the current span's: oslo.messaging calls its drivers in the notifying
    thread, inside the request that failed.
    """
    if hasattr(context, "to_dict"):
        context = context.to_dict()  # a RequestContext, not yet serialized
    if not isinstance(context, Mapping):
        context = {}
    data = unwrap_versioned_object(payload)
    payload_request_id = data.get("request_id") if isinstance(data, Mapping) else None
    return RequestIds.valid(
        context.get("request_id") or payload_request_id,
        context.get("global_request_id"),
        current_trace_id(),
    )


def publisher_source_and_host(publisher_id: str | None) -> tuple[str | None, str | None]:
    """The component and host a notifier names itself by.

    oslo.messaging notifiers are "<service>.<host>" ("taskmanager.tm-1.example.org");
    Nova's versioned ones "<source>:<host>" ("nova-compute:compute-01.example.org").
    The service never holds either separator, so the first one ends it. The
    unspecified address (Trove's default host, 0.0.0.0) names no host.
    """
    if not publisher_id:
        return None, None
    service, *rest = PUBLISHER_SEPARATOR.split(publisher_id, maxsplit=1)
    host = rest[0] if rest else ""
    return service or None, host if names_a_host(host) else None


def names_a_host(host: str) -> bool:
    try:
        return bool(host) and not ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return bool(host)


def fault_from_notification(
    event_type: str, payload: Any, safe_types: SafeExceptionTypes = NOTHING_SAFE
) -> NotifiedFault | None:
    """The instance, message and details of an error notification's payload."""
    data = unwrap_versioned_object(payload)
    if not isinstance(data, Mapping):
        return None
    instance_id = find_instance_id(payload)
    if instance_id is None:
        return None
    exception = find_exception(data)
    if exception is None:
        message = first_text(data, MESSAGE_KEYS) or ""
        details = first_text(data, DETAILS_KEYS) or ""
    else:
        message, details = message_and_details(exception, safe_types)
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


def find_exception(data: Mapping[str, Any]) -> DescribedException | None:
    """The exception a payload carries, in whichever form its sender gives it."""
    if "exception_message" in data:  # the payload is an ExceptionPayload itself
        return from_exception_payload(data)
    text = first_text(data, EXCEPTION_TEXT_KEYS) or ""
    for key in EXCEPTION_KEYS:
        value = data.get(key)
        if isinstance(value, BaseException):  # an in-process notifier sends it as it is
            return describe_exception(value)
        nested = unwrap_versioned_object(value)
        if isinstance(nested, Mapping) and "exception_message" in nested:
            return from_exception_payload(nested)
        if isinstance(value, list) and all(isinstance(line, str) for line in value):
            return from_traceback("".join(value), text)  # Trove
        if isinstance(value, str) and value.strip():
            if value.lstrip().startswith(TRACEBACK_HEADER):
                return from_traceback(value, text)
            if (described := from_exception_repr(value, text)) is not None:
                return described
            if key == "exception":
                return DescribedException((), text or value)
    if (traceback := first_text(data, ("traceback",))) is not None:
        return from_traceback(traceback, text)
    return None


def from_exception_payload(data: Mapping[str, Any]) -> DescribedException:
    """Nova's versioned ExceptionPayload, whose traceback's lines are joined by commas."""
    class_name = text_of(data.get("exception"))
    text = text_of(data.get("exception_message"))
    traceback = text_of(data.get("traceback")).replace("\n,", "\n")
    type_name = type_in_traceback(traceback, text)
    if type_name is None or type_name.rpartition(".")[2] != class_name:
        type_name = class_name
    return DescribedException((type_name,) if type_name else (), text, traceback)


def from_traceback(traceback: str, text: str) -> DescribedException:
    """A formatted traceback, and the exception's text sent beside it (Trove's `message`)."""
    type_name = type_in_traceback(traceback, text)
    return DescribedException((type_name,) if type_name else (), text, traceback)


def type_in_traceback(traceback: str, text: str) -> str | None:
    """The exception's qualified type from a traceback's last line, "<type>: <text>".

    Read only when the traceback ends with the text sent beside it: the text
    may hold any line at all, a forged "nova.exception.X: ..." included, and
    the type before it is the one line its sender formatted.
    """
    body = traceback.rstrip()
    text = text.strip()
    if text:
        if not body.endswith(": " + text):
            return None
        body = body[: -len(text) - 2]
    type_name = body[body.rfind("\n") + 1 :]
    if all(part.isidentifier() for part in type_name.split(".")):
        return type_name
    return None


def from_exception_repr(value: str, text: str) -> DescribedException | None:
    """Nova's legacy payloads: the exception's repr(), its dict repr for Nova's own.

    The text in the repr comes first: beside it, Nova's `message` holds the
    class name of any exception not its own.
    """
    value = value.strip()
    if value.startswith("{"):
        fields = literal(value)
        if isinstance(fields, Mapping) and isinstance(fields.get("class"), str):
            return DescribedException(
                (fields["class"], NOVA_EXCEPTION), text_of(fields.get("message")) or text
            )
        if found := NOVA_REPR_CLASS.search(value):
            return DescribedException((found[1], NOVA_EXCEPTION), text)
        return None
    if found := EXCEPTION_REPR.fullmatch(value):
        arguments = literal(f"({found[2]},)") if found[2].strip() else ()
        if not isinstance(arguments, tuple):
            return None
        # One text argument is the exception's text, as str() shows it; else the arguments.
        only = text_of(arguments[0]) if len(arguments) == 1 else found[2]
        return DescribedException((found[1],), only or text)
    return None


def literal(text: str) -> Any:
    """The Python literal `text` spells, or None; never raises, whatever the text."""
    try:
        return ast.literal_eval(text)
    except Exception:  # SyntaxError, ValueError, MemoryError, RecursionError
        return None


def first_text(data: Mapping[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None


def text_of(value: Any) -> str:
    return value if isinstance(value, str) else ""


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
