"""The fault reporter for threaded code: it runs on its own thread and event loop.

    reporter = SyncFaultReporter(FaultReporter("faultsvc.example:50051", source="taskmanager"))
    reporter.start()
    with reporter.reporting(instance_id):
        prepare_guest()
    reporter.close(timeout=5)

Every call but `start`, `flush` and `close` only hands the fault to the
reporter's loop and returns; none of them raises into the caller.

It runs under eventlet's monkey patching too, as OpenStack services do,
with the condition on logging's locks that `faultsvc_client.loop_thread`
states.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Self

from faultsvc_client.fault_info import SafeExceptionTypes
from faultsvc_client.loop_thread import LOOP_GRACE, LoopThread, start_loop_thread
from faultsvc_client.reporter import FaultReporter, FaultReporting, ReporterStats
from faultsvc_client.request_ids import RequestIds

LOG = logging.getLogger(__name__)


class SyncFaultReporter:
    """Runs a `FaultReporter` on a daemon thread with an event loop of its own.

    Give it a reporter not started: `start()` starts it there.
    """

    def __init__(self, reporter: FaultReporter) -> None:
        self.reporter = reporter
        self._loop_thread: LoopThread | None = None

    @property
    def stats(self) -> ReporterStats:
        return self.reporter.stats

    @property
    def pending(self) -> int:
        return self.reporter.pending

    @property
    def safe_exception_types(self) -> SafeExceptionTypes:
        return self.reporter.safe_exception_types

    def start(self) -> None:
        """Starts the reporter's thread and loop, and delivery on them."""
        if self._loop_thread is not None:
            raise RuntimeError("the reporter is already started")
        self._loop_thread, _ = start_loop_thread("faultsvc-reporter", self.reporter.start())

    def flush(self, timeout: float | None = None) -> bool:
        """Waits until every fault reported so far is delivered or given up on.

        Returns False if `timeout` seconds passed first.
        """
        if self._loop_thread is None:
            return self.reporter.pending == 0
        wait = None if timeout is None else timeout + LOOP_GRACE
        return self._loop_thread.run(self.reporter.flush(timeout), timeout=wait)

    def close(self, timeout: float | None = 5.0) -> None:
        """Delivers what it can within `timeout` seconds, then stops the thread.

        A reporter never started starts now, so that the faults reported to
        it are delivered too, and it is closed like any other.
        """
        if self._loop_thread is None:
            self.start()
        assert self._loop_thread is not None
        if not self._loop_thread.loop.is_closed():
            wait = None if timeout is None else timeout + LOOP_GRACE
            self._loop_thread.finish(self.reporter.close(timeout), timeout=wait)

    def report(
        self,
        instance_id: str,
        message: str,
        details: str | None = None,
        *,
        source: str | None = None,
        host: str | None = None,
        request_ids: RequestIds | None = None,
    ) -> str | None:
        """Queues a fault of the instance; returns its fault_id (None if it could not)."""
        return self.reporter.report(
            instance_id, message, details, source=source, host=host, request_ids=request_ids
        )

    def report_exception(
        self, instance_id: str, exc: BaseException, message: str | None = None
    ) -> str | None:
        """Queues the exception as a fault; see `FaultReporter.report_exception`."""
        return self.reporter.report_exception(instance_id, exc, message)

    def reporting(self, instance_id: str, message: str | None = None) -> FaultReporting:
        """A context manager and decorator that reports an escaping exception."""
        return self.reporter.reporting(instance_id, message)

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
