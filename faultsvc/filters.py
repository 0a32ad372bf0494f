"""The filter of SearchFaults: a small subset of AIP-160, `field = "value"` joined by AND.

Parsed strictly, left to right, with patterns anchored where the last one
ended, so that the cost is linear in the filter whatever it holds; anything
else is INVALID_ARGUMENT naming `filter` and saying where it went wrong.
"""

from __future__ import annotations

import re

from faultsvc.errors import InvalidArgument
from faultsvc.faults import check_request_id

FIELD = "filter"
MAX_FILTER_CHARS = 1024
# The fields a filter may compare, and how each value is checked.
SEARCHABLE = ("request_id", "global_request_id")

_COMPARISON = re.compile(r'\s*([A-Za-z_]+)\s*=\s*"((?:[^"\\]|\\.)*)"\s*')
_AND = re.compile(r"AND\s")
_ESCAPED = re.compile(r"\\(.)")
_EXAMPLE = 'e.g. request_id = "req-..."'


def parse_filter(text: str) -> dict[str, str]:
    """The fields and values `text` compares; INVALID_ARGUMENT naming `filter` otherwise."""
    if len(text) > MAX_FILTER_CHARS:
        raise _invalid(f"must be at most {MAX_FILTER_CHARS} characters, got {len(text)}")
    if not text.strip():
        raise _invalid(f"must not be empty: {_EXAMPLE}")
    criteria: dict[str, str] = {}
    position = 0
    while True:
        comparison = _COMPARISON.match(text, position)
        if comparison is None:
            raise _invalid(f'expected field = "value" at character {position + 1}: {_EXAMPLE}')
        field, value = comparison[1], _ESCAPED.sub(r"\1", comparison[2])
        if field not in SEARCHABLE:
            raise _invalid(f"cannot compare {field!r}; the fields are {', '.join(SEARCHABLE)}")
        if field in criteria:
            raise _invalid(f"compares {field} twice")
        if not value:
            raise _invalid(f"compares {field} with an empty value")
        criteria[field] = check_request_id(value, FIELD)
        position = comparison.end()
        if position == len(text):
            return criteria
        conjunction = _AND.match(text, position)
        if conjunction is None:
            raise _invalid(f"expected AND at character {position + 1}")
        position = conjunction.end()


def _invalid(description: str) -> InvalidArgument:
    return InvalidArgument.field(FIELD, description)
