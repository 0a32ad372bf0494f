"""Resume tokens of WatchFaults: opaque, and refused unless this service made them."""

from __future__ import annotations

import base64
import json
from datetime import datetime

import pytest

from faultsvc.errors import InvalidArgument
from faultsvc.faults import Cursor
from faultsvc.feed import decode_resume_token, encode_resume_token
from faultsvc.pagination import encode_page_token


def test_a_token_round_trips_its_position() -> None:
    position = datetime(2026, 11, 29, 8, 0, 0, 123456)
    assert decode_resume_token(encode_resume_token(position)) == position


def test_no_token_is_now() -> None:
    assert decode_resume_token("") is None


def forged(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()


@pytest.mark.parametrize(
    "token",
    [
        "%%%",
        "a",
        forged(["watch", 1]),
        forged(["watch", 2, "2026-11-29T08:00:00"]),
        forged(["page", 1, "2026-11-29T08:00:00"]),
        forged(["watch", 1, "2026-11-29T08:00:00+01:00"]),
        forged(["watch", 1, "yesterday"]),
        forged(["watch", 1, 5]),
        forged({"watch": 1}),
        base64.urlsafe_b64encode(b"[" * 100_000).decode(),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        encode_page_token("search:", Cursor(datetime(2026, 1, 1), "x")),
    ],
)
def test_anything_else_is_invalid_naming_the_token(token: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        decode_resume_token(token)
    assert [v.field for v in error.value.violations] == ["resume_token"]
