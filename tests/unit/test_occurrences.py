"""Occurrences as the feed carries them, and the windows faults are ranked in."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from faultsvc.errors import InvalidArgument
from faultsvc.faults import StoredFault
from faultsvc.occurrences import RecordedOccurrence, Window, counted_in_order, ranked_count
from tests.support.faults import new_fault

T0 = datetime(2026, 11, 29, 8, 0)


def occurrence(n: int, fault: StoredFault, ordinal: int = 0) -> RecordedOccurrence:
    return RecordedOccurrence(
        id=f"o-{n}",
        occurred=T0,
        recorded=T0 + timedelta(seconds=n),
        request_id="",
        global_request_id="",
        ordinal=ordinal,
        fault=fault,
    )


def test_each_occurrence_carries_the_count_it_made() -> None:
    fault = StoredFault(
        **{**StoredFault.of(new_fault(), updated=T0).as_row(), "occurrence_count": 9}
    )
    counted = counted_in_order([occurrence(2, fault, ordinal=8), occurrence(1, fault, ordinal=7)])
    assert [(o.id, o.fault.occurrence_count) for o in counted] == [("o-1", 7), ("o-2", 8)]


def test_repeats_recorded_before_ordinals_are_counted_back_from_the_fault() -> None:
    """Read after its fifth occurrence, a fault's last three occurrences made 3, 4 and 5."""
    fault = StoredFault.of(new_fault(), updated=T0)
    now = StoredFault(**{**fault.as_row(), "occurrence_count": 5})
    other = StoredFault.of(new_fault("i-2"), updated=T0)
    read = [occurrence(4, now), occurrence(2, now), occurrence(3, other), occurrence(1, now)]
    counted = counted_in_order(read)
    assert [(o.id, o.fault.occurrence_count) for o in counted] == [
        ("o-1", 3),
        ("o-2", 4),
        ("o-3", 1),
        ("o-4", 5),
    ]


def test_a_window_is_cut_into_equal_intervals() -> None:
    window = Window.checked(T0, T0 + timedelta(hours=1), 0)
    assert window.intervals == 12
    assert window.interval == timedelta(minutes=5)
    assert window.interval_us == 300_000_000


@pytest.mark.parametrize(
    ("start", "end", "intervals", "field"),
    [
        (T0, T0, 12, "end_time"),
        (T0, T0 - timedelta(seconds=1), 12, "end_time"),
        (T0, T0 + timedelta(hours=1), -1, "interval_count"),
        (T0, T0 + timedelta(hours=1), 101, "interval_count"),
    ],
)
def test_a_window_that_cannot_be_is_invalid(
    start: datetime, end: datetime, intervals: int, field: str
) -> None:
    with pytest.raises(InvalidArgument) as error:
        Window.checked(start, end, intervals)
    assert [v.field for v in error.value.violations] == [field]


def test_how_many_faults_are_ranked() -> None:
    assert (ranked_count(0), ranked_count(3), ranked_count(1000)) == (10, 3, 100)
    with pytest.raises(InvalidArgument):
        ranked_count(-1)
