"""Opaque page tokens and page sizes (AIP-158)."""

from __future__ import annotations

import base64
import json
from datetime import datetime

import pytest

from faultsvc.errors import InvalidArgument
from faultsvc.faults import Cursor
from faultsvc.pagination import decode_page_token, encode_page_token, page_size


def test_token_round_trip() -> None:
    cursor = Cursor(last_occurred=datetime(2026, 1, 2, 3, 4, 5, 678901), id="0199-abc")
    assert decode_page_token(encode_page_token("i-1", cursor), "i-1") == cursor


def test_no_token_is_the_first_page() -> None:
    assert decode_page_token("", "i-1") is None


def forged(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()


@pytest.mark.parametrize(
    "token",
    [
        "%%%",
        "a",
        forged({"not": "a list"}),
        forged(["i-1", "2026-01-01T00:00:00"]),
        forged(["i-1", "yesterday", "id"]),
        forged(["i-1", "2026-01-01T00:00:00+02:00", "id"]),
        forged(["i-1", 5, "id"]),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
)
def test_forged_tokens_are_invalid(token: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        decode_page_token(token, "i-1")
    assert error.value.violations[0].field == "page_token"


def test_token_of_another_instance_is_invalid() -> None:
    token = encode_page_token("i-1", Cursor(last_occurred=datetime(2026, 1, 1), id="x"))
    with pytest.raises(InvalidArgument):
        decode_page_token(token, "i-2")


@pytest.mark.parametrize(("requested", "size"), [(0, 50), (1, 1), (1000, 1000), (10**9, 1000)])
def test_page_size(requested: int, size: int) -> None:
    assert page_size(requested) == size


def test_negative_page_size_is_invalid() -> None:
    with pytest.raises(InvalidArgument):
        page_size(-5)
