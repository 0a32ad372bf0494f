"""The fault reporter for threaded code: it runs on its own thread and event loop.

    reporter = SyncFaultReporter("faultsvc.example:50051", source="taskmanager")
    reporter.start()
    with reporter.reporting(instance_id):
        prepare_guest()
    reporter.close(timeout=5)

Every call but `start`, `flush` and `close` only hands the fault to the
reporter's loop and returns; none of them raises into the caller.

Not for services under eventlet's monkey patching: eventlet rewrites the
`select` module in place, so no asyncio loop can run beside it, even on a
real OS thread; `start()` says so instead of hanging.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar

from faultsvc_client.client import DEFAULT_TARGET, TlsConfig
from faultsvc_client.reporter import (
    DEFAULT_BACKOFF,
    Backoff,
    FaultReporter,
    FaultReporting,
    ReporterStats,
)

LOG = logging.getLogger(__name__)

_T = TypeVar("_T")

# How long start() and close() wait for the reporter's own loop beyond the
# time they were given: the loop is local and never busy for long.
_LOOP_GRACE = 5.0


class SyncFaultReporter:
    """A `FaultReporter` running on a daemon thread with an event loop of its own."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        token: str | None = None,
        tls: TlsConfig | None = None,
        source: str | None = None,
        host: str | None = None,
        max_queue_size: int = 1_000,
        backoff: Backoff = DEFAULT_BACKOFF,
        call_timeout: float = 5.0,
    ) -> None:
        self._reporter = FaultReporter(
            target,
            token=token,
            tls=tls,
            source=source,
            host=host,
            max_queue_size=max_queue_size,
            backoff=backoff,
            call_timeout=call_timeout,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def stats(self) -> ReporterStats:
        return self._reporter.stats

    @property
    def pending(self) -> int:
        return self._reporter.pending

    @property
    def source(self) -> str:
        return self._reporter.source

    @property
    def host(self) -> str:
        return self._reporter.host

    def start(self) -> None:
        """Starts the reporter's thread and loop, and delivery on them."""
        if self._thread is not None:
            raise RuntimeError("the reporter is already started")
        if eventlet_monkey_patched():
            raise RuntimeError("SyncFaultReporter cannot run under eventlet's monkey patching")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=self._run_loop, args=(loop,), name="faultsvc-reporter", daemon=True
        )
        self._loop, self._thread = loop, thread
        thread.start()
        self._run(self._reporter.start(), timeout=_LOOP_GRACE)

    def flush(self, timeout: float | None = None) -> bool:
        """Waits until every fault reported so far is delivered or given up on.

        Returns False if `timeout` seconds passed first.
        """
        if self._loop is None:
            return self._reporter.pending == 0
        wait = None if timeout is None else timeout + _LOOP_GRACE
        return self._run(self._reporter.flush(timeout), timeout=wait)

    def close(self, timeout: float | None = 5.0) -> None:
        """Delivers what it can within `timeout` seconds, then stops the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or loop.is_closed():
            return
        wait = None if timeout is None else timeout + _LOOP_GRACE
        try:
            self._run(self._reporter.close(timeout), timeout=wait)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(_LOOP_GRACE)

    def report(
        self,
        instance_id: str,
        message: str,
        details: str | None = None,
        *,
        source: str | None = None,
        host: str | None = None,
    ) -> str | None:
        """Queues a fault of the instance; returns its fault_id (None if it could not)."""
        return self._reporter.report(instance_id, message, details, source=source, host=host)

    def report_exception(self, instance_id: str, exc: BaseException) -> str | None:
        """Queues the exception as a fault: its message, and its traceback as details."""
        return self._reporter.report_exception(instance_id, exc)

    def reporting(self, instance_id: str) -> FaultReporting:
        """A context manager and decorator that reports an escaping exception."""
        return self._reporter.reporting(instance_id)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _run(self, coroutine: Coroutine[Any, Any, _T], *, timeout: float | None) -> _T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()


def eventlet_monkey_patched() -> bool:
    """Whether eventlet has monkey-patched this process (checked without importing it)."""
    patcher = sys.modules.get("eventlet.patcher")
    return patcher is not None and bool(patcher.is_monkey_patched("select"))
