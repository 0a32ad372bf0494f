"""The `filter` of the fleet RPCs: a strict subset of AIP-160.

    filter      = [ comparison { "AND" comparison } ]
    comparison  = field operator string
    field       = instance_id | source | host | fingerprint | request_id
                | global_request_id | last_occur_time
    operator    = "=" (text fields) | "<" | "<=" | ">" | ">=" (last_occur_time)
    string      = '"' { any character but '"' and '\\' | '\\' any character } '"'

Whitespace between tokens is ASCII space, tab, CR or LF. Each text field is
compared at most once; `last_occur_time` at most once from below and once
from above, with an RFC 3339 time (`"2026-11-29T08:00:00Z"`). Each RPC takes
the fields it can answer (`SEARCH`, `WATCH`, `RANK`).

The filter is read once, left to right, by a scanner that never goes back,
so the cost is linear in its length whatever it holds; every mistake is
INVALID_ARGUMENT naming `filter` and saying at which character it went wrong.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from faultsvc.errors import InvalidArgument
from faultsvc.faults import (
    EARLIEST_OCCUR_TIME,
    ID_MAX_CHARS,
    LABEL_MAX_CHARS,
    check_request_id,
)

FIELD = "filter"
MAX_FILTER_CHARS = 1024
TIME_FIELD = "last_occur_time"
REQUEST_ID_FIELDS = ("request_id", "global_request_id")
# The fields of the fault itself, compared with its stored value.
FAULT_TEXT_FIELDS = ("instance_id", "source", "host", "fingerprint")
SEARCH = (*FAULT_TEXT_FIELDS, *REQUEST_ID_FIELDS, TIME_FIELD)
WATCH = (*FAULT_TEXT_FIELDS, *REQUEST_ID_FIELDS)
RANK = FAULT_TEXT_FIELDS

_WHITESPACE = " \t\r\n"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = ("<=", ">=", "!=", "=", "<", ">")
_RFC3339 = re.compile(
    # [0-9], not \d: \d matches every script's digits.
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ]([0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.([0-9]{1,9}))?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")
_EXAMPLE = 'e.g. source = "taskmanager" AND last_occur_time >= "2026-11-29T08:00:00Z"'


@dataclass(frozen=True, slots=True)
class TimeBound:
    """One end of a range of `last_occur_time`: naive UTC, and whether it is included."""

    at: datetime
    inclusive: bool


@dataclass(frozen=True, slots=True)
class FaultFilter:
    """What a filter asks for: text fields equal to values, and a range of last occurrences."""

    equal: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    since: TimeBound | None = None
    until: TimeBound | None = None

    @property
    def fault_fields(self) -> dict[str, str]:
        """The comparisons of the fault's own text fields (the request ids left out)."""
        return {name: value for name, value in self.equal.items() if name in FAULT_TEXT_FIELDS}

    @property
    def request_ids(self) -> dict[str, str]:
        """The comparisons of request ids, which match any occurrence of a fault."""
        return {name: value for name, value in self.equal.items() if name in REQUEST_ID_FIELDS}

    def matches(self, values: Mapping[str, Any]) -> bool:
        """Whether a fault's (or an occurrence's) field values match every text comparison."""
        return all(values[name] == value for name, value in self.equal.items())


EVERYTHING = FaultFilter()


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "name", "operator", "string"
    text: str
    position: int  # 1-based, for messages


def parse_filter(
    text: str, fields: Collection[str], *, max_chars: int = MAX_FILTER_CHARS
) -> FaultFilter:
    """The filter `text` states, comparing only `fields`; INVALID_ARGUMENT naming `filter`."""
    if len(text) > max_chars:
        raise _invalid(f"must be at most {max_chars:,} characters, got {len(text):,}")
    tokens = _tokens(text)
    equal: dict[str, str] = {}
    since: TimeBound | None = None
    until: TimeBound | None = None
    token = next(tokens, None)
    while token is not None:
        name = _expect(token, "name", "a field name")
        operator = _expect(next(tokens, None), "operator", f"an operator after {name.text}")
        value = _expect(next(tokens, None), "string", f'a "quoted" value after {operator.text}')
        if name.text not in fields:
            raise _invalid(
                f"cannot compare {_quoted(name.text)} (character {name.position}); "
                f"the fields are {', '.join(fields)}"
            )
        if name.text == TIME_FIELD:
            bound = _time_bound(operator, value)
            if operator.text.startswith(">"):
                if since is not None:
                    raise _invalid(f"bounds {TIME_FIELD} from below twice")
                since = bound
            else:
                if until is not None:
                    raise _invalid(f"bounds {TIME_FIELD} from above twice")
                until = bound
        else:
            if operator.text != "=":
                raise _invalid(
                    f"{name.text} is compared with = only, not {operator.text} "
                    f"(character {operator.position})"
                )
            if name.text in equal:
                raise _invalid(f"compares {name.text} twice")
            equal[name.text] = _checked_value(name.text, value)
        token = next(tokens, None)
        if token is None:
            break
        if token.kind != "name" or token.text != "AND":
            raise _invalid(
                f"expected AND at character {token.position}, found {_quoted(token.text)}: "
                "AND alone joins comparisons"
            )
        token = next(tokens, None)
        if token is None:
            raise _invalid("ends after AND: a comparison must follow it")
    return FaultFilter(MappingProxyType(equal), since, until)


def _tokens(text: str) -> Iterator[_Token]:
    """The tokens of `text`, scanned once from left to right."""
    position = 0
    end = len(text)
    while True:
        while position < end and text[position] in _WHITESPACE:
            position += 1
        if position == end:
            return
        char = text[position]
        if char == '"':
            value, position = _string(text, position)
            yield value
        elif name := _NAME.match(text, position):
            yield _Token("name", name[0], position + 1)
            position = name.end()
        elif operator := next((op for op in _OPERATORS if text.startswith(op, position)), None):
            yield _Token("operator", operator, position + 1)
            position += len(operator)
        else:
            raise _invalid(f"unexpected {_shown(char)} at character {position + 1}: {_EXAMPLE}")


def _string(text: str, start: int) -> tuple[_Token, int]:
    """The string literal opening at `start`, unescaped, and the position after it."""
    chars: list[str] = []
    position = start + 1
    end = len(text)
    while position < end:
        char = text[position]
        if char == '"':
            return _Token("string", "".join(chars), start + 1), position + 1
        if char == "\\":
            position += 1
            if position == end:
                break
            char = text[position]
        chars.append(char)
        position += 1
    raise _invalid(f"the string opened at character {start + 1} is not closed")


def _expect(token: _Token | None, kind: str, what: str) -> _Token:
    if token is None:
        raise _invalid(f"ends where {what} was expected: {_EXAMPLE}")
    if token.kind != kind:
        raise _invalid(
            f"expected {what} at character {token.position}, found {_quoted(token.text)}"
        )
    return token


def _checked_value(name: str, value: _Token) -> str:
    """A text field's value, as strict as the field: what could never match is refused."""
    text = value.text
    if not text:
        raise _invalid(f"compares {name} with an empty value")
    if name in REQUEST_ID_FIELDS:
        try:
            return check_request_id(text, FIELD)
        except InvalidArgument as error:
            raise _invalid(f"{name}: {error.violations[0].description}") from None
    if name == "fingerprint":
        if not _FINGERPRINT.fullmatch(text):
            raise _invalid("a fingerprint is 64 lowercase hex digits (a SHA-256)")
        return text
    limit = ID_MAX_CHARS if name == "instance_id" else LABEL_MAX_CHARS
    if len(text) > limit:
        raise _invalid(f"{name} is at most {limit} characters, got {len(text)}")
    if text != text.strip():
        # MySQL compares with PAD SPACE: "api " and "api" would match there only.
        raise _invalid(f"the value of {name} must not begin or end with whitespace")
    return text


def _time_bound(operator: _Token, value: _Token) -> TimeBound:
    if operator.text not in ("<", "<=", ">", ">="):
        raise _invalid(
            f"{TIME_FIELD} is compared with <, <=, > or >=, not {operator.text} "
            f"(character {operator.position})"
        )
    parts = _RFC3339.fullmatch(value.text)
    if parts is None:
        raise _invalid(
            f"{TIME_FIELD} is compared with an RFC 3339 time such as "
            f'"2026-11-29T08:00:00Z", not {_quoted(value.text)} (character {value.position})'
        )
    date, time, fraction, offset = parts.groups()
    micros = f".{(fraction or '')[:6]:0<6}"
    zone = "+00:00" if offset in ("Z", "z") else offset
    try:
        moment = datetime.fromisoformat(f"{date}T{time}{micros}{zone}")
        naive = moment.astimezone(UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):
        raise _invalid(
            f"{_quoted(value.text)} is not a valid time (character {value.position})"
        ) from None
    if naive < EARLIEST_OCCUR_TIME:
        raise _invalid(f"{TIME_FIELD} is compared with a time before 1970")
    return TimeBound(naive, inclusive=operator.text.endswith("="))


def _shown(char: str) -> str:
    """A character as a message can quote it: escaped unless printable ASCII."""
    return repr(char) if char.isascii() and char.isprintable() else ascii(char)


def _quoted(text: str, limit: int = 40) -> str:
    """Caller text as a message quotes it: cut short, everything but ASCII escaped."""
    return ascii(text[:limit] + ("..." if len(text) > limit else ""))


def _invalid(description: str) -> InvalidArgument:
    return InvalidArgument.field(FIELD, description)
