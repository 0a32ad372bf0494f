"""Opaque page tokens for keyset pagination, newest first (AIP-158).

A token names what it pages through (an instance's history, or a search's
filter), so that it cannot be used to page through anything else.
"""

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


def encode_page_token(scope: str, cursor: Cursor) -> str:
    """A token for the page after `cursor` of what `scope` names."""
    payload = json.dumps([scope, cursor.last_occurred.isoformat(), cursor.id])
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_page_token(token: str, scope: str, scope_field: str = "instance_id") -> Cursor | None:
    """The cursor in `token`, None for the first page; INVALID_ARGUMENT when it is not ours.

    `scope_field` is the request field whose value `scope` is, for the message.
    """
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
    if owner != scope:
        raise InvalidArgument.field(
            "page_token", f"was issued for another {scope_field}; start from the first page"
        )
    return cursor
