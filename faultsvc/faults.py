"""Faults as the service understands them: what a valid one is, and how long ones are cut.

Each step of turning a request into a fault is a small function, so the rules
that callers rely on (DESIGN.md: truncate, never reject, a long message) are
each in one place.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from faultsvc.errors import InvalidArgument
from faultsvc.storage.tables import DETAILS_MAX_BYTES, ID_MAX_CHARS, MESSAGE_MAX_CHARS

TRUNCATION_MARKER = "... [truncated]"
MAX_CLOCK_SKEW = timedelta(minutes=5)
EARLIEST_OCCUR_TIME = datetime(1970, 1, 1)


@dataclass(frozen=True, slots=True)
class NewFault:
    """A fault ready to store: validated, truncated, with its id and dates."""

    id: str
    instance_id: str
    message: str
    details: str
    source: str
    host: str
    created: datetime
    caller_made_id: bool


@dataclass(frozen=True, slots=True)
class StoredFault:
    """A fault as read back from the database."""

    id: str
    instance_id: str
    message: str
    details: str
    source: str
    host: str
    created: datetime
    updated: datetime


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


def check_message(value: str) -> str:
    if not value.strip():
        raise InvalidArgument.field("message", "must not be empty")
    return truncate_chars(value, MESSAGE_MAX_CHARS)


def parse_fault_id(value: str) -> str:
    """A caller-made fault id in canonical form, so retries match however it was spelled."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidArgument.field("fault_id", "must be a UUID") from None


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
