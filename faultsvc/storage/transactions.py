"""A unit of work in a transaction: retried when safe, failed over when an endpoint dies."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy import exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from faultsvc.errors import Unavailable
from faultsvc.storage.failover import DatabaseEndpoints, describe
from faultsvc.storage.retry import Failure, backoff_seconds, classify, error_number

log = logging.getLogger(__name__)

# Attempts of one transaction, all within the database timeout together.
MAX_ATTEMPTS = 5

T = TypeVar("T")
# A transaction's statements, given its connection and the attempt number (1, 2, ...).
Work = Callable[[AsyncConnection, int], Awaitable[T]]


class Transactions:
    """Runs work in transactions on the database's current endpoint.

    What is safe to retry is retried, with jittered backoff, within the
    database timeout for all attempts together; then the call is Unavailable.
    A conflict (a deadlock, a Galera certification conflict, a lock wait
    timeout, a duplicate key) rolled the transaction back: it runs again. An
    endpoint whose connection fails is left for the next one; one that is only
    slow (a lock, a long statement) is pinged, and left only if the ping gets
    no answer either. A timeout cancels the statement, and its connection is
    discarded.
    """

    def __init__(self, database: DatabaseEndpoints) -> None:
        self.database = database

    async def run(self, work: Work[T], *, rerun_after_lost_commit: bool = True) -> T:
        """Runs `work` in a transaction and commits it.

        A connection lost during COMMIT leaves the outcome unknown: the work
        runs again only if `rerun_after_lost_commit`, and must then allow for
        its earlier attempt having been committed (it is told the attempt).
        """
        return await self._attempts(
            work, commit=True, rerun_after_lost_commit=rerun_after_lost_commit
        )

    async def read(self, work: Work[T]) -> T:
        """Runs `work`, which only reads, in autocommit mode: no transaction to end."""
        return await self._attempts(work, commit=False, rerun_after_lost_commit=True)

    async def _attempts(self, work: Work[T], *, commit: bool, rerun_after_lost_commit: bool) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.database.timeout_seconds
        attempt = 0
        while True:
            attempt += 1
            engine = self.database.current
            connectable = engine if commit else self.database.current_reader
            committing = False
            try:
                async with asyncio.timeout_at(deadline), connectable.connect() as connection:
                    result = await work(connection, attempt)
                    if commit:
                        committing = True
                        await connection.commit()
                return result
            except (exc.SQLAlchemyError, OSError, TimeoutError) as error:
                pause = self._retry_pause(
                    error, engine, attempt, committing, rerun_after_lost_commit
                )
                if pause is None or loop.time() + pause >= deadline:
                    raise Unavailable(f"database unavailable: {reason(error)}; retry") from error
                log.info(
                    "attempt %d on %s failed (%s); retrying",
                    attempt,
                    describe(engine),
                    reason(error),
                )
                await asyncio.sleep(pause)

    def _retry_pause(
        self,
        error: BaseException,
        engine: AsyncEngine,
        attempt: int,
        committing: bool,
        rerun_after_lost_commit: bool,
    ) -> float | None:
        """Seconds to wait before another attempt; None when no other attempt may be made.

        Raises what is no database failure (a bug) as it is.
        """
        failure = classify(error)
        if failure is Failure.OTHER:
            if isinstance(error, exc.OperationalError | exc.TimeoutError):
                raise Unavailable(f"database unavailable: {reason(error)}") from error
            raise error
        if failure is Failure.ENDPOINT_DOWN:
            self.database.failed(engine)
        elif failure is Failure.NO_ANSWER:
            self.database.suspect(engine)
        lost_commit = committing and failure is not Failure.CONFLICT
        if attempt == MAX_ATTEMPTS or (lost_commit and not rerun_after_lost_commit):
            return None
        return backoff_seconds(attempt)


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
