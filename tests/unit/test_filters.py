"""The filter of the fleet RPCs: what it accepts, and how it refuses the rest, hostile or not."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

import pytest

from faultsvc.errors import InvalidArgument
from faultsvc.filters import (
    MAX_FILTER_CHARS,
    RANK,
    SEARCH,
    WATCH,
    FaultFilter,
    TimeBound,
    parse_filter,
)

FINGERPRINT = "ab" * 32


def refused(text: str, fields: tuple[str, ...] = SEARCH, **kwargs: int) -> str:
    """The description of the violation `text` is refused with; it must name `filter`."""
    with pytest.raises(InvalidArgument) as error:
        parse_filter(text, fields, **kwargs)
    (violation,) = error.value.violations
    assert violation.field == "filter"
    return violation.description


def test_an_empty_filter_asks_for_everything() -> None:
    assert parse_filter("", SEARCH) == FaultFilter()
    assert parse_filter(" \t\r\n", SEARCH) == FaultFilter()


def test_every_field_an_operator_narrows_the_fleet_by() -> None:
    parsed = parse_filter(
        'instance_id = "i-1" AND source="taskmanager"AND host = "db-7" AND '
        f'fingerprint = "{FINGERPRINT}" AND request_id = "req-1" AND global_request_id = "g-1"'
        ' AND last_occur_time >= "2026-11-29T08:00:00+01:00"'
        ' AND last_occur_time < "2026-11-30T00:00:00.123456789Z"',
        SEARCH,
    )
    assert dict(parsed.equal) == {
        "instance_id": "i-1",
        "source": "taskmanager",
        "host": "db-7",
        "fingerprint": FINGERPRINT,
        "request_id": "req-1",
        "global_request_id": "g-1",
    }
    assert parsed.fault_fields == {
        "instance_id": "i-1",
        "source": "taskmanager",
        "host": "db-7",
        "fingerprint": FINGERPRINT,
    }
    assert parsed.request_ids == {"request_id": "req-1", "global_request_id": "g-1"}
    assert parsed.since == TimeBound(datetime(2026, 11, 29, 7, 0), inclusive=True)
    assert parsed.until == TimeBound(datetime(2026, 11, 30, 0, 0, 0, 123456), inclusive=False)


def test_a_backslash_escapes_the_character_after_it() -> None:
    parsed = parse_filter(r'source = "say \"hi\" \\ \o/"', SEARCH)
    assert parsed.equal["source"] == 'say "hi" \\ o/'


def test_text_values_may_hold_any_unicode() -> None:
    source = "guest\u00e9 agent \u202e\U0001f525 \u0000"
    assert parse_filter(f'source = "{source}"', SEARCH).equal["source"] == source


@pytest.mark.parametrize(
    ("fields", "field"),
    [(WATCH, "last_occur_time"), (RANK, "request_id"), (RANK, "last_occur_time")],
)
def test_each_rpc_compares_only_what_it_can_answer(fields: tuple[str, ...], field: str) -> None:
    value = "2026-11-29T08:00:00Z" if field == "last_occur_time" else "x"
    operator = ">" if field == "last_occur_time" else "="
    assert f"cannot compare '{field}'" in refused(f'{field} {operator} "{value}"', fields)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('source = "a" OR host = "b"', "expected AND at character 14"),
        ('source = "a" and host = "b"', "expected AND at character 14"),
        ('NOT source = "a"', "expected an operator after NOT at character 5"),
        ('source = "a" AND', "ends after AND"),
        ("source =", 'ends where a "quoted" value after = was expected'),
        ("source = a", 'expected a "quoted" value after = at character 10'),
        ('source != "a"', "compared with = only, not !="),
        ('source : "a"', "unexpected ':' at character 8"),
        ('(source = "a")', "unexpected '(' at character 1"),
        ('source = "a', "the string opened at character 10 is not closed"),
        ('source = "a\\', "the string opened at character 10 is not closed"),
        ('source = ""', "compares source with an empty value"),
        ('source = " api"', "must not begin or end with whitespace"),
        ('source = "a" AND source = "b"', "compares source twice"),
        ('instance_id = "' + "i" * 65 + '"', "instance_id is at most 64 characters"),
        ('request_id = "req 1"', "request_id: must be printable ASCII"),
        ('fingerprint = "ABC"', "64 lowercase hex digits"),
        ('last_occur_time = "2026-11-29T08:00:00Z"', "compared with <, <=, > or >="),
        ('last_occur_time > "yesterday"', "an RFC 3339 time"),
        ('last_occur_time > "2026-11-29"', "an RFC 3339 time"),
        ('last_occur_time > "2026-02-30T00:00:00Z"', "is not a valid time"),
        ('last_occur_time > "2026-11-29T08:00:00+24:00"', "is not a valid time"),
        ('last_occur_time > "0001-01-01T00:00:00+01:00"', "is not a valid time"),
        ('last_occur_time > "1969-12-31T23:59:59Z"', "before 1970"),
        # Digits of other scripts are digits to \d, not to RFC 3339.
        ('last_occur_time > "\u0662\u0660\u0662\u0666-11-29T08:00:00Z"', "an RFC 3339 time"),
        (
            'last_occur_time > "2026-11-29T08:00:00Z"'
            ' AND last_occur_time >= "2026-11-28T00:00:00Z"',
            "bounds last_occur_time from below twice",
        ),
        ('sourc\u0435 = "a"', "unexpected '\\u0435' at character 6"),  # a Cyrillic e
        ('\uff53ource = "a"', "unexpected '\\uff53' at character 1"),  # fullwidth s
        ('source\u00a0= "a"', "unexpected '\\xa0' at character 7"),  # no-break space
        ('source\u2028= "a"', "unexpected '\\u2028' at character 7"),  # line separator
    ],
)
def test_a_mistake_says_what_and_where(text: str, said: str) -> None:
    assert said in refused(text)


def test_what_a_refusal_quotes_is_short_and_escaped() -> None:
    said = refused('source = "a" ' + "\u202e" * 500)
    assert "\u202e" not in said
    assert len(said) < 200
    said = refused("source " + "x" * 900)
    assert len(said) < 200


# Filters shaped to make a backtracking parser take exponential or quadratic time.
HOSTILE = {
    "64 KB": 'source = "' + "a" * 65_536 + '"',
    "deep nesting": "(" * 1_000 + 'source = "a"' + ")" * 1_000,
    "nested quotes": '"' * 1_000,
    "backslashes": 'source = "' + "\\" * 1_000,
    "escaped quotes": 'source = "' + '\\"' * 500,
    "comparisons": " AND ".join(['source = "a"'] * 60),
    "ands": "AND " * 250,
    "names": "a " * 500,
    "spaces": " " * 1_000 + "x",
    "operators": "<=" * 500,
    "combining marks": 'source = "a' + "\u0301" * 1_000 + '"',
    "surrogate pairs": 'source = "' + "\U0001f525" * 1_000 + '"',
    "nul": "\x00" * 1_000,
}


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_filters_are_refused_at_once(text: str) -> None:
    started = time.perf_counter()
    refused(text)
    assert time.perf_counter() - started < 0.05


@pytest.mark.parametrize(
    "shape",
    [
        lambda n: 'source = "' + "\\" * n,
        lambda n: 'source = "' + '\\"' * (n // 2),
        lambda n: "(" * n,
        lambda n: 'source = "a" AND ' * (n // 17) + "x",
        lambda n: "a " * (n // 2),
    ],
    ids=["backslashes", "escaped quotes", "parentheses", "comparisons", "names"],
)
def test_the_parser_is_linear_in_the_filter(shape: Callable[[int], str]) -> None:
    """Sixteen times the text costs about sixteen times the time, not 256 times (quadratic)."""

    def cost(size: int) -> float:
        text = shape(size)
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            with pytest.raises(InvalidArgument):
                parse_filter(text, SEARCH, max_chars=len(text))
            best = min(best, time.perf_counter() - started)
        return best

    small, large = cost(4_000), cost(64_000)
    assert large < 60 * max(small, 1e-4), (small, large)


def test_the_limit_is_on_characters() -> None:
    assert "at most 1,024 characters, got 1,025" in refused(" " * (MAX_FILTER_CHARS + 1))
    parse_filter(" " * MAX_FILTER_CHARS, SEARCH)


def test_a_filter_matches_values_field_by_field() -> None:
    parsed = parse_filter('source = "api" AND request_id = "req-1"', WATCH)
    values = {"source": "api", "request_id": "req-1", "host": "h"}
    assert parsed.matches(values)
    assert not parsed.matches(values | {"request_id": "req-2"})
    assert FaultFilter().matches(values)
