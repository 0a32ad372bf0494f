"""Reads and writes of `instance_faults`, in SQLAlchemy Core, in as few statements as possible."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from faultsvc.errors import AlreadyExists, FaultServiceError, Unavailable
from faultsvc.faults import NewFault, StoredFault, utc_now
from faultsvc.storage.tables import instance_faults as faults

# A caller-made id can be inserted by another server between our check and our
# insert; the batch is then checked and written again, this many times at most.
RECORD_ATTEMPTS = 3

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
LIVE = faults.c.deleted == sa.false()


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page of history ends: the (created, id) of its last fault."""

    created: datetime
    id: str


class FaultStore:
    """The faults of all instances, kept in one table."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        """A transaction; a database that does not answer becomes Unavailable."""
        try:
            async with self._engine.begin() as connection:
                yield connection
        except FaultServiceError:
            raise
        except (exc.OperationalError, exc.InterfaceError, exc.TimeoutError, OSError) as error:
            raise Unavailable(f"database unavailable: {type(error).__name__}") from error
        except exc.DBAPIError as error:
            if error.connection_invalidated:
                raise Unavailable("database connection lost") from error
            raise

    async def ping(self) -> None:
        """Returns when the database answers; raises Unavailable when it does not."""
        async with self._transaction() as connection:
            await connection.execute(sa.select(1))

    async def record_batch(
        self, batch: Sequence[NewFault]
    ) -> list[StoredFault | FaultServiceError]:
        """Stores a batch in one multi-row INSERT and one COMMIT.

        Returns, in order, each fault as stored, or the error of that fault
        alone. A fault whose caller-made id is already stored is not written
        again: its stored row is returned (or AlreadyExists, when the id
        belongs to another instance).
        """
        for _ in range(RECORD_ATTEMPTS):
            try:
                return await self._record_once(batch)
            except exc.IntegrityError as error:
                conflict = error
        raise Unavailable("a fault_id is being written concurrently; retry") from conflict

    async def _record_once(
        self, batch: Sequence[NewFault]
    ) -> list[StoredFault | FaultServiceError]:
        now = utc_now()
        async with self._transaction() as connection:
            existing = await self._stored_by_id(
                connection, {fault.id for fault in batch if fault.caller_made_id}
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
                await connection.execute(sa.insert(faults), rows)
        return results

    async def _stored_by_id(
        self, connection: AsyncConnection, ids: Collection[str]
    ) -> dict[str, StoredFault]:
        if not ids:
            return {}
        result = await connection.execute(sa.select(*FAULT_COLUMNS).where(faults.c.id.in_(ids)))
        return {row.id: StoredFault(*row) for row in result}

    async def latest_for(self, instance_ids: Collection[str]) -> dict[str, StoredFault]:
        """The newest live fault of each instance that has one, in one query.

        The inner query finds each instance's newest date from the index
        (instance_id, deleted, created) alone; the join fetches those rows. Two
        faults of one instance in the same microsecond both come back, and the
        greater id wins, as in the history's order.
        """
        if not instance_ids:
            return {}
        newest = (
            sa.select(faults.c.instance_id, sa.func.max(faults.c.created).label("created"))
            .where(faults.c.instance_id.in_(instance_ids), LIVE)
            .group_by(faults.c.instance_id)
            .subquery("newest")
        )
        query = sa.select(*FAULT_COLUMNS).join(
            newest,
            sa.and_(
                faults.c.instance_id == newest.c.instance_id,
                faults.c.created == newest.c.created,
                LIVE,
            ),
        )
        latest: dict[str, StoredFault] = {}
        async with self._transaction() as connection:
            for row in await connection.execute(query):
                fault = StoredFault(*row)
                current = latest.get(fault.instance_id)
                if current is None or fault.id > current.id:
                    latest[fault.instance_id] = fault
        return latest

    async def history(
        self, instance_id: str, limit: int, after: Cursor | None = None
    ) -> list[StoredFault]:
        """Up to `limit` live faults of an instance, newest first, after `after` if given."""
        query = (
            sa.select(*FAULT_COLUMNS)
            .where(faults.c.instance_id == instance_id, LIVE)
            .order_by(faults.c.created.desc(), faults.c.id.desc())
            .limit(limit)
        )
        if after is not None:
            query = query.where(
                sa.or_(
                    faults.c.created < after.created,
                    sa.and_(faults.c.created == after.created, faults.c.id < after.id),
                )
            )
        async with self._transaction() as connection:
            return [StoredFault(*row) for row in await connection.execute(query)]

    async def clear(self, instance_id: str) -> int:
        """Soft-deletes the live faults of an instance; returns how many."""
        now = utc_now()
        async with self._transaction() as connection:
            result = await connection.execute(
                sa.update(faults)
                .where(faults.c.instance_id == instance_id, LIVE)
                .values(deleted=True, deleted_at=now, updated=now)
            )
            return result.rowcount

    async def purge(self, cleared_before: datetime, batch_size: int = 1000) -> int:
        """Hard-deletes faults cleared before a date, in bounded batches; returns how many."""
        purged = 0
        while True:
            async with self._transaction() as connection:
                ids = (
                    await connection.scalars(
                        sa.select(faults.c.id)
                        .where(faults.c.deleted == sa.true(), faults.c.deleted_at < cleared_before)
                        .limit(batch_size)
                    )
                ).all()
                if ids:
                    await connection.execute(sa.delete(faults).where(faults.c.id.in_(ids)))
            purged += len(ids)
            if len(ids) < batch_size:
                return purged


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
