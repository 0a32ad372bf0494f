"""The one way into storage: faults recorded, read and cleared, in as few round trips as possible.

Concurrent RecordFault calls share a few statements and one COMMIT (group
commit: one multi-row upsert of their faults, one insert of their occurrences),
and concurrent GetLatestFault calls one SELECT (coalesced reads): the store
owns the batchers that gather them, so callers see only `record` and `latest`.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from faultsvc.errors import AlreadyExists, FaultServiceError
from faultsvc.faults import STORED_FAULT_FIELDS, Cursor, Fault, StoredFault, utc_now
from faultsvc.metrics import Metrics
from faultsvc.storage import retention
from faultsvc.storage.batching import Batcher, BatchFunction
from faultsvc.storage.failover import DatabaseEndpoints
from faultsvc.storage.fleet import ordinals, recording_time
from faultsvc.storage.tables import CLEARED, LIVE
from faultsvc.storage.tables import fault_occurrences as occurrences
from faultsvc.storage.tables import instance_faults as faults
from faultsvc.storage.transactions import Transactions, Work

WRITE_BATCH_MAX = 500
READ_BATCH_MAX = 1000
DEFAULT_MAX_WAITING_CALLS = 2000

# The columns of a stored fault, named as its fields: rows are read by name.
FAULT_COLUMNS = tuple(faults.c[field.name] for field in STORED_FAULT_FIELDS)
# The same, with details left in the database: an empty string in their place.
BASIC_COLUMNS = tuple(
    sa.literal("", sa.Text).label("details") if column is faults.c.details else column
    for column in FAULT_COLUMNS
)

# The statements are built once: SQLAlchemy then compiles each once per dialect
# and finds it in its cache by identity on every call.
INSERT_OCCURRENCES = sa.insert(occurrences)
_IDS: sa.BindParameter[list[str]] = sa.bindparam("ids", expanding=True)
# The faults that occurrences were counted into, by occurrence id. A fault's
# own id is its first occurrence's, found even when its occurrence row is gone
# (purged, or never written: faults stored before repeats were grouped).
FAULTS_BY_OCCURRENCE_ID = sa.union_all(
    sa.select(occurrences.c.id.label("occurrence_id"), *FAULT_COLUMNS)
    .join(faults, faults.c.id == occurrences.c.fault_id)
    .where(occurrences.c.id.in_(_IDS)),
    sa.select(faults.c.id.label("occurrence_id"), *FAULT_COLUMNS).where(faults.c.id.in_(_IDS)),
)
# Live faults by fingerprint: a superset of those asked for, sorted out by the caller.
LIVE_FAULTS_BY_FINGERPRINT = sa.select(*FAULT_COLUMNS).where(
    faults.c.instance_id.in_(sa.bindparam("instance_ids", expanding=True)),
    faults.c.live_fingerprint.in_(sa.bindparam("fingerprints", expanding=True)),
    LIVE,
)


# What a fault shows of its latest occurrence.
LATEST_OCCURRENCE_COLUMNS = (
    "message",
    "details",
    "source",
    "host",
    "request_id",
    "global_request_id",
    "trace_id",
)


def _upsert_faults() -> dict[str, sa.Insert]:
    """Per dialect: insert a fault, or count occurrences into its live namesake.

    A row carries a batch's occurrences of one fault: its first's id and
    date, its latest's text and date, and how many there were. The text
    (message, details, host, ids) replaces the fault's only when it is of the
    latest occurrence: a late report of an older one (a reporter that buffered
    through an outage) counts, and may move the first occurrence earlier, but
    leaves the text as it is.

    A cleared fault that still holds its fingerprint (a server older than
    revision 0003 cleared it, and knew nothing of fingerprints) is left as it
    is but for the fingerprint, which is let go: nothing is counted into it,
    and the caller inserts the row again.
    """
    mysql_insert = mysql.insert(faults)
    sqlite_insert = sqlite.insert(faults)
    upserts: dict[str, sa.Insert] = {}
    cleared = faults.c.deleted == sa.true()
    for dialect, new in (("mysql", mysql_insert.inserted), ("sqlite", sqlite_insert.excluded)):
        latest = new.last_occurred >= faults.c.last_occurred
        counted: list[tuple[str, Any]] = [
            (name, sa.case((latest, new[name]), else_=faults.c[name]))
            for name in LATEST_OCCURRENCE_COLUMNS
        ]
        counted += [
            (
                "created",
                sa.case((new.created < faults.c.created, new.created), else_=faults.c.created),
            ),
            ("occurrence_count", faults.c.occurrence_count + new.occurrence_count),
            ("updated", new.updated),
            # Last: MySQL assigns in order, and the ones above compare with the old value.
            ("last_occurred", sa.case((latest, new.last_occurred), else_=faults.c.last_occurred)),
        ]
        changes = [
            (name, sa.case((cleared, faults.c[name]), else_=value)) for name, value in counted
        ]
        changes.append(
            ("live_fingerprint", sa.case((cleared, sa.null()), else_=faults.c.live_fingerprint))
        )
        if dialect == "mysql":
            upserts[dialect] = mysql_insert.on_duplicate_key_update(changes)
        else:
            upserts[dialect] = sqlite_insert.on_conflict_do_update(
                index_elements=[faults.c.instance_id, faults.c.live_fingerprint],
                set_=dict(changes),
            )
    upserts["mariadb"] = upserts["mysql"]
    return upserts


UPSERT_FAULTS = _upsert_faults()
# Whether a row an upsert returns is live: a cleared one was only let go of its fingerprint.
LIVE_NOW = LIVE.label("live_now")
UPSERT_FAULTS_RETURNING = {
    dialect: upsert.returning(*FAULT_COLUMNS, LIVE_NOW) for dialect, upsert in UPSERT_FAULTS.items()
}
_NEWEST = (
    sa.select(faults.c.instance_id, sa.func.max(faults.c.last_occurred).label("last_occurred"))
    .where(faults.c.instance_id.in_(sa.bindparam("instance_ids", expanding=True)), LIVE)
    .group_by(faults.c.instance_id)
    .subquery("newest")
)


def _latest_faults(columns: Sequence[sa.ColumnElement[Any]]) -> sa.Select[Any]:
    return sa.select(*columns).join(
        _NEWEST,
        sa.and_(
            faults.c.instance_id == _NEWEST.c.instance_id,
            faults.c.last_occurred == _NEWEST.c.last_occurred,
            LIVE,
        ),
    )


def _latest_faults_by_correlation(columns: Sequence[sa.ColumnElement[Any]]) -> sa.Select[Any]:
    """The same faults for SQLite, whose planner, without statistics, drives the join above
    from the index on (deleted, last_occurred) and reads every live fault: here it can only
    start from each instance's own entries."""
    newest = faults.alias("newest")
    latest_occurrence = (
        sa.select(sa.func.max(newest.c.last_occurred))
        .where(newest.c.instance_id == faults.c.instance_id, newest.c.deleted == sa.false())
        .scalar_subquery()
    )
    return sa.select(*columns).where(
        faults.c.instance_id.in_(sa.bindparam("instance_ids", expanding=True)),
        LIVE,
        faults.c.last_occurred == latest_occurrence,
    )


def _history_pages(columns: Sequence[sa.ColumnElement[Any]]) -> tuple[sa.Select[Any], ...]:
    first_page = (
        sa.select(*columns)
        .where(faults.c.instance_id == sa.bindparam("instance_id"), LIVE)
        .order_by(faults.c.last_occurred.desc(), faults.c.id.desc())
        .limit(sa.bindparam("limit", type_=sa.Integer))
    )
    next_page = first_page.where(_older_than(sa.bindparam("last_occurred"), sa.bindparam("id")))
    return first_page, next_page


def _older_than(last_occurred: Any, fault_id: Any) -> sa.ColumnElement[bool]:
    """Faults after (last occurrence, id) in the order of histories and searches."""
    return sa.or_(
        faults.c.last_occurred < last_occurred,
        sa.and_(faults.c.last_occurred == last_occurred, faults.c.id < fault_id),
    )


# Keyed by whether the database is SQLite, then by whether details are read.
LATEST_FAULTS = {
    False: {True: _latest_faults(FAULT_COLUMNS), False: _latest_faults(BASIC_COLUMNS)},
    True: {
        True: _latest_faults_by_correlation(FAULT_COLUMNS),
        False: _latest_faults_by_correlation(BASIC_COLUMNS),
    },
}
# Keyed by whether details are read.
HISTORY_PAGES = {True: _history_pages(FAULT_COLUMNS), False: _history_pages(BASIC_COLUMNS)}


def _stored_and_live(row: Any) -> tuple[StoredFault, bool]:
    values = dict(row._mapping)
    live = bool(values.pop("live_now"))
    return StoredFault(**values), live


# What makes occurrences one fault: their instance and fingerprint.
FaultKey = tuple[str, str]


def _fault_key(fault: Fault) -> FaultKey:
    return fault.instance_id, fault.fingerprint


def _row_of(occurrences: list[Fault], updated: datetime) -> dict[str, Any]:
    """The row of a batch's occurrences of one fault: the first's id, the latest's text, the
    earliest date, and their count."""
    latest = occurrences[0]
    for occurrence in occurrences[1:]:
        if occurrence.created >= latest.created:
            latest = occurrence
    return StoredFault.of(latest, updated=updated).as_row() | {
        "id": occurrences[0].id,
        "created": min(occurrence.created for occurrence in occurrences),
        "occurrence_count": len(occurrences),
        "live_fingerprint": latest.fingerprint,
    }


# A write: the fault, and whether its id is the caller's (then a retry may find it stored).
Recording = tuple[Fault, bool]
# A read of the latest fault: the instance, and whether details are read.
LatestRead = tuple[str, bool]
# Makes the store's batchers; a tracing build makes batchers that trace each call.
MakeBatcher = Callable[..., Batcher[Any, Any]]


class FaultStore:
    """The faults of all instances, kept in one table.

    `record` and `latest` go through batchers, which `start` starts and
    `close` drains; the other methods run their own transaction.
    """

    def __init__(
        self,
        database: DatabaseEndpoints | AsyncEngine,
        *,
        metrics: Metrics | None = None,
        max_waiting_calls: int = DEFAULT_MAX_WAITING_CALLS,
        make_batcher: MakeBatcher = Batcher,
    ) -> None:
        if isinstance(database, AsyncEngine):
            database = DatabaseEndpoints([database])
        self.database = database
        self._transactions = Transactions(database)
        self._metrics = metrics
        self._writer: Batcher[Recording, StoredFault] = self._batcher(
            make_batcher, "group-commit", self._record_each, WRITE_BATCH_MAX, max_waiting_calls
        )
        self._latest_reader: Batcher[LatestRead, StoredFault | None] = self._batcher(
            make_batcher, "coalesced-reads", self._latest_each, READ_BATCH_MAX, max_waiting_calls
        )

    def _batcher(
        self,
        make_batcher: MakeBatcher,
        name: str,
        run_batch: BatchFunction[Any, Any],
        max_batch: int,
        max_pending: int,
    ) -> Batcher[Any, Any]:
        batcher = make_batcher(name, run_batch, max_batch, max_pending=max_pending)
        if self._metrics is not None:
            batcher.on_batch = functools.partial(self._metrics.observe_batch, name)
        return batcher

    def start(self) -> None:
        self._writer.start()
        self._latest_reader.start()

    async def close(self) -> None:
        """Writes what was submitted, then closes the database's connections."""
        await self._writer.close()
        await self._latest_reader.close()
        await self.database.dispose()

    async def broken(self) -> BaseException:
        """Returns the error of the first batcher that fails; the store is of no use after it.

        Never returns while both run: a store whose writer died answers every
        `record` Unavailable, and only a restart brings it back.
        """
        stopped = [
            asyncio.ensure_future(batcher.stopped())
            for batcher in (self._writer, self._latest_reader)
        ]
        try:
            for next_stopped in asyncio.as_completed(stopped):
                error = await next_stopped
                if error is not None:
                    return error
            await asyncio.Event().wait()  # both were closed: the server is stopping
            raise AssertionError("unreachable")
        finally:
            for task in stopped:
                task.cancel()

    async def ping(self) -> None:
        """Returns when an endpoint answers (the most preferred is used); else Unavailable."""
        await self.database.probe()

    async def record(self, fault: Fault, *, caller_made_id: bool = False) -> StoredFault:
        """Stores `fault`, with the faults recorded at the same moment; returns it as stored.

        With a caller-made id already stored, nothing is written: the stored
        fault is returned, or AlreadyExists when the id is another instance's.
        """
        return await self._writer.submit((fault, caller_made_id))

    async def latest(self, instance_id: str, *, with_details: bool = True) -> StoredFault | None:
        """The newest live fault of an instance, read together with those asked for meanwhile."""
        return await self._latest_reader.submit((instance_id, with_details))

    async def record_batch(
        self, batch: Sequence[Recording]
    ) -> list[StoredFault | FaultServiceError]:
        """Stores a batch in a few statements and one COMMIT.

        A fault whose fingerprint matches a live fault of its instance is
        counted as another occurrence of that fault. Returns, in order, the
        fault each was stored as, or the error of that fault alone (see
        `record`).

        Every occurrence is written with its id (the fault's, made by the
        caller or the server), so a retry is found and not counted twice. A
        batch is written again after a conflict (a concurrent write of one of
        its ids or fingerprints, which the unique keys turn into a rollback) or
        a commit whose outcome is unknown. Every id of the batch, the ones this
        server made too, is then looked up first, so no occurrence is ever
        counted twice.
        """
        return await self._transactions.run(
            lambda connection, attempt: self._record(connection, batch, retry=attempt > 1)
        )

    async def _record(
        self, connection: AsyncConnection, batch: Sequence[Recording], *, retry: bool
    ) -> list[StoredFault | FaultServiceError]:
        now = utc_now()
        recorded = await self._recorded_occurrences(
            connection, {fault.id for fault, caller_made_id in batch if caller_made_id or retry}
        )
        new: dict[str, Fault] = {}
        for fault, _ in batch:
            if fault.id not in recorded:
                new.setdefault(fault.id, fault)
        if new:
            recorded |= await self._count_occurrences(connection, list(new.values()), now)
        return [
            stored
            if (stored := recorded[fault.id]).instance_id == fault.instance_id
            else AlreadyExists(f"fault_id {fault.id} belongs to another instance")
            for fault, _ in batch
        ]

    async def _count_occurrences(
        self, connection: AsyncConnection, new: list[Fault], now: datetime
    ) -> dict[str, StoredFault]:
        """Inserts or counts each occurrence into its fault; returns the faults by occurrence id.

        Two statements, whatever the batch: the faults upserted (one row per
        fault, however often it occurred in the batch) returning what they
        became, and the occurrences inserted. Rows go in (instance,
        fingerprint) order, so that concurrent batches lock them in one order
        and do not deadlock.
        """
        new.sort(key=_fault_key)
        rows = {key: _row_of(list(same), now) for key, same in itertools.groupby(new, _fault_key)}
        live = await self._upsert(connection, list(rows.values()))
        if released := [key for key in rows if key not in live]:
            # Their fingerprint was held by a cleared fault, which the upsert let go.
            live |= await self._upsert(connection, [rows[key] for key in released])
        counted = {fault.id: live[_fault_key(fault)] for fault in new}
        recorded = recording_time(connection.dialect.name)
        ordinal = ordinals(counted)
        await connection.execute(
            INSERT_OCCURRENCES,
            [
                {
                    "id": fault.id,
                    "fault_id": counted[fault.id].id,
                    "occurred": fault.created,
                    "request_id": fault.request_id,
                    "global_request_id": fault.global_request_id,
                    "ordinal": ordinal[fault.id],
                }
                | recorded
                for fault in new
            ],
        )
        return counted

    async def _upsert(
        self, connection: AsyncConnection, rows: list[dict[str, Any]]
    ) -> dict[FaultKey, StoredFault]:
        """Upserts the rows; returns the live faults they were written into, by key.

        One statement where the database returns what an upsert wrote (MariaDB
        10.5, SQLite 3.35); elsewhere (MySQL) a second reads them back.
        """
        dialect = connection.dialect
        if dialect.insert_returning:
            written = await connection.execute(UPSERT_FAULTS_RETURNING[dialect.name], rows)
            return {
                (fault.instance_id, fault.fingerprint): fault
                for fault, live in map(_stored_and_live, written)
                if live
            }
        await connection.execute(UPSERT_FAULTS[dialect.name], rows)
        found = await connection.execute(
            LIVE_FAULTS_BY_FINGERPRINT,
            {
                "instance_ids": list({row["instance_id"] for row in rows}),
                "fingerprints": list({row["fingerprint"] for row in rows}),
            },
        )
        return {(row.instance_id, row.fingerprint): StoredFault.from_row(row) for row in found}

    async def _record_each(
        self, batch: Sequence[Recording]
    ) -> Sequence[StoredFault | FaultServiceError]:
        results = await self.record_batch(batch)
        if self._metrics is not None:
            self._metrics.pool_in_use.set(self.database.current.pool.checkedout())  # type: ignore[attr-defined]
            self._metrics.count_recorded(r.source for r in results if isinstance(r, StoredFault))
        return results

    async def _recorded_occurrences(
        self, connection: AsyncConnection, ids: Collection[str]
    ) -> dict[str, StoredFault]:
        """The faults that occurrences already recorded were counted into, by occurrence id."""
        if not ids:
            return {}
        recorded = {}
        for row in await connection.execute(FAULTS_BY_OCCURRENCE_ID, {"ids": list(ids)}):
            fault = dict(row._mapping)
            occurrence_id = fault.pop("occurrence_id")
            recorded[occurrence_id] = StoredFault(**fault)
        return recorded

    async def latest_many(
        self, instance_ids: Collection[str], *, with_details: bool = True
    ) -> dict[str, StoredFault]:
        """The newest live fault of each instance that has one, in one query.

        Without details, they stay in the database and the faults hold "".

        The inner query finds each instance's newest date from the index
        (instance_id, deleted, last_occurred) alone; the join fetches those rows. Two
        faults of one instance in the same microsecond both come back, and the
        greater id wins, as in the history's order.
        """
        if not instance_ids:
            return {}
        parameters = {"instance_ids": list(instance_ids)}

        async def read(connection: AsyncConnection, _attempt: int) -> dict[str, StoredFault]:
            latest: dict[str, StoredFault] = {}
            sqlite = connection.dialect.name == "sqlite"
            query = LATEST_FAULTS[sqlite][with_details]
            for row in await connection.execute(query, parameters):
                fault = StoredFault.from_row(row)
                current = latest.get(fault.instance_id)
                if current is None or fault.id > current.id:
                    latest[fault.instance_id] = fault
            return latest

        return await self._transactions.read(read)

    async def _latest_each(self, reads: Sequence[LatestRead]) -> list[StoredFault | None]:
        """The latest fault of each (instance, with details): one query per kind asked for."""
        latest = {
            with_details: await self.latest_many(
                {instance_id for instance_id, details in reads if details == with_details},
                with_details=with_details,
            )
            for with_details in {details for _, details in reads}
        }
        return [latest[details].get(instance_id) for instance_id, details in reads]

    async def history(
        self,
        instance_id: str,
        limit: int,
        after: Cursor | None = None,
        *,
        with_details: bool = True,
    ) -> list[StoredFault]:
        """Up to `limit` live faults of an instance, newest first, after `after` if given."""
        first_page, next_page = HISTORY_PAGES[with_details]
        query = first_page if after is None else next_page
        parameters: dict[str, object] = {"instance_id": instance_id, "limit": limit}
        if after is not None:
            parameters |= {"last_occurred": after.last_occurred, "id": after.id}

        async def read(connection: AsyncConnection, _attempt: int) -> list[StoredFault]:
            rows = await connection.execute(query, parameters)
            return [StoredFault.from_row(row) for row in rows]

        return await self._transactions.read(read)

    async def clear(self, instance_id: str) -> int:
        """Soft-deletes the live faults of an instance; returns how many.

        Not run again after a lost COMMIT: the faults may be cleared already,
        and a second run would answer a wrong count.
        """
        now = utc_now()

        async def clear(connection: AsyncConnection, _attempt: int) -> int:
            result = await connection.execute(
                sa.update(faults)
                .where(faults.c.instance_id == instance_id, LIVE)
                .values(**CLEARED, deleted_at=now, updated=now)
            )
            return result.rowcount

        return await self._transactions.run(clear, rerun_after_lost_commit=False)

    async def cap_history(self, keep: int, batch_size: int = 1000) -> int:
        """Clears, for every instance, the live faults older than its newest `keep`."""
        return await retention.cap_history(self._transactions, keep, batch_size)

    async def purge(self, cleared_before: datetime, batch_size: int = 1000) -> int:
        """Hard-deletes faults cleared before a date, in bounded batches; returns how many.

        Their occurrences go with them, and so do the occurrences of live
        faults that occurred before the date: those are kept only to know a
        retry, and a retry comes long before.
        """

        async def purge_batch(connection: AsyncConnection, _attempt: int) -> int:
            ids = (
                await connection.scalars(
                    sa.select(faults.c.id)
                    .where(faults.c.deleted == sa.true(), faults.c.deleted_at < cleared_before)
                    .limit(batch_size)
                )
            ).all()
            if ids:
                await connection.execute(
                    sa.delete(occurrences).where(occurrences.c.fault_id.in_(ids))
                )
                await connection.execute(sa.delete(faults).where(faults.c.id.in_(ids)))
            return len(ids)

        async def purge_occurrences(connection: AsyncConnection, _attempt: int) -> int:
            ids = (
                await connection.scalars(
                    sa.select(occurrences.c.id)
                    .where(occurrences.c.occurred < cleared_before)
                    .limit(batch_size)
                )
            ).all()
            if ids:
                await connection.execute(sa.delete(occurrences).where(occurrences.c.id.in_(ids)))
            return len(ids)

        purged = await self._in_batches(purge_batch, batch_size)
        await self._in_batches(purge_occurrences, batch_size)
        return purged

    async def _in_batches(self, work: Work[int], batch_size: int) -> int:
        """Runs `work` in transactions until one does less than a batch; returns the sum."""
        done = 0
        while True:
            count = await self._transactions.run(work)
            done += count
            if count < batch_size:
                return done
