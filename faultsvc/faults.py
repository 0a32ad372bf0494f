"""Faults as the service understands them: what a valid one is, and how long ones are cut.

Each step of turning a request into a fault is a small function, so the rules
that callers rely on (DESIGN.md: truncate, never reject, a long message) are
each in one place. The limits are the domain's: the table is declared from them.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from dataclasses import Field, dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any, Self

from faultsvc.errors import InvalidArgument

ID_MAX_CHARS = 64
MESSAGE_MAX_CHARS = 255
DETAILS_MAX_BYTES = 65_535
LABEL_MAX_CHARS = 255  # source and host
REQUEST_ID_MAX_CHARS = 64  # OpenStack's `req-<uuid>` is 40
TRACE_ID_CHARS = 32  # W3C Trace Context: 16 bytes in lowercase hex
CALLER_FINGERPRINT_MAX_CHARS = 255
TRUNCATION_MARKER = "... [truncated]"
MAX_CLOCK_SKEW = timedelta(minutes=5)
EARLIEST_OCCUR_TIME = datetime(1970, 1, 1)


@dataclass(frozen=True, slots=True)
class Fault:
    """A fault ready to store: validated, scrubbed, truncated, with its id and date."""

    id: str
    instance_id: str
    message: str
    details: str
    source: str
    host: str
    created: datetime  # when the error happened
    # Where to look in the logs and traces: each empty when unknown.
    request_id: str
    global_request_id: str
    trace_id: str
    # Faults of an instance with one fingerprint are one fault that repeats
    # (see faultsvc.fingerprints).
    fingerprint: str


@dataclass(frozen=True, slots=True)
class StoredFault(Fault):
    """A fault as stored: its first occurrence's id and date, its latest's text.

    Storage adds how many times it occurred, when it last did, and when its
    row was last written.
    """

    occurrence_count: int
    last_occurred: datetime
    updated: datetime

    @classmethod
    def of(cls, fault: Fault, updated: datetime) -> Self:
        """The fault as stored when it first occurs."""
        return cls(
            **_values(fault, FAULT_FIELDS),
            occurrence_count=1,
            last_occurred=fault.created,
            updated=updated,
        )

    @classmethod
    def from_row(cls, row: Any) -> Self:
        """The fault of a database row, its columns named as the fields."""
        return cls(**row._mapping)

    def as_row(self) -> dict[str, Any]:
        """The fault as a row to insert, its columns named as the fields."""
        return _values(self, STORED_FAULT_FIELDS)


# The fields of a fault, and of a stored one: the columns storage reads and writes.
FAULT_FIELDS = fields(Fault)
STORED_FAULT_FIELDS = fields(StoredFault)


def _values(fault: Fault, of_fields: tuple[Field[Any], ...]) -> dict[str, Any]:
    return {field.name: getattr(fault, field.name) for field in of_fields}


@dataclass(frozen=True, slots=True)
class Cursor:
    """A position in an instance's history, newest first: the (last_occurred, id) of a fault."""

    last_occurred: datetime
    id: str


def utc_now() -> datetime:
    """The current time as the database stores it: naive UTC with microseconds."""
    return datetime.now(UTC).replace(tzinfo=None)


def new_fault_id() -> str:
    """A UUIDv7 (RFC 9562): ids of later faults sort after earlier ones."""
    unix_ms = time.time_ns() // 1_000_000
    value = (unix_ms << 80) | int.from_bytes(os.urandom(10))
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return str(uuid.UUID(int=value))


def check_instance_id(value: str, field: str = "instance_id") -> str:
    if not value.strip():
        raise InvalidArgument.field(field, "must not be empty")
    if value != value.strip():
        # MySQL and MariaDB compare with PAD SPACE: "i-1" and "i-1 " would be
        # one instance there and two in SQLite.
        raise InvalidArgument.field(field, "must not begin or end with whitespace")
    if len(value) > ID_MAX_CHARS:
        raise InvalidArgument.field(
            field, f"must be at most {ID_MAX_CHARS} characters, got {len(value)}"
        )
    return value


def check_not_blank(value: str, field: str) -> str:
    if not value.strip():
        raise InvalidArgument.field(field, "must not be empty")
    return value


def parse_fault_id(value: str) -> str:
    """A caller-made fault id in canonical form, so retries match however it was spelled."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidArgument.field("fault_id", "must be a UUID") from None


# Printable ASCII without spaces: an id is searched for in logs, never shown as prose.
_REQUEST_ID = re.compile(r"[!-~]*")
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_INVALID_TRACE_ID = "0" * TRACE_ID_CHARS


def check_request_id(value: str, field: str) -> str:
    """A request id, bounded and printable; empty when unknown."""
    if len(value) > REQUEST_ID_MAX_CHARS:
        raise InvalidArgument.field(
            field, f"must be at most {REQUEST_ID_MAX_CHARS} characters, got {len(value)}"
        )
    if not _REQUEST_ID.fullmatch(value):
        raise InvalidArgument.field(field, "must be printable ASCII without spaces")
    return value


def is_trace_id(value: str) -> bool:
    """Whether `value` is a valid W3C trace id: 32 lowercase hex digits, not all zero."""
    return (
        len(value) == TRACE_ID_CHARS
        and _TRACE_ID.fullmatch(value) is not None
        and value != _INVALID_TRACE_ID
    )


def check_trace_id(value: str) -> str:
    """A W3C trace id, or empty when unknown."""
    if value and not is_trace_id(value):
        raise InvalidArgument.field(
            "trace_id", "must be 32 lowercase hex digits, not all zero (W3C Trace Context)"
        )
    return value


def trace_id_of_traceparent(header: str) -> str:
    """The trace id of a W3C `traceparent` header, or empty when it is not a valid one.

    `version-traceid-parentid-flags`; a later version may add fields after the
    flags, so only the first four are read (W3C Trace Context, section 3.2).
    """
    parts = header.strip().split("-", 4)
    if len(parts) < 4 or len(parts[0]) != 2 or parts[0] == "ff":
        return ""
    if parts[0] == "00" and len(parts) != 4:
        return ""
    trace_id = parts[1]
    return trace_id if is_trace_id(trace_id) else ""


def check_caller_fingerprint(value: str) -> str:
    """A caller's own fingerprint: any text up to a bound; empty when it has none."""
    if len(value) > CALLER_FINGERPRINT_MAX_CHARS:
        raise InvalidArgument.field(
            "fingerprint",
            f"must be at most {CALLER_FINGERPRINT_MAX_CHARS} characters, got {len(value)}",
        )
    return value


def check_occur_time(occurred: datetime, now: datetime) -> datetime:
    if occurred < EARLIEST_OCCUR_TIME:
        raise InvalidArgument.field("occur_time", "must not be before 1970-01-01")
    if occurred > now + MAX_CLOCK_SKEW:
        raise InvalidArgument.field(
            "occur_time",
            f"is {occurred.isoformat()}Z, more than {MAX_CLOCK_SKEW} after the server's clock",
        )
    return occurred


def truncate_chars(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, the marker included, so the cut is visible."""
    if len(text) <= limit:
        return text
    return text[: limit - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER


def truncate_details(text: str, limit_bytes: int = DETAILS_MAX_BYTES) -> str:
    """`text` cut to `limit_bytes` of UTF-8 on a character boundary, the marker included."""
    encoded = text.encode()
    if len(encoded) <= limit_bytes:
        return text
    marker = "\n" + TRUNCATION_MARKER
    keep = encoded[: limit_bytes - len(marker.encode())]
    # A cut inside a multi-byte character leaves a partial sequence at the end:
    # dropping it keeps the text valid and within the limit.
    return keep.decode(errors="ignore") + marker
