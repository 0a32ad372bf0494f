"""Occurrences across the fleet: each one as the feed carries it, and faults ranked by them."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Self

from faultsvc.errors import InvalidArgument
from faultsvc.faults import StoredFault

DEFAULT_INTERVALS = 12
MAX_INTERVALS = 100
DEFAULT_RANKED = 10
MAX_RANKED = 100


@dataclass(frozen=True, slots=True)
class RecordedOccurrence:
    """One occurrence of a fault, with the fault it was counted into.

    `recorded` is when the server committed it, by the database's clock;
    `occurred` when the error happened, as its reporter said; `ordinal` its
    fault's count once it was counted (0 when unknown: recorded before it was
    kept). `fault` is the fault as read, its count as of the read.
    """

    id: str
    occurred: datetime
    recorded: datetime
    request_id: str
    global_request_id: str
    ordinal: int
    fault: StoredFault

    @property
    def position(self) -> tuple[datetime, str]:
        """Its place in the feed: by recording time, then id."""
        return self.recorded, self.id

    def counted_as(self, count: int) -> Self:
        """The occurrence with its fault's count as it stood with this occurrence counted."""
        return replace(self, fault=replace(self.fault, occurrence_count=count))


def counted_in_order(occurrences: list[RecordedOccurrence]) -> list[RecordedOccurrence]:
    """`occurrences` in feed order, each with its fault's count as this occurrence made it.

    That is its ordinal. An occurrence recorded before ordinals were kept is
    given the fault's count as read, set back by the occurrences of the same
    fault that follow it in the read.
    """
    ordered = sorted(occurrences, key=lambda occurrence: occurrence.position)
    later: dict[str, int] = {}
    counted: list[RecordedOccurrence] = []
    for occurrence in reversed(ordered):
        fault = occurrence.fault
        after = later.get(fault.id, 0)
        later[fault.id] = after + 1
        count = occurrence.ordinal or max(1, fault.occurrence_count - after)
        counted.append(occurrence.counted_as(count))
    counted.reverse()
    return counted


@dataclass(frozen=True, slots=True)
class Window:
    """A span of time cut into equal intervals, for counting occurrences."""

    start: datetime
    end: datetime
    intervals: int

    @classmethod
    def checked(cls, start: datetime, end: datetime, intervals: int) -> Window:
        if intervals < 0:
            raise InvalidArgument.field("interval_count", "must not be negative")
        if intervals > MAX_INTERVALS:
            raise InvalidArgument.field(
                "interval_count", f"must be at most {MAX_INTERVALS}, got {intervals}"
            )
        if end <= start:
            raise InvalidArgument.field("end_time", "must be after start_time")
        return cls(start, end, intervals or DEFAULT_INTERVALS)

    @property
    def interval(self) -> timedelta:
        return (self.end - self.start) / self.intervals

    @property
    def interval_us(self) -> int:
        """An interval in microseconds, at least one."""
        return max(1, (self.end - self.start) // timedelta(microseconds=1) // self.intervals)


@dataclass(frozen=True, slots=True)
class RankedFault:
    """A fault, and how many times it occurred in a window and in each of its intervals."""

    fault: StoredFault
    occurrences: int
    interval_counts: tuple[int, ...]


def ranked_count(requested: int) -> int:
    """How many faults RankFaults returns: the requested number, within bounds."""
    if requested < 0:
        raise InvalidArgument.field("max_faults", "must not be negative")
    return min(requested or DEFAULT_RANKED, MAX_RANKED)
