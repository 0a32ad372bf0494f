"""Reports faults from a service without ever blocking or failing it.

`report()` only puts the fault on a bounded in-memory queue; a background
task owned by the reporter takes the faults off the queue one at a time, in
order, and sends each to faultsvc. While faultsvc is unreachable the task
retries the fault in hand with exponential backoff and jitter, and nothing
else does: its channel makes one attempt per call. Every fault carries a
`fault_id` made when it was reported, so a retry whose first attempt did land
is not recorded twice, and the time of the error (`occur_time`), so a fault
delivered late keeps its true date. When the queue is full the oldest waiting
fault is dropped: the newest faults are the ones people look at. A fault the
server rejects (an invalid argument, say) is logged and dropped rather than
retried forever.

    reporter = FaultReporter("faultsvc.example:50051", source="taskmanager")
    await reporter.start()
    ...
    reporter.report(instance_id, "Volume attach failed")
    async with reporter.reporting(instance_id):
        await prepare_guest()       # an exception is reported and re-raised
    ...
    await reporter.close(timeout=5)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import random
import socket
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Literal, ParamSpec, Self, TypeVar, cast

import grpc

from faultsvc_client.client import DEFAULT_TARGET, FaultServiceClient, TlsConfig
from faultsvc_client.errors import FaultServiceError
from faultsvc_client.fault_info import (
    SafeExceptionTypes,
    describe_exception,
    message_and_details,
    process_name,
    truncate_details_for_transport,
    truncate_message_for_transport,
)
from faultsvc_client.request_ids import RequestIds, current_request_ids

LOG = logging.getLogger(__name__)

_P = ParamSpec("_P")
_R = TypeVar("_R")

# Worth retrying: the service (or its database) is down or slow, or the call
# was cut off; the same fault_id makes the retry safe. Anything else is an
# answer about this fault, and retrying it would only block the ones behind.
RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
    }
)


@dataclass(frozen=True)
class Backoff:
    """Delays between attempts to deliver a fault while faultsvc is unreachable.

    The n-th delay is `initial * multiplier**n`, capped at `maximum`, then
    shortened by a random fraction up to `jitter` so that many reporters do
    not retry in step after an outage.
    """

    initial: float = 0.2
    maximum: float = 10.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def delay(self, failures: int) -> float:
        exponent = min(max(failures - 1, 0), 64)
        capped = min(self.maximum, self.initial * self.multiplier**exponent)
        return capped * (1.0 - self.jitter * random.random())


DEFAULT_BACKOFF = Backoff()


@dataclass
class ReporterStats:
    """What the reporter did with the faults it was given."""

    reported: int = 0
    delivered: int = 0
    # Dropped to make room when the queue was full, reported after close, or
    # still undelivered when close() gave up on them.
    dropped: int = 0
    # Refused by the server (e.g. INVALID_ARGUMENT), or unsendable.
    rejected: int = 0


@dataclass(frozen=True)
class PendingFault:
    """A fault waiting to be delivered, fixed at the moment it was reported."""

    fault_id: str
    instance_id: str
    message: str
    details: str
    occur_time: datetime
    source: str
    host: str
    request_ids: RequestIds


class FaultReporting:
    """Reports an exception escaping a block or a function, then re-raises it.

    A context manager (`with` and `async with`) and a decorator (of plain and
    of async functions). Only `Exception`s are reported: cancellation,
    KeyboardInterrupt and SystemExit are not faults of the instance.
    """

    def __init__(
        self,
        report_exception: Callable[[str, BaseException, str | None], object],
        instance_id: str,
        message: str | None = None,
    ) -> None:
        self._report_exception = report_exception
        self._instance_id = instance_id
        self._message = message

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> Literal[False]:
        if isinstance(exc, Exception):
            self._report_exception(self._instance_id, exc, self._message)
        return False

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> Literal[False]:
        return self.__exit__(exc_type, exc, traceback)

    def __call__(self, func: Callable[_P, _R]) -> Callable[_P, _R]:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def report_from_coroutine(*args: _P.args, **kwargs: _P.kwargs) -> Any:
                with self:
                    return await func(*args, **kwargs)

            return cast(Callable[_P, _R], report_from_coroutine)

        @functools.wraps(func)
        def report_from_function(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            with self:
                return func(*args, **kwargs)

        return report_from_function


class FaultReporter:
    """Delivers faults to faultsvc in the background; see the module's doc.

    `report`, `report_exception` and `reporting` may be called from any
    thread and never raise. `start`, `flush` and `close` are coroutines of
    the event loop the reporter runs on; `SyncFaultReporter` gives threaded
    code its own loop.

    `safe_exception_types` declares the exceptions whose text a tenant may
    read (see `SafeExceptionTypes`): the service's own user-facing errors,
    by class, qualified name or module ("trove.common.exception"). Any other
    exception is reported by its class name, its text in the details.
    """

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
        safe_exception_types: Iterable[str | type[BaseException]] = (),
    ) -> None:
        if max_queue_size < 1:
            raise ValueError("max_queue_size must be at least 1")
        self.target = target
        self.source = source if source is not None else process_name()
        self.host = host if host is not None else socket.gethostname()
        self.safe_exception_types = SafeExceptionTypes(safe_exception_types)
        self.stats = ReporterStats()
        self._token = token
        self._tls = tls
        self._max_queue_size = max_queue_size
        self._backoff = backoff
        self._call_timeout = call_timeout
        # Waiting faults only: the one being sent is off the queue, so that
        # dropping the oldest never drops a fault whose call may have landed.
        self._queue: asyncio.Queue[PendingFault] = asyncio.Queue(max_queue_size)
        self._sending: PendingFault | None = None
        self._overflowing = False
        self._clock_lock = threading.Lock()
        self._last_occur_time = datetime.min.replace(tzinfo=UTC)
        self._client: FaultServiceClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._closed = False

    @property
    def pending(self) -> int:
        """How many faults are waiting or being sent."""
        in_flight = 0 if self._sending is None else 1
        return self._queue.qsize() + in_flight

    async def start(self) -> None:
        """Starts delivering, on the running event loop."""
        if self._task is not None:
            raise RuntimeError("the reporter is already started")
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        # No retries in the channel: the reporter's backoff is the one retry layer.
        self._client = FaultServiceClient.connect(
            self.target, token=self._token, tls=self._tls, timeout=self._call_timeout, retry=None
        )
        self._task = asyncio.create_task(self._deliver_forever(), name="faultsvc-reporter")
        self._task.add_done_callback(self._log_if_stopped_by_error)

    # A drain budget, not a cancellation: asyncio.timeout() around the call
    # would raise instead of answering, and cut close() short of its cleanup.
    async def flush(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Waits until every fault reported so far is delivered or given up on.

        Returns False if `timeout` seconds passed first.
        """
        try:
            async with asyncio.timeout(timeout):
                await self._queue.join()
        except TimeoutError:
            return False
        return True

    async def close(self, timeout: float | None = 5.0) -> None:  # noqa: ASYNC109
        """Delivers what it can within `timeout` seconds, then stops.

        Faults still undelivered then are lost (logged, and counted as
        dropped); faults reported once close has begun are refused. A reporter
        never started starts now if faults were reported to it, so that they
        are delivered too.
        """
        if self._closed:
            return
        self._closed = True
        if self._task is None and self.pending:
            await self.start()
        if self._task is not None:
            if not await self.flush(timeout):
                LOG.warning(
                    "closing with %d fault(s) not delivered to faultsvc at %s",
                    self.pending,
                    self.target,
                )
            self.stats.dropped += self.pending
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            await self._client.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

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
        """Queues a fault of the instance; returns its fault_id.

        Returns None when the fault was not queued: the reporter is closed,
        or the fault could not be made. `source` and `host` name where the
        error happened when that is not the reporter's own component and
        host (a notification's publisher). `request_ids` default to those of
        the request and span being served (oslo.context, OpenTelemetry).
        """
        try:
            fault = PendingFault(
                fault_id=str(uuid.uuid4()),
                instance_id=instance_id,
                message=truncate_message_for_transport(message),
                details=truncate_details_for_transport(details or ""),
                occur_time=self._now(),
                source=source or self.source,
                host=host or self.host,
                request_ids=current_request_ids() if request_ids is None else request_ids,
            )
            queued = self._submit(fault)
        except Exception:
            LOG.exception("could not queue a fault of instance %s", instance_id)
            return None
        return fault.fault_id if queued else None

    def report_exception(
        self, instance_id: str, exc: BaseException, message: str | None = None
    ) -> str | None:
        """Queues the exception as a fault, its text and traceback as details.

        The message is `message` if given, else the exception's text if its
        type is declared safe to show, else its class name.
        """
        try:
            shown, details = message_and_details(describe_exception(exc), self.safe_exception_types)
        except Exception:
            LOG.exception("could not describe %r as a fault", type(exc))
            shown, details = type(exc).__name__, ""
        return self.report(instance_id, message or shown, details)

    def reporting(self, instance_id: str, message: str | None = None) -> FaultReporting:
        """A context manager and decorator that reports an escaping exception.

        `message`, if given, is the fault's message, as for `report_exception`.
        """
        return FaultReporting(self.report_exception, instance_id, message)

    def _now(self) -> datetime:
        # Strictly increasing, so faults reported in the same microsecond (or
        # across a clock step back) keep the order they were reported in.
        with self._clock_lock:
            now = max(datetime.now(UTC), self._last_occur_time + timedelta(microseconds=1))
            self._last_occur_time = now
        return now

    def _submit(self, fault: PendingFault) -> bool:
        """Hands the fault to the reporter's loop; False if the reporter is closed."""
        if not self._closed:
            loop = self._loop
            if loop is None or threading.get_ident() == self._loop_thread:
                self._enqueue(fault)
                return True
            # RuntimeError: the loop is closed, and the reporter with it.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._enqueue, fault)
                return True
        self.stats.reported += 1
        self.stats.dropped += 1
        LOG.warning("dropped fault %s: the reporter is closed", fault.fault_id)
        return False

    def _enqueue(self, fault: PendingFault) -> None:
        self.stats.reported += 1
        if self._queue.full():
            self._drop_oldest_waiting()
        self._queue.put_nowait(fault)

    def _drop_oldest_waiting(self) -> None:
        dropped = self._queue.get_nowait()
        self._queue.task_done()
        self.stats.dropped += 1
        if not self._overflowing:
            self._overflowing = True
            LOG.warning(
                "fault queue full (%d): dropping the oldest faults, first %s of instance %s",
                self._max_queue_size,
                dropped.fault_id,
                dropped.instance_id,
            )

    async def _deliver_forever(self) -> None:
        while True:
            fault = await self._queue.get()
            self._sending = fault
            try:
                await self._deliver(fault)
            finally:
                self._sending = None
                self._queue.task_done()
            if self._overflowing and not self._queue.full():
                self._overflowing = False
                LOG.warning("fault queue has room again; %d fault(s) dropped", self.stats.dropped)

    async def _deliver(self, fault: PendingFault) -> None:
        """Sends the fault until it is delivered or rejected, backing off between attempts."""
        failures = 0
        while not await self._attempt(fault):
            failures += 1
            await asyncio.sleep(self._backoff.delay(failures))

    async def _attempt(self, fault: PendingFault) -> bool:
        """One call; True when the fault is done with (delivered or rejected)."""
        assert self._client is not None
        try:
            await self._client.record_fault(
                fault.instance_id,
                fault.message,
                details=fault.details,
                source=fault.source,
                host=fault.host,
                fault_id=fault.fault_id,
                occur_time=fault.occur_time,
                request_ids=fault.request_ids,
            )
        except FaultServiceError as error:
            if error.code in RETRYABLE_CODES:
                LOG.debug("faultsvc at %s unavailable, will retry: %s", self.target, error)
                return False
            self.stats.rejected += 1
            LOG.error(
                "faultsvc rejected fault %s of instance %s, dropping it: %s",
                fault.fault_id,
                fault.instance_id,
                error,
            )
            return True
        except Exception:
            self.stats.rejected += 1
            LOG.exception("could not send fault %s, dropping it", fault.fault_id)
            return True
        self.stats.delivered += 1
        return True

    def _log_if_stopped_by_error(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            LOG.error("the fault reporter stopped", exc_info=task.exception())
