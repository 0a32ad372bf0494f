"""Gathering concurrent calls into one database round trip (group commit, coalesced reads)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from faultsvc.errors import Overloaded, Unavailable

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")

BatchFunction = Callable[[Sequence[Item]], Awaitable[Sequence[Result | Exception]]]


# A batch this big means calls are queueing: the server is saturated.
BUSY_BATCH = 5
# How long the batch after a busy one waits for more calls.
BUSY_LINGER_SECONDS = 0.004
# How long a caller turned away for a full queue is told to wait before it retries.
RETRY_AFTER_OVERLOAD_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class _Call(Generic[Item, Result]):
    item: Item
    future: asyncio.Future[Result]
    submitted: float


class Batcher(Generic[Item, Result]):
    """Runs one batch function for all the items submitted while the previous batch ran.

    A lone call runs at once (no added latency when idle); under load, calls
    that arrive during a round trip share the next one, so the batch size
    follows the load. Each caller gets its own result or exception; a failing
    batch fails only its own callers.

    When the server is saturated, calls wait in gRPC's queue rather than here,
    and batches stay small: each then pays the round trips' fixed cost for a
    few calls, which is where a saturated server's CPU goes. So after a busy
    batch the next one lingers a moment for more calls: measured at 64 calls
    in flight, it serves more calls per second and each waits less, while at
    1 and 4 in flight (batches never busy) nothing changes.

    At most `max_pending` calls wait: beyond, a call is turned away at once
    (Overloaded), so that a stalled database does not gather an unbounded
    queue that callers and their retries keep growing. A call whose caller
    gave up before its batch started is not run.

    Should the batcher itself fail (a bug), every waiting and later call fails
    with Unavailable instead of waiting for ever, and `stopped` tells the
    owner, who must not go on serving without it.
    """

    def __init__(
        self,
        name: str,
        run_batch: BatchFunction[Item, Result],
        max_batch: int,
        *,
        max_pending: int = 10_000,
        busy_linger: float = BUSY_LINGER_SECONDS,
    ) -> None:
        self.name = name
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._busy_linger = busy_linger
        self._last_batch_size = 0
        self._pending: list[_Call[Item, Result]] = []
        self._running: list[_Call[Item, Result]] = []  # the batch being run
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # Told each batch's size and how long its oldest call waited for it.
        self.on_batch: Callable[[int, float], None] = lambda size, waited: None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def close(self) -> None:
        """Finishes what was submitted, then stops."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def stopped(self) -> BaseException | None:
        """Returns when the batcher stops: None after `close`, else the error that stopped it."""
        if self._task is None:
            raise RuntimeError(f"{self.name} was never started")
        await asyncio.wait([self._task])
        if self._task.cancelled():
            return None if self._closing else asyncio.CancelledError(f"{self.name} was cancelled")
        return self._task.exception()

    async def submit(self, item: Item) -> Result:
        if self._task is None or self._closing:
            raise RuntimeError(f"{self.name} is not running")
        if self._task.done():
            raise Unavailable(f"{self.name} has stopped; the server is restarting")
        if len(self._pending) >= self._max_pending:
            raise Overloaded(
                f"{self.name}: {len(self._pending)} calls are waiting for the database",
                retry_after_seconds=RETRY_AFTER_OVERLOAD_SECONDS,
            )
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append(_Call(item, future, time.monotonic()))
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._pending:
                    if self._last_batch_size >= BUSY_BATCH and len(self._pending) < self._max_batch:
                        await asyncio.sleep(self._busy_linger)
                    self._running = self._next_batch()
                    await self._settle(self._running)
                if self._closing:
                    return
        except BaseException as error:
            log.critical("%s stopped: %r", self.name, error, exc_info=True)
            stopped = Unavailable(f"{self.name} has stopped; the server is restarting")
            for call in [*self._running, *self._pending]:
                if not call.future.done():
                    call.future.set_exception(stopped)
            self._pending.clear()
            raise

    def _next_batch(self) -> list[_Call[Item, Result]]:
        """Up to `max_batch` waiting calls whose callers still wait, oldest first."""
        batch: list[_Call[Item, Result]] = []
        taken = 0
        for call in self._pending:
            if len(batch) == self._max_batch:
                break
            taken += 1
            if not call.future.done():
                batch.append(call)
        del self._pending[:taken]
        self._last_batch_size = len(batch)
        return batch

    async def _settle(self, batch: list[_Call[Item, Result]]) -> None:
        if not batch:
            return
        try:
            self.on_batch(len(batch), time.monotonic() - batch[0].submitted)
            results = await self._run_batch([call.item for call in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for a batch of {len(batch)}")
        except Exception as error:  # the batch's own failure goes to its callers
            results = [error] * len(batch)
        for call, result in zip(batch, results, strict=True):
            if call.future.done():  # the caller went away; its row is stored all the same
                continue
            if isinstance(result, Exception):
                call.future.set_exception(result)
            else:
                call.future.set_result(result)
