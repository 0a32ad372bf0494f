"""Reads across every instance: searches, the feed of recorded occurrences, and rankings.

Each read is a range of an index (see docs/fleet.md): a newest-first page of
faults is one of the `(column, deleted, last_occurred, id)` indexes read
backwards, the feed is `(recorded, id)` read forwards, and a ranking counts
`(occurred, fault_id)` in a window, then `(fault_id, occurred)` per fault.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from faultsvc.faults import STORED_FAULT_FIELDS, Cursor, StoredFault, utc_now
from faultsvc.filters import FaultFilter
from faultsvc.occurrences import RankedFault, RecordedOccurrence, Window
from faultsvc.storage.failover import DatabaseEndpoints
from faultsvc.storage.tables import LIVE
from faultsvc.storage.tables import fault_occurrences as occurrences
from faultsvc.storage.tables import instance_faults as faults
from faultsvc.storage.transactions import Transactions

# Ids per statement when occurrences are fetched by id.
FETCH_CHUNK = 500

_FAULT_COLUMNS = {field.name: faults.c[field.name] for field in STORED_FAULT_FIELDS}
_OCCURRENCE_COLUMNS = (
    occurrences.c.id.label("occurrence_id"),
    occurrences.c.occurred.label("occurrence_occurred"),
    occurrences.c.recorded.label("occurrence_recorded"),
    occurrences.c.request_id.label("occurrence_request_id"),
    occurrences.c.global_request_id.label("occurrence_global_request_id"),
    occurrences.c.ordinal.label("occurrence_ordinal"),
)


def fault_columns(*, with_details: bool) -> list[sa.ColumnElement[Any]]:
    """A stored fault's columns; without details, an empty string in their place."""
    return [
        sa.literal("", sa.Text).label("details")
        if name == "details" and not with_details
        else column
        for name, column in _FAULT_COLUMNS.items()
    ]


def recording_time(dialect: str) -> dict[str, datetime]:
    """What an occurrence's row is given for its `recorded` column.

    Nothing on MySQL, where the column's default is the database's clock
    (CURRENT_TIMESTAMP(6), UTC in faultsvc's sessions); so the rows of a
    batch keep plain parameters, which the driver sends as one statement.
    SQLite's writers share one host's clock: they give it.
    """
    return {} if dialect in ("mysql", "mariadb") else {"recorded": utc_now()}


def ordinals(counted: Mapping[str, StoredFault]) -> dict[str, int]:
    """Each new occurrence's ordinal: its fault's count once it was counted.

    `counted` holds, by occurrence id, the fault a batch counted it into, read
    back after the batch's upsert: its count includes all the batch's
    occurrences of it. They share one recording time, so the feed streams them
    in the order of their ids; they are numbered in that order.
    """
    by_fault: dict[str, list[str]] = {}
    for occurrence_id, fault in counted.items():
        by_fault.setdefault(fault.id, []).append(occurrence_id)
    numbered: dict[str, int] = {}
    for ids in by_fault.values():
        first = counted[ids[0]].occurrence_count - len(ids) + 1
        for offset, occurrence_id in enumerate(sorted(ids)):
            numbered[occurrence_id] = max(1, first + offset)
    return numbered


@dataclass(frozen=True, slots=True)
class FeedPoll:
    """One read of the feed: the database's clock, and what was recorded in the window read.

    `read_from` is where the ids were read from: the window's start when some
    occurrence turned up late in the part already read, else the end of it.
    """

    now: datetime
    read_from: datetime
    recorded: dict[str, datetime]
    new: list[RecordedOccurrence]


class FleetStore:
    """Reads the faults and occurrences of every instance."""

    def __init__(self, database: DatabaseEndpoints) -> None:
        self._transactions = Transactions(database)

    async def search(
        self,
        fault_filter: FaultFilter,
        limit: int,
        after: Cursor | None = None,
        *,
        with_details: bool = True,
    ) -> list[StoredFault]:
        """Up to `limit` live faults of any instance that match, latest occurrence first.

        Request ids match any occurrence of a fault: the faults they name are
        found first (a few rows, by their indexes), then sorted; the other
        comparisons narrow a newest-first range of an index.
        """
        query = sa.select(*fault_columns(with_details=with_details)).where(
            LIVE, *_fault_conditions(fault_filter)
        )
        if fault_filter.request_ids:
            matching = _faults_of_request_ids(fault_filter.request_ids).subquery("matching")
            query = query.join(matching, matching.c.fault_id == faults.c.id)
        if after is not None:
            query = query.where(
                sa.or_(
                    faults.c.last_occurred < after.last_occurred,
                    sa.and_(faults.c.last_occurred == after.last_occurred, faults.c.id < after.id),
                )
            )
        query = query.order_by(faults.c.last_occurred.desc(), faults.c.id.desc()).limit(limit)

        async def read(connection: AsyncConnection, _attempt: int) -> list[StoredFault]:
            return [StoredFault.from_row(row) for row in await connection.execute(query)]

        return await self._transactions.read(read)

    async def poll_feed(
        self,
        low: datetime,
        checked_until: datetime | None,
        expected: int,
        seen: Collection[str],
        *,
        with_details: bool,
        fetch: bool = True,
    ) -> FeedPoll:
        """What was recorded from `low` on that is not in `seen`, and the database's clock.

        Occurrences between `low` and `checked_until` were read before: the
        `expected` of them are in `seen`. When the database counts as many,
        none turned up late there and only the rest is read again; else the
        whole window is. Every id read is returned, and the new occurrences
        with their faults (unless not to `fetch` them), all in one
        transaction (one snapshot on MySQL).
        """

        async def read(connection: AsyncConnection, _attempt: int) -> FeedPoll:
            now = await database_now(connection)
            read_from = low
            if checked_until is not None:
                counted = await connection.scalar(
                    sa.select(sa.func.count()).where(
                        occurrences.c.recorded >= low, occurrences.c.recorded < checked_until
                    )
                )
                if counted == expected:
                    read_from = checked_until
            rows = await connection.execute(
                sa.select(occurrences.c.id, occurrences.c.recorded).where(
                    occurrences.c.recorded >= read_from
                )
            )
            recorded = {row.id: row.recorded for row in rows}
            new = [fault_id for fault_id in recorded if fault_id not in seen] if fetch else []
            fetched = await _occurrences_by_id(connection, new, with_details=with_details)
            return FeedPoll(now, read_from, recorded, fetched)

        # A transaction, not autocommit reads: its statements share one snapshot.
        return await self._transactions.run(read)

    async def feed_now(self) -> datetime:
        """The database's clock, as the feed reads it."""

        async def read(connection: AsyncConnection, _attempt: int) -> datetime:
            return await database_now(connection)

        return await self._transactions.read(read)

    async def replay(
        self,
        after: tuple[datetime, str],
        fault_filter: FaultFilter,
        limit: int,
        *,
        with_details: bool,
    ) -> list[RecordedOccurrence]:
        """Up to `limit` occurrences recorded after `after` (recording time, id) that match.

        In feed order: a watcher that resumes reads what it missed a page at a time.
        """
        recorded, occurrence_id = after
        query = (
            _occurrences_with_faults(with_details=with_details)
            .where(
                sa.or_(
                    occurrences.c.recorded > recorded,
                    sa.and_(occurrences.c.recorded == recorded, occurrences.c.id > occurrence_id),
                ),
                *_fault_conditions(fault_filter),
                *(occurrences.c[name] == value for name, value in fault_filter.request_ids.items()),
            )
            .order_by(occurrences.c.recorded, occurrences.c.id)
            .limit(limit)
        )

        async def read(connection: AsyncConnection, _attempt: int) -> list[RecordedOccurrence]:
            return [_recorded_occurrence(row) for row in await connection.execute(query)]

        return await self._transactions.read(read)

    async def rank(
        self,
        fault_filter: FaultFilter,
        window: Window,
        limit: int,
        *,
        with_details: bool,
    ) -> list[RankedFault]:
        """The live faults that match and occurred most in `window`, most first.

        Three statements: the counts per fault over the window, ranked; the
        counts of the ranked faults per interval; and the faults themselves.
        """
        in_window = (
            occurrences.c.occurred >= window.start,
            occurrences.c.occurred < window.end,
        )
        occurrence_count = sa.func.count().label("occurrence_count")
        ranking = (
            sa.select(occurrences.c.fault_id, occurrence_count)
            .join(faults, faults.c.id == occurrences.c.fault_id)
            .where(*in_window, LIVE, *_fault_conditions(fault_filter))
            .group_by(occurrences.c.fault_id)
            .order_by(occurrence_count.desc(), occurrences.c.fault_id)
            .limit(limit)
        )
        interval = IntervalIndex(occurrences.c.occurred, window.start, window.interval_us)

        async def read(connection: AsyncConnection, _attempt: int) -> list[RankedFault]:
            ranked = await connection.execute(ranking)
            counts = {row.fault_id: row.occurrence_count for row in ranked}
            if not counts:
                return []
            per_interval = await connection.execute(
                sa.select(occurrences.c.fault_id, interval.label("interval"), sa.func.count())
                .where(occurrences.c.fault_id.in_(list(counts)), *in_window)
                .group_by(occurrences.c.fault_id, interval)
            )
            histograms = {fault_id: [0] * window.intervals for fault_id in counts}
            for fault_id, index, count in per_interval:
                histograms[fault_id][min(max(int(index), 0), window.intervals - 1)] += count
            rows = await connection.execute(
                sa.select(*fault_columns(with_details=with_details)).where(
                    faults.c.id.in_(list(counts))
                )
            )
            found = {row.id: StoredFault.from_row(row) for row in rows}
            return [
                RankedFault(found[fault_id], count, tuple(histograms[fault_id]))
                for fault_id, count in counts.items()
                if fault_id in found
            ]

        # A transaction: the three statements count in one snapshot.
        return await self._transactions.run(read)


def _fault_conditions(fault_filter: FaultFilter) -> list[sa.ColumnElement[bool]]:
    """The filter's comparisons of the fault's own fields and of its latest occurrence."""
    conditions = [faults.c[name] == value for name, value in fault_filter.fault_fields.items()]
    if (since := fault_filter.since) is not None:
        column = faults.c.last_occurred
        conditions.append(column >= since.at if since.inclusive else column > since.at)
    if (until := fault_filter.until) is not None:
        column = faults.c.last_occurred
        conditions.append(column <= until.at if until.inclusive else column < until.at)
    return conditions


def _faults_of_request_ids(request_ids: dict[str, str]) -> sa.CompoundSelect[Any]:
    """The ids of the faults one of whose occurrences carries every one of `request_ids`.

    Faults recorded before occurrences kept their request ids match by their own.
    """
    return sa.union(
        sa.select(occurrences.c.fault_id).where(
            *(occurrences.c[name] == value for name, value in request_ids.items())
        ),
        sa.select(faults.c.id.label("fault_id")).where(
            *(faults.c[name] == value for name, value in request_ids.items())
        ),
    )


def _occurrences_with_faults(*, with_details: bool) -> sa.Select[Any]:
    return sa.select(*_OCCURRENCE_COLUMNS, *fault_columns(with_details=with_details)).join(
        faults, faults.c.id == occurrences.c.fault_id
    )


async def _occurrences_by_id(
    connection: AsyncConnection, ids: Sequence[str], *, with_details: bool
) -> list[RecordedOccurrence]:
    found: list[RecordedOccurrence] = []
    query = _occurrences_with_faults(with_details=with_details)
    for start in range(0, len(ids), FETCH_CHUNK):
        chunk = ids[start : start + FETCH_CHUNK]
        rows = await connection.execute(query.where(occurrences.c.id.in_(chunk)))
        found.extend(_recorded_occurrence(row) for row in rows)
    return found


def _recorded_occurrence(row: Any) -> RecordedOccurrence:
    values = dict(row._mapping)
    return RecordedOccurrence(
        id=values.pop("occurrence_id"),
        occurred=values.pop("occurrence_occurred"),
        recorded=values.pop("occurrence_recorded"),
        request_id=values.pop("occurrence_request_id"),
        global_request_id=values.pop("occurrence_global_request_id"),
        ordinal=values.pop("occurrence_ordinal"),
        fault=StoredFault(**values),
    )


async def database_now(connection: AsyncConnection) -> datetime:
    """The database's clock in naive UTC; SQLite's is this host's."""
    if connection.dialect.name not in ("mysql", "mariadb"):
        return utc_now()
    now = await connection.scalar(sa.select(sa.func.utc_timestamp(6)))
    if not isinstance(now, datetime):
        raise TypeError(f"UTC_TIMESTAMP(6) gave {now!r}")
    return now


class IntervalIndex(FunctionElement[int]):
    """Which interval of a window a time falls in: ⌊(time - start) / interval⌋.

    In whole microseconds on MySQL; from SQLite's Julian day numbers, a
    double precise to a few tens of microseconds, which only moves an
    occurrence that close to an edge into the next interval.
    """

    type = sa.Integer()
    inherit_cache = True

    def __init__(self, moment: sa.ColumnElement[datetime], start: datetime, interval_us: int):
        super().__init__(
            moment, sa.literal(start, faults.c.created.type), sa.literal(interval_us, sa.BigInteger)
        )

    @property
    def arguments(self) -> Iterable[Any]:
        return list(self.clauses)


@compiles(IntervalIndex, "mysql")
@compiles(IntervalIndex, "mariadb")
def _interval_index_mysql(element: IntervalIndex, compiler: SQLCompiler, **kw: Any) -> str:
    moment, start, interval_us = (compiler.process(arg, **kw) for arg in element.arguments)
    return f"FLOOR(TIMESTAMPDIFF(MICROSECOND, {start}, {moment}) / {interval_us})"


@compiles(IntervalIndex)
def _interval_index_sqlite(element: IntervalIndex, compiler: SQLCompiler, **kw: Any) -> str:
    moment, start, interval_us = (compiler.process(arg, **kw) for arg in element.arguments)
    return (
        f"CAST((julianday({moment}) - julianday({start})) * 86400000000.0"
        f" / {interval_us} AS INTEGER)"
    )
