"""The rules that turn a request into a fault: truncation, ids, dates."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta

import pytest

from faultsvc import faults
from faultsvc.errors import InvalidArgument
from faultsvc.faults import TRUNCATION_MARKER


def test_short_text_is_kept_whole() -> None:
    assert faults.truncate_chars("short", 255) == "short"
    assert faults.truncate_details("short") == "short"


def test_message_is_cut_to_255_characters_marker_included() -> None:
    cut = faults.truncate_chars("é" * 300, faults.MESSAGE_MAX_CHARS)
    assert len(cut) == 255
    assert cut == "é" * (255 - len(TRUNCATION_MARKER)) + TRUNCATION_MARKER


@pytest.mark.parametrize("character", ["a", "é", "東", "🔥"])
def test_details_are_cut_to_65535_bytes_on_a_character_boundary(character: str) -> None:
    cut = faults.truncate_details(character * 70_000)
    encoded = cut.encode()
    assert len(encoded) <= 65_535
    assert len(encoded) > 65_535 - len(TRUNCATION_MARKER) - 5
    assert cut.endswith("\n" + TRUNCATION_MARKER)
    assert set(cut.removesuffix("\n" + TRUNCATION_MARKER)) == {character}


def test_details_of_exactly_the_limit_are_kept() -> None:
    assert faults.truncate_details("a" * 65_535) == "a" * 65_535


@pytest.mark.parametrize("bad", ["", " ", "\t\n", "i" * 65])
def test_bad_instance_ids_are_invalid(bad: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        faults.check_instance_id(bad, "instance_ids[2]")
    assert [v.field for v in error.value.violations] == ["instance_ids[2]"]


def test_fault_ids_are_canonical_uuids() -> None:
    given = uuid.uuid4()
    assert faults.parse_fault_id(str(given).upper()) == str(given)
    assert faults.parse_fault_id(given.hex) == str(given)
    with pytest.raises(InvalidArgument):
        faults.parse_fault_id("1234")


def test_new_fault_ids_are_time_ordered_uuid7() -> None:
    ids = [faults.new_fault_id() for _ in range(1000)]
    assert all(uuid.UUID(value).version == 7 for value in ids)
    assert len(set(ids)) == 1000
    time.sleep(0.002)
    assert faults.new_fault_id() > ids[0]


def test_occur_time_a_little_ahead_is_clock_skew() -> None:
    now = faults.utc_now()
    assert faults.check_occur_time(now + timedelta(minutes=4), now) == now + timedelta(minutes=4)


@pytest.mark.parametrize(
    "occurred", [datetime(1969, 12, 31, 23, 59), datetime(9999, 1, 1), datetime(2100, 1, 1)]
)
def test_occur_time_out_of_range_is_invalid(occurred: datetime) -> None:
    with pytest.raises(InvalidArgument) as error:
        faults.check_occur_time(occurred, faults.utc_now())
    assert error.value.violations[0].field == "occur_time"
