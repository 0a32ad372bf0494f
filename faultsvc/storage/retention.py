"""Keeping each instance's history bounded: the faults beyond its newest N are soft-deleted.

This runs from `faultsvc db purge`, never on the write path: RecordFault
stays a few statements per batch whatever the cap. Each transaction touches at most
`batch_size` rows, so a large backlog never holds long locks or a huge undo
log; capped faults are cleared as ClearFaults clears them (deleted_at now),
and a later purge hard-deletes them like any other cleared fault.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from faultsvc.faults import Cursor, utc_now
from faultsvc.storage.tables import CLEARED, LIVE
from faultsvc.storage.tables import instance_faults as faults
from faultsvc.storage.transactions import Transactions


async def cap_history(transactions: Transactions, keep: int, batch_size: int = 1000) -> int:
    """Soft-deletes, for every instance, the live faults older than its newest `keep`.

    Returns how many it cleared. The newest are those that ListFaults shows
    first (by latest occurrence, then id), so GetLatestFault never changes. Faults recorded
    meanwhile are never cleared unless older than the `keep` newest.
    """
    if keep < 1:
        raise ValueError("keep at least one fault per instance")
    capped = 0
    after: str | None = None
    while True:
        instances = await _instances_beyond(transactions, keep, after, batch_size)
        for instance_id in instances:
            capped += await _cap_instance(transactions, instance_id, keep, batch_size)
        if len(instances) < batch_size:
            return capped
        after = instances[-1]


async def _instances_beyond(
    transactions: Transactions, keep: int, after: str | None, limit: int
) -> Sequence[str]:
    """Up to `limit` instances with more than `keep` live faults, in id order after `after`."""
    query = (
        sa.select(faults.c.instance_id)
        .where(LIVE)
        .group_by(faults.c.instance_id)
        .having(sa.func.count() > keep)
        .order_by(faults.c.instance_id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(faults.c.instance_id > after)

    async def read(connection: AsyncConnection, _attempt: int) -> Sequence[str]:
        return (await connection.scalars(query)).all()

    return await transactions.run(read)


async def _cap_instance(
    transactions: Transactions, instance_id: str, keep: int, batch_size: int
) -> int:
    oldest_kept = await _oldest_kept(transactions, instance_id, keep)
    if oldest_kept is None:
        return 0
    older = sa.or_(
        faults.c.last_occurred < oldest_kept.last_occurred,
        sa.and_(faults.c.last_occurred == oldest_kept.last_occurred, faults.c.id < oldest_kept.id),
    )

    async def cap_batch(connection: AsyncConnection, _attempt: int) -> tuple[int, int]:
        """(ids found, faults cleared): a rerun after a lost commit finds the rest."""
        ids = (
            await connection.scalars(
                sa.select(faults.c.id)
                .where(faults.c.instance_id == instance_id, LIVE, older)
                .limit(batch_size)
            )
        ).all()
        if not ids:
            return 0, 0
        now = utc_now()
        result = await connection.execute(
            sa.update(faults)
            .where(faults.c.id.in_(ids), LIVE)
            .values(**CLEARED, deleted_at=now, updated=now)
        )
        return len(ids), result.rowcount

    capped = 0
    while True:
        found, cleared = await transactions.run(cap_batch)
        capped += cleared
        if found < batch_size:
            return capped


async def _oldest_kept(transactions: Transactions, instance_id: str, keep: int) -> Cursor | None:
    """The `keep`-th newest live fault of the instance, None when it has no more than that."""
    query = (
        sa.select(faults.c.last_occurred, faults.c.id)
        .where(faults.c.instance_id == instance_id, LIVE)
        .order_by(faults.c.last_occurred.desc(), faults.c.id.desc())
        .offset(keep - 1)
        .limit(1)
    )

    async def read(connection: AsyncConnection, _attempt: int) -> Cursor | None:
        row = (await connection.execute(query)).first()
        return None if row is None else Cursor(last_occurred=row.last_occurred, id=row.id)

    return await transactions.run(read)
