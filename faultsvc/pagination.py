"""Opaque page tokens for keyset pagination of an instance's history (AIP-158)."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime

from faultsvc.errors import InvalidArgument
from faultsvc.faults import Cursor

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument.field("page_size", "must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_page_token(instance_id: str, cursor: Cursor) -> str:
    """A token for the page after `cursor`; it names the instance so it cannot be reused."""
    payload = json.dumps([instance_id, cursor.last_occurred.isoformat(), cursor.id])
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_page_token(token: str, instance_id: str) -> Cursor | None:
    """The cursor in `token`, None for the first page; INVALID_ARGUMENT when it is not ours."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        owner, last_occurred, fault_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        cursor = Cursor(last_occurred=datetime.fromisoformat(last_occurred), id=str(fault_id))
        if cursor.last_occurred.tzinfo is not None:
            raise ValueError("cursor dates are naive UTC")
    # RecursionError: a forged token of deeply nested JSON arrays.
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError, RecursionError):
        raise InvalidArgument.field("page_token", "is not a token this service issued") from None
    if owner != instance_id:
        raise InvalidArgument.field(
            "page_token", "was issued for another instance_id; list from the first page"
        )
    return cursor
