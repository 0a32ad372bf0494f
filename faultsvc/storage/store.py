"""Reads and writes of `instance_faults`, in SQLAlchemy Core, in as few statements as possible."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from faultsvc.errors import AlreadyExists, FaultServiceError, Unavailable
from faultsvc.faults import NewFault, StoredFault, utc_now
from faultsvc.storage.failover import DatabaseEndpoints, describe
from faultsvc.storage.retry import Failure, backoff_seconds, classify, error_number
from faultsvc.storage.tables import instance_faults as faults

log = logging.getLogger(__name__)

# Attempts of one transaction, all within the database timeout together.
MAX_ATTEMPTS = 5

T = TypeVar("T")
# A transaction's statements, given its connection and the attempt number (1, 2, ...).
Work = Callable[[AsyncConnection, int], Awaitable[T]]

FAULT_COLUMNS = (
    faults.c.id,
    faults.c.instance_id,
    faults.c.message,
    faults.c.details,
    faults.c.source,
    faults.c.host,
    faults.c.created,
    faults.c.updated,
)
# The same, with details left in the database: an empty string in their place.
BASIC_COLUMNS = tuple(
    sa.literal("", sa.Text).label("details") if column is faults.c.details else column
    for column in FAULT_COLUMNS
)
LIVE = faults.c.deleted == sa.false()

# The statements are built once: SQLAlchemy then compiles each once per dialect
# and finds it in its cache by identity on every call.
INSERT_FAULTS = sa.insert(faults)
FAULTS_BY_ID = sa.select(*FAULT_COLUMNS).where(faults.c.id.in_(sa.bindparam("ids", expanding=True)))
_NEWEST = (
    sa.select(faults.c.instance_id, sa.func.max(faults.c.created).label("created"))
    .where(faults.c.instance_id.in_(sa.bindparam("instance_ids", expanding=True)), LIVE)
    .group_by(faults.c.instance_id)
    .subquery("newest")
)


def _latest_faults(columns: Sequence[sa.ColumnElement[Any]]) -> sa.Select[Any]:
    return sa.select(*columns).join(
        _NEWEST,
        sa.and_(
            faults.c.instance_id == _NEWEST.c.instance_id,
            faults.c.created == _NEWEST.c.created,
            LIVE,
        ),
    )


def _history_pages(columns: Sequence[sa.ColumnElement[Any]]) -> tuple[sa.Select[Any], ...]:
    first_page = (
        sa.select(*columns)
        .where(faults.c.instance_id == sa.bindparam("instance_id"), LIVE)
        .order_by(faults.c.created.desc(), faults.c.id.desc())
        .limit(sa.bindparam("limit", type_=sa.Integer))
    )
    next_page = first_page.where(
        sa.or_(
            faults.c.created < sa.bindparam("created"),
            sa.and_(faults.c.created == sa.bindparam("created"), faults.c.id < sa.bindparam("id")),
        )
    )
    return first_page, next_page


# Keyed by whether details are read.
LATEST_FAULTS = {True: _latest_faults(FAULT_COLUMNS), False: _latest_faults(BASIC_COLUMNS)}
HISTORY_PAGES = {True: _history_pages(FAULT_COLUMNS), False: _history_pages(BASIC_COLUMNS)}


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page of history ends: the (created, id) of its last fault."""

    created: datetime
    id: str


class FaultStore:
    """The faults of all instances, kept in one table."""

    def __init__(self, database: DatabaseEndpoints | AsyncEngine) -> None:
        if isinstance(database, AsyncEngine):
            database = DatabaseEndpoints([database])
        self._database = database

    async def _run(self, work: Work[T], *, rerun_after_lost_commit: bool = True) -> T:
        """Runs `work` in a transaction on the current endpoint and commits it.

        What is safe to retry is retried, with jittered backoff, within the
        database timeout for all attempts together; then the call is
        Unavailable. A conflict (a deadlock, a Galera certification conflict,
        a lock wait timeout, a duplicate key) rolled the transaction back: it
        runs again. An endpoint whose connection fails is left for the next
        one; one that is only slow (a lock, a long statement) is pinged, and
        left only if the ping gets no answer either.
        A connection lost during COMMIT leaves the outcome unknown: the work
        runs again only if `rerun_after_lost_commit`, and must then allow for
        its earlier attempt having been committed (it is told the attempt).
        A timeout cancels the statement, and its connection is discarded.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._database.timeout_seconds
        attempt = 0
        while True:
            attempt += 1
            engine = self._database.current
            committing = False
            try:
                async with asyncio.timeout_at(deadline), engine.connect() as connection:
                    result = await work(connection, attempt)
                    committing = True
                    await connection.commit()
                return result
            except (exc.SQLAlchemyError, OSError, TimeoutError) as error:
                failure = classify(error)
                if failure is Failure.OTHER:
                    if isinstance(error, exc.OperationalError | exc.TimeoutError):
                        raise Unavailable(f"database unavailable: {reason(error)}") from error
                    raise
                if failure is Failure.ENDPOINT_DOWN:
                    self._database.failed(engine)
                elif failure is Failure.NO_ANSWER:
                    self._database.suspect(engine)
                outcome_unknown = committing and failure in (
                    Failure.ENDPOINT_DOWN,
                    Failure.NO_ANSWER,
                )
                pause = backoff_seconds(attempt)
                if (
                    attempt == MAX_ATTEMPTS
                    or (outcome_unknown and not rerun_after_lost_commit)
                    or loop.time() + pause >= deadline
                ):
                    raise Unavailable(f"database unavailable: {reason(error)}; retry") from error
                log.info(
                    "attempt %d on %s failed (%s); retrying",
                    attempt,
                    describe(engine),
                    reason(error),
                )
                await asyncio.sleep(pause)

    async def ping(self) -> None:
        """Returns when an endpoint answers (the most preferred is used); else Unavailable."""
        await self._database.probe()

    async def record_batch(
        self, batch: Sequence[NewFault]
    ) -> list[StoredFault | FaultServiceError]:
        """Stores a batch in one multi-row INSERT and one COMMIT.

        Returns, in order, each fault as stored, or the error of that fault
        alone. A fault whose caller-made id is already stored is not written
        again: its stored row is returned (or AlreadyExists, when the id
        belongs to another instance).

        A batch is written again after a conflict (a caller-made id inserted
        by another server between our check and our insert) or a commit whose
        outcome is unknown. Every id of the batch, the ones this server made
        too, is then looked up first, so no fault is ever stored twice.
        """
        return await self._run(
            lambda connection, attempt: self._record(connection, batch, retry=attempt > 1)
        )

    async def _record(
        self, connection: AsyncConnection, batch: Sequence[NewFault], *, retry: bool
    ) -> list[StoredFault | FaultServiceError]:
        now = utc_now()
        existing = await self._stored_by_id(
            connection, {fault.id for fault in batch if fault.caller_made_id or retry}
        )
        results: list[StoredFault | FaultServiceError] = []
        rows = []
        for fault in batch:
            stored = existing.get(fault.id)
            if stored is None:
                stored = _as_stored(fault, now)
                existing[fault.id] = stored
                rows.append(asdict(stored))
            results.append(
                stored
                if stored.instance_id == fault.instance_id
                else AlreadyExists(f"fault_id {fault.id} belongs to another instance")
            )
        if rows:
            await connection.execute(INSERT_FAULTS, rows)
        return results

    async def _stored_by_id(
        self, connection: AsyncConnection, ids: Collection[str]
    ) -> dict[str, StoredFault]:
        if not ids:
            return {}
        result = await connection.execute(FAULTS_BY_ID, {"ids": list(ids)})
        return {row.id: StoredFault(*row) for row in result}

    async def latest_for(
        self, instance_ids: Collection[str], *, with_details: bool = True
    ) -> dict[str, StoredFault]:
        """The newest live fault of each instance that has one, in one query.

        Without details, they stay in the database and the faults hold "".

        The inner query finds each instance's newest date from the index
        (instance_id, deleted, created) alone; the join fetches those rows. Two
        faults of one instance in the same microsecond both come back, and the
        greater id wins, as in the history's order.
        """
        if not instance_ids:
            return {}
        parameters = {"instance_ids": list(instance_ids)}

        async def read(connection: AsyncConnection, _attempt: int) -> dict[str, StoredFault]:
            latest: dict[str, StoredFault] = {}
            for row in await connection.execute(LATEST_FAULTS[with_details], parameters):
                fault = StoredFault(*row)
                current = latest.get(fault.instance_id)
                if current is None or fault.id > current.id:
                    latest[fault.instance_id] = fault
            return latest

        return await self._run(read)

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
            parameters |= {"created": after.created, "id": after.id}

        async def read(connection: AsyncConnection, _attempt: int) -> list[StoredFault]:
            return [StoredFault(*row) for row in await connection.execute(query, parameters)]

        return await self._run(read)

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
                .values(deleted=True, deleted_at=now, updated=now)
            )
            return result.rowcount

        return await self._run(clear, rerun_after_lost_commit=False)

    async def purge(self, cleared_before: datetime, batch_size: int = 1000) -> int:
        """Hard-deletes faults cleared before a date, in bounded batches; returns how many."""

        async def purge_batch(connection: AsyncConnection, _attempt: int) -> int:
            ids = (
                await connection.scalars(
                    sa.select(faults.c.id)
                    .where(faults.c.deleted == sa.true(), faults.c.deleted_at < cleared_before)
                    .limit(batch_size)
                )
            ).all()
            if ids:
                await connection.execute(sa.delete(faults).where(faults.c.id.in_(ids)))
            return len(ids)

        purged = 0
        while True:
            count = await self._run(purge_batch)
            purged += count
            if count < batch_size:
                return purged


def reason(error: BaseException) -> str:
    """Why a transaction failed, in words fit for a caller: no hosts, no SQL."""
    if isinstance(error, TimeoutError):
        return "no answer within the timeout"
    if isinstance(error, exc.TimeoutError):
        return "all connections are busy"
    if isinstance(error, exc.DBAPIError) and isinstance(error.orig, sqlite3.Error):
        return str(error.orig)  # "database is locked", "unable to open database file"
    kind = classify(error)
    if kind is Failure.CONFLICT:
        what = "conflict with a concurrent write"
    elif kind is Failure.ENDPOINT_DOWN:
        what = "not answering"
    else:
        what = "request refused"
    number = error_number(error) if isinstance(error, exc.DBAPIError) else None
    return f"{what} (MySQL error {number})" if number else what


def _as_stored(fault: NewFault, now: datetime) -> StoredFault:
    return StoredFault(
        id=fault.id,
        instance_id=fault.instance_id,
        message=fault.message,
        details=fault.details,
        source=fault.source,
        host=fault.host,
        created=fault.created,
        updated=now,
    )
