"""Several endpoints of one database (the nodes of a cluster): use the first that answers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from faultsvc.errors import Unavailable
from faultsvc.storage.engine import create_engine

if TYPE_CHECKING:
    from faultsvc.config import Settings

log = logging.getLogger(__name__)


class DatabaseEndpoints:
    """One engine per endpoint, in order of preference, and the one in use now.

    Transactions run on `current`, reads on `current_reader`: its twin in
    autocommit mode when `connect` made the engines, else the engine itself
    (a read then ends in the ROLLBACK of closing its connection).

    A transaction whose connection fails calls `failed`, which moves on to
    the next endpoint at once; one that got no answer in time calls
    `suspect`, which moves on only if a ping gets no answer either, so that a
    lock wait does not move writes between the nodes of a Galera cluster (and
    into certification conflicts). `probe` pings every endpoint and goes back
    to the most preferred one that answers, so the first endpoint is used
    again once it has returned.
    """

    def __init__(
        self,
        engines: Sequence[AsyncEngine],
        *,
        readers: Sequence[AsyncEngine] | None = None,
        timeout_seconds: float = 5.0,
    ) -> None:
        if not engines:
            raise ValueError("a database needs at least one endpoint")
        if readers is not None and len(readers) != len(engines):
            raise ValueError("a database needs one reader per endpoint")
        self.engines = tuple(engines)
        self.readers = self.engines if readers is None else tuple(readers)
        self.timeout_seconds = timeout_seconds
        self._current = 0
        self._suspicion: asyncio.Task[None] | None = None

    @classmethod
    def connect(
        cls, urls: Sequence[str], *, pool_size: int = 10, timeout_seconds: float = 5.0
    ) -> DatabaseEndpoints:
        """Engines for `urls`; nothing connects until a transaction or a probe needs it."""
        engines, readers = (
            [
                create_engine(
                    url, pool_size=pool_size, timeout_seconds=timeout_seconds, autocommit=reads
                )
                for url in urls
            ]
            for reads in (False, True)
        )
        if any(_in_memory(engine) for engine in engines):
            readers = engines  # an in-memory database lives in its one engine only
        return cls(engines, readers=readers, timeout_seconds=timeout_seconds)

    @classmethod
    def from_settings(cls, settings: Settings) -> DatabaseEndpoints:
        return cls.connect(
            settings.database_urls,
            pool_size=settings.database_pool_size,
            timeout_seconds=settings.database_timeout_seconds,
        )

    @property
    def current(self) -> AsyncEngine:
        return self.engines[self._current]

    @property
    def current_reader(self) -> AsyncEngine:
        """The current endpoint's engine for reads: autocommit, one statement a read."""
        return self.readers[self._current]

    def failed(self, engine: AsyncEngine) -> None:
        """Moves on from `engine`, when it is still the current one, to the next endpoint.

        Many transactions fail together when an endpoint goes down; only the
        first report moves on, so that the others do not skip a good endpoint.
        """
        if len(self.engines) > 1 and engine is self.current:
            self._switch_to((self._current + 1) % len(self.engines), back=False)

    def suspect(self, engine: AsyncEngine) -> None:
        """Pings `engine` in the background; `failed` if it does not answer either."""
        if len(self.engines) == 1 or engine is not self.current:
            return
        if self._suspicion is None or self._suspicion.done():
            self._suspicion = asyncio.create_task(self._check(engine), name="endpoint-check")

    async def _check(self, engine: AsyncEngine) -> None:
        error = await self._ping(engine)
        if error is not None:
            log.warning("database endpoint %s: %s", describe(engine), error)
            self.failed(engine)

    async def probe(self) -> None:
        """Uses the most preferred endpoint that answers; Unavailable when none does.

        Every endpoint is pinged at once; the answer is known as soon as one
        endpoint answers and all the more preferred ones have failed.
        """
        pings = [asyncio.create_task(self._ping(engine)) for engine in self.engines]
        errors: list[str] = []
        try:
            for index, ping in enumerate(pings):
                error = await ping
                if error is None:
                    if index != self._current:
                        self._switch_to(index, back=index < self._current)
                    return
                errors.append(f"{describe(self.engines[index])}: {error}")
        finally:
            for ping in pings:
                ping.cancel()
            await asyncio.gather(*pings, return_exceptions=True)
        raise Unavailable("no database endpoint answers: " + "; ".join(errors))

    async def first_answering(self) -> AsyncEngine:
        """The most preferred endpoint that answers now (for commands run once, as migrations)."""
        await self.probe()
        return self.current

    async def dispose(self) -> None:
        if self._suspicion is not None:
            self._suspicion.cancel()
            await asyncio.gather(self._suspicion, return_exceptions=True)
        await asyncio.gather(*(engine.dispose() for engine in {*self.engines, *self.readers}))

    async def _ping(self, engine: AsyncEngine) -> str | None:
        """None when `engine` answers within the timeout, else why not."""
        try:
            async with asyncio.timeout(self.timeout_seconds), engine.connect() as connection:
                await connection.execute(sa.select(1))
        except TimeoutError:
            return f"no answer within {self.timeout_seconds:g} s"
        # TypeError and ValueError: a URL argument the driver does not take (`?foo=1`).
        except (sa.exc.SQLAlchemyError, OSError, TypeError, ValueError) as error:
            return f"{type(error).__name__}: {getattr(error, 'orig', None) or error}"
        return None

    def _switch_to(self, index: int, *, back: bool) -> None:
        new, old = describe(self.engines[index]), describe(self.current)
        if back:
            log.info("database endpoint %s answers again; going back to it from %s", new, old)
        else:
            log.warning("database endpoint %s does not answer; failing over to %s", old, new)
        self._current = index


@asynccontextmanager
async def open_database(settings: Settings) -> AsyncIterator[DatabaseEndpoints]:
    """The settings' database for a command run once; its connections closed afterwards."""
    database = DatabaseEndpoints.from_settings(settings)
    try:
        yield database
    finally:
        await database.dispose()


def _in_memory(engine: AsyncEngine) -> bool:
    url = engine.url
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def describe(engine: AsyncEngine) -> str:
    """An endpoint as a log line may show it: without its password."""
    url = engine.url
    if url.get_backend_name() == "sqlite":
        return url.database or ":memory:"
    return f"{url.host}:{url.port or 3306}"
