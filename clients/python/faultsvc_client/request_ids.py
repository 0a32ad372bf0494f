"""The ids that lead from a fault to the log lines and spans around it.

OpenStack services tag every log line with the request id of the request
being served (`req-<uuid>`) and the global request id that follows it across
services; tracing systems know a trace by its W3C trace id. A fault that
carries them is one search away from its logs. The reporters take them from
where the service keeps them, when it does: oslo.context's current
RequestContext and OpenTelemetry's current span, each only if installed.

An id the server would refuse is not sent: the fault is worth more than the
way to its logs, and one refused id would lose the whole fault.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

# The server's rules: at most 64 printable ASCII characters without spaces,
# and a W3C trace id of 32 lowercase hex digits, not all zero.
_REQUEST_ID = re.compile(r"[!-~]{1,64}")
_TRACE_ID = re.compile(r"(?!0{32})[0-9a-f]{32}")


@dataclass(frozen=True)
class RequestIds:
    """A fault's request id, global request id and trace id; each empty when unknown."""

    request_id: str = ""
    global_request_id: str = ""
    trace_id: str = ""

    @classmethod
    def valid(cls, request_id: Any = "", global_request_id: Any = "", trace_id: Any = "") -> Self:
        """The ids as the server accepts them: any other value, or a non-string, becomes ""."""
        return cls(
            request_id=_matching(_REQUEST_ID, request_id),
            global_request_id=_matching(_REQUEST_ID, global_request_id),
            trace_id=_matching(_TRACE_ID, trace_id),
        )

    @classmethod
    def of_context(cls, context: Mapping[str, Any]) -> Self:
        """The ids of a request context as a dict (a notification's `ctxt`)."""
        return cls.valid(context.get("request_id"), context.get("global_request_id"))


NO_REQUEST_IDS = RequestIds()


def _matching(pattern: re.Pattern[str], value: Any) -> str:
    return value if isinstance(value, str) and pattern.fullmatch(value) else ""


def current_request_ids() -> RequestIds:
    """The ids of the request and the span the calling thread (or task) is in, if known."""
    request_id, global_request_id = _oslo_context_ids()
    return RequestIds.valid(request_id, global_request_id, current_trace_id())


def _oslo_context_ids() -> tuple[Any, Any]:
    try:
        from oslo_context import context
    except ImportError:
        return "", ""
    current = context.get_current()
    if current is None:
        return "", ""
    return getattr(current, "request_id", ""), getattr(current, "global_request_id", "")


def current_trace_id() -> str:
    try:
        from opentelemetry import trace
    except ImportError:
        return ""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return ""
    return trace.format_trace_id(span_context.trace_id)
